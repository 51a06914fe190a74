"""The fine-tuning recipe, top to bottom: setup (data, model, optimizer) -> resume or evaluate the base -> train
steps (evaluate and track the best, checkpoint) -> final evaluation and the best weights -> save.

``run`` reads as that list of phases; each phase is a function below it, in the same order. What the loop carries
from step to step is one typed ``LoopState``; what is built once is one ``Setup``. Rank and distributed choices
live in ``Parallel`` (parallel.py) and the small helpers here, not in the phases.
"""

from __future__ import annotations

import dataclasses
import json
import math
import random
import signal
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import torch
import torch.distributed as dist
import torch.nn.functional as F

from . import checkpoint
from .config import TrainConfig
from .data import (
    IGNORE_INDEX,
    BatchPlan,
    EncodeReport,
    Example,
    collate_micro_batch,
    encode_causal,
    encode_classification,
    load_channel,
    rank_env,
    split_records,
)
from .errors import TrainingError
from .evaluate import evaluate_causal, evaluate_classification
from .formats import DataError, check_labels, label_mapping
from .metrics import format_metric
from .modeling import device_and_dtype, load_model, load_tokenizer, packing_supported, resolve_base_model, save_output
from .parallel import Parallel

T = TypeVar("T")


def _resolved(value: T | None, name: str) -> T:
    """A TrainConfig field that ``__post_init__`` fills in (None only before it has run)."""
    if value is None:
        raise TrainingError(f"TrainConfig.{name} is unset: the configuration was not resolved")
    return value


def _on_main(value: T | None, what: str) -> T:
    """A value only rank 0 holds (its evaluation, the gathered weights and RNG states), read where rank 0 runs."""
    if value is None:
        raise TrainingError(f"{what} is missing on rank 0")
    return value


class Interrupted(Exception):
    """SIGTERM arrived; a checkpoint was written and the run should exit so a restart can resume."""

    def __init__(self, step: int, path: str | None):
        self.step, self.path = step, path
        super().__init__(f"stopped by SIGTERM after step {step}; checkpoint {path}")


class _StopFlag:
    def __init__(self):
        self.raised = False

    def __call__(self, signum, frame):
        self.raised = True


@dataclass
class LoopState:
    """The training loop's progress. A checkpoint keeps all of it (``step`` as ``global_step``) but
    ``early_stopped``, so a resumed run continues the same history, best-evaluation tracking and counters."""

    step: int = 0
    history: list[dict] = field(default_factory=list)
    evaluations: list[dict] = field(default_factory=list)
    base: dict | None = None
    best_eval_loss: float | None = None
    bad_evals: int = 0
    train_tokens: float = 0  # summed over ranks: parallel.sum gives a float under torchrun
    train_seconds: float = 0.0
    slot_tokens: int = 0
    resumed_from: list[int] = field(default_factory=list)
    sharded: bool = False
    early_stopped: bool = False

    def to_checkpoint(self) -> dict:
        """The loop state a checkpoint's state.json holds (``global_step`` is written beside it)."""
        saved = dataclasses.asdict(self)
        del saved["step"], saved["early_stopped"]
        return saved

    @classmethod
    def from_checkpoint(cls, saved: dict) -> LoopState:
        """The state ``checkpoint.load`` returned (state.json, with ``global_step``)."""
        known = {f.name for f in dataclasses.fields(cls)} - {"step", "early_stopped"}
        return cls(step=saved["global_step"], **{k: v for k, v in saved.items() if k in known})


@dataclass
class Setup:
    """Everything built once before the first step."""

    config: TrainConfig
    parallel: Parallel
    location: str
    tokenizer: Any  # whichever tokenizer class AutoTokenizer picks (load_tokenizer)
    model: torch.nn.Module
    dtype: torch.dtype
    autocast_dtype: torch.dtype | None
    labels: list | None
    train_examples: list[Example]
    train_report: EncodeReport
    val_examples: list[Example]
    packing: bool
    plan: BatchPlan
    trainable: list[torch.nn.Parameter]
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    total_steps: int
    #: What produces this run's weights (``checkpoint.fingerprint``): a checkpoint of any other run is refused.
    fingerprint: dict = field(default_factory=dict)

    @property
    def causal(self) -> bool:
        return self.config.task == "causal-lm"

    @property
    def is_main(self) -> bool:
        return self.parallel.is_main

    @property
    def pad_id(self) -> int:
        return self.tokenizer.pad_token_id

    @property
    def device(self) -> torch.device:
        return self.parallel.device


