"""The command line, `python -m mfn4rec_tf.serve` (flags named as TF Serving's `tensorflow_model_server`).

SIGTERM or SIGINT stops both servers (requests under way are finished) and the command exits with
status 0; a port that cannot be bound exits with status 2.
"""

from __future__ import annotations

import argparse
import logging
import re
import signal
import sys
import threading
from pathlib import Path

from mfn4rec_tf.serve._common import (
    _NAME,
    DEFAULT_MAX_BODY_BYTES,
    DEFAULT_MAX_ELEMENTS,
    DEFAULT_MAX_ROWS,
    DEFAULT_MAX_ROWS_TIMES_K,
    LOG,
    _version_number,
)
from mfn4rec_tf.serve.batching import DEFAULT_MAX_BATCH_SIZE, BatchingOptions
from mfn4rec_tf.serve.server import ModelServer
from mfn4rec_tf.serve.versions import ModelManager


def _label(text):
    label, sep, version = text.partition("=")
    number = _version_number(version)
    if not sep or not label or not re.fullmatch(_NAME, label) or number is None:
        raise argparse.ArgumentTypeError(f"expected LABEL=VERSION (e.g. stable=3; VERSION 0..2^63-1), got {text!r}")
    return label, number


def _checked(convert, valid, expected):
    """An argparse type: `convert(text)`, which `valid(value)` must accept; else "expected ..."."""

    def parse(text):
        try:
            value = convert(text)
        except ValueError:
            value = None
        if value is None or not valid(value):  # `valid` is False for NaN too
            raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}")
        return value

    return parse


_port = _checked(int, lambda port: 0 <= port <= 65535, "a port number 0-65535")
_positive_int = _checked(int, lambda value: value >= 1, "a positive integer")
_seconds = _checked(float, lambda value: value >= 0, "seconds >= 0")


def build_parser():
    parser = argparse.ArgumentParser(
        prog="python -m mfn4rec_tf.serve",
        description="Serve the versions of a SavedModel over TensorFlow Serving's REST and gRPC APIs.")
    parser.add_argument("--model_base_path", required=True,
                        help="directory of integer-named version directories (e.g. saved_models/NAME)")
    parser.add_argument("--model_name", help="model name in URLs and model specs (default: the base path's name)")
    parser.add_argument("--rest_api_port", type=_port, default=8501,
                        help="REST port; 0 picks a free one (default: %(default)s)")
    parser.add_argument("--port", type=_port, default=8500, help="gRPC port; 0 picks a free one (default: %(default)s)")
    parser.add_argument("--host", default="127.0.0.1",
                        help="address to bind; 0.0.0.0 exposes the server to the network (default: %(default)s)")
    parser.add_argument("--file_system_poll_wait_seconds", type=_seconds, default=1.0,
                        help="seconds between polls for new versions; 0 polls once, at start (default: %(default)s)")
    parser.add_argument("--num_versions", type=_positive_int, default=1,
                        help="how many of the highest versions to serve (default: %(default)s)")
    parser.add_argument("--version_label", type=_label, action="append", default=[], metavar="LABEL=VERSION",
                        help="a version label, /v1/models/NAME/labels/LABEL (repeatable; default: none)")
    parser.add_argument("--max_body_bytes", type=_positive_int, default=DEFAULT_MAX_BODY_BYTES,
                        help="largest REST request body / gRPC message accepted (default: %(default)s)")
    parser.add_argument("--max_inflight_body_bytes", type=_positive_int, default=None,
                        help="REST predict bodies and gRPC Predict messages handled at once, in bytes (parsing "
                             "takes many times a request's size); one that does not fit waits up to 30 s, then "
                             "gets REST 503 / gRPC UNAVAILABLE (default: twice --max_body_bytes)")
    parser.add_argument("--rest_api_num_threads", type=_positive_int, default=16,
                        help="REST worker threads (default: %(default)s)")
    parser.add_argument("--grpc_max_threads", type=_positive_int, default=16,
                        help="gRPC worker threads (default: %(default)s)")
    parser.add_argument("--grpc_max_concurrent_rpcs", type=_positive_int, default=64,
                        help="gRPC calls at once, running or queued; more get RESOURCE_EXHAUSTED "
                             "(default: %(default)s)")
    limits = parser.add_argument_group(
        "per-request limits", "a request over one is refused before it is read into tensors: REST 413, "
        "gRPC RESOURCE_EXHAUSTED, with a message naming the flag")
    limits.add_argument("--max_rows", "--max-rows", type=_positive_int, default=DEFAULT_MAX_ROWS,
                        help="rows (the first dimension of any input) in one request (default: %(default)s)")
    limits.add_argument("--max_rows_times_k", "--max-rows-times-k", type=_positive_int,
                        default=DEFAULT_MAX_ROWS_TIMES_K,
                        help="rows x k, for a signature with a scalar integer input named k, such as recommend "
                             "(default: %(default)s)")
    limits.add_argument("--max_elements", "--max-elements", type=_positive_int, default=DEFAULT_MAX_ELEMENTS,
                        help="elements of any one input tensor (default: %(default)s)")
    rest = parser.add_argument_group(
        "REST connections", "at the connection limit a new client closes the idle connection unused the "
        "longest, else the oldest partial request; requests being answered are never closed")
    rest.add_argument("--rest_connection_limit", type=_positive_int, default=200,
                      help="REST client connections at once (default: %(default)s)")
    rest.add_argument("--rest_idle_timeout", type=_positive_int, default=30,
                      help="seconds before an idle keep-alive connection is closed (default: %(default)s)")
    rest.add_argument("--rest_request_timeout", type=_positive_int, default=60,
                      help="seconds for a request (headers and body) to arrive, from its first byte; slower "
                           "ones are closed (default: %(default)s)")
    rest.add_argument("--rest_cleanup_interval", type=_positive_int, default=1,
                      help="seconds between checks of the two timeouts (default: %(default)s)")
    rest.add_argument("--rest_backlog", type=_positive_int, default=1024,
                      help="listen backlog: connections the kernel queues (default: %(default)s)")
    threads = parser.add_argument_group(
        "TensorFlow threads", "as TF Serving's flags of the same names; set before any model is loaded")
    threads.add_argument("--tensorflow_intra_op_parallelism", type=int, default=0,
                         help="threads one op may use (matrix products, top-k); 0: TensorFlow picks "
                              "(default: %(default)s)")
    threads.add_argument("--tensorflow_inter_op_parallelism", type=int, default=0,
                         help="threads that run a request's independent ops; 0: TensorFlow picks; negative: every "
                              "op runs in the thread of its request, no hand-off to a pool (see README, Serving "
                              "latency; default: %(default)s)")
    batching = parser.add_argument_group(
        "batching", "concurrent requests to one signature run as one model call: a request that finds the "
        "signature idle runs at once; those arriving meanwhile share the next call (no batch timeout)")
    batching.add_argument("--enable_batching", action="store_true", help="merge concurrent requests (default: off)")
    batching.add_argument("--max_batch_size", type=_positive_int, default=DEFAULT_MAX_BATCH_SIZE,
                          help="most rows in one merged call (default: %(default)s)")
    batching.add_argument("--pad_variable_length_inputs", action="store_true",
                          help="merge requests whose inputs differ in later dimensions, padding strings with \"\" "
                               "and numbers with 0 (right for this package's exports; default: off)")
    return parser


