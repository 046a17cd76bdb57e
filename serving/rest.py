"""TF Serving's REST API (``/v1/models/...``) and the Prometheus metrics page, on http.server."""

from __future__ import annotations

import contextlib
import json
import logging
import re
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from medflow.core.compat import message_to_dict
from medflow.serving import inference, rest_json
from medflow.serving.errors import ServingConfigError, ServingStatus, invalid
from medflow.serving.manager import ModelManager
from medflow.serving.metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE
from medflow.serving.profiler import traceme

log = logging.getLogger(__name__)

METRICS_PATH = "/monitoring/prometheus/metrics"
_DRAIN_FACTOR = 4  # oversize bodies up to this many times the limit are read and dropped
# Idle keep-alive connections are closed after this long (each holds a thread).
IDLE_TIMEOUT_S = 60.0
# The bodies of all requests in flight, together, take at most this many times one body's limit.
BODY_BUDGET_FACTOR = 2
_ROUTE = re.compile(
    r"^/v1/models/(?P<name>[^/:]+)"
    r"(?:/versions/(?P<version>\d+)|/labels/(?P<label>[^/:]+))?"
    r"(?:(?P<meta>/metadata)|:(?P<verb>predict|classify|regress))?/?$"
)


class RestApp:
    """Routes REST requests to :mod:`serving.inference` and renders TF Serving's JSON."""

    def __init__(
        self,
        manager: ModelManager,
        metrics_path: str | None = METRICS_PATH,
        timeout_s: float | None = None,
    ) -> None:
        self.manager = manager
        self.metrics_path = metrics_path
        self.timeout_s = timeout_s
        self._pool = ThreadPoolExecutor(32, "rest-call") if timeout_s else None

    def handle(self, method: str, path: str, body: bytes) -> tuple[int, bytes, str]:
        """(HTTP status, body, content type) for one request; errors are ``{"error": ...}``.
        With a timeout, a request not answered in time gets 504 (DEADLINE_EXCEEDED)."""
        if self._pool is None:
            return self._handle(method, path, body)
        future = self._pool.submit(self._handle, method, path, body)
        try:
            return future.result(timeout=self.timeout_s)
        except FutureTimeout:
            return _error(504, "Deadline Exceeded")

    def _handle(self, method: str, path: str, body: bytes) -> tuple[int, bytes, str]:
        path = path.split("?", 1)[0]
        if method == "GET" and self.metrics_path and path == self.metrics_path:
            return 200, self.manager.metrics.render().encode(), METRICS_CONTENT_TYPE
        if path.rstrip("/") == "/v1/models" and method == "GET":
            return _error(400, "Missing model name in request.")
        match = _ROUTE.match(path)
        verb = match and match["verb"]
        if match and match["version"] and int(match["version"]) >= 2**63:
            return _error(400, f"Failed to convert version: {match['version']} to numeric.")
        if not match or (method == "POST") != bool(verb):
            # TF Serving: a /v1/ path it cannot route is INVALID_ARGUMENT (400); other paths
            # have no handler (404).
            status = 400 if path.startswith("/v1/") else 404
            return _error(status, f"Malformed request: {method} {path}")
        started = time.perf_counter()
        status = "OK"
        try:
            with traceme(f"HttpRestApiHandler::{match['verb'] or 'get'}"):
                doc = self._dispatch(match, body)
            return 200, json.dumps(doc).encode(), "application/json"
        except rest_json.MalformedJson as exc:
            status = "INVALID_ARGUMENT"
            return _error(400, str(exc))
        except RecursionError:  # nesting the bracket check cannot see (e.g. strings between)
            status = "INVALID_ARGUMENT"
            return _error(400, "JSON Parse error: nesting is too deep")
        except ServingStatus as exc:
            status = exc.code.name
            return _error(exc.http_status, exc.message)
        except Exception as exc:  # never let one request take the server down
            status = "INTERNAL"
            log.exception("REST %s %s failed", method, path)
            return _error(500, f"internal error: {exc}")
        finally:
            api = verb or ("get_model_metadata" if match["meta"] else "get_model_status")
            self.manager.observe_request(
                model=match["name"],
                api=api,
                entrypoint="REST",
                status=status,
                seconds=time.perf_counter() - started,
            )

    def _dispatch(self, match: re.Match, body: bytes) -> dict:
        from tensorflow_serving.apis import (
            classification_pb2,
            get_model_metadata_pb2,
            get_model_status_pb2,
            regression_pb2,
        )

        def fill(spec, signature_name: str = "") -> None:
            spec.name = match["name"]
            if match["version"]:
                spec.version.value = int(match["version"])
            if match["label"]:
                spec.version_label = match["label"]
            spec.signature_name = signature_name

        verb = match["verb"]
        if verb is None and not match["meta"]:
            request = get_model_status_pb2.GetModelStatusRequest()
            fill(request.model_spec)
            return message_to_dict(inference.model_status(self.manager, request))
        if match["meta"]:
            request = get_model_metadata_pb2.GetModelMetadataRequest(
                metadata_field=["signature_def"]
            )
            fill(request.model_spec)
            response = inference.model_metadata(self.manager, request)
            sig_map = get_model_metadata_pb2.SignatureDefMap()
            response.metadata["signature_def"].Unpack(sig_map)
            return {
                "model_spec": message_to_dict(response.model_spec),
                "metadata": {"signature_def": message_to_dict(sig_map)},
            }
        doc = rest_json.parse_body(body)
        signature_name = doc.get("signature_name", "")
        if not isinstance(signature_name, str):
            raise invalid("'signature_name' must be a string")
        if verb == "predict":
            return self._predict(match, doc, signature_name)
        cls = (
            classification_pb2.ClassificationRequest
            if verb == "classify"
            else regression_pb2.RegressionRequest
        )
        request = cls()
        fill(request.model_spec, signature_name)
        request.input.CopyFrom(rest_json.examples_input(doc))
        if verb == "classify":
            result = inference.classify(self.manager, request).result
            rows = [[[c.label, c.score] for c in r.classes] for r in result.classifications]
            return {"results": rows}
        result = inference.regress(self.manager, request).result
        return {"results": [r.value for r in result.regressions]}

    def _predict(self, match: re.Match, doc: dict, signature_name: str) -> dict:
        version = int(match["version"]) if match["version"] else None
        loaded = self.manager.resolve(match["name"], version, match["label"])
        key, sig = loaded.signature(signature_name)
        inputs, row_format = rest_json.request_inputs(doc, sig, key)
        outputs = loaded.run(key, inputs)
        return rest_json.response_body(outputs, row_format)


