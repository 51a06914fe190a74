"""Loading the base model and tokenizer, applying LoRA/QLoRA/full fine-tuning, and saving the output model."""

from __future__ import annotations

import os
from pathlib import Path

import torch

from .config import TrainConfig
from .errors import TrainingError

# Existing vocabulary entries used as a pad token distinct from EOS, so no embedding resize is needed.
_PAD_CANDIDATES = ("<pad>", "<|pad|>", "[PAD]", "<|finetune_right_pad_id|>", "<|endoftext|>", "<unk>")


# Offline models packaged on PyPI (requirements-models.txt), for local runs: --base_model local:minilm
LOCAL_MODELS = {"local:minilm": "minilm", "local:smollm2": "smollm2"}


def resolve_base_model(config: TrainConfig) -> str:
    """The base model location: ``base_model`` (a path, hub id or ``local:minilm``/``local:smollm2``) or the
    model channel (a GGUF-only directory is converted to safetensors once)."""
    location = config.base_model or config.model_channel
    if location is None:
        raise TrainingError("no base model: set base_model or provide the model channel")
    if location in LOCAL_MODELS:
        from . import local_models

        return str(getattr(local_models, LOCAL_MODELS[location])())
    path = Path(location)
    if path.exists():
        if not (path / "config.json").is_file():
            ggufs = sorted(path.glob("*.gguf")) if path.is_dir() else ([path] if path.suffix == ".gguf" else [])
            if not ggufs:
                raise TrainingError(f"base model {location} has no config.json (nor a .gguf file) to load")
            from .local_models import cache_dir, gguf_to_hf

            return str(gguf_to_hf(ggufs[0], cache_dir() / ggufs[0].stem))
        return str(path)
    if config.base_model and not os.path.isabs(config.base_model) and config.base_model.count("/") <= 1:
        return config.base_model  # a hub id; transformers reports whether it can be fetched
    raise TrainingError(f"base model {location} does not exist")


