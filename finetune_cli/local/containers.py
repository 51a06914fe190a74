"""The inference containers of a deployed model, run in this process over the unpacked model.tar.gz.

- Hugging Face PyTorch inference images: the real default handler service of ``sagemaker-huggingface-inference-
  toolkit``, driven the way Multi Model Server's Python worker drives it (an ``mms`` Context, the request parsed by
  ``mms.service.Service``, then ``handle``). Only MMS's Java frontend is left out (as tests/e2e does).
- LMI (DJL Serving) images: a stand-in for LMI's chat-completions schema (vLLM rolling batch) over the model
  directory: the tokenizer's chat template over `messages`, generation with max_tokens / temperature / top_p / stop /
  seed, and the answer LMI writes (`choices`, `usage` with real token counts, LMI's finish reasons).

tests/e2e serves its fine-tuned models with these same classes.
"""

from __future__ import annotations

import contextlib
import importlib
import json
import math
import os
import sys
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any, Protocol, TypeGuard
from unittest import mock

from lambda_handlers.inference_proxy.schemas import MAX_STOP_STRINGS  # the proxy's limit, which it enforces first

#: Where SageMaker unpacks a model's model.tar.gz in its container.
MODEL_DIR = "/opt/ml/model"


class Container(Protocol):
    """What serve and transform jobs call: one request in, the answer and its content type out."""

    def invoke(self, body: bytes, content_type: str, accept: str) -> tuple[bytes, str]: ...


class ContainerError(Exception):
    """The model container answered with an error status (SageMaker's ModelError)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def _handler_service() -> ModuleType:
    """The toolkit's handler_service module. The toolkit (2.6.0) imports `is_tf_available` from
    `transformers.file_utils`, which transformers 5 removed; the image's transformers 4.x answers False there."""
    try:
        importlib.import_module("sagemaker_inference")
        importlib.import_module("mms.service")
    except ImportError as error:
        raise ContainerError(
            500,
            f"the Hugging Face inference toolkit is not installed ({error}): pip install "
            "--no-deps sagemaker-huggingface-inference-toolkit==2.6.0 sagemaker-inference==1.10.1 "
            "multi-model-server==1.1.11",
        ) from None
    import transformers.file_utils as file_utils

    # Only while the toolkit imports, and only where it is missing (create=True removes it again afterwards).
    shim = (
        contextlib.nullcontext()
        if hasattr(file_utils, "is_tf_available")
        else mock.patch.object(file_utils, "is_tf_available", lambda: False, create=True)
    )
    with shim:
        return importlib.import_module("sagemaker_huggingface_inference_toolkit.handler_service")


class HuggingFaceContainer:
    """The HF inference image's default handler service over /opt/ml/model."""

    def __init__(self, model_dir: Path, environment: dict[str, str]) -> None:
        import mms
        from mms.context import Context

        self.environment = dict(environment)
        path_before = list(sys.path)
        with mock.patch.dict(os.environ, self.environment):
            self.service = _handler_service().HuggingFaceHandlerService()
            # MMS builds this context when the worker loads the model: model_dir is /opt/ml/model.
            self.context = Context("model", str(model_dir), None, 1, None, mms.__version__)
            started = time.perf_counter()
            self.service.initialize(self.context)  # looks for code/inference.py, then the default `load`
            self.load_seconds = time.perf_counter() - started
        sys.path[:] = path_before  # initialize() puts model_dir/code on sys.path for user modules

    @property
    def pipeline(self) -> Any:
        """What the default `load` returned (a transformers Pipeline)."""
        return self.service.model

    def invoke(self, body: bytes, content_type: str, accept: str) -> tuple[bytes, str]:
        from mms.metrics.metrics_store import MetricsStore
        from mms.service import PredictionException, Service

        batch = [
            {
                "requestId": uuid.uuid4().hex.encode(),
                "parameters": [{"name": "body", "contentType": content_type, "value": body}],
                "headers": [
                    {"name": b"Content-Type", "value": content_type.encode()},
                    {"name": b"Accept", "value": accept.encode()},
                ],
            }
        ]
        headers, input_batch, request_ids = Service.retrieve_data_for_inference(batch)
        self.context.request_ids = request_ids
        self.context.request_processor = headers
        self.context.metrics = MetricsStore(request_ids, self.context.model_name)
        try:
            with mock.patch.dict(os.environ, self.environment):
                [response] = self.service.handle(input_batch, self.context)
        except PredictionException as error:  # MMS's worker answers these with their error code
            raise ContainerError(error.error_code, error.message) from None
        answer = response if isinstance(response, bytes) else str(response).encode()
        return answer, self.context.get_response_content_type(0) or "application/json"


#: vLLM's finish reasons as LMI's vLLM rolling batch reports them (djl_python rolling_batch_vllm_utils
#: FINISH_REASON_MAPPER): a stop string or EOS both end a vLLM sequence with "stop", which LMI calls "eos_token".
LMI_FINISH_REASONS: Mapping[str, str] = {"stop": "eos_token", "length": "length"}
#: The same as vLLM's own OpenAI server (and OpenAI) report them.
OPENAI_FINISH_REASONS: Mapping[str, str] = {"stop": "stop", "length": "length"}


