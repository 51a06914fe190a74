"""POST /v1/chat/completions with `stream: true`: OpenAI `chat.completion.chunk` events from the container's stream.

The container (LMI's vLLM, OpenAI-compatible) streams server-sent events, `data: {chunk}` lines ending with
`data: [DONE]`, through SageMaker's InvokeEndpointWithResponseStream, which cuts them into PayloadParts at
arbitrary byte boundaries. `open_chat_stream` starts the call and reads up to the first whole chunk before
the caller gets a byte, so every failure up to there (throttled, not in service, model error, a first
chunk that is not a chunk) keeps its HTTP status. After that the status line is gone: a failure ends the
stream with one OpenAI-shaped `data: {"error": {...}}` event, which the OpenAI SDKs raise as APIError.
"""

from __future__ import annotations

import enum
import json
import logging
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any, Final

from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    ConnectionClosedError,
    ConnectTimeoutError,
    EndpointConnectionError,
    ReadTimeoutError,
)

from .chat import openai_finish_reason
from .clients import RuntimeClient
from .errors import InternalError, ModelFailed, ModelTimeout, ModelUnavailable, ProxyError
from .invoke import JSON, map_client_error
from .routing import ResolvedModel, resolve_model
from .schemas import ChatCompletionRequest
from .settings import ProxySettings

logger = logging.getLogger(__name__)

EVENT_STREAM = "text/event-stream"
DONE = b"data: [DONE]\n\n"
#: Largest line the proxy buffers while waiting for its end (a chunk carries a few tokens and their logprobs).
MAX_LINE_BYTES = 1024 * 1024


def sse_event(payload: dict[str, Any]) -> bytes:
    """One server-sent event carrying `payload` as compact JSON."""
    return b"data: " + json.dumps(payload, separators=(",", ":")).encode() + b"\n\n"


class ChatStream:
    """A started chat-completion stream: iterate it for the SSE bytes the caller receives, in order.

    The first whole chunk is already read (see the module docstring); iteration yields it, then each
    chunk as the container produces it, then `data: [DONE]`, or an error event if the stream broke.
    """

    def __init__(
        self,
        *,
        model: ResolvedModel,
        request: ChatCompletionRequest,
        chunks: Iterator[dict[str, Any]],
        first: dict[str, Any] | None,
        clock: Callable[[], float],
    ) -> None:
        self.model = model
        self._request = request
        self._chunks = chunks
        self._first = first
        self._id = f"chatcmpl-{uuid.uuid4().hex}"
        self._created = int(clock())
        #: Chunks sent, and whether the stream ended with [DONE] (for the logs and metrics).
        self.chunks_sent = 0
        self.completed = False

    def __iter__(self) -> Iterator[bytes]:
        if self._first is not None:
            yield sse_event(self._rewrite(self._first))
            self.chunks_sent += 1
        try:
            for chunk in self._chunks:
                yield sse_event(self._rewrite(chunk))
                self.chunks_sent += 1
        except Exception as error:  # the status line is sent: the error can only be an event
            if not isinstance(error, ProxyError):
                error = InternalError("Internal error in the inference proxy; see its logs for the request id.")
            logger.warning(
                "stream failed after it began",
                extra={"error_code": error.code, "chunks_sent": self.chunks_sent},
                exc_info=True,
            )
            yield sse_event(error.body())
            return
        self.completed = True
        yield DONE

    def _rewrite(self, chunk: dict[str, Any]) -> dict[str, Any]:
        # The container's chunk, passed on whole (tool-call deltas, logprobs, usage, system_fingerprint), with
        # what the proxy owns set the same on every chunk: one id, the model name the caller used.
        out = {
            **chunk,
            "id": chunk.get("id") or self._id,
            "object": "chat.completion.chunk",
            "created": chunk.get("created") or self._created,
            "model": self._request.model,
        }
        self._id = out["id"]
        self._created = out["created"]
        out["choices"] = [
            {**choice, "finish_reason": openai_finish_reason(choice.get("finish_reason"))}
            for choice in chunk["choices"]
        ]
        return out


