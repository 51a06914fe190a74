"""Loading the base model and tokenizer, applying LoRA/QLoRA/full fine-tuning, and saving the output model."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import torch

from .config import TrainConfig
from .contract import ADAPTER_DIR
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


def load_model(
    config: TrainConfig,
    location: str,
    tokenizer,
    device: torch.device,
    dtype: torch.dtype,
    labels=None,
    place: bool = True,
):
    """The model ready for training: full, LoRA or QLoRA; on ``device`` unless ``place`` is false (FSDP moves it)."""
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification

    kwargs: dict = {}
    if attention_implementation(config, device) != "sdpa":
        kwargs["attn_implementation"] = attention_implementation(config, device)
    # SDPA is transformers' own default where an architecture has it; asking for it by name fails on those
    # without attention (recurrent models), which then fall back to padded batches rather than not loading.
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
        if classifier_pooling(config, location, model) == "mean":
            add_mean_pooling_layer(model)
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
            use_rslora=config.lora_scaling == "rslora",
            target_modules=config.lora_targets,
            task_type="CAUSAL_LM" if config.task == "causal-lm" else "SEQ_CLS",
            # The appended mean-pooling layer stays exactly what add_mean_pooling_layer made it.
            exclude_modules=(
                rf".*encoder\.layer\.{model.config.num_hidden_layers - 1}\..*"
                if getattr(model.config, "finetune_pooling", None)
                else None
            ),
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


# Sentence-transformers directories name their pooling here (modules.json points at the Pooling module's folder).
_ST_POOLING_MODULE = "sentence_transformers.models.Pooling"
# BERT-family sequence classifiers whose encoder layers take the layer appended by add_mean_pooling_layer.
_MEAN_POOLING_TYPES = ("bert",)
# attention.output.dense scales the mean by this before the residual adds the first token's own state; the
# LayerNorm after it is scale invariant, so the first token's contribution shrinks to ~1/_POOL_SCALE.
_POOL_SCALE = 1e4


def declared_pooling(location: str) -> str | None:
    """The pooling a sentence-transformers model directory declares (``mean``, ``cls``, ...), or None."""
    import json

    root = Path(location)
    try:
        modules = json.loads((root / "modules.json").read_text())
        folder = next(m["path"] for m in modules if m.get("type") == _ST_POOLING_MODULE)
        pooling = json.loads((root / folder / "config.json").read_text())
    except (OSError, ValueError, StopIteration, KeyError, TypeError):
        return None
    modes = {
        "pooling_mode_cls_token": "cls",
        "pooling_mode_mean_tokens": "mean",
        "pooling_mode_max_tokens": "max",
        "pooling_mode_lasttoken": "lasttoken",
        "pooling_mode_weightedmean_tokens": "weightedmean",
    }
    declared = [mode for key, mode in modes.items() if pooling.get(key)]
    return declared[0] if len(declared) == 1 else None


def classifier_pooling(config: TrainConfig, location: str, model) -> str:
    """``mean`` or ``cls``: what the classifier reads. ``auto`` follows the pooling the encoder was trained with
    (all-MiniLM-L6-v2 was trained through mean pooling; its first-token pooler never was)."""
    wanted = config.classifier_pooling
    if wanted == "auto":
        wanted = "mean" if declared_pooling(location) == "mean" else "cls"
    if wanted == "mean" and model.config.model_type not in _MEAN_POOLING_TYPES:
        if config.classifier_pooling == "mean":
            raise TrainingError(
                f"classifier_pooling=mean: supported for {', '.join(_MEAN_POOLING_TYPES)} encoders, "
                f"not model_type={model.config.model_type}; use classifier_pooling=cls"
            )
        print(
            f"classifier_pooling=auto: {model.config.model_type} declares mean pooling but only "
            f"{', '.join(_MEAN_POOLING_TYPES)} encoders can pool by mean here; using the first-token head",
            file=sys.stderr,
            flush=True,
        )
        wanted = "cls"
    return wanted


@torch.no_grad()
def add_mean_pooling_layer(model) -> None:
    """Make a BERT sequence classifier read the mean of its last hidden states, in a standard architecture.

    One frozen encoder layer is appended whose attention is uniform over the text's tokens (zero query and key
    weights; the attention mask excludes padding) with identity values, so its output at the first position is
    LayerNorm(mean of the previous layer's states); its feed-forward adds nothing. The pooler (the dense + tanh
    before the classifier) starts as the identity. The saved model is a plain ``BertForSequenceClassification`` with
    one more layer, so anything that serves the usual architecture serves this one and computes the same thing.
    """
    import copy

    layers = model.base_model.encoder.layer
    layer = copy.deepcopy(layers[-1])
    hidden = model.config.hidden_size
    eye = torch.eye(hidden)
    attention = layer.attention
    for linear, weight in (
        (attention.self.query, 0.0),
        (attention.self.key, 0.0),
        (attention.self.value, eye),
        (attention.output.dense, eye * _POOL_SCALE),
        (layer.intermediate.dense, 0.0),
        (layer.output.dense, 0.0),
    ):
        linear.weight.copy_(weight if isinstance(weight, torch.Tensor) else torch.zeros_like(linear.weight))
        linear.bias.zero_()
    for norm in (attention.output.LayerNorm, layer.output.LayerNorm):
        norm.weight.fill_(1.0)
        norm.bias.zero_()
    layer.requires_grad_(False)
    if hasattr(layer.attention.self, "layer_idx"):
        layer.attention.self.layer_idx = len(layers)
    layers.append(layer)
    model.config.num_hidden_layers += 1
    pooler = getattr(model.base_model, "pooler", None)
    if pooler is not None:
        pooler.dense.weight.copy_(eye)
        pooler.dense.bias.zero_()
    # Read by nothing at serving time: it records why the classifier has one layer more than its base.
    model.config.finetune_pooling = "mean (last layer: uniform attention, frozen)"


def packing_supported(model) -> tuple[bool, str]:
    """Whether ``model`` keeps packed examples apart: its output for an example packed after another (position
    ids restarting, no attention mask) must equal its output for that example alone.

    Transformers builds the per-example masks from restarting position ids for most attention implementations,
    but not for every architecture (recurrent or linear attention, models that ignore position ids for masking);
    a probe on the real model answers for any of them. Returns (supported, reason when not).
    """
    import inspect

    if "position_ids" not in inspect.signature(model.forward).parameters and not any(
        p.kind is inspect.Parameter.VAR_KEYWORD for p in inspect.signature(model.forward).parameters.values()
    ):
        return False, f"{type(model).__name__}.forward takes no position_ids"
    device = next(model.parameters()).device
    vocab = model.get_input_embeddings().weight.shape[0]
    first = torch.arange(11, 11 + 7) % vocab
    second = torch.arange(300, 300 + 6) % vocab
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            ids = torch.cat([first, second]).unsqueeze(0).to(device)
            positions = torch.cat([torch.arange(len(first)), torch.arange(len(second))]).unsqueeze(0).to(device)
            packed = model(input_ids=ids, position_ids=positions, use_cache=False).logits[0, len(first) :].float()
            alone = model(input_ids=second.unsqueeze(0).to(device), use_cache=False).logits[0].float()
    except (TypeError, ValueError, RuntimeError) as err:
        return False, f"a packed probe failed: {str(err).splitlines()[0][:200]}"
    finally:
        model.train(was_training)
    # 16-bit weights differ by rounding (~1e-2 relative); attending across examples changes the logits outright.
    error = ((packed - alone).abs().mean() / alone.abs().mean().clamp_min(1e-6)).item()
    if error > 0.05:
        return False, f"an example packed after another gets different logits (mean relative difference {error:.2f})"
    return True, ""


def save_output(
    model, tokenizer, config: TrainConfig, model_dir: Path, dtype: torch.dtype, state_dict: dict | None = None
) -> None:
    """Write the HF model (adapters merged into a 16-bit base) and, for LoRA/QLoRA, ``adapter/`` beside it (the
    FineTune pipeline's PackageAdapter step cuts that folder out as an adapter inference component's artifact).

    ``state_dict``: the whole weights when ``model`` is sharded (FSDP, full fine-tuning only).
    """
    if config.method == "full":
        if getattr(model.config, "use_cache", None) is False:
            model.config.use_cache = True
        model.save_pretrained(model_dir, safe_serialization=True, state_dict=state_dict)
    else:
        model.save_pretrained(model_dir / ADAPTER_DIR, safe_serialization=True)
        out_dtype = dtype if dtype != torch.float32 else torch.bfloat16
        if config.method == "qlora":
            # Merge into a freshly loaded 16-bit base: merging into 4-bit weights would lose precision.
            from peft import PeftModel
            from transformers import AutoModelForCausalLM

            base = AutoModelForCausalLM.from_pretrained(
                model.peft_config["default"].base_model_name_or_path, dtype=out_dtype
            )
            merged = PeftModel.from_pretrained(base, model_dir / ADAPTER_DIR).merge_and_unload()
        else:
            import copy

            merged = copy.deepcopy(model).merge_and_unload()
        merged = merged.to(out_dtype)
        merged.config.use_cache = True
        merged.save_pretrained(model_dir, safe_serialization=True)
    tokenizer.save_pretrained(model_dir)
