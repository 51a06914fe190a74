"""The two inference containers, run in this process over artifacts the training container wrote.

Both are `finetune local serve`'s own containers (finetune_cli/local/containers.py), adapted to the
InProcessRuntime seam (the decoded JSON request in, the decoded JSON answer out):

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
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from finetune_cli.local.containers import (
    LMI_FINISH_REASONS,
    OPENAI_FINISH_REASONS,
    ChatContainer,
    ContainerError,
    HuggingFaceContainer,
    _handler_service,
)

__all__ = [
    "LMI_FINISH_REASONS",
    "OPENAI_FINISH_REASONS",
    "TOOLKIT_PINS",
    "HuggingFaceInferenceContainer",
    "LmiChatContainer",
    "import_handler_service",
]

TOOLKIT_PINS = (
    "sagemaker-huggingface-inference-toolkit==2.6.0",
    "sagemaker-inference==1.10.1",
    "multi-model-server==1.1.11",
)


def import_handler_service():
    """The toolkit's handler_service module, or None when the toolkit (or MMS) is not installed.

    Imported the way `finetune local serve` imports it, which gives the toolkit the
    `transformers.file_utils.is_tf_available` it still expects, for the duration of the import only.
    """
    try:
        return _handler_service()
    except ContainerError:
        return None


class HuggingFaceInferenceContainer(HuggingFaceContainer):
    """The toolkit's default `HuggingFaceHandlerService` over an unpacked model.tar.gz, as MMS runs it
    (`.service`, `.context`, `.pipeline`, `.load_seconds` are local serve's)."""

    def __call__(self, request: Any) -> Any:
        """The InProcessRuntime seam: the decoded JSON body in, the decoded JSON answer out."""
        response, content_type = self.invoke(json.dumps(request).encode(), "application/json", "application/json")
        assert content_type == "application/json", content_type
        return json.loads(response)


class LmiChatContainer(ChatContainer):
    """A chat-completions endpoint over a fine-tuned causal LM directory, answering as LMI does: local serve's
    ChatContainer under the environment the endpoints set (HF_MODEL_ID=/opt/ml/model)."""

    def __init__(
        self, model_dir: Path, finish_reasons: Mapping[str, str] = LMI_FINISH_REASONS, default_max_tokens: int = 64
    ) -> None:
        super().__init__(model_dir, {}, finish_reasons=finish_reasons, default_max_tokens=default_max_tokens)

    def __call__(self, body: Any) -> dict:
        """The InProcessRuntime seam: a request the container rejects raises (the runtime answers a ModelError)."""
        return self.answer(body)