def _info(is_main: bool, message: str) -> None:
    if is_main:
        print(message, file=sys.stderr, flush=True)


def _emit(is_main: bool, values: dict, step: int) -> None:
    if is_main:
        for name, value in values.items():
            print(format_metric(name, value, step), flush=True)


def run(config: TrainConfig) -> dict | None:
    """Fine-tune per ``config``; returns the evaluation report (None on ranks other than 0). Raises
    ConfigError/DataError/TrainingError."""
    parallel, dtype = _start_processes(config)
    random.seed(config.seed)
    torch.manual_seed(config.seed)
    setup = build(config, parallel, dtype)
    state = resume_or_evaluate_base(setup)
    train(setup, state)
    fine_tuned, selected_step = final_evaluation(setup, state)
    report = save(setup, state, fine_tuned, selected_step)
    _end_processes(parallel)
    return report


# ---- setup ----


def _start_processes(config: TrainConfig) -> tuple[Parallel, torch.dtype]:
    """The process group under torchrun, this rank's device and the dtype weights are kept in."""
    rank, local_rank, world = rank_env()
    if world > 1 and not dist.is_initialized():
        dist.init_process_group(backend="nccl" if torch.cuda.is_available() else "gloo")
    if config.distributed_strategy == "fsdp" and world == 1:
        _info(rank == 0, "distributed_strategy=fsdp with one process: nothing to shard, training the whole model here")
    device, dtype = device_and_dtype(local_rank)
    if device.type == "cuda" and config.precision != "auto":
        dtype = torch.float32 if config.precision == "fp32" else torch.bfloat16
    return Parallel(config.distributed_strategy, rank, world, device), dtype


def _end_processes(parallel: Parallel) -> None:
    if parallel.world > 1:
        dist.barrier()
        dist.destroy_process_group()


def _load_records(config: TrainConfig, is_main: bool) -> tuple[list, list, list | None]:
    """(train records, validation records, class labels or None): validated, the validation split held out."""
    train_records = load_channel(config.task, _resolved(config.train_path, "train_path"), "train")
    if config.validation_path:
        val_records = load_channel(config.task, config.validation_path, "validation")
    else:
        train_records, val_records = split_records(train_records, config.validation_split, config.seed)
        _info(is_main, f"no validation channel: held out {len(val_records)} of the training rows (seed {config.seed})")
    labels = None
    if config.task == "classification":
        labels = label_mapping(train_records)
        if len(labels) < 2:
            raise DataError("train channel", None, f"classification needs at least 2 distinct labels, found {labels}")
        check_labels(val_records, labels)
    if config.max_eval_rows:
        val_records = val_records[: config.max_eval_rows]
    return train_records, val_records, labels


def _encode(config: TrainConfig, tokenizer, train_records, val_records, labels, is_main: bool):
    """Tokenised (train examples, their EncodeReport, validation examples); empty sides are errors."""
    max_seq_length = _resolved(config.max_seq_length, "max_seq_length")
    if config.task == "causal-lm":
        train_examples, report = encode_causal(train_records, tokenizer, max_seq_length)
        val_examples, _ = encode_causal(val_records, tokenizer, max_seq_length)
    else:
        label_to_id = {label: i for i, label in enumerate(labels)}
        train_examples, report = encode_classification(train_records, tokenizer, max_seq_length, label_to_id)
        val_examples, _ = encode_classification(val_records, tokenizer, max_seq_length, label_to_id)
    if report.dropped_no_target:
        _info(
            is_main,
            f"dropped {report.dropped_no_target} examples with no target token left after truncation "
            f"(first: {', '.join(report.dropped_where[:3])}); raise max_seq_length to keep them",
        )
    if not train_examples:
        raise DataError("train channel", None, "no usable training examples after tokenisation")
    if not val_examples:
        raise DataError("validation channel", None, "no usable validation examples after tokenisation")
    return train_examples, report, val_examples


def _autocast_dtype(config: TrainConfig, device: torch.device, dtype: torch.dtype) -> torch.dtype | None:
    """The dtype forward passes compute in under autocast, or None for plain fp32."""
    if config.precision == "bf16":
        return torch.bfloat16
    if device.type == "cuda" and dtype != torch.float32:
        return dtype
    return None


