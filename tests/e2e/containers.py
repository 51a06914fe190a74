"""The two inference containers, run in this process over artifacts the training container wrote.

`HuggingFaceInferenceContainer` is not a re-implementation: it is the real default handler service of
`sagemaker-huggingface-inference-toolkit` (what the Hugging Face PyTorch inference container serves when the
artifact carries no `code/inference.py`), driven the way Multi Model Server's Python worker drives it: a real
`mms.context.Context`, request headers parsed by `mms.service.Service.retrieve_data_for_inference`, then
`handle(data, context)`. Only MMS's Java frontend and socket protocol are left out.

`LmiChatContainer` stands in for the Large Model Inference container (DJL Serving, vLLM rolling batch) on its
chat-completions schema: the tokenizer's chat template over `messages`, generation with max_tokens /
temperature / top_p / stop / seed, and the response LMI 0.32 writes (`choices`, `usage` with real token counts,
and LMI's finish reasons, which differ from OpenAI's: see `LMI_FINISH_REASONS`).
"""

from __future__ import annotations

import json
import os
import sys
import time
import uuid
from pathlib import Path
from typing import Any
from unittest import mock

TOOLKIT_PINS = (
    "sagemaker-huggingface-inference-toolkit==2.6.0",
    "sagemaker-inference==1.10.1",
    "multi-model-server==1.1.11",
)


def import_handler_service():
    """The toolkit's handler_service module, or None when the toolkit (or MMS) is not installed.

    Imported the way `finetune local serve` imports it (finetune_cli/local/containers.py), which gives the toolkit
    the `transformers.file_utils.is_tf_available` it still expects, for the duration of the import only.
    """
    from finetune_cli.local.containers import ContainerError, _handler_service

    try:
        return _handler_service()
    except ContainerError:
        return None


class HuggingFaceInferenceContainer:
    """The toolkit's default `HuggingFaceHandlerService` over an unpacked model.tar.gz, as MMS runs it."""

    def __init__(self, handler_service, model_dir: Path, environment: dict[str, str]) -> None:
        import mms
        from mms.context import Context

        self.environment = dict(environment)
        self.model_dir = Path(model_dir)
        path_before = list(sys.path)
        with mock.patch.dict(os.environ, self.environment):
            self.service = handler_service.HuggingFaceHandlerService()
            # MMS builds this context when the worker loads the model: model_dir is /opt/ml/model.
            self.context = Context("model", str(self.model_dir), None, 1, None, mms.__version__)
            started = time.perf_counter()
            self.service.initialize(self.context)  # looks for code/inference.py, then the default `load`
            self.load_seconds = time.perf_counter() - started
        sys.path[:] = path_before  # initialize() puts model_dir/code on sys.path for user modules

    @property
    def pipeline(self):
        """What the default `load` returned (a transformers Pipeline)."""
        return self.service.model

    def invoke(
        self, body: bytes, content_type: str = "application/json", accept: str = "application/json"
    ) -> tuple[bytes | str, str]:
        """One /invocations request through the handler service; (response body, response content type)."""
        from mms.metrics.metrics_store import MetricsStore
        from mms.service import Service

        # The frontend's request for a plain (non-multipart) POST: the body as parameter "body", plus headers.
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
        with mock.patch.dict(os.environ, self.environment):
            [response] = self.service.handle(input_batch, self.context)
        return response, self.context.get_response_content_type(0)

    def __call__(self, request: Any) -> Any:
        """The InProcessRuntime seam: the decoded JSON body in, the decoded JSON answer out."""
        response, content_type = self.invoke(json.dumps(request).encode())
        assert content_type == "application/json", content_type
        return json.loads(response)


#: vLLM's finish reasons as LMI's vLLM rolling batch reports them (djl_python rolling_batch_vllm_utils
#: FINISH_REASON_MAPPER): a stop string or EOS both end a vLLM sequence with "stop", which LMI calls "eos_token".
LMI_FINISH_REASONS = {"stop": "eos_token", "length": "length"}
#: The same as vLLM's own OpenAI server (and OpenAI) report them.
OPENAI_FINISH_REASONS = {"stop": "stop", "length": "length"}


