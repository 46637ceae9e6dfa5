"""`ModelServer`: the REST and gRPC servers over one `ModelManager`, and the thread that polls it.

Both servers bind the same host; port 0 picks a free port (the startup log line names it).
`stop()` refuses new requests, finishes the ones under way and unloads the versions.
"""

from __future__ import annotations

import ipaddress
import socket
import threading
from concurrent import futures

import grpc
from tensorflow_serving.apis import (
    model_service_pb2_grpc,
    predict_pb2,
    prediction_service_pb2_grpc,
)

from mfn4rec_tf.serve._common import (
    DEFAULT_MAX_BODY_BYTES,
    DEFAULT_MAX_ELEMENTS,
    DEFAULT_MAX_ROWS,
    DEFAULT_MAX_ROWS_TIMES_K,
    LOG,
    ByteBudget,
    Limits,
)
from mfn4rec_tf.serve.grpc_services import ModelService, PredictionService
from mfn4rec_tf.serve.rest import RestApi, _RestServer


def _resolve_host(host):
    """The first IP address of `host` (both servers bind the same one; brackets removed for IPv6)."""
    host = host.strip("[]")
    try:
        return socket.getaddrinfo(host, None, type=socket.SOCK_STREAM)[0][4][0]
    except socket.gaierror as error:
        raise OSError(f"cannot resolve --host {host}: {error}") from None


def _warn_if_exposed(address):
    """Logs a warning (and returns True) when `address` is not a loopback address."""
    try:
        loopback = ipaddress.ip_address(address.split("%")[0]).is_loopback
    except ValueError:
        loopback = False
    if not loopback:
        LOG.warning("Serving on %s, which other machines can reach: this server has no TLS and no authentication. "
                    "Put a reverse proxy in front of it (e.g. nginx or Envoy terminating TLS and checking "
                    "credentials, forwarding to this server on 127.0.0.1), and keep these ports closed to the "
                    "network.", address)
    return not loopback