def load_tokenizer(location: str, task: str):
    """The tokenizer, with a pad token (distinct from EOS for causal-lm so EOS is learned, not masked)."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(location)
    if task == "causal-lm" and (tokenizer.pad_token_id is None or tokenizer.pad_token_id == tokenizer.eos_token_id):
        vocab = tokenizer.get_vocab()
        for candidate in _PAD_CANDIDATES:
            if candidate in vocab and vocab[candidate] != tokenizer.eos_token_id:
                tokenizer.pad_token = candidate
                break
        else:
            tokenizer.add_special_tokens({"pad_token": "<|pad|>"})
    elif tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "right"
    return tokenizer


def device_and_dtype(local_rank: int) -> tuple[torch.device, torch.dtype]:
    """The device, and the dtype weights are kept in (bf16 on capable GPUs, fp32 on CPU)."""
    if torch.cuda.is_available():
        torch.cuda.set_device(local_rank)
        return torch.device("cuda", local_rank), (torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16)
    return torch.device("cpu"), torch.float32


def attention_implementation(config: TrainConfig, device: torch.device) -> str:
    """``flash_attention_2`` for causal LMs on CUDA where the flash-attn package is installed, else ``sdpa``.

    Packed rows carry position ids that restart per example and no attention mask. With flash attention,
    transformers turns those into variable-length sequences (cu_seqlens), so no score is computed across
    examples or on padding; with SDPA it builds a block-diagonal causal mask from them instead.
    """
    import importlib.util

    if config.task == "causal-lm" and device.type == "cuda" and importlib.util.find_spec("flash_attn") is not None:
        return "flash_attention_2"
    return "sdpa"


def load_model(config: TrainConfig, location: str, tokenizer, device: torch.device, dtype: torch.dtype, labels=None,
               place: bool = True):
    """The model ready for training: full, LoRA or QLoRA; on ``device`` unless ``place`` is false (FSDP moves it)."""
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification

    kwargs: dict = {"attn_implementation": attention_implementation(config, device)}
    # Full fine-tuning keeps fp32 master weights (autocast handles bf16 compute); adapters train over a 16-bit base.
    load_dtype = torch.float32 if config.method == "full" else dtype
    if config.method == "qlora":
        if not torch.cuda.is_available():
            raise TrainingError(
                "method=qlora needs a CUDA GPU (bitsandbytes 4-bit kernels) and this machine has none; "
                "use method=lora (or full) here, or run on a GPU instance"
            )
        from transformers import BitsAndBytesConfig

        kwargs["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type="nf4",
            bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=dtype,
        )
        kwargs["device_map"] = {"": device.index or 0}
    if config.task == "classification":
        id2label = {i: str(label) for i, label in enumerate(labels)}
        model = AutoModelForSequenceClassification.from_pretrained(
            location,
            num_labels=len(labels),
            id2label=id2label,
            label2id={v: k for k, v in id2label.items()},
            problem_type="single_label_classification",
            dtype=load_dtype,
            **kwargs,
        )
        model.config.pad_token_id = tokenizer.pad_token_id
    else:
        model = AutoModelForCausalLM.from_pretrained(location, dtype=load_dtype, **kwargs)
        # transformers annotates get_input_embeddings() as a bare nn.Module, whose attributes type as Tensor | Module.
        if len(tokenizer) > model.get_input_embeddings().weight.shape[0]:  # type: ignore[index]
            model.resize_token_embeddings(len(tokenizer))
        model.config.pad_token_id = tokenizer.pad_token_id
        if model.generation_config is not None:
            model.generation_config.pad_token_id = tokenizer.pad_token_id
        model.config.use_cache = False
    if place and "quantization_config" not in kwargs:
        model.to(device)
    if config.gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    if config.method in ("lora", "qlora"):
        from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training

        if config.method == "qlora":
            model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=config.gradient_checkpointing)
        elif config.gradient_checkpointing:
            model.enable_input_require_grads()
        lora = LoraConfig(
            r=config.lora_r,
            lora_alpha=config.lora_alpha,
            lora_dropout=config.lora_dropout,
            target_modules=config.lora_targets,
            task_type="CAUSAL_LM" if config.task == "causal-lm" else "SEQ_CLS",
        )
        try:
            model = get_peft_model(model, lora)
        except ValueError as err:
            raise TrainingError(f"lora_target_modules={config.lora_target_modules!r}: {err}") from None
        # Trainable adapter weights in fp32 for stable optimizer updates over a 16-bit base.
        for param in model.parameters():
            if param.requires_grad:
                param.data = param.data.float()
    return model


def save_output(model, tokenizer, config: TrainConfig, model_dir: Path, dtype: torch.dtype,
                state_dict: dict | None = None) -> None:
    """Write the HF model (adapters merged into a 16-bit base) and, for LoRA/QLoRA, ``adapter/`` beside it.

    ``state_dict``: the whole weights when ``model`` is sharded (FSDP, full fine-tuning only).
    """
    if config.method == "full":
        if getattr(model.config, "use_cache", None) is False:
            model.config.use_cache = True
        model.save_pretrained(model_dir, safe_serialization=True, state_dict=state_dict)
    else:
        model.save_pretrained(model_dir / "adapter", safe_serialization=True)
        out_dtype = dtype if dtype != torch.float32 else torch.bfloat16
        if config.method == "qlora":
            # Merge into a freshly loaded 16-bit base: merging into 4-bit weights would lose precision.
            from peft import PeftModel
            from transformers import AutoModelForCausalLM

            base = AutoModelForCausalLM.from_pretrained(model.peft_config["default"].base_model_name_or_path, dtype=out_dtype)
            merged = PeftModel.from_pretrained(base, model_dir / "adapter").merge_and_unload()
        else:
            import copy

            merged = copy.deepcopy(model).merge_and_unload()
        merged = merged.to(out_dtype)
        merged.config.use_cache = True
        merged.save_pretrained(model_dir, safe_serialization=True)
    tokenizer.save_pretrained(model_dir)
