"""The proxy's Lambda runtime client: the Runtime API loop, answering every invocation in streaming mode.

Python's managed Lambda runtime buffers a handler's return value; only a runtime client that speaks the
Runtime API's response-streaming mode can send bytes as they come. This module is that client, run on the
managed Python runtime itself: the function's `AWS_LAMBDA_EXEC_WRAPPER` (`inference_proxy/bootstrap`)
starts `python -m inference_proxy.runtime` in place of the managed bootstrap, with the same interpreter,
the same Powertools layer and the same handler module (see the README's DESIGN note on streaming).

Per invocation: GET `/runtime/invocation/next`; run `handler.stream_handler`, whose `send` writes HTTP
chunks of one POST to `/runtime/invocation/{id}/response` made with `Lambda-Runtime-Function-Response-Mode:
streaming`; a failure before the first byte goes to `/invocation/{id}/error`, one after it ends the
response with the `Lambda-Runtime-Function-Error-Type`/`-Body` trailers. Only the standard library: the
loop is in the cold start of every request.
"""

from __future__ import annotations

import base64
import http.client
import json
import os
import sys
import time
import traceback
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

API_VERSION = "2018-06-01"
#: The content type that tells Lambda (and API Gateway) the body starts with the JSON metadata prelude.
HTTP_INTEGRATION_RESPONSE = "application/vnd.awslambda.http-integration-response"
ERROR_TYPE_TRAILER = "Lambda-Runtime-Function-Error-Type"
ERROR_BODY_TRAILER = "Lambda-Runtime-Function-Error-Body"

StreamHandler = Callable[..., None]