def _error(status: int, message: str) -> tuple[int, bytes, str]:
    return status, json.dumps({"error": message}).encode(), "application/json"


class _BodyBudget:
    """Bytes of request bodies being read or handled at once, bounded: a request whose body
    would take the total over ``limit`` waits for others to finish, so a burst of large
    bodies cannot take the server's memory."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.in_flight = 0
        self.peak = 0
        self._cond = threading.Condition()

    @contextlib.contextmanager
    def hold(self, n: int):
        n = min(n, self.limit)  # one body alone may always go (its own limit applies)
        with self._cond:
            self._cond.wait_for(lambda: self.in_flight + n <= self.limit)
            self.in_flight += n
            self.peak = max(self.peak, self.in_flight)
        try:
            yield
        finally:
            with self._cond:
                self.in_flight -= n
                self._cond.notify_all()


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive: clients reuse connections
    server_version = "medflow-serving"
    # Headers and body leave in separate writes: with Nagle on, the body waits for the
    # client's delayed ACK (~40 ms per request on Linux).
    disable_nagle_algorithm = True

    def do_GET(self) -> None:  # noqa: N802 (http.server API)
        self._serve("GET", b"")

    def handle_expect_100(self) -> bool:
        # A client that asks first is told "too large" before it sends the body.
        if self._too_large(self.headers.get("Content-Length", "")):
            self._refuse_oversize(drain=False)
            return False
        return super().handle_expect_100()

    def do_POST(self) -> None:  # noqa: N802
        length = self.headers.get("Content-Length")
        if length is None or not length.isdigit():
            self._send(*_error(411, "POST needs a Content-Length header"), close=True)
            return
        if self._too_large(length):
            self._refuse_oversize(drain=True)
            return
        with self.server.body_budget.hold(int(length)):
            self._serve("POST", self.rfile.read(int(length)))

    def _too_large(self, length: str) -> bool:
        return length.isdigit() and int(length) > self.server.max_body_bytes

    def _refuse_oversize(self, drain: bool) -> None:
        length, limit = int(self.headers["Content-Length"]), self.server.max_body_bytes
        if drain and length <= _DRAIN_FACTOR * limit:
            # Read and drop the body so that the client, still sending, gets the answer
            # instead of a broken pipe; much larger bodies are cut off.
            remaining = length
            while remaining > 0:
                chunk = self.rfile.read(min(remaining, 2**16))
                if not chunk:
                    break
                remaining -= len(chunk)
        message = (
            f"request body of {length} bytes exceeds the limit of {limit} bytes "
            "(RESOURCE_EXHAUSTED); send fewer images per request"
        )
        self._send(*_error(413, message), close=True)

    def _serve(self, method: str, body: bytes) -> None:
        status, payload, ctype = self.server.app.handle(method, self.path, body)
        self._send(status, payload, ctype)

    def _send(self, status: int, payload: bytes, ctype: str, close: bool = False) -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(payload)))
        if close:
            self.send_header("Connection", "close")
            self.close_connection = True
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, format: str, *args) -> None:  # noqa: A002
        log.debug("%s " + format, self.address_string(), *args)


class _HTTPServer(ThreadingHTTPServer):
    # A listen backlog for bursts of new connections (the default of 5 resets them).
    request_queue_size = 1024


class _SharedPortServer(_HTTPServer):
    """Binds with SO_REUSEPORT: worker processes share the port, the kernel spreads the
    connections."""

    def server_bind(self) -> None:
        self.socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        super().server_bind()


class RestServer:
    """A ThreadingHTTPServer serving :class:`RestApp`; ``port`` 0 picks a free port.

    ``reuse_port``: share the port with other processes (``medflow serve --workers``).
    ``idle_timeout_s``: a connection that sends nothing for that long is closed (each open
    connection holds a thread). ``max_body_bytes`` bounds one request's body; the bodies
    of all requests in flight together are bounded by ``BODY_BUDGET_FACTOR`` times it.
    """

    def __init__(
        self,
        manager: ModelManager,
        host: str,
        port: int,
        *,
        max_body_bytes: int,
        reuse_port: bool = False,
        idle_timeout_s: float = IDLE_TIMEOUT_S,
        metrics_path: str | None = METRICS_PATH,
        timeout_s: float | None = None,
    ) -> None:
        server_class = _SharedPortServer if reuse_port else _HTTPServer
        handler = type("_Handler", (_Handler,), {"timeout": idle_timeout_s})
        try:
            self._httpd = server_class((host, port), handler)
        except OSError as exc:
            raise ServingConfigError(
                f"cannot bind REST port {host}:{port}: {exc}; pick another --rest-port"
            ) from exc
        self._httpd.daemon_threads = True
        self._httpd.app = RestApp(manager, metrics_path, timeout_s)
        self._httpd.max_body_bytes = max_body_bytes
        self._httpd.body_budget = _BodyBudget(BODY_BUDGET_FACTOR * max_body_bytes)
        self.port = self._httpd.server_address[1]
        self._thread = threading.Thread(target=self._httpd.serve_forever, name="rest", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=10)
