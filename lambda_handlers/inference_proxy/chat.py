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


class _Choice(BaseModel):
    model_config = _LAX
    index: int = 0
    message: _Message
    finish_reason: str | None = None


# LMI's vLLM rolling batch names finish reasons its own way; OpenAI clients know only these words.
OPENAI_FINISH_REASONS = {"eos_token": "stop", "stop_sequence": "stop", "stop": "stop", "length": "length",
                         "max_tokens": "length", "content_filter": "content_filter", "tool_calls": "tool_calls"}


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
    """Run the chat completion on the endpoint `request.model` names; return it and the OpenAI response."""
    model = resolve_model(request.model, settings, kind="llm")
    invocation = invoke_json(runtime, model.endpoint_name, request.endpoint_body())
    try:
        completion = _Completion.model_validate(invocation.payload)
    except ValidationError as error:
        raise ModelFailed(
            f"Model endpoint '{model.endpoint_name}' returned an answer that is not a chat completion."
        ) from error
    response: dict[str, Any] = {
        "id": completion.id or f"chatcmpl-{uuid.uuid4().hex}",
        "object": "chat.completion",
        "created": completion.created or int(clock()),
        "model": request.model,
        "choices": [
            {
                "index": choice.index,
                "message": {"role": choice.message.role, "content": choice.message.content},
                "finish_reason": openai_finish_reason(choice.finish_reason),
            }
            for choice in completion.choices
        ],
    }
    if completion.usage is not None:
        usage = completion.usage
        response["usage"] = {
            "prompt_tokens": usage.prompt_tokens,
            "completion_tokens": usage.completion_tokens,
            "total_tokens": usage.total_tokens
            if usage.total_tokens is not None
            else usage.prompt_tokens + usage.completion_tokens,
        }
    return model, response
