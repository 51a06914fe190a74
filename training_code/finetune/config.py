"""The one training configuration: a validated dataclass, buildable from SageMaker's string hyperparameters.

Importable without torch: the pipeline's validation Lambda uses ``TrainConfig.from_hyperparameters`` to reject
bad inputs before a training job is started.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from .contract import METHODS, TASKS  # also re-exported: the container's names for them

STRATEGIES = ("ddp", "fsdp")
POOLINGS = ("auto", "cls", "mean")
LORA_SCALINGS = ("rslora", "standard")
PRECISIONS = ("auto", "bf16", "fp32")
#: Upper bounds: far above any sensible run, low enough that a typo (or a hostile value) fails here, with the
#: limit in the message, instead of as an overflow or an allocation failure inside the training job.
MAX_VALUES = {
    "epochs": 1000,
    "max_steps": 10_000_000,
    "batch_size": 4096,
    "gradient_accumulation_steps": 4096,
    "max_seq_length": 131072,
    "lora_r": 1024,
    "lora_alpha": 8192,
    "eval_steps": 10_000_000,
    "save_steps": 10_000_000,
    "early_stopping_patience": 10_000,
    "seed": 2**32 - 1,
    "logging_steps": 10_000_000,
    "max_eval_rows": 100_000_000,
}


class ConfigError(ValueError):
    """Every problem found in a configuration, one per line, each naming the hyperparameter and its value."""

    def __init__(self, problems: list[str]):
        self.problems = list(problems)
        super().__init__("invalid hyperparameters: " + "; ".join(self.problems))


@dataclass
class TrainConfig:
    """Everything a fine-tuning run needs. ``None`` means "the default for this task and method"."""

    task: str = "causal-lm"
    """What to train: ``causal-lm`` (instruction/chat/text data) or ``classification`` (``{"text","label"}``)."""
    method: str | None = None
    """``lora``, ``qlora`` (4-bit base, CUDA only, causal-lm only) or ``full``.
    Default: lora for causal-lm, full for classification."""
    base_model: str | None = None
    """A local model directory, a hub id, or ``local:minilm`` / ``local:smollm2`` (packaged offline models).
    Default: the ``model`` channel."""
    epochs: float = 1.0
    """Passes over the training data (fractions allowed); ignored when ``max_steps`` > 0."""
    max_steps: int = 0
    """Optimizer steps to run; 0 means derive from ``epochs``."""
    learning_rate: float | None = None
    """Peak learning rate. Default: 2e-4 for LoRA/QLoRA, 2e-5 for full causal-lm, 5e-5 for full classification."""
    batch_size: int | None = None
    """Examples per device per micro-batch, packed or not (packing lays a micro-batch's examples out in rows of
    ``max_seq_length`` tokens without padding; it never changes how many examples an optimizer step sees).
    Default: 4 causal-lm, 32 classification."""
    gradient_accumulation_steps: int = 1
    """Micro-batches accumulated into one optimizer step."""
    max_seq_length: int | None = None
    """Longest tokenised example (and packed row); longer ones are truncated.
    Default: 1024 causal-lm, 128 classification."""
    warmup_ratio: float = 0.05
    """Fraction of the steps spent warming the learning rate up linearly before cosine decay."""
    min_lr_ratio: float = 0.0
    """Where the cosine decay ends, as a fraction of the peak learning rate (0: decays to zero)."""
    weight_decay: float = 0.0
    """AdamW weight decay (not applied to biases and norms)."""
    lora_r: int = 16
    """LoRA rank."""
    lora_alpha: int = 32
    """LoRA scaling numerator: the adapter's output is scaled by alpha / sqrt(r) (``lora_scaling=rslora``) or
    alpha / r (``standard``)."""
    lora_scaling: str = "standard"
    """``standard`` (alpha / r, the original LoRA paper's) or ``rslora`` (rank-stabilised, alpha / sqrt(r): the
    update's size does not shrink as the rank grows; at r=16 it acts like a 4x learning rate)."""
    lora_dropout: float = 0.0
    """Dropout on the LoRA input. Off by default: a one-epoch run sees each example once, so it regularises
    nothing there (Dolly, 1 epoch: eval_loss 2.611 with 0.05, 2.610 without), and on CPUs it was about 40% of
    the forward pass (a random mask over every adapted layer's input)."""
    lora_plus_ratio: float = 1.0
    """LoRA+ (Hayou et al., 2024): the learning rate of the adapters' B matrices as a multiple of the A matrices'
    (1: plain LoRA, one learning rate)."""
    lora_target_modules: str = "all-linear"
    """Comma-separated module names to adapt, or ``all-linear``."""
    packing: bool | None = None
    """Pack causal-lm examples into rows without attention across examples, where the model supports it (checked
    at start; otherwise padded, length-grouped batches with a notice). Default: true for causal-lm; not for
    classification."""
    classifier_pooling: str = "auto"
    """How a classifier reads the encoder: ``cls`` (the model's own head on the first token), ``mean`` (the mean of
    the last hidden states over the text's tokens, for BERT-family encoders) or ``auto``: ``mean`` for sentence
    embedding models that declare mean pooling (sentence-transformers' ``1_Pooling/config.json``), else ``cls``."""
    gradient_checkpointing: bool = False
    """Recompute activations in backward to save memory."""
    precision: str = "auto"
    """Compute precision: ``auto`` (bf16 autocast on GPUs that have it, else fp16; fp32 on CPUs), ``bf16`` (bf16
    autocast on any device, CPUs with AVX-512 BF16 or AMX included) or ``fp32``."""
    torch_compile: bool = False
    """Compile the model's forward with ``torch.compile`` (the first steps pay the compilation)."""
    eval_steps: int = 0
    """Evaluate every N steps during training (0: only before and after)."""
    save_steps: int = 50
    """Write a checkpoint every N optimizer steps (0: only on SIGTERM)."""
    early_stopping_patience: int = 0
    """Stop after this many evaluations without a lower eval_loss (0: never; needs eval_steps > 0)."""
    keep_best: bool = True
    """With evaluations during training (eval_steps > 0), write the weights of the evaluation with the lowest
    eval_loss when they beat the last step's, rather than the last step's weights."""
    seed: int = 42
    """Seed for initialisation, dropout, shuffling and the validation split."""
    validation_split: float = 0.1
    """Fraction of the training rows held out when there is no validation channel."""
    logging_steps: int = 1
    """Print train metrics every N optimizer steps."""
    max_eval_rows: int = 0
    """Evaluate on at most this many validation rows (0: all)."""
    distributed_strategy: str = "ddp"
    """Under torchrun: ``ddp`` (every GPU holds the model) or ``fsdp`` (FSDP2: weights, gradients and optimizer
    state sharded across all GPUs, for a full fine-tune that does not fit one GPU)."""
    progress: bool = False
    """Show a progress bar on stderr (local runs)."""

    # Paths: filled from the SageMaker environment or local flags at the entry point, never hyperparameters.
    train_path: str | None = field(default=None, metadata={"path": True})
    """The ``train`` channel: a JSONL file or a directory of them."""
    validation_path: str | None = field(default=None, metadata={"path": True})
    """The ``validation`` channel (optional)."""
    model_channel: str | None = field(default=None, metadata={"path": True})
    """The ``model`` channel holding base weights (optional when ``base_model`` is set)."""
    model_dir: str = field(default="model", metadata={"path": True})
    """Where the final model and reports are written (/opt/ml/model)."""
    output_dir: str = field(default="output", metadata={"path": True})
    """Where ``failure`` is written (/opt/ml/output)."""
    checkpoint_dir: str = field(default="checkpoints", metadata={"path": True})
    """Where checkpoints are written and resumed from (/opt/ml/checkpoints); never inside model_dir."""

    def __post_init__(self) -> None:
        problems: list[str] = []

        def bad(name: str, why: str) -> None:
            problems.append(f"{name}={_show(getattr(self, name))}: {why}")

        if self.task not in TASKS:
            bad("task", f"must be one of {', '.join(TASKS)}")
            raise ConfigError(problems)  # every default below depends on the task
        causal = self.task == "causal-lm"
        if self.method is None:
            self.method = "lora" if causal else "full"
        if self.method not in METHODS:
            bad("method", f"must be one of {', '.join(METHODS)}")
        elif self.method == "qlora" and not causal:
            bad("method", "qlora is supported for task=causal-lm only; use lora or full for classification")
        if self.learning_rate is None:
            self.learning_rate = 2e-4 if self.method in ("lora", "qlora") else (2e-5 if causal else 5e-5)
        if self.batch_size is None:
            self.batch_size = 4 if causal else 32
        if self.max_seq_length is None:
            self.max_seq_length = 1024 if causal else 128
        if self.classifier_pooling not in POOLINGS:
            bad("classifier_pooling", f"must be one of {', '.join(POOLINGS)}")
        if self.precision not in PRECISIONS:
            bad("precision", f"must be one of {', '.join(PRECISIONS)}")
        if self.lora_scaling not in LORA_SCALINGS:
            bad("lora_scaling", f"must be one of {', '.join(LORA_SCALINGS)}")
        if self.packing is None:
            self.packing = causal
        elif self.packing and not causal:
            bad("packing", "packing applies to task=causal-lm only")

        if not (isinstance(self.epochs, (int, float)) and math.isfinite(self.epochs) and self.epochs > 0):
            bad("epochs", "must be a positive number")
        if self.max_steps < 0:
            bad("max_steps", "must be >= 0 (0 derives the steps from epochs)")
        if not (math.isfinite(self.learning_rate) and 0 < self.learning_rate < 1):
            bad("learning_rate", "must be > 0 and < 1")
        for name in ("batch_size", "gradient_accumulation_steps", "lora_r", "lora_alpha", "logging_steps"):
            if getattr(self, name) < 1:
                bad(name, "must be >= 1")
        if self.max_seq_length < 8:
            bad("max_seq_length", "must be >= 8")
        if not (math.isfinite(self.lora_plus_ratio) and 1 <= self.lora_plus_ratio <= 64):
            bad("lora_plus_ratio", "must be >= 1 and <= 64")
        for name in ("warmup_ratio", "lora_dropout", "min_lr_ratio"):
            if not 0 <= getattr(self, name) < 1:
                bad(name, "must be >= 0 and < 1")
        if not 0 <= self.weight_decay < 1:
            bad("weight_decay", "must be >= 0 and < 1")
        if not 0 < self.validation_split < 1:
            bad("validation_split", "must be > 0 and < 1")
        for name in ("eval_steps", "save_steps", "early_stopping_patience", "seed", "max_eval_rows"):
            if getattr(self, name) < 0:
                bad(name, "must be >= 0")
        if self.early_stopping_patience > 0 and self.eval_steps == 0:
            bad("early_stopping_patience", "needs eval_steps > 0 to have evaluations to compare")
        targets = [t.strip() for t in self.lora_target_modules.split(",")]
        if not all(targets):
            bad("lora_target_modules", "must be 'all-linear' or comma-separated module names without empty items")
        if self.distributed_strategy not in STRATEGIES:
            bad("distributed_strategy", f"must be one of {', '.join(STRATEGIES)}")
        elif self.distributed_strategy == "fsdp" and self.method != "full":
            bad("distributed_strategy", "fsdp is for method=full; LoRA/QLoRA use ddp")
        if self.train_path is None:
            problems.append("train: no training data given (SM_CHANNEL_TRAIN or --train)")
        if self.base_model is None and self.model_channel is None:
            problems.append("base_model: not set and there is no model channel (SM_CHANNEL_MODEL or --base_model)")
        model_dir = _norm(self.model_dir)
        if _norm(self.checkpoint_dir) == model_dir or _norm(self.checkpoint_dir).startswith(model_dir + "/"):
            problems.append(f"checkpoint_dir={self.checkpoint_dir!r}: must not be inside model_dir={self.model_dir!r}")
        for name, limit in MAX_VALUES.items():
            value = getattr(self, name)
            if isinstance(value, (int, float)) and value > limit:
                bad(name, f"must be <= {limit}")
        if problems:
            raise ConfigError(problems)

    @property
    def lora_targets(self) -> str | list[str]:
        """The PEFT ``target_modules`` value."""
        if self.lora_target_modules.strip() == "all-linear":
            return "all-linear"
        return [t.strip() for t in self.lora_target_modules.split(",")]

    @classmethod
    def hyperparameter_names(cls) -> list[str]:
        """Names accepted as hyperparameters (everything but the paths)."""
        return [f.name for f in dataclasses.fields(cls) if not f.metadata.get("path")]

    @classmethod
    def from_hyperparameters(cls, hyperparameters: Mapping[str, Any], **paths: str | None) -> TrainConfig:
        """Build from SageMaker-style hyperparameters (strings; JSON-decoded values also accepted).

        Raises ConfigError listing every unknown name and every unparsable or invalid value.
        """
        problems: list[str] = []
        values: dict[str, Any] = {}
        known = {f.name: f for f in dataclasses.fields(cls) if not f.metadata.get("path")}
        for name, raw in hyperparameters.items():
            if name.startswith("sagemaker_"):
                continue  # the toolkit's own settings
            if name not in known:
                problems.append(f"{name}={_show(raw)}: unknown hyperparameter (known: {', '.join(known)})")
                continue
            annotation = known[name].type
            if not isinstance(annotation, str):  # under `from __future__ import annotations` every one is a string
                raise TypeError(f"TrainConfig.{name}: annotation {annotation!r} is not a string")
            try:
                parsed = _parse(annotation, raw)
            except ValueError as err:
                problems.append(f"{name}={_show(raw)}: {err}")
                continue
            if parsed is not None:
                values[name] = parsed
        try:
            given_paths: dict[str, Any] = {k: v for k, v in paths.items() if v is not None}
            config = cls(**values, **given_paths)
        except ConfigError as err:
            raise ConfigError(problems + err.problems) from None
        if problems:
            raise ConfigError(problems)
        return config

    def to_dict(self) -> dict[str, Any]:
        """Plain dict, for reports."""
        return dataclasses.asdict(self)


def _norm(path: str) -> str:
    import os.path

    return os.path.abspath(path).rstrip("/")


_TRUE = {"true", "1", "yes", "on"}
_FALSE = {"false", "0", "no", "off"}


def _show(value: Any) -> str:
    """``repr`` for a message, safe for integers too long to print and cut for long text."""
    if isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > 64:
        return f"<an integer of about {int(value.bit_length() * 0.30103) + 1} digits>"
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _parse(type_name: str, raw: Any) -> Any:
    """Parse one hyperparameter value by the field's annotation (a string under ``from __future__``)."""
    if isinstance(raw, int) and not isinstance(raw, bool) and raw.bit_length() > 64:
        raise ValueError("is out of range (more than 64 bits)")
    text = str(raw).strip()
    optional = "None" in type_name
    if optional and text.lower() in ("", "none", "null", "auto"):
        return None
    base = type_name.replace("| None", "").strip()
    if base == "bool":
        if isinstance(raw, bool):
            return raw
        if text.lower() in _TRUE:
            return True
        if text.lower() in _FALSE:
            return False
        raise ValueError("must be a boolean: true or false")
    if base == "int":
        try:
            number = float(text)
        except ValueError:
            raise ValueError("must be an integer") from None
        if not math.isfinite(number) or number != int(number):
            raise ValueError("must be an integer")
        return int(number)
    if base == "float":
        try:
            number = float(text)
        except ValueError:
            raise ValueError("must be a number") from None
        if not math.isfinite(number):
            raise ValueError("must be a finite number")
        return number
    if not text:
        raise ValueError("must not be empty")
    return text
