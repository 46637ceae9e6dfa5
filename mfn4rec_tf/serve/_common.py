"""What every module of the server shares: its logger, the constants and `ServingError`.

A `ServingError` carries the gRPC status code of a request that cannot be answered; the REST API
answers it with the HTTP status that TF Serving uses for that code.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from dataclasses import dataclass

import grpc

LOG = logging.getLogger("mfn4rec_tf.serve")

DEFAULT_SIGNATURE = "serving_default"
SERVE_TAG = "serve"
SIGNATURE_DEF_FIELD = "signature_def"
DEFAULT_MAX_BODY_BYTES = 16 * 1024 * 1024
DEFAULT_MAX_ROWS = 1024
DEFAULT_MAX_ROWS_TIMES_K = 100_000
DEFAULT_MAX_ELEMENTS = 1_000_000
MAX_RANK = 32  # NumPy arrays have at most 64 dimensions; no served signature needs more than a few
INT64_MAX = 2 ** 63 - 1
INTERNAL_ERROR_MESSAGE = "Internal error (the server logged the details)"
_VERSION_DIR = re.compile(r"[0-9]+")
_NAME = r"[^/:]+"
_HTTP_STATUS = {
    grpc.StatusCode.INVALID_ARGUMENT: "400 Bad Request",
    grpc.StatusCode.FAILED_PRECONDITION: "400 Bad Request",
    grpc.StatusCode.OUT_OF_RANGE: "400 Bad Request",
    grpc.StatusCode.NOT_FOUND: "404 Not Found",
    grpc.StatusCode.RESOURCE_EXHAUSTED: "429 Too Many Requests",
    grpc.StatusCode.UNIMPLEMENTED: "501 Not Implemented",
    grpc.StatusCode.UNAVAILABLE: "503 Service Unavailable",
    grpc.StatusCode.DEADLINE_EXCEEDED: "504 Gateway Timeout",
}
_GRPC_CODE = {code.value[0]: code for code in grpc.StatusCode}


class ServingError(Exception):
    """A request that cannot be answered: a gRPC status code, a message and, for REST, the HTTP status.

    Args:
        code: the `grpc.StatusCode` (INVALID_ARGUMENT, NOT_FOUND, INTERNAL, ...).
        message: what went wrong, naming the input, signature, model or version concerned.
        http_status: the REST status line; by default the one TF Serving uses for `code`.
        headers: extra REST response headers (e.g. `Allow` for 405).
    """

    def __init__(self, code, message, http_status=None, headers=()):
        super().__init__(message)
        self.code = code
        self.message = message
        self.http_status = http_status or _HTTP_STATUS.get(code, "500 Internal Server Error")
        self.headers = list(headers)


@dataclass(frozen=True)
class Limits:
    """The work one request may ask for; larger requests are refused before anything is allocated.

    Args:
        max_rows: the first dimension of any input (`--max_rows`).
        max_rows_times_k: rows x k, where k is a signature's scalar integer input named `k` (the
            `recommend` signature's), which sizes its outputs (`--max_rows_times_k`).
        max_elements: the elements of any one input tensor (`--max_elements`).
    """

    max_rows: int = DEFAULT_MAX_ROWS
    max_rows_times_k: int = DEFAULT_MAX_ROWS_TIMES_K
    max_elements: int = DEFAULT_MAX_ELEMENTS


class ByteBudget:
    """Bytes of request bodies (REST) and messages (gRPC) being handled at once.

    Parsing takes many times a request's size (JSON ~25x, a PredictRequest of tiny strings ~16x), so
    the server bounds the total: `acquire(n, timeout)` waits until `n` more bytes fit under `limit`
    (a request alone always fits) and returns False if they do not within `timeout` seconds.
    """

    def __init__(self, limit):
        self.limit = limit
        self.used = 0
        self._condition = threading.Condition()

    def acquire(self, size, timeout):
        deadline = time.monotonic() + timeout
        with self._condition:
            while self.used and self.used + size > self.limit:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._condition.wait(remaining)
            self.used += size
            return True

    def release(self, size):
        with self._condition:
            self.used -= size
            self._condition.notify_all()


def _too_large(message):
    """RESOURCE_EXHAUSTED for gRPC, 413 for REST: the request asks for more work than a limit allows."""
    return ServingError(grpc.StatusCode.RESOURCE_EXHAUSTED, message, "413 Payload Too Large")


def _version_number(text):
    """The version a directory name or URL segment of digits stands for; None unless it is 0..2^63-1."""
    if not _VERSION_DIR.fullmatch(text) or len(text.lstrip("0")) > len(str(INT64_MAX)):
        return None
    number = int(text)
    return number if number <= INT64_MAX else None


def _invalid(message):
    return ServingError(grpc.StatusCode.INVALID_ARGUMENT, message)


def _not_found(message):
    return ServingError(grpc.StatusCode.NOT_FOUND, message)

