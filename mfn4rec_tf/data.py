"""tf.data input: batches of item sequences with every modality's per-step features.

Feature matrices stay memory-mapped (`Dataset.features`): each batch gathers only the rows of the
items it contains, so a matrix larger than RAM works. Batches are padded to their own longest
sequence, and sequences of similar length are batched together (within a window of
`bucket_batches` batches, then the batch order is shuffled), which keeps padding low without
making the batch order predictable.

Two inputs:

- `TrainingInput`: `(inputs, {"logits": targets}, {"logits": weights})` for `model.fit`.
  With `targets="all"` a sequence `s` gives inputs `s[:-1]` and targets `s[1:]` at every
  position (the model in `"sequence"` output mode); with `targets="last"` only the final next item
  (`"last"` output mode).
- `RankingInput`: `(inputs, targets)` for evaluation: each user's history and their
  de-duplicated target items, padded with 0.
"""

from __future__ import annotations

import logging

import numpy as np
import tensorflow as tf

from mfn4rec_tf.config import ID_INPUT, PRESENCE_SUFFIX, TARGET_MODES
from mfn4rec_tf.dataset import Dataset

log = logging.getLogger(__name__)


class FeatureGatherer:
    """Builds a batch's model inputs from its padded item indices.

    Args:
        dataset: an opened dataset directory.
        modalities: names of the modalities to feed (default: all the dataset has).
    """

    def __init__(self, dataset: Dataset, modalities=None):
        names = dataset.modality_names if modalities is None else tuple(modalities)
        self.tables = {name: dataset.features(name) for name in names}
        self.presence = {name: dataset.presence(name) for name in names}
        self.presence = {name: p for name, p in self.presence.items() if p is not None}

    def __call__(self, ids: np.ndarray) -> dict:
        inputs = {ID_INPUT: ids}
        flat = ids.reshape(-1)
        for name, table in self.tables.items():
            rows = np.asarray(table[flat], dtype=np.float32)  # reads only these rows of the memmap
            inputs[name] = rows.reshape(ids.shape + (table.shape[1],))  # (B, T, dim)
            if name in self.presence:
                inputs[name + PRESENCE_SUFFIX] = self.presence[name][ids].astype(np.float32)  # (B, T)
        return inputs

    def signature(self) -> dict:
        spec = {ID_INPUT: tf.TensorSpec((None, None), tf.int32, name=ID_INPUT)}
        for name, table in self.tables.items():
            spec[name] = tf.TensorSpec((None, None, table.shape[1]), tf.float32, name=name)
            if name in self.presence:
                spec[name + PRESENCE_SUFFIX] = tf.TensorSpec((None, None), tf.float32, name=name + PRESENCE_SUFFIX)
        return spec


def training_examples(sequences, max_length: int, targets: str = "all"):
    """Cuts sequences into (input, target) pairs; returns (inputs, targets, stats).

    A sequence `s` gives `s[:-1]` as input and `s[1:]` (`targets="all"`) or `s[-1]`
    (`targets="last"`) as target, keeping the last `max_length` input steps. Sequences with fewer
    than two items give no example.
    """
    if targets not in TARGET_MODES:
        raise ValueError(f"`targets` must be one of {TARGET_MODES}. Received: targets={targets!r}")
    if max_length < 1:
        raise ValueError(f"`max_length` must be >= 1. Received: max_length={max_length}")
    inputs, outputs = [], []
    short = truncated = 0
    for seq in sequences:
        seq = np.asarray(seq, dtype=np.int32)
        if len(seq) < 2:
            short += 1
            continue
        if len(seq) - 1 > max_length:
            truncated += len(seq) - 1 - max_length
            seq = seq[-(max_length + 1):]
        inputs.append(seq[:-1])
        outputs.append(seq[1:] if targets == "all" else seq[-1:])
    stats = {"examples": len(inputs), "too_short": short, "truncated_steps": truncated}
    if short or truncated:
        log.info("training examples: %d; %d sequences with < 2 items skipped; %d early steps beyond "
                 "max_length=%d dropped", len(inputs), short, truncated, max_length)
    return inputs, outputs, stats


