"""Request bodies the proxy accepts, and the parser that turns validation failures into clear 400s.

The chat request is OpenAI's. The proxy checks the shape and the limits of every field it knows (types,
ranges, counts, the combinations OpenAI refuses) and forwards everything, known or not, to the container:
vLLM's OpenAI server accepts more options than any list here could keep up with (`top_k`, `min_p`,
`guided_*`, ...), and refuses the ones it does not know itself. The body size limit bounds the rest.
"""

from __future__ import annotations

import json
import re
from typing import Annotated, Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError, model_validator
from pydantic_core import PydanticCustomError

from .errors import InvalidRequest

# Strict: JSON "1" is not an int and 1.5 is not an int. Unknown fields are kept (and forwarded).
_OPEN = ConfigDict(strict=True, extra="allow", frozen=True)
# For the few bodies that are the proxy's own (predict): unknown fields are refused by name.
_STRICT = ConfigDict(strict=True, extra="forbid", frozen=True)

#: Content-part types OpenAI defines that a text-only LLM endpoint cannot take.
UNSUPPORTED_PART_TYPES = frozenset({"image_url", "input_image", "image", "input_audio", "audio", "file", "video_url"})
MAX_TOOLS = 128
MAX_TOOL_CALLS = 128
MAX_LOGIT_BIAS = 1024
#: Stop strings one request may carry (OpenAI's limit).
MAX_STOP_STRINGS = 4
_FUNCTION_NAME = r"^[a-zA-Z0-9_-]{1,64}$"


def _rule(param: str, message: str) -> PydanticCustomError:
    """A cross-field rule broken; `param` names the field the caller should fix (OpenAI's `param`)."""
    return PydanticCustomError("proxy_rule", message, {"param": param})


class ContentPart(BaseModel):
    """A part of a message's content (OpenAI's array form): text only; other kinds get a clear 400."""

    model_config = _OPEN

    type: str = Field(max_length=64)
    text: str | None = None

    @model_validator(mode="after")
    def _text_only(self) -> ContentPart:
        if self.type in UNSUPPORTED_PART_TYPES:
            raise PydanticCustomError(
                "unsupported_part",
                "content parts of type '{kind}' are not supported: this API serves text-only models; send text parts",
                {"kind": self.type},
            )
        if self.type != "text":
            raise PydanticCustomError(
                "unsupported_part", "unknown content part type '{kind}'; send text parts", {"kind": self.type[:64]}
            )
        if self.text is None:
            raise PydanticCustomError("missing_text", "a text part needs a 'text' string", {})
        return self


Content = str | Annotated[list[ContentPart], Field(max_length=1024)]


class FunctionCall(BaseModel):
    """The function an assistant's tool call invoked, with its arguments as a JSON string."""

    model_config = _OPEN

    name: str = Field(min_length=1, max_length=64)
    arguments: str


class ToolCall(BaseModel):
    """One tool call in an assistant message of the history."""

    model_config = _OPEN

    id: str = Field(min_length=1, max_length=256)
    type: Literal["function"] = "function"
    function: FunctionCall


class InstructionMessage(BaseModel):
    """A `system` or `developer` message (vLLM's chat templates treat both as the system prompt)."""

    model_config = _OPEN

    role: Literal["system", "developer"]
    content: Content
    name: str | None = Field(default=None, max_length=64)


class UserMessage(BaseModel):
    """A `user` message."""

    model_config = _OPEN

    role: Literal["user"]
    content: Content
    name: str | None = Field(default=None, max_length=64)


class AssistantMessage(BaseModel):
    """An `assistant` message of the history: text, tool calls (then `content` may be null), or both."""

    model_config = _OPEN

    role: Literal["assistant"]
    content: Content | None = None
    tool_calls: Annotated[list[ToolCall], Field(max_length=MAX_TOOL_CALLS)] | None = None
    name: str | None = Field(default=None, max_length=64)

    @model_validator(mode="after")
    def _says_something(self) -> AssistantMessage:
        if self.content is None and not self.tool_calls:
            raise PydanticCustomError("missing_content", "an assistant message needs content or tool_calls", {})
        return self


class ToolMessage(BaseModel):
    """A `tool` message: a tool's result, answering one of the assistant's tool calls."""

    model_config = _OPEN

    role: Literal["tool"]
    content: Content
    tool_call_id: str = Field(min_length=1, max_length=256)


ChatMessage = Annotated[InstructionMessage | UserMessage | AssistantMessage | ToolMessage, Field(discriminator="role")]


class FunctionDefinition(BaseModel):
    """A function the model may call: its name, description and JSON-schema parameters."""

    model_config = _OPEN

    name: str = Field(pattern=_FUNCTION_NAME)
    description: str | None = Field(default=None, max_length=8192)
    parameters: dict[str, Any] | None = None
    strict: bool | None = None


