"""A `sagemaker-runtime` client whose endpoints answer like LMI's vLLM OpenAI server, for conformance tests.

Both InvokeEndpoint and InvokeEndpointWithResponseStream are validated against botocore's model, answer
the OpenAI chat schema (tool calls, JSON per response_format, logprobs, n, usage with details), and stream
`data: {chunk}` server-sent events cut into PayloadParts at odd byte boundaries, as SageMaker does. Failures
come back as the ClientError/EventStreamError botocore raises. The "model" is a deterministic script, not a
network: what matters here is the wire shape.
"""

from __future__ import annotations

import io
import json
import threading
from collections.abc import Iterator
from typing import Any

from botocore.exceptions import ClientError, EventStreamError
from botocore.response import StreamingBody

from .in_process import validate_call

FINGERPRINT = "fp_vllm_test"


def _instance(schema: dict) -> Any:
    """A value that satisfies a (simple) JSON schema: what guided decoding would make the model write."""
    kind = schema.get("type")
    if "enum" in schema:
        return schema["enum"][0]
    if "anyOf" in schema:
        return _instance(schema["anyOf"][0])
    if kind == "object":
        return {name: _instance(sub) for name, sub in schema.get("properties", {}).items()}
    return {"string": "Paris", "integer": 21, "number": 21.5, "boolean": True, "array": []}.get(kind)