@dataclass(frozen=True)
class ChatRequest:
    """A chat-completions body, checked: what generation reads from it."""

    messages: list[dict[str, str]]
    max_tokens: int | None
    temperature: float
    top_p: float
    stops: list[str]
    seed: int | None

    @classmethod
    def parse(cls, body: object) -> ChatRequest:
        """The request in `body` (decoded JSON), or ContainerError(400) naming the field that is wrong."""
        if not isinstance(body, dict) or not body.get("messages"):
            raise ContainerError(400, "this endpoint serves the chat-completions schema: send messages")
        if not isinstance(body["messages"], list):
            raise ContainerError(400, "messages: expected a list of messages")
        max_tokens = body.get("max_tokens")
        if max_tokens is not None and (not _is_int(max_tokens) or max_tokens < 1):
            raise ContainerError(400, f"max_tokens: expected a positive integer, got {max_tokens!r}")
        temperature = _number(body, "temperature", 1.0)  # vLLM's default sampling temperature
        if temperature < 0:
            raise ContainerError(400, f"temperature: expected a number >= 0, got {temperature!r}")
        top_p = _number(body, "top_p", 1.0)
        if not 0 < top_p <= 1:
            raise ContainerError(400, f"top_p: expected a number in (0, 1], got {top_p!r}")
        seed = body.get("seed")
        if seed is not None and (not _is_int(seed) or not -(2**63) <= seed < 2**64):  # torch.manual_seed's range
            raise ContainerError(400, f"seed: expected an integer, got {seed!r}")
        return cls(
            messages=[_message(m, at) for at, m in enumerate(body["messages"])],
            max_tokens=max_tokens,
            temperature=temperature,
            top_p=top_p,
            stops=_stops(body.get("stop")),
            seed=seed,
        )


def _is_int(value: object) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool)


def _number(body: dict[str, Any], field: str, default: float) -> float:
    value = body.get(field)
    if value is None:
        return default
    if not isinstance(value, int | float) or isinstance(value, bool) or not math.isfinite(value):
        raise ContainerError(400, f"{field}: expected a number, got {value!r}")
    return float(value)


def _stops(stop: object) -> list[str]:
    """The non-empty stop strings of a request's `stop` (absent, a string, or a list of at most 4 strings)."""
    stops = [] if stop is None else [stop] if isinstance(stop, str) else stop
    if not isinstance(stops, list) or len(stops) > MAX_STOP_STRINGS or not all(isinstance(s, str) for s in stops):
        raise ContainerError(
            400, f"stop: expected a string or a list of at most {MAX_STOP_STRINGS} strings, got {stop!r}"
        )
    return [s for s in stops if s]


def _message(message: object, at: int) -> dict[str, str]:
    """One message with its content as text: a string, or the text parts of a list (the OpenAI content-part form)."""
    if not isinstance(message, dict) or not isinstance(message.get("role"), str):
        raise ContainerError(400, f"messages[{at}]: expected an object with a role")
    content = message.get("content")
    if content is None or isinstance(content, str):
        return {"role": message["role"], "content": content or ""}
    if isinstance(content, list) and all(isinstance(part, dict) for part in content):
        texts = [part.get("text") for part in content if part.get("type") == "text"]
        if all(isinstance(text, str) for text in texts):
            return {"role": message["role"], "content": "".join(str(text) for text in texts)}
    raise ContainerError(400, f"messages[{at}].content: expected a string or a list of content parts")