def _use_packing(config: TrainConfig, model, is_main: bool) -> bool:
    """Packing where asked for and the model keeps packed examples apart; otherwise a one-line notice."""
    if not config.packing:
        return False
    supported, why = packing_supported(model)
    if not supported:
        _info(is_main, f"packing off: {why}; training on padded, length-grouped batches instead")
    return supported


def _optimizer(config: TrainConfig, model, device: torch.device, total_steps: int):
    """AdamW (no weight decay on biases and norms; LoRA+ learning rate on the adapters' B matrices) and the warmup
    + cosine schedule; and the trainable parameters."""
    from transformers import get_cosine_with_min_lr_schedule_with_warmup

    trainable = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    lr = _resolved(config.learning_rate, "learning_rate")
    lora_b = [p for n, p in trainable if ".lora_B." in n or ".lora_embedding_B." in n]
    ids_b = {id(p) for p in lora_b}
    groups = [
        {
            "params": [p for _, p in trainable if p.ndim >= 2 and id(p) not in ids_b],
            "weight_decay": config.weight_decay,
        },
        {"params": lora_b, "weight_decay": config.weight_decay, "lr": lr * config.lora_plus_ratio},
        {"params": [p for _, p in trainable if p.ndim < 2 and id(p) not in ids_b], "weight_decay": 0.0},
    ]
    optimizer = torch.optim.AdamW([g for g in groups if g["params"]], lr=lr, fused=device.type == "cuda")
    scheduler = get_cosine_with_min_lr_schedule_with_warmup(
        optimizer, int(config.warmup_ratio * total_steps), total_steps, min_lr_rate=config.min_lr_ratio
    )
    return [p for _, p in trainable], optimizer, scheduler


def build(config: TrainConfig, parallel: Parallel, dtype: torch.dtype) -> Setup:
    """Data, tokenizer, model (sharded under FSDP), batch plan, optimizer and schedule."""
    train_records, val_records, labels = _load_records(config, parallel.is_main)
    location = resolve_base_model(config)
    tokenizer = load_tokenizer(location, config.task)
    autocast_dtype = _autocast_dtype(config, parallel.device, dtype)
    train_examples, train_report, val_examples = _encode(
        config, tokenizer, train_records, val_records, labels, parallel.is_main
    )
    # A sharded model stays on the CPU until FSDP moves it to the device one block at a time.
    model = load_model(config, location, tokenizer, parallel.device, dtype, labels, place=not parallel.sharded)
    packing = _use_packing(config, model, parallel.is_main)
    model = parallel.prepare(model, autocast_dtype)
    if config.torch_compile:
        model.compile()  # in place: parameter names (checkpoints, saved weights) stay the model's own
    plan = BatchPlan(
        train_examples,
        _resolved(config.batch_size, "batch_size"),
        parallel.world,
        config.seed,
        group_by_length=config.task == "causal-lm" and not packing,
    )
    total_steps = config.max_steps or max(
        1, math.ceil(config.epochs * plan.per_epoch / config.gradient_accumulation_steps)
    )
    trainable, optimizer, scheduler = _optimizer(config, model, parallel.device, total_steps)
    setup = Setup(
        config,
        parallel,
        location,
        tokenizer,
        model,
        dtype,
        autocast_dtype,
        labels,
        train_examples,
        train_report,
        val_examples,
        packing,
        plan,
        trainable,
        optimizer,
        scheduler,
        total_steps,
        checkpoint.fingerprint(config),
    )
    _info(
        parallel.is_main,
        f"{config.task} {config.method} on {location}: {len(train_examples)} train / "
        f"{len(val_examples)} validation examples, {'packed' if packing else 'padded'} batches of "
        f"{config.batch_size} examples, {total_steps} steps, "
        f"{sum(p.numel() for p in trainable):,} trainable parameters, {parallel.world} process(es) "
        f"on {parallel.device}, "
        f"{getattr(model.config, '_attn_implementation', None) or 'default'} attention",
    )
    return setup


def evaluate(setup: Setup) -> dict:
    """Validation metrics of the model as it is now (call on every rank that ``parallel.evaluates``)."""
    size = _resolved(setup.config.batch_size, "batch_size") * 2
    if setup.causal:
        return evaluate_causal(setup.model, setup.val_examples, setup.pad_id, setup.device, size, setup.autocast_dtype)
    if setup.labels is None:
        raise TrainingError("a classification run without its label set")
    return evaluate_classification(
        setup.model,
        setup.val_examples,
        setup.pad_id,
        setup.device,
        size,
        [str(label) for label in setup.labels],
        setup.autocast_dtype,
    )