def open_chat_stream(
    request: ChatCompletionRequest,
    *,
    settings: ProxySettings,
    runtime: RuntimeClient,
    clock: Callable[[], float] = time.time,
) -> ChatStream:
    """Start the streamed completion and read its first chunk; raise a ProxyError (with its status) on failure."""
    model = resolve_model(request.model, settings, kind="llm")
    body = json.dumps(request.endpoint_body(), separators=(",", ":")).encode()
    try:
        response = runtime.invoke_endpoint_with_response_stream(
            **model.target(), Body=body, ContentType=JSON, Accept=EVENT_STREAM
        )
    except Exception as error:  # mapped to the caller's status, or re-raised as is
        raise _mapped(error, model.endpoint_name) from error
    chunks = _chunks(response["Body"], model.endpoint_name)
    first = next(chunks, None)  # raises the mapped ProxyError: nothing has been sent yet
    return ChatStream(model=model, request=request, chunks=chunks, first=first, clock=clock)


def _chunks(events: Any, endpoint_name: str) -> Iterator[dict[str, Any]]:
    """The container's chunks, whole and decoded, from SageMaker's PayloadPart events."""
    buffer = b""
    try:
        for event in events:
            if "PayloadPart" not in event:
                # Botocore raises modeled stream errors; anything else in the stream is equally fatal.
                raise ModelFailed(f"Model endpoint '{endpoint_name}' stream failed.")
            buffer += event["PayloadPart"].get("Bytes", b"")
            *lines, buffer = buffer.split(b"\n")
            if len(buffer) > MAX_LINE_BYTES:
                raise ModelFailed(f"Model endpoint '{endpoint_name}' streamed a line over {MAX_LINE_BYTES} bytes.")
            for line in lines:
                chunk = _decode(line, endpoint_name)
                if chunk is _END:
                    return
                if chunk is not None:
                    yield chunk
        chunk = _decode(buffer, endpoint_name)  # a last line without its newline
        if chunk is not None and chunk is not _END:
            yield chunk
    except ProxyError:
        raise
    except Exception as error:  # every transport failure becomes the caller's error
        raise _mapped(error, endpoint_name) from error


class _Marker(enum.Enum):
    END = "[DONE]"


_END: Final = _Marker.END
"""What `_decode` returns for the stream's end (a one-member enum, so `is _END` narrows the type)."""


def _decode(line: bytes, endpoint_name: str) -> dict[str, Any] | _Marker | None:
    # SSE (`data: {...}`, blank separators, `: comments`) or JSON lines; both end at [DONE] or the stream's end.
    text = line.strip()
    if not text or text.startswith(b":") or text.startswith(b"event:"):
        return None
    if text.startswith(b"data:"):
        text = text.removeprefix(b"data:").strip()
    if text == b"[DONE]":
        return _END
    try:
        chunk = json.loads(text)
    except (ValueError, UnicodeDecodeError):
        raise ModelFailed(f"Model endpoint '{endpoint_name}' streamed a line that is not JSON.") from None
    if isinstance(chunk, dict) and "error" in chunk and "choices" not in chunk:
        logger.warning(
            "model stream error event",
            extra={"endpoint": endpoint_name, "original_message": str(chunk["error"])[:2000]},
        )
        raise ModelFailed(f"Model endpoint '{endpoint_name}' failed while streaming.")
    if (
        not isinstance(chunk, dict)
        or not isinstance(chunk.get("choices"), list)
        or not all(isinstance(choice, dict) for choice in chunk["choices"])
    ):
        raise ModelFailed(f"Model endpoint '{endpoint_name}' streamed something that is not a chat completion chunk.")
    return chunk


def _mapped(error: Exception, endpoint_name: str) -> ProxyError:
    if isinstance(error, ProxyError):
        return error
    if isinstance(error, ClientError):  # EventStreamError (ModelStreamError, InternalStreamFailure) included
        code = error.response.get("Error", {}).get("Code", "")
        if code in ("ModelStreamError", "InternalStreamFailure"):
            logger.warning(
                "model stream error",
                extra={"endpoint": endpoint_name, "code": code, "original_message": str(error)[:2000]},
            )
            return ModelFailed(f"Model endpoint '{endpoint_name}' failed while streaming.")
        return map_client_error(error, endpoint_name)
    if isinstance(error, ReadTimeoutError):
        return ModelTimeout(f"Model endpoint '{endpoint_name}' did not answer in time.")
    if isinstance(error, (ConnectTimeoutError, EndpointConnectionError, ConnectionClosedError)):
        return ModelUnavailable("The SageMaker runtime could not be reached; retry shortly.")
    if isinstance(error, BotoCoreError):
        return ModelFailed(f"Model endpoint '{endpoint_name}' stream failed.")
    raise error