class ChatContainer:
    """Chat completions over a causal LM directory, in the OpenAI schema LMI answers with.

    Generation follows vLLM's sampling parameters as LMI passes them: max_tokens, temperature (0: greedy), top_p,
    seed and stop (the completion ends at the token that completes a stop string, and leaves the string out); EOS
    is the tokenizer's or any of the model's generation_config. Finish reasons are LMI's by default
    (`LMI_FINISH_REASONS`); `finish_reasons=OPENAI_FINISH_REASONS` answers as vLLM's OpenAI server does.
    """

    def __init__(
        self,
        model_dir: Path,
        environment: Mapping[str, str] | None = None,
        finish_reasons: Mapping[str, str] = LMI_FINISH_REASONS,
        default_max_tokens: int = 64,
    ) -> None:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        environment = environment or {}
        # LMI loads what HF_MODEL_ID names (the artifact is unpacked to /opt/ml/model) and serves the
        # chat-completions schema only with a rolling-batch backend.
        if environment.get("HF_MODEL_ID", MODEL_DIR) != MODEL_DIR:
            raise ContainerError(
                500,
                f"HF_MODEL_ID={environment['HF_MODEL_ID']}: LMI would serve that model, not "
                f"the deployed artifact in {MODEL_DIR}",
            )
        if environment.get("OPTION_ROLLING_BATCH", "auto") == "disable":
            raise ContainerError(
                500, "OPTION_ROLLING_BATCH=disable: LMI serves chat completions only with a rolling-batch backend"
            )

        started = time.perf_counter()
        self.tokenizer = AutoTokenizer.from_pretrained(model_dir)
        # The artifact is bfloat16 for GPUs; this CPU stand-in computes in float32.
        self.model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
        self.load_seconds = time.perf_counter() - started
        self.finish_reasons = dict(finish_reasons)
        self.default_max_tokens = default_max_tokens  # this stand-in's choice when a request sends no max_tokens
        eos = self.model.generation_config.eos_token_id
        ids = eos if isinstance(eos, list) else [eos]
        self.eos_ids: set[int] = {i for i in [*ids, self.tokenizer.eos_token_id] if i is not None}

    def prompt_ids(self, messages: list[dict[str, str]]) -> list[int]:
        """The token ids of the chat template applied to `messages` (text content), ready for the assistant's turn."""
        from jinja2 import TemplateError

        try:
            encoded = self.tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_dict=True)
        except TemplateError as error:  # the template rejects the conversation (a role it does not know, ...)
            raise ContainerError(400, f"messages: the chat template rejects them: {error}") from None
        if not isinstance(encoded, Mapping):  # return_dict=True: a BatchEncoding
            raise TypeError(f"apply_chat_template(return_dict=True) returned {type(encoded).__name__}")
        return list(encoded["input_ids"])

    def invoke(self, body: bytes, content_type: str, accept: str) -> tuple[bytes, str]:
        try:
            request = json.loads(body)
        except ValueError:
            raise ContainerError(400, "the body is not JSON") from None
        return json.dumps(self.answer(request)).encode(), "application/json"

    def answer(self, body: object) -> dict[str, Any]:
        """The chat completion for a decoded request body (ContainerError(400) when the body is not one)."""
        import torch

        request = ChatRequest.parse(body)
        prompt = self.prompt_ids(request.messages)
        max_tokens = request.max_tokens or self.default_max_tokens
        if request.seed is not None:
            torch.manual_seed(request.seed)
        sampling: dict[str, Any] = (
            {"do_sample": True, "temperature": request.temperature, "top_p": request.top_p}
            if request.temperature > 0
            else {"do_sample": False}
        )
        if request.stops:
            sampling.update(stop_strings=request.stops, tokenizer=self.tokenizer)
        with torch.no_grad():
            output = self.model.generate(
                input_ids=torch.tensor([prompt]),
                attention_mask=torch.ones(1, len(prompt), dtype=torch.long),
                max_new_tokens=max_tokens,
                pad_token_id=self.tokenizer.pad_token_id,
                **sampling,
            )
        generated: list[int] = output[0, len(prompt) :].tolist()
        text, counted, reason = self._finish(generated, request.stops, max_tokens)
        return {
            "id": f"chatcmpl-{uuid.uuid4().hex}",
            "object": "chat.completion",
            "created": int(time.time()),
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": text},
                    "logprobs": None,
                    "finish_reason": self.finish_reasons[reason],
                }
            ],
            "usage": {
                "prompt_tokens": len(prompt),
                "completion_tokens": counted,
                "total_tokens": len(prompt) + counted,
            },
        }

    def _finish(self, generated: list[int], stops: list[str], max_tokens: int) -> tuple[str, int, str]:
        """(content, completion tokens, vLLM finish reason) for the generated ids."""
        end = next((at for at, token in enumerate(generated) if token in self.eos_ids), None)
        shown = generated if end is None else generated[:end]  # EOS ends the sequence; it is counted, not shown

        def decode(ids: list[int]) -> str:
            return str(self.tokenizer.decode(ids, skip_special_tokens=True))

        text = decode(shown)
        cut, stopped = _cut_at_stop(text, stops)
        if stopped:  # vLLM stops at the token that completes a stop string, and leaves the string out
            counted = next(k for k in range(1, len(shown) + 1) if _cut_at_stop(decode(shown[:k]), stops)[1])
            return cut, counted, "stop"
        if end is not None:
            return text, end + 1, "stop"
        # Fewer tokens than asked for with no EOS and no stop string in the text: generation still stopped for a
        # stop reason (a stop string matched on tokens that decode differently), which vLLM reports as "stop".
        return text, len(generated), "length" if len(generated) >= max_tokens else "stop"


def _cut_at_stop(text: str, stops: list[str]) -> tuple[str, bool]:
    """The text before the first stop string in it, and whether there was one."""
    positions = [text.find(s) for s in stops if s and s in text]
    return (text[: min(positions)], True) if positions else (text, False)


def container_for(image: str, model_dir: Path, environment: dict[str, str]) -> Container:
    """The local stand-in for the image a model runs in."""
    if "huggingface-pytorch-inference" in image:
        return HuggingFaceContainer(model_dir, environment)
    if "djl-inference" in image:
        return ChatContainer(model_dir, environment)
    raise ContainerError(500, f"no local container for image {image}")