def _evaluate_where_needed(setup: Setup) -> dict | None:
    return evaluate(setup) if setup.parallel.evaluates else None


def resume_or_evaluate_base(setup: Setup) -> LoopState:
    """The latest checkpoint's state (weights, optimizer, schedule and RNG put back), or a fresh state holding
    the base model's evaluation."""
    config, parallel = setup.config, setup.parallel
    found = checkpoint.latest(config.checkpoint_dir)
    if found is None:
        if parallel.is_main:
            checkpoint.clear_best(config.checkpoint_dir)  # a leftover of an earlier run must not be picked
        state = LoopState(sharded=parallel.sharded, base=_evaluate_where_needed(setup))
        if state.base is not None:
            _emit(parallel.is_main, _scalars(state.base), 0)
    else:
        model_state, optim_state, saved = checkpoint.load(
            found, setup.scheduler, parallel.rank, parallel.world, run_fingerprint=setup.fingerprint
        )
        state = LoopState.from_checkpoint(saved)
        if state.sharded != parallel.sharded:
            raise TrainingError(
                f"checkpoint {found} was written by a {_layout(state.sharded)} run and this run is "
                f"{_layout(parallel.sharded)}; resume with the same distributed_strategy and more than one process, "
                f"or empty the checkpoint directory to start over"
            )
        parallel.load_state(setup.model, model_state, setup.optimizer, optim_state)
        del model_state, optim_state
        state.resumed_from.append(state.step)
        _info(parallel.is_main, f"resuming from {found} at step {state.step}")
    parallel.barrier()
    return state


def _layout(sharded: bool) -> str:
    return "sharded (fsdp)" if sharded else "ddp or single-process"


# ---- train ----


class _Window:
    """Loss, tokens and time since the last logged step."""

    def __init__(self):
        self.reset()

    def reset(self) -> None:
        self.loss, self.tokens, self.start = 0.0, 0, time.perf_counter()


def train(setup: Setup, state: LoopState) -> None:
    """Optimizer steps until ``total_steps`` (or early stopping); evaluates and checkpoints on their schedules.
    SIGTERM writes a checkpoint and raises Interrupted."""
    train_model = setup.parallel.wrap(setup.model)
    stop_flag = _StopFlag()
    previous_handler = signal.signal(signal.SIGTERM, stop_flag)
    progress = _progress_bar(setup, state.step)
    setup.model.train()
    window = _Window()
    try:
        while state.step < setup.total_steps:
            train_loss, grad_norm = train_step(setup, state, train_model, window)
            if progress is not None:
                progress.update(1)
                progress.set_postfix(loss=f"{train_loss:.4f}")
            _log_step(setup, state, window, grad_norm)
            if _evaluate_during_training(setup, state):
                state.early_stopped = True
                break
            _checkpoint_if_due(setup, state, stop_flag)
    finally:
        signal.signal(signal.SIGTERM, previous_handler)
        if progress is not None:
            progress.close()


def _progress_bar(setup: Setup, start_step: int):
    if not (setup.config.progress and setup.is_main):
        return None
    from tqdm.auto import tqdm

    return tqdm(total=setup.total_steps, initial=start_step, desc="fine-tuning", file=sys.stderr)


def _micro_batches(setup: Setup, step: int) -> list[dict]:
    accum = setup.config.gradient_accumulation_steps
    packed_width = setup.config.max_seq_length if setup.packing else None
    batches = []
    for j in range(accum):
        chunk, _ = setup.plan.micro_batch(step * accum + j, setup.parallel.rank)
        batches.append(
            collate_micro_batch(chunk, setup.pad_id, classification=not setup.causal, packed_width=packed_width)
        )
    return batches


def _target_count(batch: dict, causal: bool) -> int:
    if causal:
        return int((batch["labels"][:, 1:] != IGNORE_INDEX).sum())
    return len(batch["labels"])


def _loss_sum(setup: Setup, train_model, batch: dict) -> torch.Tensor:
    if setup.causal:
        return _causal_loss_sum(train_model, batch)
    logits = train_model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    return F.cross_entropy(logits.float(), batch["labels"], reduction="sum")