class Tool(BaseModel):
    """One tool offered to the model."""

    model_config = _OPEN

    type: Literal["function"]
    function: FunctionDefinition


class NamedFunction(BaseModel):
    model_config = _OPEN

    name: str = Field(pattern=_FUNCTION_NAME)


class NamedToolChoice(BaseModel):
    """`tool_choice` forcing one function."""

    model_config = _OPEN

    type: Literal["function"]
    function: NamedFunction


class JsonSchemaFormat(BaseModel):
    """`response_format.json_schema`: the schema the answer must follow."""

    model_config = ConfigDict(strict=True, extra="allow", frozen=True, populate_by_name=True)

    name: str = Field(pattern=_FUNCTION_NAME)
    description: str | None = None
    schema_: dict[str, Any] | None = Field(default=None, alias="schema")
    strict: bool | None = None


class TextFormat(BaseModel):
    model_config = _OPEN

    type: Literal["text"]


class JsonObjectFormat(BaseModel):
    model_config = _OPEN

    type: Literal["json_object"]


class JsonSchemaResponseFormat(BaseModel):
    model_config = _OPEN

    type: Literal["json_schema"]
    json_schema: JsonSchemaFormat


ResponseFormat = Annotated[TextFormat | JsonObjectFormat | JsonSchemaResponseFormat, Field(discriminator="type")]


class StreamOptions(BaseModel):
    model_config = _OPEN

    include_usage: bool | None = None


class ChatCompletionRequest(BaseModel):
    """The OpenAI chat-completions request: known fields checked, every field forwarded."""

    model_config = _OPEN

    model: str = Field(min_length=1, max_length=256)
    messages: list[ChatMessage] = Field(min_length=1, max_length=1024)
    max_tokens: int | None = Field(default=None, ge=1, le=131072)
    max_completion_tokens: int | None = Field(default=None, ge=1, le=131072)
    temperature: float | None = Field(default=None, ge=0, le=2, allow_inf_nan=False)
    top_p: float | None = Field(default=None, gt=0, le=1, allow_inf_nan=False)
    stop: str | Annotated[list[str], Field(max_length=MAX_STOP_STRINGS)] | None = None
    n: int | None = Field(default=None, ge=1, le=8)
    presence_penalty: float | None = Field(default=None, ge=-2, le=2, allow_inf_nan=False)
    frequency_penalty: float | None = Field(default=None, ge=-2, le=2, allow_inf_nan=False)
    seed: int | None = Field(default=None, ge=-(2**63), le=2**63 - 1)  # vLLM's range: a 64-bit integer
    user: str | None = Field(default=None, max_length=256)
    stream: bool | None = None
    stream_options: StreamOptions | None = None
    tools: Annotated[list[Tool], Field(max_length=MAX_TOOLS)] | None = None
    tool_choice: Literal["none", "auto", "required"] | NamedToolChoice | None = None
    parallel_tool_calls: bool | None = None
    response_format: ResponseFormat | None = None
    logprobs: bool | None = None
    top_logprobs: int | None = Field(default=None, ge=0, le=20)
    logit_bias: Annotated[dict[str, float], Field(max_length=MAX_LOGIT_BIAS)] | None = None
    # vLLM's sampling extras (the OpenAI client sends them through `extra_body`).
    top_k: int | None = Field(default=None, ge=-1)
    min_p: float | None = Field(default=None, ge=0, le=1, allow_inf_nan=False)
    repetition_penalty: float | None = Field(default=None, gt=0, le=10, allow_inf_nan=False)
    # The body exactly as the caller sent it (decoded JSON, key order kept): what the container receives.
    _sent: dict[str, Any] = PrivateAttr(default_factory=dict)

    @model_validator(mode="after")
    def _consistent(self) -> ChatCompletionRequest:
        if (
            self.max_tokens is not None
            and self.max_completion_tokens is not None
            and self.max_tokens != self.max_completion_tokens
        ):
            raise _rule("max_tokens", "max_tokens and max_completion_tokens disagree; send one of them")
        if self.stream_options is not None and not self.stream:
            raise _rule("stream_options", "stream_options: only allowed when stream is true")
        if self.top_logprobs is not None and not self.logprobs:
            raise _rule("top_logprobs", "top_logprobs: only allowed when logprobs is true")
        if isinstance(self.tool_choice, NamedToolChoice) or self.tool_choice == "required":
            names = {tool.function.name for tool in self.tools or ()}
            if not names:
                raise _rule("tool_choice", "tool_choice: names a tool or requires one, but no tools are given")
            if isinstance(self.tool_choice, NamedToolChoice) and self.tool_choice.function.name not in names:
                raise _rule("tool_choice", "tool_choice: names a function that is not in tools")
        for key, bias in (self.logit_bias or {}).items():
            if not key.isascii() or not key.isdigit() or not -100 <= bias <= 100:
                raise _rule("logit_bias", "logit_bias: keys are token ids (digits), values between -100 and 100")
        return self

    @property
    def include_usage(self) -> bool:
        """Whether a streamed answer ends with a usage chunk (`stream_options.include_usage`)."""
        return bool(self.stream_options and self.stream_options.include_usage)

    def endpoint_body(self) -> dict[str, Any]:
        """The body for the LMI (vLLM) container: the caller's request as sent, less the proxy-only fields.

        `model` selects the endpoint here, not in the container; `user` is for the caller's own bookkeeping;
        `max_completion_tokens` becomes `max_tokens`, the name every LMI release reads.
        """
        body = dict(self._sent) if self._sent else self.model_dump(mode="json", by_alias=True, exclude_unset=True)
        for proxy_only in ("model", "user", "max_completion_tokens"):
            body.pop(proxy_only, None)
        max_tokens = self.max_tokens or self.max_completion_tokens
        if max_tokens is not None:
            body["max_tokens"] = max_tokens
        if not self.stream:
            body.pop("stream", None)
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
            raise _rule("inputs", "inputs: send at least one text")
        return self