def _set_threads(intra, inter):
    """TensorFlow's thread pools, as `--tensorflow_{intra,inter}_op_parallelism` say (0 leaves TensorFlow's
    choice). They can only be set before TensorFlow runs its first op, which is why this comes first."""
    if not intra and not inter:
        return
    import tensorflow as tf

    if intra:
        tf.config.threading.set_intra_op_parallelism_threads(intra)
    if inter:
        tf.config.threading.set_inter_op_parallelism_threads(inter)
    LOG.info("TensorFlow threads: intra-op %s, inter-op %s", intra or "auto", inter or "auto")


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    base = Path(args.model_base_path)
    if not base.is_dir():
        parser.error(f"--model_base_path {base} is not a directory")
    name = args.model_name if args.model_name is not None else base.resolve().name
    if not re.fullmatch(_NAME, name):
        parser.error(f"--model_name {name!r} must be non-empty, without '/' or ':'")
    labels = dict(args.version_label)
    if len(labels) != len(args.version_label):
        parser.error("--version_label: a label is given twice")
    if args.tensorflow_intra_op_parallelism < 0:
        parser.error("--tensorflow_intra_op_parallelism must be 0 or more")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    try:
        _set_threads(args.tensorflow_intra_op_parallelism, args.tensorflow_inter_op_parallelism)
    except RuntimeError as error:  # TensorFlow already ran in this process (main called from other code)
        parser.error(f"--tensorflow_*_op_parallelism: {error}")

    stop = threading.Event()
    received = []

    def on_signal(signum, _frame):
        received.append(signal.Signals(signum).name)
        stop.set()

    previous = {signum: signal.signal(signum, on_signal) for signum in (signal.SIGTERM, signal.SIGINT)}
    batching = (BatchingOptions(args.max_batch_size, args.pad_variable_length_inputs) if args.enable_batching
                else None)
    server = ModelServer(ModelManager(name, base, args.num_versions, labels, batching=batching), host=args.host,
                         rest_port=args.rest_api_port, grpc_port=args.port,
                         poll_wait_seconds=args.file_system_poll_wait_seconds, max_body_bytes=args.max_body_bytes,
                         rest_threads=args.rest_api_num_threads, grpc_threads=args.grpc_max_threads,
                         max_rows=args.max_rows, max_rows_times_k=args.max_rows_times_k,
                         max_elements=args.max_elements, rest_connection_limit=args.rest_connection_limit,
                         rest_idle_timeout=args.rest_idle_timeout, rest_request_timeout=args.rest_request_timeout,
                         rest_cleanup_interval=args.rest_cleanup_interval, rest_backlog=args.rest_backlog,
                         grpc_max_concurrent_rpcs=args.grpc_max_concurrent_rpcs,
                         max_inflight_body_bytes=args.max_inflight_body_bytes)
    try:
        try:
            server.start()
        except OSError as error:
            print(f"error: {error}", file=sys.stderr)
            return 2
        while not stop.wait(1.0):
            pass
        LOG.info("Received %s: stopping", received[0])
        server.stop()
        return 0
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