def train_step(setup: Setup, state: LoopState, train_model, window: _Window) -> tuple[float, float]:
    """One optimizer step over ``gradient_accumulation_steps`` micro-batches; returns (train loss, grad norm).

    The loss is the mean over every target in the step on every rank: each micro-batch's summed loss is divided
    by the global target count (times world, since DDP and FSDP average gradients over ranks)."""
    parallel, world = setup.parallel, setup.parallel.world
    batches = _micro_batches(setup, state.step)
    global_targets = parallel.sum(sum(_target_count(b, setup.causal) for b in batches))
    step_loss = 0.0
    for j, batch in enumerate(batches):
        window.tokens += int((batch["input_ids"] != setup.pad_id).sum())
        state.slot_tokens += batch["input_ids"].numel()
        batch = {k: v.to(setup.device) for k, v in batch.items()}
        autocast = torch.autocast(
            setup.device.type, dtype=setup.autocast_dtype, enabled=setup.autocast_dtype is not None
        )
        with parallel.accumulate(train_model, sync=j == len(batches) - 1), autocast:
            loss_sum = _loss_sum(setup, train_model, batch)
            (loss_sum * world / global_targets).backward()
        step_loss += loss_sum.item()
    total_norm = torch.nn.utils.clip_grad_norm_(setup.trainable, 1.0)
    grad_norm = (total_norm.full_tensor() if hasattr(total_norm, "full_tensor") else total_norm).item()
    setup.optimizer.step()
    setup.scheduler.step()
    setup.optimizer.zero_grad(set_to_none=True)
    state.step += 1
    train_loss = parallel.sum(step_loss) / global_targets
    if not math.isfinite(train_loss):
        raise TrainingError(
            f"training diverged: train_loss is {train_loss} at step {state.step}; "
            f"lower learning_rate (now {setup.config.learning_rate})"
        )
    window.loss += train_loss
    return train_loss, grad_norm


def _log_step(setup: Setup, state: LoopState, window: _Window, grad_norm: float) -> None:
    """Every ``logging_steps`` and at the end: the window's metrics, printed and kept in the history."""
    config, step = setup.config, state.step
    if step % config.logging_steps and step != setup.total_steps:
        return
    elapsed = time.perf_counter() - window.start
    tokens = setup.parallel.sum(window.tokens)
    n = step % config.logging_steps or config.logging_steps
    record = {
        "train_loss": window.loss / n,
        "learning_rate": setup.scheduler.get_last_lr()[0],
        "grad_norm": grad_norm if math.isfinite(grad_norm) else 0.0,
        "epoch": step * config.gradient_accumulation_steps / setup.plan.per_epoch,
        "tokens_per_second": tokens / elapsed if elapsed > 0 else 0.0,
    }
    _emit(setup.is_main, record, step)
    # The window's own counts too, so throughput can be computed over any range of steps.
    state.history.append({"step": step, **record, "window_tokens": tokens, "window_seconds": elapsed})
    state.train_tokens += tokens
    state.train_seconds += elapsed
    window.reset()


def _evaluate_during_training(setup: Setup, state: LoopState) -> bool:
    """On ``eval_steps``: evaluate, keep the best weights, count evaluations without improvement. Returns
    whether early stopping ends training here."""
    config, parallel, step = setup.config, setup.parallel, state.step
    if not (config.eval_steps and step % config.eval_steps == 0 and step < setup.total_steps):
        return False
    result = _evaluate_where_needed(setup)
    improved = stop = False
    if parallel.is_main:
        result = _on_main(result, "the evaluation")
        _emit(True, _scalars(result), step)
        state.evaluations.append({"step": step, **_scalars(result)})
        improved = state.best_eval_loss is None or result["eval_loss"] < state.best_eval_loss
        if improved:
            state.best_eval_loss, state.bad_evals = result["eval_loss"], 0
        else:
            state.bad_evals += 1
        stop = 0 < config.early_stopping_patience <= state.bad_evals
    improved, stop = parallel.from_main(improved, stop)
    if improved and config.keep_best:
        weights, _ = parallel.full_state(setup.model)
        if parallel.is_main:
            checkpoint.save_best(
                config.checkpoint_dir,
                step,
                _on_main(result, "the evaluation")["eval_loss"],
                _on_main(weights, "the gathered weights"),
            )
        del weights
    if stop:
        _info(
            parallel.is_main,
            f"early stopping at step {step}: no eval_loss improvement in {config.early_stopping_patience} evaluations",
        )
    return stop


