"""The REST API: TF Serving's URLs and JSON as a WSGI app, run by waitress from its own thread.

`GET /v1/models/NAME[/versions/N|/labels/L]` (status), `GET .../metadata` (the SignatureDefs),
`POST .../NAME[/versions/N|/labels/L]:predict` with `{"signature_name"?, "instances": [...]}`
(rows) -> `{"predictions": ...}` or `{"inputs": {...}}` (columns) -> `{"outputs": ...}`; errors are
`{"error": "..."}` with 400 (invalid request), 404 (unknown model, version, label or path), 405,
413 (body over `--max_body_bytes`, or more work than `--max_rows`, `--max_rows_times_k` or
`--max_elements` allow), 503 (busy, see Memory below) or 500 (its details are logged, not sent).

Connections: at most `connection_limit` clients at once; when the limit is reached, a new client
makes room by closing the idle keep-alive connection unused the longest, else the partial request
that started the longest ago (requests being answered are never closed). Idle connections close
after `idle_timeout` s, and a request that has not fully arrived within `request_timeout` s of its
first byte is closed, so slow or stalled clients cannot hold the server.

Memory: parsing JSON takes many times the body's size (15 MiB of `[],` is 5 million lists, about
350 MB), so the bodies of the predict requests handled at once are bounded (`max_inflight_body_bytes`,
twice `max_body_bytes` by default; a body alone always goes on). A request that does not fit waits
up to `busy_wait_seconds` (30 s) and is then answered 503 with `Retry-After`.
"""

from __future__ import annotations

import json
import re
import threading
import time

import grpc
from waitress import wasyncore
from waitress.adjustments import Adjustments
from waitress.channel import HTTPChannel
from waitress.server import TcpWSGIServer
from waitress.task import ThreadedTaskDispatcher

from mfn4rec_tf.serve._common import (
    _NAME,
    DEFAULT_MAX_BODY_BYTES,
    DEFAULT_SIGNATURE,
    INTERNAL_ERROR_MESSAGE,
    LOG,
    ByteBudget,
    Limits,
    ServingError,
    _invalid,
    _not_found,
    _version_number,
)
from mfn4rec_tf.serve.codec import (
    _json_text,
    columns_response,
    inputs_to_arrays,
    instances_to_arrays,
    metadata_json,
    rows_response,
    status_json,
)

_SPEC = rf"/v1/models/(?P<name>{_NAME})(?:/versions/(?P<version>[0-9]+)|/labels/(?P<label>{_NAME}))?"
_GET_PATH = re.compile(_SPEC + r"(?P<metadata>/metadata)?")
_POST_PATH = re.compile(_SPEC + r":(?P<verb>[A-Za-z_]+)")


