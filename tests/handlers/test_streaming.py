"""`stream: true` below the client: the SSE bytes, the streaming-mode prelude, and the runtime's error paths."""

from __future__ import annotations

import json
import urllib.error
import urllib.request

from .conftest import installed
from .events import LambdaContext, chat_event
from .fake_vllm import FakeVllm
from .lambda_emulator import PRELUDE_DELIMITER, streaming_lambda

ASK = [{"role": "user", "content": "hello there"}]


def _sse(body: bytes) -> list[str]:
    return [block.removeprefix("data: ") for block in body.decode().split("\n\n") if block]


class ScriptedStream(FakeVllm):
    """A container whose stream is the given raw lines."""

    def __init__(self, lines: list[bytes]) -> None:
        super().__init__()
        self.lines = lines

    def _payload_parts(self, request):
        for line in self.lines:
            yield {"PayloadPart": {"Bytes": line}}


def _chunk(text: str) -> bytes:
    return b"data: " + json.dumps({"choices": [{"index": 0, "delta": {"content": text}}]}).encode() + b"\n\n"


def test_stream_handler_sends_the_prelude_then_events_then_done(proxy):
    sent: list[bytes] = []
    with installed(proxy, runtime=FakeVllm()):
        proxy.stream_handler(
            chat_event({"model": "chat", "messages": ASK, "stream": True}), LambdaContext(), send=sent.append
        )
    prelude, _, first = sent[0].partition(PRELUDE_DELIMITER)
    metadata = json.loads(prelude)
    assert metadata["statusCode"] == 200
    assert metadata["headers"]["Content-Type"] == "text/event-stream" and metadata["headers"]["x-request-id"]
    assert first == b""  # the metadata goes alone: API Gateway can send the status line at once
    events = _sse(b"".join(sent[1:]))
    assert events[-1] == "[DONE]" and len(sent) > 3  # one write per chunk, not one at the end
    assert json.loads(events[0])["object"] == "chat.completion.chunk"


def test_buffered_handler_still_answers_a_stream_request_as_one_event_stream_body(proxy):
    with installed(proxy, runtime=FakeVllm()):
        response = proxy.lambda_handler(chat_event({"model": "chat", "messages": ASK, "stream": True}), LambdaContext())
    assert response["statusCode"] == 200
    assert response["multiValueHeaders"]["Content-Type"] == ["text/event-stream"]
    events = _sse(response["body"].encode())
    assert events[-1] == "[DONE]"
    assert (
        "".join(
            json.loads(e)["choices"][0]["delta"].get("content") or "" for e in events[:-1] if json.loads(e)["choices"]
        )
        == "You said: hello there"
    )


def test_first_chunk_that_is_not_json_is_a_502_before_any_byte(proxy):
    with installed(proxy, runtime=ScriptedStream([b"<html>oops</html>\n"])):
        response = proxy.lambda_handler(chat_event({"model": "chat", "messages": ASK, "stream": True}), LambdaContext())
    assert response["statusCode"] == 502
    assert json.loads(response["body"])["error"]["code"] == "model_error"


def test_garbage_after_the_first_chunk_ends_the_stream_with_an_error_event_and_no_done(proxy):
    lines = [_chunk("Hel"), _chunk("lo"), b"data: {not json\n\n", _chunk("never sent")]
    with installed(proxy, runtime=ScriptedStream(lines)):
        response = proxy.lambda_handler(chat_event({"model": "chat", "messages": ASK, "stream": True}), LambdaContext())
    events = _sse(response["body"].encode())
    assert [json.loads(e)["choices"][0]["delta"]["content"] for e in events[:2]] == ["Hel", "lo"]
    assert json.loads(events[2]) == {
        "error": {
            "message": "Model endpoint 'acme-dev-chat' streamed a line that is not JSON.",
            "type": "server_error",
            "param": None,
            "code": "model_error",
        }
    }
    assert len(events) == 3


def test_container_stream_in_json_lines_and_without_done_is_accepted(proxy):
    lines = [
        json.dumps({"choices": [{"index": 0, "delta": {"content": "a"}}]}).encode() + b"\n",
        json.dumps({"choices": [{"index": 0, "delta": {}, "finish_reason": "eos_token"}]}).encode(),
    ]
    with installed(proxy, runtime=ScriptedStream(lines)):
        response = proxy.lambda_handler(chat_event({"model": "chat", "messages": ASK, "stream": True}), LambdaContext())
    events = _sse(response["body"].encode())
    assert json.loads(events[1])["choices"][0]["finish_reason"] == "stop" and events[-1] == "[DONE]"


def _post(url: str) -> tuple[int, bytes]:
    request = urllib.request.Request(
        f"{url}/chat/completions",
        method="POST",
        data=json.dumps({"model": "chat", "messages": ASK}).encode(),
        headers={"Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


def test_runtime_reports_a_failure_before_the_first_byte_as_an_invocation_error():
    def broken(event, context, *, send):
        raise RuntimeError("handler bug")

    with streaming_lambda(broken) as gateway:
        status, body = _post(gateway.base_url)
    assert (status, json.loads(body)) == (502, {"message": "Internal server error"})
    assert gateway.trailers == [{"errorType": "RuntimeError", "errorMessage": "handler bug"}]


def test_runtime_ends_a_started_response_with_error_trailers():
    def half(event, context, *, send):
        send(b'{"statusCode": 200, "headers": {"Content-Type": "text/event-stream"}}' + PRELUDE_DELIMITER)
        send(b"data: {}\n\n")
        raise RuntimeError("after the first byte")

    with streaming_lambda(half) as gateway:
        status, body = _post(gateway.base_url)
    assert (status, body) == (200, b"data: {}\n\n")
    (trailers,) = gateway.trailers
    assert trailers["Lambda-Runtime-Function-Error-Type"] == "RuntimeError"
