"""Request bodies the proxy accepts, and the parser that turns validation failures into clear 400s."""

from __future__ import annotations

from typing import Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from .errors import InvalidRequest

# Strict: JSON "1" is not an int and 1.5 is not an int; extra fields are refused by name rather than
# silently dropped, so a caller relying on an unsupported OpenAI option learns it at once.
_STRICT = ConfigDict(strict=True, extra="forbid", frozen=True)


class TextPart(BaseModel):
    """A text part of a message's content (OpenAI's array form)."""

    model_config = _STRICT

    type: Literal["text"]
    text: str


class ChatMessage(BaseModel):
    """One message of the conversation."""

    model_config = _STRICT

    role: Literal["system", "user", "assistant"]
    content: str | list[TextPart]
    name: str | None = Field(default=None, max_length=64)


class ChatCompletionRequest(BaseModel):
    """The OpenAI chat-completions request, restricted to what the LMI (vLLM) container honours."""

    model_config = _STRICT

    model: str = Field(min_length=1, max_length=256)
    messages: list[ChatMessage] = Field(min_length=1, max_length=1024)
    max_tokens: int | None = Field(default=None, ge=1, le=131072)
    max_completion_tokens: int | None = Field(default=None, ge=1, le=131072)
    temperature: float | None = Field(default=None, ge=0, le=2, allow_inf_nan=False)
    top_p: float | None = Field(default=None, gt=0, le=1, allow_inf_nan=False)
    stop: str | list[str] | None = None
    n: int | None = Field(default=None, ge=1, le=8)
    presence_penalty: float | None = Field(default=None, ge=-2, le=2, allow_inf_nan=False)
    frequency_penalty: float | None = Field(default=None, ge=-2, le=2, allow_inf_nan=False)
    seed: int | None = None
    user: str | None = Field(default=None, max_length=256)
    stream: bool | None = None

    @model_validator(mode="after")
    def _supported(self) -> ChatCompletionRequest:
        if self.stream:
            raise ValueError("stream: streaming is not supported by this API; send stream=false or omit it")
        if isinstance(self.stop, list) and len(self.stop) > 4:
            raise ValueError("stop: at most 4 stop sequences")
        if (
            self.max_tokens is not None
            and self.max_completion_tokens is not None
            and self.max_tokens != self.max_completion_tokens
        ):
            raise ValueError("max_tokens and max_completion_tokens disagree; send one of them")
        return self

    def endpoint_body(self) -> dict[str, Any]:
        """The body for the LMI container: the OpenAI request without the proxy-only fields."""
        body: dict[str, Any] = {"messages": [message.model_dump(exclude_none=True) for message in self.messages]}
        max_tokens = self.max_tokens or self.max_completion_tokens
        if max_tokens is not None:
            body["max_tokens"] = max_tokens
        for field in ("temperature", "top_p", "stop", "n", "presence_penalty", "frequency_penalty", "seed"):
            value = getattr(self, field)
            if value is not None:
                body[field] = value
        return body


class PredictRequest(BaseModel):
    """A text-classification request: one text or a list of texts."""

    model_config = _STRICT

    inputs: str | list[str]

    @property
    def texts(self) -> list[str]:
        """The inputs as a list, whichever form the caller sent."""
        return [self.inputs] if isinstance(self.inputs, str) else list(self.inputs)

    @model_validator(mode="after")
    def _not_empty(self) -> PredictRequest:
        if isinstance(self.inputs, list) and not self.inputs:
            raise ValueError("inputs: send at least one text")
        return self


Request = TypeVar("Request", bound=BaseModel)


def parse_request(model: type[Request], body: str | bytes) -> Request:
    """Validate a JSON body into `model`, or raise InvalidRequest saying what is wrong and where."""
    if not body or not body.strip():
        raise InvalidRequest("The request body is empty; send a JSON object.")
    try:
        return model.model_validate_json(body)
    except ValidationError as error:
        raise InvalidRequest(_describe(error)) from None


def _describe(error: ValidationError) -> str:
    # Only locations and pydantic's messages: never the input values, never Python internals.
    problems = []
    for item in error.errors(include_url=False, include_input=False, include_context=False):
        location = ".".join(str(part) for part in item["loc"])
        kind = item["type"]
        if kind == "json_invalid":
            return f"The request body is not valid JSON ({item['msg'].removeprefix('Invalid JSON: ')})."
        if kind == "model_type" and not location:
            return "The request body must be a JSON object."
        if kind == "extra_forbidden":
            problems.append(f"{location}: unknown field")
        elif kind == "value_error":
            problems.append(item["msg"].removeprefix("Value error, "))
        else:
            problems.append(f"{location or 'body'}: {item['msg']}")
    shown = "; ".join(problems[:5])
    more = f" (and {len(problems) - 5} more)" if len(problems) > 5 else ""
    return f"Invalid request: {shown}{more}."