class RestApi:
    """The WSGI application of the REST API (TF Serving's URLs and JSON).

    Args:
        manager: the `ModelManager` it serves.
        max_body_bytes: larger request bodies are refused with 413.
        limits: the per-request `Limits` (rows, rows x k, elements); more is refused with 413.
        max_inflight_body_bytes: the bodies of the predict requests handled at once, in bytes
            (None: twice `max_body_bytes`); parsing JSON takes many times a body's size.
        busy_wait_seconds: how long a request waits for room under `max_inflight_body_bytes`
            before it is answered 503.
        inflight: a `ByteBudget` shared with the gRPC service (then `max_inflight_body_bytes` is unused).
    """

    def __init__(self, manager, max_body_bytes=DEFAULT_MAX_BODY_BYTES, limits=None, max_inflight_body_bytes=None,
                 busy_wait_seconds=30.0, inflight=None):
        self.manager = manager
        self.max_body_bytes = max_body_bytes
        self.limits = limits or Limits()
        self.inflight = inflight or ByteBudget(max_inflight_body_bytes or 2 * max_body_bytes)
        self.busy_wait_seconds = busy_wait_seconds

    def __call__(self, environ, start_response):
        headers = []
        try:
            status, payload = self._dispatch(environ)
        except ServingError as error:
            status, payload, headers = error.http_status, {"error": error.message}, error.headers
        except Exception:  # answered as 500 without the exception's text, logged with its traceback
            LOG.exception("Internal error on %s %.200s", environ.get("REQUEST_METHOD"), environ.get("PATH_INFO"))
            status, payload = "500 Internal Server Error", {"error": INTERNAL_ERROR_MESSAGE}
        body = json.dumps(payload, indent=None if "predictions" in payload or "outputs" in payload else 1).encode()
        start_response(status, [("Content-Type", "application/json"), ("Content-Length", str(len(body)))] + headers)
        return [body]

    def _dispatch(self, environ):
        method = environ.get("REQUEST_METHOD", "GET")
        path = environ.get("PATH_INFO", "")
        match = _GET_PATH.fullmatch(path)
        if match:
            if method != "GET":
                raise ServingError(grpc.StatusCode.INVALID_ARGUMENT, f"{method} is not allowed on {path}; use GET",
                                   "405 Method Not Allowed", [("Allow", "GET")])
            return self._get(match)
        match = _POST_PATH.fullmatch(path)
        if match:
            if method != "POST":
                raise ServingError(grpc.StatusCode.INVALID_ARGUMENT, f"{method} is not allowed on {path}; use POST",
                                   "405 Method Not Allowed", [("Allow", "POST")])
            if match["verb"] != "predict":
                raise _not_found(f"Unknown method :{match['verb']} in {path}; this server implements :predict "
                                 "(TF Serving's :classify and :regress take tf.Example signatures)")
            return self._predict_in_budget(match, environ)
        raise _not_found(f"Malformed request: {method} {path} (the API is /v1/models/NAME[/versions/N|/labels/L]"
                         "[/metadata] and POST /v1/models/NAME[/versions/N|/labels/L]:predict)")

    @staticmethod
    def _spec(match):
        version = None
        if match["version"]:
            version = _version_number(match["version"])
            if version is None:
                text = match["version"] if len(match["version"]) <= 30 else match["version"][:30] + "..."
                raise _not_found(f"Could not find version {text} of model {match['name']}: a version number is "
                                 "at most 2^63-1")
        return dict(name=match["name"], version=version, label=match["label"])

    def _get(self, match):
        spec = self._spec(match)
        if match["metadata"]:
            servable = self.manager.servable(**spec)
            return "200 OK", metadata_json(self.manager.metadata(servable))
        return "200 OK", status_json(self.manager.status(**spec))

    def _content_length(self, environ):
        try:
            length = int(environ.get("CONTENT_LENGTH") or 0)
        except ValueError:
            raise _invalid("Content-Length is not a number") from None
        if length < 0:
            raise _invalid("Content-Length is negative")
        if length > self.max_body_bytes:
            raise ServingError(grpc.StatusCode.INVALID_ARGUMENT,
                               f"Request body of {length} bytes is over the limit of {self.max_body_bytes} bytes "
                               "(--max_body_bytes)", "413 Payload Too Large")
        return length

    def _body(self, environ):
        length = self._content_length(environ)
        return environ["wsgi.input"].read(length) if length else b""

    def _predict_in_budget(self, match, environ):
        size = self._content_length(environ)
        if not self.inflight.acquire(size, self.busy_wait_seconds):
            raise ServingError(grpc.StatusCode.UNAVAILABLE,
                               f"The server is busy: request bodies of {self.inflight.used} bytes are being handled, "
                               f"and this one ({size} bytes) does not fit under {self.inflight.limit} "
                               "(--max_inflight_body_bytes); try again later", headers=[("Retry-After", "1")])
        try:
            return self._predict(match, self._body(environ))
        finally:
            self.inflight.release(size)

    def _predict(self, match, body):
        servable = self.manager.servable(**self._spec(match))
        if not body:
            raise _invalid("JSON Parse error: The document is empty")
        try:
            document = json.loads(body)
        except (ValueError, RecursionError) as error:  # UnicodeDecodeError is a ValueError
            raise _invalid(f"JSON Parse error: {error}") from None
        if not isinstance(document, dict):
            raise _invalid(f"JSON Value: {_json_text(document)} Is not object")
        signature_name = document.get("signature_name", DEFAULT_SIGNATURE)
        if not isinstance(signature_name, str):
            raise _invalid("'signature_name' key must be a string value.")
        signature = servable.signature(signature_name)
        if ("instances" in document) == ("inputs" in document):
            raise _invalid("Missing 'inputs' or 'instances' key" if "inputs" not in document else
                           "Not formatted correctly: expecting only one of 'inputs' or 'instances' keys to exist")
        if "instances" in document:
            arrays = instances_to_arrays(document["instances"], signature, self.limits)
            return "200 OK", rows_response(signature.run(arrays, self.limits))
        arrays = inputs_to_arrays(document["inputs"], signature, self.limits)
        return "200 OK", columns_response(signature.run(arrays, self.limits))


class _Channel(HTTPChannel):
    """waitress's HTTP channel, noting when the request it is reading began (for `request_timeout`)."""

    request_started = None

    def received(self, data):
        if self.request is None and data:
            self.request_started = time.monotonic()
        return super().received(data)


