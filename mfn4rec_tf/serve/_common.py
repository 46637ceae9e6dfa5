"""What every module of the server shares: its logger, the constants and `ServingError`.

A `ServingError` carries the gRPC status code of a request that cannot be answered; the REST API
answers it with the HTTP status that TF Serving uses for that code.
"""

from __future__ import annotations

import logging
import re

import grpc

LOG = logging.getLogger("mfn4rec_tf.serve")

DEFAULT_SIGNATURE = "serving_default"
SERVE_TAG = "serve"
SIGNATURE_DEF_FIELD = "signature_def"
DEFAULT_MAX_BODY_BYTES = 16 * 1024 * 1024
INT64_MAX = 2 ** 63 - 1
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