class FakeVllm:
    """Endpoints by name; every request body is recorded in `requests` (as the container received it)."""

    def __init__(self, endpoint_names: tuple[str, ...] = ("acme-dev-chat",)) -> None:
        self.endpoint_names = endpoint_names
        self.requests: list[dict] = []
        #: Set by a test to hold the stream after its first chunk until the test releases it.
        self.hold_after_first_chunk: threading.Event | None = None
        self.first_chunk_sent = threading.Event()
        #: Raise ModelStreamError after this many chunks.
        self.fail_after_chunks: int | None = None
        #: A ClientError code to answer every call with (before any byte).
        self.fail_with: str | None = None

    # --- sagemaker-runtime ------------------------------------------------------------------------------
    def invoke_endpoint(self, **params: Any) -> dict[str, Any]:
        validate_call("sagemaker-runtime", "InvokeEndpoint", params)
        request = self._accept(params)
        payload = json.dumps(self.complete(request)).encode()
        return {"Body": StreamingBody(io.BytesIO(payload), len(payload)), "ContentType": "application/json"}

    def invoke_endpoint_with_response_stream(self, **params: Any) -> dict[str, Any]:
        validate_call("sagemaker-runtime", "InvokeEndpointWithResponseStream", params)
        request = self._accept(params)
        return {
            "Body": self._payload_parts(request),
            "ContentType": "text/event-stream",
            "InvokedProductionVariant": "AllTraffic",
        }

    def _accept(self, params: dict) -> dict:
        if params["EndpointName"] not in self.endpoint_names:
            raise _error("ValidationError", f"Endpoint {params['EndpointName']} of account 123456789012 not found.")
        if self.fail_with:
            raise _error(self.fail_with, "injected")
        request = json.loads(params["Body"])
        self.requests.append(request)
        return request

    # --- the "model" ------------------------------------------------------------------------------------
    def complete(self, request: dict) -> dict:
        choices = [
            {
                "index": index,
                "message": self._message(request),
                "logprobs": self._logprobs(request),
                "finish_reason": "tool_calls" if self._calls_tool(request) else "stop",
                "stop_reason": None,
            }
            for index in range(request.get("n", 1))
        ]
        return {
            "id": "chatcmpl-vllm",
            "object": "chat.completion",
            "created": 1735689600,
            "model": "lmi",
            "system_fingerprint": FINGERPRINT,
            "choices": choices,
            "usage": self._usage(request),
        }

    def _calls_tool(self, request: dict) -> bool:
        return (
            bool(request.get("tools"))
            and request.get("tool_choice", "auto") != "none"
            and request["messages"][-1]["role"] == "user"
        )

    def _message(self, request: dict) -> dict:
        if self._calls_tool(request):
            function = request["tools"][0]["function"]
            arguments = json.dumps(_instance(function.get("parameters") or {"type": "object"}))
            return {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {
                        "id": "chatcmpl-tool-7",
                        "type": "function",
                        "function": {"name": function["name"], "arguments": arguments},
                    }
                ],
            }
        return {"role": "assistant", "content": self._text(request), "tool_calls": []}

    def _text(self, request: dict) -> str:
        response_format = request.get("response_format") or {}
        if response_format.get("type") == "json_schema":
            return json.dumps(_instance(response_format["json_schema"]["schema"]))
        if response_format.get("type") == "json_object":
            return json.dumps({"answer": "hello"})
        last = request["messages"][-1]
        content = (
            last["content"] if isinstance(last["content"], str) else " ".join(part["text"] for part in last["content"])
        )
        if last["role"] == "tool":
            return f"The tool said {content}."
        return f"You said: {content}"

    def _logprobs(self, request: dict) -> dict | None:
        if not request.get("logprobs"):
            return None
        tokens = self._text(request).split(" ")[:3]
        return {
            "content": [
                {
                    "token": token,
                    "logprob": -0.5,
                    "bytes": list(token.encode()),
                    "top_logprobs": [{"token": token, "logprob": -0.5, "bytes": list(token.encode())}]
                    * request.get("top_logprobs", 0),
                }
                for token in tokens
            ]
        }

    def _usage(self, request: dict) -> dict:
        prompt = sum(len(json.dumps(message).split()) for message in request["messages"])
        completion = len(self._text(request).split())
        return {
            "prompt_tokens": prompt,
            "completion_tokens": completion,
            "total_tokens": prompt + completion,
            "prompt_tokens_details": {"cached_tokens": 0},
        }

    # --- streaming ----------------------------------------------------------------------------------------
    def chunks(self, request: dict) -> Iterator[dict]:
        """vLLM's stream for `request`: role, then one delta per word (or the tool call), then the finish."""
        base = {
            "id": "chatcmpl-vllm-stream",
            "object": "chat.completion.chunk",
            "created": 1735689600,
            "model": "lmi",
            "system_fingerprint": FINGERPRINT,
        }
        choice = {"index": 0, "logprobs": None, "finish_reason": None}
        yield {**base, "choices": [{**choice, "delta": {"role": "assistant", "content": ""}}]}
        message = self._message(request)
        if message.get("tool_calls"):
            call = message["tool_calls"][0]
            yield {
                **base,
                "choices": [
                    {
                        **choice,
                        "delta": {
                            "tool_calls": [
                                {
                                    "index": 0,
                                    "id": call["id"],
                                    "type": "function",
                                    "function": {"name": call["function"]["name"], "arguments": ""},
                                }
                            ]
                        },
                    }
                ],
            }
            arguments = call["function"]["arguments"]
            for start in range(0, len(arguments), 5):
                yield {
                    **base,
                    "choices": [
                        {
                            **choice,
                            "delta": {
                                "tool_calls": [{"index": 0, "function": {"arguments": arguments[start : start + 5]}}]
                            },
                        }
                    ],
                }
            finish = "tool_calls"
        else:
            words = message["content"].split(" ")
            for position, word in enumerate(words):
                text = word if position == 0 else f" {word}"
                yield {**base, "choices": [{**choice, "delta": {"content": text}}]}
            finish = "stop"
        yield {**base, "choices": [{**choice, "delta": {}, "finish_reason": finish}]}
        if (request.get("stream_options") or {}).get("include_usage"):
            yield {**base, "choices": [], "usage": self._usage(request)}

    def _payload_parts(self, request: dict) -> Iterator[dict]:
        for count, chunk in enumerate(self.chunks(request)):
            if self.fail_after_chunks is not None and count >= self.fail_after_chunks:
                raise EventStreamError(
                    {"Error": {"Code": "ModelStreamError", "Message": "CUDA error: device-side assert"}},
                    "InvokeEndpointWithResponseStream",
                )
            event = b"data: " + json.dumps(chunk).encode() + b"\n\n"
            middle = len(event) // 2  # SageMaker cuts payload parts anywhere, even inside a JSON string
            yield {"PayloadPart": {"Bytes": event[:middle]}}
            yield {"PayloadPart": {"Bytes": event[middle:]}}
            if count == 0:
                self.first_chunk_sent.set()
                if self.hold_after_first_chunk is not None:
                    assert self.hold_after_first_chunk.wait(10), "the test never released the stream"
        yield {"PayloadPart": {"Bytes": b"data: [DONE]\n\n"}}


def _error(code: str, message: str) -> ClientError:
    status = {"ThrottlingException": 400, "ModelNotReadyException": 429, "ModelError": 424}.get(code, 400)
    fields = {"OriginalStatusCode": 500, "OriginalMessage": "boom"} if code == "ModelError" else {}
    return ClientError(
        {"Error": {"Code": code, "Message": message}, "ResponseMetadata": {"HTTPStatusCode": status}, **fields},
        "InvokeEndpoint",
    )