Request = TypeVar("Request", bound=BaseModel)


def parse_request(model: type[Request], body: str | bytes) -> Request:
    """Validate a JSON body into `model`, or raise InvalidRequest saying what is wrong and where."""
    if not body or not body.strip():
        raise InvalidRequest("The request body is empty; send a JSON object.")
    try:
        parsed = model.model_validate_json(body)
    except ValidationError as error:
        message, param = _describe(error)
        raise InvalidRequest(message, param=param) from None
    if isinstance(parsed, ChatCompletionRequest):
        # Forwarded as sent: decoded again with the standard library, which keeps numbers as written
        # (-100 stays an int) and key order; NaN and Infinity, which pydantic's parser let through in
        # unknown fields, are not JSON and are refused here.
        try:
            parsed._sent = json.loads(body, parse_constant=_not_json)
        except ValueError as error:
            raise InvalidRequest(f"The request body is not valid JSON ({error}).") from None
    return parsed


def _not_json(constant: str) -> Any:
    raise ValueError(f"{constant} is not a JSON number")


def _describe(error: ValidationError) -> tuple[str, str | None]:
    # Only locations and pydantic's messages: never the input values, never Python internals.
    found: list[tuple[str, str, str]] = []  # (location, kind, message)
    for item in error.errors(include_url=False, include_input=False):
        location = _location(item["loc"])
        kind = item["type"]
        if kind == "json_invalid":
            return f"The request body is not valid JSON ({item['msg'].removeprefix('Invalid JSON: ')}).", None
        if kind == "model_type" and not location:
            return "The request body must be a JSON object.", None
        if kind in ("union_tag_invalid", "union_tag_not_found"):
            tag = str(item.get("ctx", {}).get("discriminator", "")).strip("'")
            location = f"{location}.{tag}" if tag else location
            expected = item.get("ctx", {}).get("expected_tags")
            message = f"{location}: must be one of {expected}" if expected else f"{location}: Field required"
        elif kind == "proxy_rule":
            location = item["ctx"]["param"]
            message = item["msg"]
        elif kind == "extra_forbidden":
            message = f"{location}: unknown field"
        else:
            message = f"{location or 'body'}: {item['msg']}"
        found.append((location, kind, message))
    # A union (str | list, ...) reports "not a string" beside the real problem in its other member: keep
    # the type complaint only when nothing more precise was said about the same place.
    problems = [
        (location, message)
        for location, kind, message in found
        if not (
            kind.endswith("_type")
            and any(
                not other_kind.endswith("_type") and (where == location or where.startswith(f"{location}."))
                for where, other_kind, _ in found
            )
        )
    ]
    shown = "; ".join(dict.fromkeys(message for _, message in problems[:5]))
    more = f" (and {len(problems) - 5} more)" if len(problems) > 5 else ""
    return f"Invalid request: {shown}{more}.", (problems[0][0] or None) if problems else None


_ROLE_TAGS = frozenset({"system", "developer", "user", "assistant", "tool"})
_FORMAT_TAGS = frozenset({"text", "json_object", "json_schema"})
_UNION_MEMBER = re.compile(r"[\[\](){}]|^(str|int|float|bool|dict|list|none)$|^[A-Z]")


def _location(loc: tuple[str | int, ...]) -> str:
    """The request field at fault in OpenAI's dotted form, without pydantic's union-member labels."""
    parts: list[str | int] = []
    previous: tuple[str | int, ...] = ()
    for part in loc:
        labels_a_member = isinstance(part, str) and (
            _UNION_MEMBER.search(part) is not None
            or (part in _ROLE_TAGS and previous[-2:-1] == ("messages",) and isinstance(previous[-1], int))
            or (part in _FORMAT_TAGS and previous[-1:] == ("response_format",))
        )
        previous = (*previous, part)
        if not labels_a_member:
            parts.append(part)
    return ".".join(str(part) for part in parts)