class ModelServer:
    """The REST and gRPC endpoints over one `ModelManager`, plus the thread that polls the base path.

    Args:
        manager: the model.
        host: the address both servers bind (127.0.0.1 by default: reachable from this machine only).
        rest_port: the REST port (0: a free one, see `rest_port` after `start()`).
        grpc_port: the gRPC port (0: a free one).
        poll_wait_seconds: seconds between polls of the base path; 0 polls once, at start.
        max_body_bytes: the largest request body (REST) or message (gRPC) accepted.
        rest_threads: waitress worker threads (requests answered at once).
        grpc_threads: gRPC worker threads.
        max_rows, max_rows_times_k, max_elements: the per-request `Limits` (REST 413, gRPC
            RESOURCE_EXHAUSTED beyond them).
        rest_connection_limit: REST client connections at once; at the limit, a new client closes
            the idle connection unused the longest, else the oldest partial request.
        rest_idle_timeout: seconds before an idle REST keep-alive connection is closed.
        rest_request_timeout: seconds for a REST request to arrive completely, from its first byte.
        rest_cleanup_interval: seconds between checks of the two REST timeouts.
        rest_backlog: the REST socket's listen backlog.
        grpc_max_concurrent_rpcs: gRPC calls at once, running or queued; more are RESOURCE_EXHAUSTED.
        max_inflight_body_bytes: REST predict bodies and gRPC Predict messages handled at once, in
            bytes (None: twice `max_body_bytes`); one that does not fit waits, then gets REST 503 or
            gRPC UNAVAILABLE.
        busy_wait_seconds: how long that wait lasts.

    A host that is not a loopback address logs a warning: neither server has TLS or authentication.

    Example:
        server = ModelServer(ModelManager("mfn4rec", "saved_models/mfn4rec"), rest_port=0, grpc_port=0)
        server.start(); ...; server.stop()
    """

    def __init__(self, manager, host="127.0.0.1", rest_port=8501, grpc_port=8500, poll_wait_seconds=1.0,
                 max_body_bytes=DEFAULT_MAX_BODY_BYTES, rest_threads=16, grpc_threads=16, max_rows=DEFAULT_MAX_ROWS,
                 max_rows_times_k=DEFAULT_MAX_ROWS_TIMES_K, max_elements=DEFAULT_MAX_ELEMENTS,
                 rest_connection_limit=200, rest_idle_timeout=30, rest_request_timeout=60, rest_cleanup_interval=1,
                 rest_backlog=1024, grpc_max_concurrent_rpcs=64, max_inflight_body_bytes=None,
                 busy_wait_seconds=30.0):
        self.manager = manager
        self.host = host
        self.rest_port = rest_port
        self.grpc_port = grpc_port
        self.poll_wait_seconds = poll_wait_seconds
        self.max_body_bytes = max_body_bytes
        self.rest_threads = rest_threads
        self.grpc_threads = grpc_threads
        self.limits = Limits(max_rows, max_rows_times_k, max_elements)
        self.rest_options = {"connection_limit": rest_connection_limit, "idle_timeout": rest_idle_timeout,
                             "request_timeout": rest_request_timeout, "cleanup_interval": rest_cleanup_interval,
                             "backlog": rest_backlog}
        self.grpc_max_concurrent_rpcs = grpc_max_concurrent_rpcs
        self.inflight = ByteBudget(max_inflight_body_bytes or 2 * max_body_bytes)
        self.busy_wait_seconds = busy_wait_seconds
        self._stopping = threading.Event()
        self._poller = None
        self._rest = None
        self._grpc = None

    def start(self):
        """Loads the current versions, then opens both ports; returns once they accept requests.

        Raises:
            OSError: a port cannot be bound or the host not resolved.
        """
        address = _resolve_host(self.host)
        _warn_if_exposed(address)
        self.manager.poll()
        self._grpc = grpc.server(
            futures.ThreadPoolExecutor(max_workers=self.grpc_threads, thread_name_prefix="grpc"),
            options=[("grpc.max_receive_message_length", self.max_body_bytes), ("grpc.so_reuseport", 0)],
            maximum_concurrent_rpcs=self.grpc_max_concurrent_rpcs)
        prediction = PredictionService(self.manager, self.limits, self.inflight, self.busy_wait_seconds)
        # Predict takes the serialized request, parsed once it fits in the in-flight budget; this handler
        # comes first, so the generated one below serves the service's other methods
        predict = grpc.unary_unary_rpc_method_handler(
            prediction.predict_serialized, response_serializer=predict_pb2.PredictResponse.SerializeToString)
        handler = grpc.method_handlers_generic_handler("tensorflow.serving.PredictionService", {"Predict": predict})
        self._grpc.add_generic_rpc_handlers((handler,))
        prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(prediction, self._grpc)
        model_service_pb2_grpc.add_ModelServiceServicer_to_server(ModelService(self.manager), self._grpc)
        grpc_address = f"[{address}]:{self.grpc_port}" if ":" in address else f"{address}:{self.grpc_port}"
        try:
            self.grpc_port = self._grpc.add_insecure_port(grpc_address)
        except RuntimeError as error:
            raise OSError(f"cannot bind the gRPC port {grpc_address}: {error}") from None
        if not self.grpc_port:
            raise OSError(f"cannot bind the gRPC port {grpc_address}")
        try:
            api = RestApi(self.manager, self.max_body_bytes, self.limits, busy_wait_seconds=self.busy_wait_seconds,
                          inflight=self.inflight)
            self._rest = _RestServer(api, address, self.rest_port, self.rest_threads, self.max_body_bytes,
                                     **self.rest_options)
        except OSError as error:
            self._grpc.stop(None)
            raise OSError(f"cannot bind the REST port {address}:{self.rest_port}: {error}") from None
        self.rest_port = self._rest.port
        self._grpc.start()
        self._rest.start()
        if self.poll_wait_seconds > 0:
            self._poller = threading.Thread(target=self._poll_loop, name="version-poller", daemon=True)
            self._poller.start()
        host = f"[{address}]" if ":" in address else address
        LOG.info("Serving model %s (version %s) from %s: REST at http://%s:%d/v1/models/%s, gRPC at %s:%d",
                 self.manager.name, ", ".join(map(str, self.manager.loaded_versions)) or "none yet",
                 self.manager.base_path, host, self.rest_port, self.manager.name, host, self.grpc_port)
        return self

    def _poll_loop(self):
        while not self._stopping.wait(self.poll_wait_seconds):
            try:
                self.manager.poll()
            except Exception:  # a failed poll is logged; the next one may succeed
                LOG.exception("Polling %s failed", self.manager.base_path)

    def stop(self, grace=5.0):
        """Stops polling, finishes the requests under way (up to `grace` s for gRPC), unloads."""
        self._stopping.set()
        grpc_stopped = self._grpc.stop(grace) if self._grpc is not None else None  # refuses new calls at once
        if self._rest is not None:
            self._rest.stop()
        if grpc_stopped is not None:
            grpc_stopped.wait()
        if self._poller is not None:
            self._poller.join()
        self.manager.unload_all()
        LOG.info("Stopped serving model %s", self.manager.name)

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc_info):
        self.stop()
