"""POST /v1/chat/completions: an OpenAI chat completion from an LMI (vLLM) endpoint."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from .clients import RuntimeClient
from .errors import ModelFailed
from .invoke import invoke_json
from .routing import ResolvedModel, resolve_model
from .schemas import ChatCompletionRequest
from .settings import ProxySettings

# What the LMI container answers to a body with "messages" (its OpenAI-compatible chat schema). Lax and
# ignoring extras: the proxy needs these fields, and newer containers may add others.
_LAX = ConfigDict(extra="ignore")


class _Message(BaseModel):
    model_config = _LAX
    role: str = "assistant"
    content: str | None = None
    tool_calls: list[dict[Any, Any]] | None = None


class _Choice(BaseModel):
    model_config = _LAX
    index: int = 0
    message: _Message
    finish_reason: str | None = None


# LMI's vLLM rolling batch names finish reasons its own way; OpenAI clients know only these words.
OPENAI_FINISH_REASONS = {
    "eos_token": "stop",
    "stop_sequence": "stop",
    "stop": "stop",
    "length": "length",
    "max_tokens": "length",
    "content_filter": "content_filter",
    "tool_calls": "tool_calls",
}


def openai_finish_reason(reason: str | None) -> str | None:
    """The OpenAI word for a container's finish reason (unknown words pass through unchanged)."""
    return OPENAI_FINISH_REASONS.get(reason, reason) if reason is not None else None


class _Usage(BaseModel):
    model_config = _LAX
    prompt_tokens: int = Field(default=0, ge=0)
    completion_tokens: int = Field(default=0, ge=0)
    total_tokens: int | None = Field(default=None, ge=0)


class _Completion(BaseModel):
    model_config = _LAX
    id: str | None = None
    created: int | None = None
    choices: list[_Choice] = Field(min_length=1)
    usage: _Usage | None = None


def complete_chat(
    request: ChatCompletionRequest,
    *,
    settings: ProxySettings,
    runtime: RuntimeClient,
    clock: Callable[[], float] = time.time,
) -> tuple[ResolvedModel, dict[str, Any]]:
    """Run the chat completion on the endpoint `request.model` names; return it and the OpenAI response.

    The container's answer is checked for the fields the proxy relies on, then passed on whole: tool
    calls, logprobs, `system_fingerprint`, usage details and whatever a newer vLLM adds reach the caller.
    The proxy sets only what it owns (`id` if missing, `created`, `model` as the caller named it) and
    translates LMI's finish reasons to OpenAI's words.
    """
    model = resolve_model(request.model, settings, kind="llm")
    invocation = invoke_json(
        runtime, model.endpoint_name, request.endpoint_body(), inference_component=model.inference_component
    )
    payload = invocation.payload
    try:
        completion = _Completion.model_validate(payload)
    except ValidationError as error:
        raise ModelFailed(
            f"Model endpoint '{model.endpoint_name}' returned an answer that is not a chat completion."
        ) from error
    response: dict[str, Any] = {
        **payload,
        "id": completion.id or f"chatcmpl-{uuid.uuid4().hex}",
        "object": "chat.completion",
        "created": completion.created or int(clock()),
        "model": request.model,
        "choices": [_choice(raw, parsed) for raw, parsed in zip(payload["choices"], completion.choices, strict=True)],
    }
    if completion.usage is not None:
        response["usage"] = usage_of(payload["usage"], completion.usage)
    else:
        response.pop("usage", None)
    return model, response


def _choice(raw: dict[str, Any], parsed: _Choice) -> dict[str, Any]:
    choice = {**raw, "index": parsed.index, "finish_reason": openai_finish_reason(parsed.finish_reason)}
    choice["message"] = {**raw["message"], "role": parsed.message.role, "content": parsed.message.content}
    if not parsed.message.tool_calls:
        # vLLM sends `tool_calls: []` when no tool was called; OpenAI omits the field.
        choice["message"].pop("tool_calls", None)
    return choice


def usage_of(raw: dict[str, Any], usage: _Usage) -> dict[str, Any]:
    """OpenAI usage: the container's (details included) with `total_tokens` filled in when it left it out."""
    total = usage.total_tokens if usage.total_tokens is not None else usage.prompt_tokens + usage.completion_tokens
    return {
        **raw,
        "prompt_tokens": usage.prompt_tokens,
        "completion_tokens": usage.completion_tokens,
        "total_tokens": total,
    }