TRAIN_WINDOWS = ("last", "sliding")
"""`data.train_windows`: what a long training sequence gives: its last `max_length` positions only
(`training_examples`), or windows over all of it (`training_windows`)."""


def training_windows(sequences, max_length: int, stride: int | None = None):
    """Cuts every sequence into windows that together predict each of its targets exactly once;
    returns (inputs, targets, context, stats).

    A sequence `s` of `L` items has the targets `s[1:]`. They are split, from the end, into blocks of
    `stride` consecutive targets (the first block may be shorter). The block of targets
    `s[a:b]` becomes one example: input `s[lo:b - 1]` and targets `s[lo + 1:b]` with
    `lo = max(0, b - 1 - max_length)`, so the input holds at most `max_length` steps and the block's
    targets are predicted with up to `max_length` steps of history. The first `context = a - lo - 1`
    targets of the example belong to earlier blocks: they are there only as context (weight 0 in
    `TrainingInput`), so each target is trained on once per epoch. With `stride == max_length` (the
    default) windows do not overlap and the last window is exactly the example of
    `training_examples(..., targets="all")`; a smaller stride gives every block more context at the
    cost of more, overlapping, windows. Each window is its own sequence: the recurrent state starts
    from zero at its first step (no state is carried from the window before).

    Args:
        sequences: int item-index arrays.
        max_length: the longest input of a window (>= 1).
        stride: targets per window, 1..max_length. Default `max_length`.

    Returns:
        `inputs`, `targets` (lists of int32 arrays, equal lengths), `context` (int array: leading
        targets of each example that are context only) and `stats` (`examples`, `too_short`,
        `sequences`, `context_targets`).
    """
    if max_length < 1:
        raise ValueError(f"`max_length` must be >= 1. Received: max_length={max_length}")
    stride = max_length if stride is None else stride
    if isinstance(stride, bool) or not isinstance(stride, (int, np.integer)) or not 1 <= stride <= max_length:
        raise ValueError(f"`stride` must be an integer in [1, max_length={max_length}]. Received: stride={stride!r}")
    inputs, outputs, context = [], [], []
    short = used = 0
    for seq in sequences:
        seq = np.asarray(seq, dtype=np.int32)
        if len(seq) < 2:
            short += 1
            continue
        used += 1
        windows = []
        end = len(seq)  # the block's targets are seq[start:end]
        while end > 1:
            start = max(1, end - stride)
            low = max(0, end - 1 - max_length)
            windows.append((seq[low:end - 1], seq[low + 1:end], start - low - 1))
            end = start
        for window_input, window_targets, skip in reversed(windows):
            inputs.append(window_input)
            outputs.append(window_targets)
            context.append(skip)
    context = np.asarray(context, dtype=np.int64)
    stats = {"examples": len(inputs), "too_short": short, "sequences": used,
             "context_targets": int(context.sum())}
    log.info("training windows: %d from %d sequences (stride %d, max_length %d); %d sequences with < 2 items "
             "skipped", len(inputs), used, stride, max_length, short)
    return inputs, outputs, context, stats


def length_bucketed_batches(lengths, batch_size: int, rng: np.random.Generator | None, bucket_batches: int = 32):
    """Index batches: shuffled, then sorted by length within windows of `bucket_batches` batches,
    then the batches themselves shuffled. With `rng=None`: dataset order, no bucketing."""
    order = np.arange(len(lengths))
    if rng is None:
        return [order[i:i + batch_size] for i in range(0, len(order), batch_size)]
    order = rng.permutation(order)
    window = batch_size * max(bucket_batches, 1)
    batches = []
    for start in range(0, len(order), window):
        chunk = order[start:start + window]
        chunk = chunk[np.argsort(np.asarray(lengths)[chunk], kind="stable")]
        batches.extend(chunk[i:i + batch_size] for i in range(0, len(chunk), batch_size))
    return [batches[i] for i in rng.permutation(len(batches))]


