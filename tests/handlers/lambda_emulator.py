"""API Gateway (REST, STREAM transfer mode) -> Lambda Runtime API -> the proxy's runtime client, on localhost.

The path a streamed request takes in AWS, with every hop but the proxy's own code emulated:
- `RuntimeApiServer` speaks Lambda's Runtime API: `GET /invocation/next` hands out events, `POST
  /invocation/{id}/response` takes a chunked, streaming-mode body (and its error trailers), `POST
  /invocation/{id}/error` takes a failure. Each response chunk is handed on the moment it arrives.
- `GatewayServer` is the API Gateway side an HTTP client talks to: it turns each request into a REST
  proxy-integration event, invokes through the Runtime API, waits for the metadata prelude (JSON, then
  eight NUL bytes), sends its status and headers, then relays body bytes as they come.
- The proxy's real `inference_proxy.runtime.serve_one` loop runs in a thread against the Runtime API with
  the real `handler.stream_handler`.
"""

from __future__ import annotations

import itertools
import json
import queue
import re
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from lambda_handlers.inference_proxy import runtime

from .events import rest_event

PRELUDE_DELIMITER = b"\0" * 8
_END = object()
API_STAGE = "api"
#: The REST API's resources, as API Gateway matches them (path pattern -> resource, path parameter names).
RESOURCES = [
    (re.compile(r"^/v1/models/(?P<name>[^/]+)/predict$"), "/v1/models/{name}/predict"),
    (re.compile(r"^/v1/models/(?P<name>[^/]+)$"), "/v1/models/{name}"),
    (re.compile(r"^/v1/models$"), "/v1/models"),
    (re.compile(r"^/v1/chat/completions$"), "/v1/chat/completions"),
]


class _Invocation:
    def __init__(self, event: dict) -> None:
        self.request_id = str(uuid.uuid4())
        self.event = event
        self.output: queue.Queue[Any] = queue.Queue()  # bytes pieces, then ("error"|"trailers", ...), then _END


class RuntimeApiServer(ThreadingHTTPServer):
    """Lambda's Runtime API, one function instance: invocations are served one at a time, in order."""

    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _RuntimeApiHandler)
        self.pending: queue.Queue[_Invocation] = queue.Queue()
        self.active: dict[str, _Invocation] = {}
        self.response_modes: list[str] = []
        self.init_errors: list[dict] = []

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.server_address[1]}"

    def invoke(self, event: dict) -> _Invocation:
        invocation = _Invocation(event)
        self.active[invocation.request_id] = invocation
        self.pending.put(invocation)
        return invocation


class _RuntimeApiHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: RuntimeApiServer

    def log_message(self, *_: Any) -> None:
        pass

    def do_GET(self) -> None:  # camelCase: http.server's naming
        assert self.path == f"/{runtime.API_VERSION}/runtime/invocation/next", self.path
        invocation = self.server.pending.get()
        body = json.dumps(invocation.event).encode()
        self.send_response(200)
        self.send_header("Lambda-Runtime-Aws-Request-Id", invocation.request_id)
        self.send_header("Lambda-Runtime-Deadline-Ms", "4102444800000")
        self.send_header(
            "Lambda-Runtime-Invoked-Function-Arn",
            "arn:aws:lambda:us-east-1:123456789012:function:acme-dev-inference-proxy",
        )
        self.send_header("Lambda-Runtime-Trace-Id", "Root=1-67891233-abcdef012345678912345678;Sampled=0")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_POST(self) -> None:
        match = re.fullmatch(rf"/{runtime.API_VERSION}/runtime/invocation/([^/]+)/(response|error)", self.path)
        if match is None:  # /runtime/init/error
            self.server.init_errors.append(json.loads(self._read_plain()))
            return self._accepted()
        invocation = self.server.active.pop(match.group(1))
        if match.group(2) == "error":
            invocation.output.put(("error", json.loads(self._read_plain())))
        else:
            self.server.response_modes.append(self.headers.get("Lambda-Runtime-Function-Response-Mode", ""))
            assert self.headers["Transfer-Encoding"] == "chunked"
            for piece in self._read_chunks(invocation):
                invocation.output.put(piece)
        invocation.output.put(_END)
        self._accepted()

    def _read_plain(self) -> bytes:
        return self.rfile.read(int(self.headers.get("Content-Length", "0")))

    def _read_chunks(self, invocation: _Invocation) -> Iterator[Any]:
        while True:
            size = int(self.rfile.readline().strip(), 16)
            if size == 0:
                break
            data = self.rfile.read(size)
            assert self.rfile.readline() == b"\r\n"
            yield data
        trailers = {}
        while (line := self.rfile.readline()) not in (b"\r\n", b""):
            name, _, value = line.decode().partition(":")
            trailers[name.strip()] = value.strip()
        if trailers:
            yield ("trailers", trailers)

    def _accepted(self) -> None:
        self.send_response(202)
        self.send_header("Content-Length", "0")
        self.end_headers()


