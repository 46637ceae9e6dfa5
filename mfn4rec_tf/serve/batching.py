"""Server-side batching: concurrent requests to one signature run as one call (`--enable_batching`).

On a CPU, a model call has a fixed cost (dispatching its ops, the recurrent loop's steps) that a
batch of rows shares: with several clients at once, merging their rows into one call serves more
requests per second. This batcher never waits for a batch to fill (TF Serving's
`batch_timeout_micros` makes every request wait): a request that finds its signature idle runs at
once, alone; requests that arrive while a call is running queue up, and the next call takes all of
them (up to `max_batch_size` rows). So a lone client sees no added latency, and under load the
batches grow by themselves.

Requests are merged only when they fit together: the same signature, the same value of every
scalar input (e.g. `recommend`'s `k` and `exclude_seen`), and, for every other input, the same
dtype and the same sizes beyond the first dimension. With `pad_variable_length_inputs` (TF
Serving's name), inputs that differ only in the sizes of later dimensions are padded to the largest
(strings with `""`, numbers with 0) where the signature leaves those sizes open: for this package's
exports, whose `history` is right-padded with `""` anyway, that changes no answer (an output with
a per-step dimension would come back at the padded size). Each request gets its own rows of every
output back; a call whose outputs do not all have one row per input row
is never merged (each request of it runs alone).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

import numpy as np

DEFAULT_MAX_BATCH_SIZE = 64


@dataclass(frozen=True)
class BatchingOptions:
    """How requests are merged.

    Args:
        max_batch_size: the most rows in one merged call (a larger request runs alone).
        pad_variable_length_inputs: pad inputs whose later dimensions differ (see the module
            docstring); without it such requests run in separate calls.
    """

    max_batch_size: int = DEFAULT_MAX_BATCH_SIZE
    pad_variable_length_inputs: bool = False

    def __post_init__(self):
        if not isinstance(self.max_batch_size, int) or self.max_batch_size < 1:
            raise ValueError(f"`max_batch_size` must be a positive integer. Received: {self.max_batch_size!r}")


class _Request:
    __slots__ = ("arrays", "rows", "event", "done", "result", "error", "lead")

    def __init__(self, arrays, rows):
        self.arrays, self.rows = arrays, rows
        self.event = threading.Event()
        self.done = False
        self.result = self.error = None
        self.lead = False  # set when this request's thread must run the next call


class Batcher:
    """Merges concurrent calls of one signature (see the module docstring).

    `run(signature, arrays)` is called by each request's own thread with inputs already checked;
    the thread that finds no call running runs calls until its own request is answered, then hands
    the queue to the oldest waiting request's thread.
    """

    def __init__(self, options: BatchingOptions):
        self.options = options
        self._lock = threading.Lock()
        self._queues = {}  # merge key -> list of waiting _Request
        self._running = set()  # merge keys with a call under way
        self.merged = 0  # requests answered by a call shared with another (for tests)

    def run(self, signature, arrays):
        rows = _rows(arrays)
        key = self._key(signature, arrays)
        if key is None or rows is None or rows >= self.options.max_batch_size:
            return signature.call(arrays)
        request = _Request(arrays, rows)
        with self._lock:
            self._queues.setdefault(key, []).append(request)
            request.lead = key not in self._running
            self._running.add(key)
        while True:
            if request.lead:
                request.lead = False
                self._lead(signature, key, request)
            else:
                request.event.wait()
                request.event.clear()
            if request.done:
                if request.error is not None:
                    raise request.error
                return request.result

    def _lead(self, signature, key, own):
        """Runs calls for `key` until `own` is answered; then passes the lead on (or ends it)."""
        while not own.done:
            with self._lock:
                queue = self._queues[key]
                taken, rows = [], 0
                while queue and (not taken or rows + queue[0].rows <= self.options.max_batch_size):
                    rows += queue[0].rows
                    taken.append(queue.pop(0))
            self._call(signature, taken)
        with self._lock:
            queue = self._queues[key]
            if queue:
                queue[0].lead = True
                queue[0].event.set()
            else:
                del self._queues[key]
                self._running.discard(key)

    def _call(self, signature, taken):
        outputs = None
        if len(taken) > 1:
            total = sum(request.rows for request in taken)
            try:
                outputs = signature.call(self._merge([request.arrays for request in taken]))
            except Exception:  # e.g. one request's runtime error: each runs alone below and gets its own
                outputs = None
            if outputs is not None and any(np.ndim(v) == 0 or np.shape(v)[0] != total for v in outputs.values()):
                outputs = None  # not row-wise: each runs alone
        if outputs is not None:
            start = 0
            for request in taken:
                request.result = {name: value[start:start + request.rows] for name, value in outputs.items()}
                start += request.rows
            self.merged += len(taken)
        else:
            for request in taken:
                try:
                    request.result = signature.call(request.arrays)
                except Exception as error:  # a ServingError from the model, raised in the request's thread
                    request.error = error
        for request in taken:
            request.done = True
            request.event.set()

    def _key(self, signature, arrays):
        """What requests must share to be merged, or None if this one cannot be."""
        parts = [signature.name]
        for name in sorted(arrays):
            array = arrays[name]
            if array.ndim == 0:
                parts.append((name, array.dtype.str, array.tobytes()))
                continue
            spec = signature.inputs[name].shape
            later = array.shape[1:]
            if self.options.pad_variable_length_inputs and spec is not None:
                # an open size may differ between merged requests; a fixed one is checked already
                later = tuple(None if spec[i + 1] is None else size for i, size in enumerate(later))
            parts.append((name, array.dtype.str, array.ndim, later))
        return tuple(parts)

    @staticmethod
    def _merge(arrays_list):
        merged = {}
        for name, first in arrays_list[0].items():
            if first.ndim == 0:
                merged[name] = first
                continue
            arrays = [arrays[name] for arrays in arrays_list]
            widest = tuple(max(sizes) for sizes in zip(*(a.shape[1:] for a in arrays)))
            fill = "" if first.dtype.kind == "U" else b"" if first.dtype.kind in "OS" else 0
            padded = []
            for array in arrays:
                if array.shape[1:] != widest:
                    grown = np.full((array.shape[0], *widest), fill, dtype=array.dtype)
                    grown[(slice(None), *(slice(0, size) for size in array.shape[1:]))] = array
                    array = grown
                padded.append(array)
            merged[name] = np.concatenate(padded)
        return merged


def _rows(arrays):
    """The common first dimension of the non-scalar inputs, or None if they differ or there are none."""
    sizes = {array.shape[0] for array in arrays.values() if array.ndim}
    return sizes.pop() if len(sizes) == 1 else None