def _checkpoint_if_due(setup: Setup, state: LoopState, stop_flag: _StopFlag) -> None:
    """On ``save_steps``, or when any rank got SIGTERM (then all stop at this step): write a checkpoint."""
    config, parallel, step = setup.config, setup.parallel, state.step
    interrupted = parallel.sum(float(stop_flag.raised)) > 0
    if not (interrupted or (config.save_steps and step % config.save_steps == 0 and step < setup.total_steps)):
        return
    path = None
    weights, optim_state = parallel.full_state(setup.model, setup.optimizer)
    rng_states = parallel.gather(checkpoint.rng_state())
    if parallel.is_main:
        path = str(
            checkpoint.save(
                config.checkpoint_dir,
                step,
                _on_main(weights, "the gathered weights"),
                _on_main(optim_state, "the gathered optimizer state"),
                setup.scheduler,
                _on_main(rng_states, "the gathered RNG states"),
                state.to_checkpoint(),
                run_fingerprint=setup.fingerprint,
            )
        )
        _info(True, f"checkpoint written: {path}")
    del weights, optim_state
    parallel.barrier()
    if interrupted:
        raise Interrupted(step, path)


def _causal_loss_sum(model, batch):
    """Summed cross-entropy over target tokens, with the LM head run only where a target is predicted.

    Row by row: a hook on the final norm hands the head the hidden states of just those positions, flattened over
    the rows, so no full-vocabulary logits are computed for prompts, padding or other rows' targets. It runs inside
    the model's forward, so DDP and FSDP see an ordinary forward. Models without a recognisable final norm get
    the head at the union of target positions over the rows instead (``logits_to_keep``).
    """
    targets = batch["labels"][:, 1:]
    keep = targets != IGNORE_INDEX
    inputs = {k: v for k, v in batch.items() if k != "labels"}
    norm = _final_norm(model)
    if norm is None:
        positions = keep.any(0).nonzero().squeeze(-1)
        logits = model(**inputs, logits_to_keep=positions, use_cache=False).logits
        chosen = targets[:, positions]
        return F.cross_entropy(
            logits.float().flatten(0, 1), chosen.flatten(), ignore_index=IGNORE_INDEX, reduction="sum"
        )
    rows, cols = keep.nonzero(as_tuple=True)
    handle = norm.register_forward_hook(lambda module, args, output: output[rows, cols].unsqueeze(0))
    try:
        logits = model(**inputs, logits_to_keep=0, use_cache=False).logits
    finally:
        handle.remove()
    return F.cross_entropy(logits[0].float(), targets[rows, cols], reduction="sum")


def _final_norm(model) -> torch.nn.Module | None:
    """The norm whose output goes straight into the LM head (``<causal lm>.model.norm``: Llama, Mistral, Qwen,
    Gemma, SmolLM and their kin), through DDP and PEFT wrappers; None for other layouts."""
    model = getattr(model, "module", model)  # DDP
    if hasattr(model, "get_base_model"):
        model = model.get_base_model()  # PEFT
    body = getattr(model, "model", None)
    norm = getattr(body, "norm", None)
    return norm if isinstance(norm, torch.nn.Module) and hasattr(model, "lm_head") else None


# ---- final evaluation, the best weights, save ----


def final_evaluation(setup: Setup, state: LoopState) -> tuple[dict | None, int]:
    """The last step's evaluation, replaced by the best evaluation's weights when they were better (keep_best);
    returns (the evaluation of the weights that will be saved, their step)."""
    config, parallel = setup.config, setup.parallel
    fine_tuned = _evaluate_where_needed(setup)
    if parallel.is_main:
        fine_tuned = _on_main(fine_tuned, "the evaluation")
        _emit(True, _scalars(fine_tuned), state.step)
        state.evaluations.append({"step": state.step, **_scalars(fine_tuned)})
    # Rank 0 decides from the best weights it wrote; under FSDP it then sends each rank its shard of them.
    best = (
        checkpoint.load_best(config.checkpoint_dir)
        if (config.keep_best and config.eval_steps and parallel.is_main)
        else None
    )
    (use_best,) = parallel.from_main(
        best is not None and best[0]["eval_loss"] < _on_main(fine_tuned, "the evaluation")["eval_loss"]
    )
    if not use_best:
        return fine_tuned, state.step
    meta, weights = best if best is not None else ({}, None)
    if parallel.is_main or parallel.sharded:  # other DDP ranks write nothing, so their copies may stay as they are
        parallel.load_state(setup.model, weights)
    del weights
    if parallel.is_main:
        _info(
            True,
            f"keeping the weights of step {meta['step']} (eval_loss {meta['eval_loss']:.4f}): better "
            f"than the last step's {_on_main(fine_tuned, 'the evaluation')['eval_loss']:.4f}",
        )
    return _evaluate_where_needed(setup), meta.get("step", state.step)