def pad(sequences, width=None) -> np.ndarray:
    """Right-pads int sequences with 0 into an int32 matrix."""
    width = width or max((len(s) for s in sequences), default=1)
    out = np.zeros((len(sequences), max(width, 1)), np.int32)
    for row, seq in enumerate(sequences):
        out[row, :len(seq)] = seq
    return out


class TrainingInput:
    """A re-iterable tf.data input over training sequences; each pass is one epoch.

    The batch order depends only on `seed` and the epoch number, so a run resumed at epoch `k`
    (`epoch=k`) sees the same batches as an uninterrupted one.

    Args:
        dataset: an opened dataset directory.
        sequences: int item-index arrays (e.g. `Split.train_sequences`).
        modalities: modality names to feed (default: all of the dataset's).
        batch_size: sequences per batch. Default 64 (the paper's).
        max_length: longest input kept (the last steps). Default 100.
        targets: `"all"` (default) or `"last"`.
        shuffle: shuffle and bucket by length (default True); False keeps the given order.
        seed: seed of the shuffling. Default 0.
        bucket_batches: batches per length-sorting window. Default 32.
        epoch: the epoch the first pass counts as. Default 0.
        windows: `"last"` (default): each sequence's last `max_length` steps (`training_examples`);
            `"sliding"`: windows over the whole sequence, each target trained on once
            (`training_windows`; needs `targets="all"`).
        stride: targets per window for `windows="sliding"`. Default `max_length`.
    """

    def __init__(self, dataset, sequences, *, modalities=None, batch_size=64, max_length=100, targets="all",
                 shuffle=True, seed=0, bucket_batches=32, epoch=0, windows="last", stride=None):
        if batch_size < 1:
            raise ValueError(f"`batch_size` must be >= 1. Received: batch_size={batch_size}")
        if windows not in TRAIN_WINDOWS:
            raise ValueError(f"`windows` must be one of {TRAIN_WINDOWS}. Received: windows={windows!r}")
        self.context = None  # per example: leading targets that are context only (weight 0)
        if windows == "sliding":
            if targets != "all":
                raise ValueError(f"`windows='sliding'` trains on every target of each window and needs "
                                 f"targets='all'. Received: targets={targets!r}")
            self.inputs, self.outputs, self.context, self.stats = training_windows(sequences, max_length, stride)
        else:
            if stride is not None:
                raise ValueError(f"`stride` applies to windows='sliding' only. Received: stride={stride!r}")
            self.inputs, self.outputs, self.stats = training_examples(sequences, max_length, targets)
        if not self.inputs:
            raise ValueError("No training example: every sequence has fewer than two items.")
        self.gather = FeatureGatherer(dataset, modalities)
        self.targets = targets
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.seed = seed
        self.bucket_batches = bucket_batches
        self.epoch = epoch
        self.lengths = np.array([len(s) for s in self.inputs])

    @property
    def steps_per_epoch(self) -> int:
        return -(-len(self.inputs) // self.batch_size)

    def batches(self, epoch: int):
        """Yields numpy `(inputs, {"logits": targets}, {"logits": weights})` for one epoch."""
        rng = np.random.default_rng([self.seed, epoch]) if self.shuffle else None
        for index in length_bucketed_batches(self.lengths, self.batch_size, rng, self.bucket_batches):
            ids, targets, weights = self._batch(index)
            yield self.gather(ids), {"logits": targets}, {"logits": weights}

    @property
    def num_examples(self) -> int:
        """Training examples (sequences with at least two items) per epoch."""
        return len(self.inputs)

    def _batch(self, index):
        ids = pad([self.inputs[i] for i in index])
        if self.targets == "all":
            targets = pad([self.outputs[i] for i in index], ids.shape[1])
            weights = (targets != 0).astype(np.float32)
            if self.context is not None:  # a window's first targets are context: trained on in another window
                skips = self.context[index]
                weights[np.arange(weights.shape[1])[None, :] < skips[:, None]] = 0.0
        else:
            targets = np.array([self.outputs[i][0] for i in index], np.int32)
            weights = np.ones(len(index), np.float32)
        return ids, targets, weights

    def replica_batches(self, epoch: int, replicas: int, which):
        """One epoch cut for `replicas` replicas training in sync: each batch of `batches(epoch)` is
        split into `replicas` contiguous slices of its rows, all padded to the whole batch's width;
        yields, for each batch, the slices of the replicas in `which` (in that order) as
        `(inputs, {"logits": targets}, {"logits": weights}, real, rows)`: `real` is 1.0 per row of the
        slice, `rows` the batch's number of sequences. A slice left empty (fewer sequences than
        replicas) holds a copy of the batch's first sequence with weight 0 and `real` 0.
        """
        rng = np.random.default_rng([self.seed, epoch]) if self.shuffle else None
        for index in length_bucketed_batches(self.lengths, self.batch_size, rng, self.bucket_batches):
            ids, targets, weights = self._batch(index)
            parts = np.array_split(np.arange(len(index)), replicas)
            for replica in which:
                rows, real = parts[replica], np.ones(len(parts[replica]), np.float32)
                if not len(rows):
                    rows, real = np.zeros(1, np.int64), np.zeros(1, np.float32)
                yield (self.gather(ids[rows]), {"logits": targets[rows]}, {"logits": weights[rows] * real[:, None]
                       if weights.ndim == 2 else weights[rows] * real}, real, np.int32(len(index)))

    def replica_dataset(self, epoch: int, context) -> tf.data.Dataset:
        """The tf.data input of one worker for `replica_batches` (a `distribute_datasets_from_function`
        function: `context` is the worker's `tf.distribute.InputContext`; its replicas are numbered
        `input_pipeline_id * local ... + local - 1`)."""
        local = context.num_replicas_in_sync // context.num_input_pipelines
        which = range(context.input_pipeline_id * local, (context.input_pipeline_id + 1) * local)
        signature = self._signature() + (tf.TensorSpec((None,), tf.float32), tf.TensorSpec((), tf.int32))
        data = tf.data.Dataset.from_generator(
            lambda: self.replica_batches(epoch, context.num_replicas_in_sync, which), output_signature=signature)
        return data.prefetch(tf.data.AUTOTUNE)

    def _signature(self):
        target_shape = (None, None) if self.targets == "all" else (None,)
        return (
            self.gather.signature(),
            {"logits": tf.TensorSpec(target_shape, tf.int32)},
            {"logits": tf.TensorSpec(target_shape, tf.float32)},
        )

    def _generator(self):
        epoch = self.epoch
        self.epoch += 1
        yield from self.batches(epoch)

    def tf_dataset(self) -> tf.data.Dataset:
        data = tf.data.Dataset.from_generator(self._generator, output_signature=self._signature())
        # A known length lets Keras size its progress bar and end each epoch without a warning.
        data = data.apply(tf.data.experimental.assert_cardinality(self.steps_per_epoch))
        return data.prefetch(tf.data.AUTOTUNE)


class RankingInput:
    """Evaluation batches in user order: each user's history (last `max_length` items) and targets.

    Yields `(inputs, targets)` where `targets` is int32 `(batch, max targets in batch)`, 0-padded.
    """

    def __init__(self, dataset, histories, targets, *, modalities=None, batch_size=256, max_length=100):
        if len(histories) != len(targets):
            raise ValueError(f"{len(histories)} histories but {len(targets)} target lists.")
        self.histories = [np.asarray(h, np.int32)[-max_length:] for h in histories]
        self.targets = [np.asarray(t, np.int32) for t in targets]
        self.gather = FeatureGatherer(dataset, modalities)
        self.batch_size = batch_size

    def batches(self):
        for start in range(0, len(self.histories), self.batch_size):
            stop = start + self.batch_size
            yield self.gather(pad(self.histories[start:stop])), pad(self.targets[start:stop])

    def tf_dataset(self) -> tf.data.Dataset:
        signature = (self.gather.signature(), tf.TensorSpec((None, None), tf.int32))
        data = tf.data.Dataset.from_generator(self.batches, output_signature=signature)
        data = data.apply(tf.data.experimental.assert_cardinality(-(-len(self.histories) // self.batch_size)))
        return data.prefetch(tf.data.AUTOTUNE)
