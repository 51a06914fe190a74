"""The inference containers of a deployed model, run in this process over the unpacked model.tar.gz.

- Hugging Face PyTorch inference images: the real default handler service of ``sagemaker-huggingface-inference-
  toolkit``, driven the way Multi Model Server's Python worker drives it (an ``mms`` Context, the request parsed by
  ``mms.service.Service``, then ``handle``). Only MMS's Java frontend is left out (as tests/e2e does).
- LMI (DJL Serving) images: a chat-completions answer over the model directory (greedy when temperature is 0).
"""

from __future__ import annotations

import contextlib
import importlib
import json
import os
import sys
import time
import uuid
from collections.abc import Mapping
from pathlib import Path
from types import ModuleType
from typing import Protocol
from unittest import mock

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
            self.context = Context("model", str(model_dir), None, 1, None, mms.__version__)
            self.service.initialize(self.context)
        sys.path[:] = path_before  # initialize() puts model_dir/code on sys.path for user modules

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


class ChatContainer:
    """Chat completions over a causal LM directory, in the OpenAI schema LMI answers with."""

    def __init__(self, model_dir: Path, environment: dict[str, str]) -> None:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

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

        self.tokenizer = AutoTokenizer.from_pretrained(model_dir)
        self.model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()

    def invoke(self, body: bytes, content_type: str, accept: str) -> tuple[bytes, str]:
        import torch

        try:
            request = json.loads(body)
        except ValueError:
            raise ContainerError(400, "the body is not JSON") from None
        if not isinstance(request, dict) or not request.get("messages"):
            raise ContainerError(400, "this endpoint serves the chat-completions schema: send messages")
        messages = [
            {
                "role": m["role"],
                "content": m["content"]
                if isinstance(m["content"], str)
                else "".join(p.get("text", "") for p in m["content"]),
            }
            for m in request["messages"]
        ]
        encoded = self.tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_dict=True)
        if not isinstance(encoded, Mapping):  # return_dict=True: a BatchEncoding
            raise TypeError(f"apply_chat_template(return_dict=True) returned {type(encoded).__name__}")
        prompt = encoded["input_ids"]
        temperature = float(request.get("temperature", 1.0))
        sampling = (
            {"do_sample": True, "temperature": temperature, "top_p": float(request.get("top_p", 1.0))}
            if temperature > 0
            else {"do_sample": False}
        )
        if request.get("seed") is not None:
            torch.manual_seed(int(request["seed"]))
        max_tokens = int(request.get("max_tokens") or 64)
        with torch.no_grad():
            output = self.model.generate(
                input_ids=torch.tensor([prompt]),
                attention_mask=torch.ones(1, len(prompt), dtype=torch.long),
                max_new_tokens=max_tokens,
                pad_token_id=self.tokenizer.pad_token_id,
                **sampling,
            )
        generated = output[0, len(prompt) :].tolist()
        eos = {self.tokenizer.eos_token_id}
        cut = next((i for i, token in enumerate(generated) if token in eos), None)
        text = self.tokenizer.decode(generated[:cut] if cut is not None else generated, skip_special_tokens=True)
        answer = {
            "id": f"chatcmpl-{uuid.uuid4().hex}",
            "object": "chat.completion",
            "created": int(time.time()),
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": text},
                    "logprobs": None,
                    "finish_reason": "eos_token" if cut is not None else "length",
                }
            ],
            "usage": {
                "prompt_tokens": len(prompt),
                "completion_tokens": len(generated) if cut is None else cut + 1,
                "total_tokens": len(prompt) + (len(generated) if cut is None else cut + 1),
            },
        }
        return json.dumps(answer).encode(), "application/json"


def container_for(image: str, model_dir: Path, environment: dict[str, str]) -> Container:
    """The local stand-in for the image a model runs in."""
    if "huggingface-pytorch-inference" in image:
        return HuggingFaceContainer(model_dir, environment)
    if "djl-inference" in image:
        return ChatContainer(model_dir, environment)
    raise ContainerError(500, f"no local container for image {image}")