def save(setup: Setup, state: LoopState, fine_tuned: dict | None, selected_step: int) -> dict | None:
    """Rank 0 writes the model, evaluation.json (also to the output data dir), training_metrics.json and the loss
    curve; returns the evaluation report (None on other ranks). Collective under FSDP (the weights are gathered)."""
    config, parallel = setup.config, setup.parallel
    output_state = parallel.full_state(setup.model)[0] if parallel.sharded else None
    if not parallel.is_main:
        return None
    report = {
        "task": config.task,
        "validation_rows": len(setup.val_examples),
        "base": state.base,
        "fine_tuned": fine_tuned,
    }
    model_dir = Path(config.model_dir)
    model_dir.mkdir(parents=True, exist_ok=True)
    save_output(setup.model, setup.tokenizer, config, model_dir, setup.dtype, state_dict=output_state)
    (model_dir / "evaluation.json").write_text(json.dumps(report, indent=2))
    # A copy in the output data dir: SageMaker uploads it as the small output.tar.gz the pipeline's Gate
    # reads, so judging a run never means downloading the model archive.
    output_data = Path(config.output_dir) / "data"
    output_data.mkdir(parents=True, exist_ok=True)
    (output_data / "evaluation.json").write_text(json.dumps(report, indent=2))
    metrics = {
        "history": state.history,
        "evaluations": state.evaluations,
        "summary": _summary(setup, state, selected_step),
        "config": config.to_dict(),
    }
    (model_dir / "training_metrics.json").write_text(json.dumps(metrics, indent=2))
    _plot(state, model_dir / "loss_curve.png", config)
    _info(True, _summary_text(report))
    return report


def _summary(setup: Setup, state: LoopState, selected_step: int) -> dict:
    world = setup.parallel.world
    return {
        "global_step": state.step,
        "total_steps": setup.total_steps,
        "early_stopped": state.early_stopped,
        # The step whose weights were written: the last, or the one with the lowest eval_loss (keep_best).
        "selected_step": selected_step,
        "distributed_strategy": "fsdp" if setup.parallel.sharded else ("ddp" if world > 1 else "none"),
        "resumed_from_steps": state.resumed_from,
        "train_examples": len(setup.train_examples),
        "truncated_examples": setup.train_report.truncated,
        "dropped_examples": setup.train_report.dropped_no_target,
        "packing": setup.packing,
        "train_tokens": state.train_tokens,
        "train_seconds": state.train_seconds,
        "tokens_per_second": state.train_tokens / state.train_seconds if state.train_seconds else 0.0,
        # Fraction of the token slots in this process's training batches that were padding.
        "pad_fraction": 1.0 - (state.train_tokens / world) / state.slot_tokens if state.slot_tokens else None,
        "world_size": world,
        "trainable_parameters": sum(p.numel() for p in setup.trainable),
    }


def _scalars(result: dict) -> dict:
    keys = ("eval_loss", "perplexity", "token_accuracy", "accuracy", "f1_macro")
    return {k: result[k] for k in keys if k in result}


def _plot(state: LoopState, path: Path, config: TrainConfig) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    steps = [h["step"] for h in state.history]
    ax.plot(steps, [h["train_loss"] for h in state.history], label="train loss")
    evals = ([{"step": 0, **_scalars(state.base)}] if state.base else []) + state.evaluations
    ax.plot([e["step"] for e in evals], [e["eval_loss"] for e in evals], "o-", label="eval loss")
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("loss")
    ax.set_title(f"{config.task} / {config.method}")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _summary_text(report: dict) -> str:
    lines = [f"evaluation on {report['validation_rows']} validation rows (base -> fine-tuned):"]
    for key, value in _scalars(report["fine_tuned"]).items():
        base = report["base"].get(key) if report["base"] else None
        lines.append(f"  {key:15s} {base:.4f} -> {value:.4f}" if base is not None else f"  {key:15s} {value:.4f}")
    return "\n".join(lines)