class LmiChatContainer:
    """A chat-completions endpoint over a fine-tuned causal LM directory, answering as LMI does."""

    def __init__(
        self, model_dir: Path, finish_reasons: dict[str, str] = LMI_FINISH_REASONS, default_max_tokens: int = 64
    ) -> None:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        started = time.perf_counter()
        self.tokenizer = AutoTokenizer.from_pretrained(model_dir)
        # The artifact is bfloat16 for GPUs; this CPU stand-in computes in float32.
        self.model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
        self.load_seconds = time.perf_counter() - started
        self.finish_reasons = finish_reasons
        self.default_max_tokens = default_max_tokens  # this stand-in's choice; the tests always send max_tokens
        eos = self.model.generation_config.eos_token_id
        self.eos_ids = set(eos if isinstance(eos, list) else [eos]) | {self.tokenizer.eos_token_id}

    def prompt_ids(self, messages: list[dict]) -> list[int]:
        """The token ids of the chat template applied to `messages`, ready for the assistant's turn."""
        flat = [{"role": m["role"], "content": _text(m["content"])} for m in messages]
        return self.tokenizer.apply_chat_template(flat, add_generation_prompt=True, return_dict=True)["input_ids"]

    def __call__(self, body: Any) -> dict:
        import torch

        if not isinstance(body, dict) or not body.get("messages"):
            raise ValueError("this endpoint serves the chat-completions schema: send messages")
        prompt = self.prompt_ids(body["messages"])
        max_tokens = int(body.get("max_tokens") or self.default_max_tokens)
        temperature = float(body.get("temperature", 1.0))  # vLLM's default sampling temperature
        top_p = float(body.get("top_p", 1.0))
        stop = body.get("stop") or []
        stops = [stop] if isinstance(stop, str) else list(stop)
        if body.get("seed") is not None:
            torch.manual_seed(int(body["seed"]))
        sampling = (
            {"do_sample": True, "temperature": temperature, "top_p": top_p} if temperature > 0 else {"do_sample": False}
        )
        with torch.no_grad():
            output = self.model.generate(
                input_ids=torch.tensor([prompt]),
                attention_mask=torch.ones(1, len(prompt), dtype=torch.long),
                max_new_tokens=max_tokens,
                pad_token_id=self.tokenizer.pad_token_id,
                **sampling,
                **({"stop_strings": stops, "tokenizer": self.tokenizer} if stops else {}),
            )
        generated = output[0, len(prompt) :].tolist()
        text, counted, reason = self._finish(generated, stops, max_tokens)
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
        for at, token in enumerate(generated):
            if token in self.eos_ids:  # EOS ends the sequence; it is counted but not shown
                text = self.tokenizer.decode(generated[:at], skip_special_tokens=True)
                return _cut_at_stop(text, stops)[0], at + 1, "stop"
        text = self.tokenizer.decode(generated, skip_special_tokens=True)
        cut, stopped = _cut_at_stop(text, stops)
        if stopped:  # vLLM stops at the token that completes a stop string, and leaves the string out
            counted = next(
                k
                for k in range(1, len(generated) + 1)
                if _cut_at_stop(self.tokenizer.decode(generated[:k], skip_special_tokens=True), stops)[1]
            )
            return cut, counted, "stop"
        assert len(generated) == max_tokens, (len(generated), max_tokens)
        return text, len(generated), "length"


def _cut_at_stop(text: str, stops: list[str]) -> tuple[str, bool]:
    positions = [text.find(s) for s in stops if s and s in text]
    return (text[: min(positions)], True) if positions else (text, False)


def _text(content: Any) -> str:
    """A message's content as text: a string, or the text parts of a list (the OpenAI content-part form)."""
    if isinstance(content, str):
        return content
    return "".join(part["text"] for part in content if part.get("type") == "text")