class _Server(TcpWSGIServer):
    """waitress's TCP server with the connection policy of this module's docstring."""

    channel_class = _Channel
    request_timeout = 60.0
    _overflow_logged = False

    def maintenance(self, now):
        super().maintenance(now)  # marks the channels idle for over `channel_timeout` for closing
        cutoff = time.monotonic() - self.request_timeout
        for channel in list(self.active_channels.values()):
            if (channel.request is not None and not channel.requests and channel.request_started is not None
                    and channel.request_started < cutoff and not channel.will_close):
                channel.will_close = True  # closed by the loop's next write pass
                LOG.info("Closed a REST connection from %s whose request did not arrive within %g s",
                         channel.addr[0] if channel.addr else "?", self.request_timeout)

    def _open_channels(self):
        return [channel for channel in self.active_channels.values() if not channel.will_close]

    @staticmethod
    def _evictable(channels):
        """Idle channels (unused the longest first), then partial requests (started the longest ago first)."""
        idle = [channel for channel in channels if not channel.requests and not channel.total_outbufs_len]
        return sorted(idle, key=lambda channel: (channel.request is not None, (channel.request_started or 0.0)
                                                 if channel.request is not None else channel.last_activity))

    def readable(self):
        now = time.time()
        if now >= self.next_channel_cleanup:
            self.next_channel_cleanup = now + self.adj.cleanup_interval
            self.maintenance(now)
        if not self.accepting:
            return False
        channels = self._open_channels()
        if len(channels) < self.connection_limit or self._evictable(channels):
            self._overflow_logged = False
            return True  # room, or room that a new client can make (see handle_accept)
        if not self._overflow_logged:
            LOG.warning("REST: %d connections, all answering requests (--rest_connection_limit); new clients wait",
                        len(channels))
            self._overflow_logged = True
        return False

    def handle_accept(self):
        known = set(self._map)
        super().handle_accept()
        channels = self._open_channels()
        excess = len(channels) - self.connection_limit
        if excess > 0:  # a new client came in at the limit: close the idle or slow ones to make room
            for channel in self._evictable([channel for channel in channels if channel._fileno in known])[:excess]:
                channel.will_close = True  # closed by the loop's next write pass


class _RestServer:
    """waitress serving a WSGI app from its own thread; `stop()` finishes the requests under way.

    Args:
        app: the WSGI app.
        host, port: the address to bind.
        threads: worker threads.
        max_body_bytes: the app's body limit (waitress refuses bodies over twice that itself).
        connection_limit: client connections at once (see the module docstring for what happens at the limit).
        idle_timeout: seconds before an idle keep-alive connection is closed.
        request_timeout: seconds for a request to arrive completely, from its first byte.
        cleanup_interval: seconds between the checks of the two timeouts.
        backlog: the listen backlog (connections the kernel queues before they are accepted).
    """

    def __init__(self, app, host, port, threads, max_body_bytes, connection_limit=200, idle_timeout=30,
                 request_timeout=60, cleanup_interval=1, backlog=1024):
        self._map = {}
        # waitress refuses bodies over its own limit with a plain-text 413 before the app sees them; the
        # app answers the ones between `max_body_bytes` and twice that with a JSON 413.
        adjustments = Adjustments(host=host, port=port, threads=threads, max_request_body_size=2 * max_body_bytes,
                                  ident="mfn4rec_tf.serve", connection_limit=connection_limit + 2,
                                  channel_timeout=idle_timeout, cleanup_interval=cleanup_interval, backlog=backlog,
                                  asyncore_use_poll=True)
        dispatcher = ThreadedTaskDispatcher()
        dispatcher.set_thread_count(threads)
        self._server = _Server(app, map=self._map, dispatcher=dispatcher, adj=adjustments,
                               sockinfo=adjustments.listen[0])
        self._server.connection_limit = connection_limit
        self._server.request_timeout = request_timeout
        self.port = int(self._server.effective_port)
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rest-api", daemon=True)

    def start(self):
        self._thread.start()

    def _loop(self, timeout):
        wasyncore.loop(timeout=timeout, map=self._map, count=1, use_poll=True)  # poll(): no FD_SETSIZE limit

    def _run(self):
        while not self._stopping.is_set():
            self._loop(0.2)
        wasyncore.dispatcher.close(self._server)  # stop accepting (the wake-up trigger stays open)
        drain = threading.Thread(target=self._server.task_dispatcher.shutdown, kwargs={"timeout": 10})
        drain.start()  # the workers finish their requests while this loop sends the answers
        while drain.is_alive():
            self._loop(0.05)
        deadline = time.monotonic() + 2.0
        while time.monotonic() < deadline and any(
                isinstance(channel, HTTPChannel) and channel.total_outbufs_len for channel in list(self._map.values())):
            self._loop(0.05)
        wasyncore.close_all(self._map, ignore_all=True)

    def stop(self):
        self._stopping.set()
        self._server.pull_trigger()
        self._thread.join()