@dataclass
class Context:
    """The Lambda context object, built from the Runtime API's headers and the function's environment."""

    aws_request_id: str
    invoked_function_arn: str
    deadline_ms: int
    function_name: str = field(default_factory=lambda: os.environ.get("AWS_LAMBDA_FUNCTION_NAME", ""))
    function_version: str = field(default_factory=lambda: os.environ.get("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST"))
    memory_limit_in_mb: int = field(default_factory=lambda: int(os.environ.get("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "0")))
    log_group_name: str = field(default_factory=lambda: os.environ.get("AWS_LAMBDA_LOG_GROUP_NAME", ""))
    log_stream_name: str = field(default_factory=lambda: os.environ.get("AWS_LAMBDA_LOG_STREAM_NAME", ""))

    def get_remaining_time_in_millis(self) -> int:
        return max(0, self.deadline_ms - int(time.time() * 1000))


@dataclass(frozen=True)
class Invocation:
    """One event from `/runtime/invocation/next`."""

    request_id: str
    event: Any
    headers: Mapping[str, str]

    def context(self) -> Context:
        return Context(
            aws_request_id=self.request_id,
            invoked_function_arn=self.headers.get("Lambda-Runtime-Invoked-Function-Arn", ""),
            deadline_ms=int(self.headers.get("Lambda-Runtime-Deadline-Ms", "0") or 0),
        )


class ResponseStream:
    """One streamed response: HTTP/1.1 chunked POST to the Runtime API, written as the handler sends."""

    def __init__(self, address: str, request_id: str) -> None:
        self._connection = http.client.HTTPConnection(address)
        self._connection.putrequest(
            "POST", f"/{API_VERSION}/runtime/invocation/{request_id}/response", skip_accept_encoding=True
        )
        for name, value in (
            ("Lambda-Runtime-Function-Response-Mode", "streaming"),
            ("Transfer-Encoding", "chunked"),
            ("Content-Type", HTTP_INTEGRATION_RESPONSE),
            ("Trailer", f"{ERROR_TYPE_TRAILER}, {ERROR_BODY_TRAILER}"),
        ):
            self._connection.putheader(name, value)
        self._connection.endheaders()
        self.bytes_sent = 0

    def send(self, data: bytes) -> None:
        if data:  # an empty chunk would end the body
            self._connection.send(b"%x\r\n%b\r\n" % (len(data), data))
            self.bytes_sent += len(data)

    def close(self, error: BaseException | None = None) -> None:
        trailers = b""
        if error is not None:
            body = base64.b64encode(json.dumps(_error_body(error)).encode()).decode()
            trailers = f"{ERROR_TYPE_TRAILER}: {type(error).__name__}\r\n{ERROR_BODY_TRAILER}: {body}\r\n".encode()
        self._connection.send(b"0\r\n" + trailers + b"\r\n")
        self._connection.getresponse().read()
        self._connection.close()


class RuntimeApi:
    """The Runtime API at `address` (`AWS_LAMBDA_RUNTIME_API`, host:port)."""

    def __init__(self, address: str) -> None:
        self.address = address

    def next_invocation(self) -> Invocation:
        connection = http.client.HTTPConnection(self.address)  # no timeout: it blocks until an event comes
        connection.request("GET", f"/{API_VERSION}/runtime/invocation/next")
        response = connection.getresponse()
        body = response.read()
        connection.close()
        headers = {name: value for name, value in response.getheaders()}
        return Invocation(request_id=headers["Lambda-Runtime-Aws-Request-Id"], event=json.loads(body), headers=headers)

    def respond(self, request_id: str) -> ResponseStream:
        return ResponseStream(self.address, request_id)

    def invocation_error(self, request_id: str, error: BaseException) -> None:
        self._post(f"/{API_VERSION}/runtime/invocation/{request_id}/error", error)

    def init_error(self, error: BaseException) -> None:
        self._post(f"/{API_VERSION}/runtime/init/error", error)

    def _post(self, path: str, error: BaseException) -> None:
        connection = http.client.HTTPConnection(self.address)
        connection.request(
            "POST",
            path,
            body=json.dumps(_error_body(error)).encode(),
            headers={
                "Lambda-Runtime-Function-Error-Type": f"Runtime.{type(error).__name__}",
                "Content-Type": "application/json",
            },
        )
        connection.getresponse().read()
        connection.close()


def serve_one(api: RuntimeApi, handler: StreamHandler) -> None:
    """Take the next invocation and stream the handler's response for it."""
    invocation = api.next_invocation()
    trace_id = invocation.headers.get("Lambda-Runtime-Trace-Id")
    if trace_id:  # what the X-Ray SDK (Powertools Tracer) reads for this invocation's segment
        os.environ["_X_AMZN_TRACE_ID"] = trace_id
    else:
        os.environ.pop("_X_AMZN_TRACE_ID", None)
    stream: ResponseStream | None = None

    def send(data: bytes) -> None:
        nonlocal stream
        if stream is None:
            stream = api.respond(invocation.request_id)
        stream.send(data)

    try:
        handler(invocation.event, invocation.context(), send=send)
    except Exception as error:  # a runtime reports every failure to Lambda, then goes on
        traceback.print_exc()
        if stream is None:
            api.invocation_error(invocation.request_id, error)
        else:
            stream.close(error)
        return
    if stream is None:  # the handler sent nothing: still answer, with an empty body
        stream = api.respond(invocation.request_id)
    stream.close()


def main(environ: Mapping[str, str] = os.environ) -> None:
    """Import the handler (reporting an init error if that fails), then serve invocations forever."""
    api = RuntimeApi(environ["AWS_LAMBDA_RUNTIME_API"])
    try:
        from .handler import stream_handler
    except Exception as error:
        traceback.print_exc()
        api.init_error(error)
        sys.exit(1)
    while True:
        serve_one(api, stream_handler)


def _error_body(error: BaseException) -> dict[str, Any]:
    # What Lambda records for a failed invocation: type and message, never the event or the traceback.
    return {"errorType": type(error).__name__, "errorMessage": str(error)[:1000]}


if __name__ == "__main__":
    main()