class GatewayServer(ThreadingHTTPServer):
    """The REST API's stage, integration in STREAM transfer mode, at http://127.0.0.1:{port}/api."""

    daemon_threads = True

    def __init__(self, runtime_api: RuntimeApiServer) -> None:
        super().__init__(("127.0.0.1", 0), _GatewayHandler)
        self.runtime_api = runtime_api
        #: (request, invocation output) per call, and the moment each relayed piece left, for tests.
        self.trailers: list[dict] = []

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/{API_STAGE}/v1"


class _GatewayHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: GatewayServer

    def log_message(self, *_: Any) -> None:
        pass

    def do_GET(self) -> None:
        self._relay("GET")

    def do_POST(self) -> None:
        self._relay("POST")

    def _relay(self, method: str) -> None:
        path = self.path.split("?")[0].removeprefix(f"/{API_STAGE}")
        body = self.rfile.read(int(self.headers.get("Content-Length", "0"))) if method == "POST" else None
        resource, parameters = path, None
        for pattern, template in RESOURCES:
            if match := pattern.match(path):
                resource, parameters = template, match.groupdict() or None
                break
        event = rest_event(
            method,
            path,
            body=body.decode() if body is not None else None,
            resource=resource,
            path_parameters=parameters,
            headers=dict(self.headers.items()),
        )
        invocation = self.server.runtime_api.invoke(event)
        buffer = b""
        pieces = iter(invocation.output.get, _END)
        for piece in pieces:
            if isinstance(piece, tuple):
                # The function failed before sending its metadata: API Gateway answers 502 on its own.
                self.server.trailers.append(piece[1])
                return self._send_whole(502, {"message": "Internal server error"})
            buffer += piece
            if PRELUDE_DELIMITER in buffer:
                break
        else:
            return self._send_whole(502, {"message": "Internal server error"})
        prelude, _, rest = buffer.partition(PRELUDE_DELIMITER)
        metadata = json.loads(prelude)
        self.send_response(metadata["statusCode"])
        for name, value in (metadata.get("headers") or {}).items():
            self.send_header(name, value)
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        self._chunk(rest)
        for piece in pieces:
            if isinstance(piece, tuple):
                self.server.trailers.append(piece[1])  # a failure mid-stream: API Gateway ends the response
                continue
            self._chunk(piece)
        self.wfile.write(b"0\r\n\r\n")
        self.wfile.flush()

    def _chunk(self, data: bytes) -> None:
        if data:
            self.wfile.write(b"%x\r\n%b\r\n" % (len(data), data))
            self.wfile.flush()

    def _send_whole(self, status: int, body: dict) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


@contextmanager
def streaming_lambda(stream_handler: Any) -> Iterator[GatewayServer]:
    """Start the Runtime API, the gateway and the proxy's runtime loop; yield the gateway."""
    runtime_api = RuntimeApiServer()
    gateway = GatewayServer(runtime_api)
    stopping = threading.Event()

    def run_function() -> None:
        api = runtime.RuntimeApi(runtime_api.address)
        for _ in itertools.count():
            if stopping.is_set():
                return
            runtime.serve_one(api, stream_handler)

    threads = [threading.Thread(target=server.serve_forever, daemon=True) for server in (runtime_api, gateway)]
    threads.append(threading.Thread(target=run_function, daemon=True))
    for thread in threads:
        thread.start()
    try:
        yield gateway
    finally:
        stopping.set()
        # Wake the loop's blocking GET /next with a last event; its answer goes nowhere.
        runtime_api.invoke(rest_event("POST", "/v1/stop"))  # a 404 in the proxy: no AWS call
        threads[2].join(timeout=5)
        for server in (gateway, runtime_api):
            server.shutdown()
            server.server_close()
