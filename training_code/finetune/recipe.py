"""The fine-tuning recipe, top to bottom: setup (data, model, resume), train, evaluate, save, cleanup."""

from __future__ import annotations

import json
import math
import random
import signal
import sys
import time
from pathlib import Path

import torch
import torch.distributed as dist
import torch.nn.functional as F

from . import checkpoint
from .config import TrainConfig
from .data import (
    IGNORE_INDEX,
    BatchPlan,
    collate_packed,
    collate_padded,
    encode_causal,
    encode_classification,
    load_channel,
    pack_best_fit_decreasing,
    rank_env,
    split_records,
)
from .errors import TrainingError
from .evaluate import evaluate_causal, evaluate_classification
from .formats import DataError, check_labels, label_mapping
from .metrics import format_metric
from .modeling import device_and_dtype, load_model, load_tokenizer, resolve_base_model, save_output


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


def _info(is_main: bool, message: str) -> None:
    if is_main:
        print(message, file=sys.stderr, flush=True)


def _emit(is_main: bool, values: dict, step: int) -> None:
    if is_main:
        for name, value in values.items():
            print(format_metric(name, value, step), flush=True)


def _all_sum(value: float, world: int, device) -> float:
    if world == 1:
        return value
    tensor = torch.tensor([float(value)], dtype=torch.float64, device=device)
    dist.all_reduce(tensor)
    return tensor.item()


def _broadcast_flag(flag: bool, world: int, device) -> bool:
    if world == 1:
        return flag
    tensor = torch.tensor([1 if flag else 0], device=device)
    dist.broadcast(tensor, src=0)
    return bool(tensor.item())


def _causal_loss_sum(model, batch):
    """Summed cross-entropy over target tokens; logits are computed only at positions that predict a target."""
    targets = batch["labels"][:, 1:]
    positions = (targets != IGNORE_INDEX).any(0).nonzero().squeeze(-1)
    inputs = {k: v for k, v in batch.items() if k != "labels"}
    logits = model(**inputs, logits_to_keep=positions, use_cache=False).logits
    chosen = targets[:, positions]
    return F.cross_entropy(logits.float().flatten(0, 1), chosen.flatten(), ignore_index=IGNORE_INDEX, reduction="sum")


def run(config: TrainConfig) -> dict:
    """Fine-tune per ``config``; returns the evaluation report. Raises ConfigError/DataError/TrainingError."""
    # ---- setup: distributed, data ----
    rank, local_rank, world = rank_env()
    if config.distributed_strategy == "fsdp":
        raise TrainingError("distributed_strategy=fsdp is not implemented in this container yet; use "
                            "distributed_strategy=ddp (data parallel), or method=lora/qlora for models that do not fit one GPU")
    if world > 1 and not dist.is_initialized():
        dist.init_process_group(backend="nccl" if torch.cuda.is_available() else "gloo")
    is_main = rank == 0
    random.seed(config.seed)
    torch.manual_seed(config.seed)
    causal = config.task == "causal-lm"

    train_records = load_channel(config.task, config.train_path, "train")
    if config.validation_path:
        val_records = load_channel(config.task, config.validation_path, "validation")
    else:
        train_records, val_records = split_records(train_records, config.validation_split, config.seed)
        _info(is_main, f"no validation channel: held out {len(val_records)} of the training rows (seed {config.seed})")
    labels = None
    if not causal:
        labels = label_mapping(train_records)
        if len(labels) < 2:
            raise DataError("train channel", None, f"classification needs at least 2 distinct labels, found {labels}")
        check_labels(val_records, labels)
    if config.max_eval_rows:
        val_records = val_records[: config.max_eval_rows]

    # ---- setup: model ----
    location = resolve_base_model(config)
    tokenizer = load_tokenizer(location, config.task)
    device, dtype = device_and_dtype(local_rank)
    autocast_dtype = dtype if device.type == "cuda" else None
    if causal:
        train_examples, train_report = encode_causal(train_records, tokenizer, config.max_seq_length)
        val_examples, _ = encode_causal(val_records, tokenizer, config.max_seq_length)
    else:
        label_to_id = {label: i for i, label in enumerate(labels)}
        train_examples, train_report = encode_classification(train_records, tokenizer, config.max_seq_length, label_to_id)
        val_examples, _ = encode_classification(val_records, tokenizer, config.max_seq_length, label_to_id)
    if train_report.dropped_no_target:
        _info(is_main, f"dropped {train_report.dropped_no_target} examples with no target token left after truncation "
                       f"(first: {', '.join(train_report.dropped_where[:3])}); raise max_seq_length to keep them")
    if not train_examples:
        raise DataError("train channel", None, "no usable training examples after tokenisation")
    if not val_examples:
        raise DataError("validation channel", None, "no usable validation examples after tokenisation")
    model = load_model(config, location, tokenizer, device, dtype, labels)
    pad_id = tokenizer.pad_token_id

    items = pack_best_fit_decreasing(train_examples, config.max_seq_length) if config.packing else train_examples
    plan = BatchPlan(items, config.batch_size, world, config.seed)
    total_steps = config.max_steps or max(1, math.ceil(config.epochs * plan.per_epoch / config.gradient_accumulation_steps))
    trainable = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    no_decay = [p for n, p in trainable if p.ndim < 2]
    decay = [p for n, p in trainable if p.ndim >= 2]
    optimizer = torch.optim.AdamW(
        [{"params": decay, "weight_decay": config.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=config.learning_rate,
        fused=device.type == "cuda",
    )
    from transformers import get_cosine_schedule_with_warmup

    scheduler = get_cosine_schedule_with_warmup(optimizer, int(config.warmup_ratio * total_steps), total_steps)
    n_trainable = sum(p.numel() for _, p in trainable)
    _info(is_main, f"{config.task} {config.method} on {location}: {len(train_examples)} train / {len(val_examples)} "
                   f"validation examples, {len(items)} {'packed rows' if config.packing else 'items'}, "
                   f"{total_steps} steps, {n_trainable:,} trainable parameters, {world} process(es) on {device}")

    def evaluate(target_model) -> dict:
        size = config.batch_size * 2
        if causal:
            return evaluate_causal(target_model, val_examples, pad_id, device, size, autocast_dtype)
        return evaluate_classification(target_model, val_examples, pad_id, device, size, [str(l) for l in labels], autocast_dtype)

    # ---- setup: resume or evaluate the base ----
    state = {"history": [], "evaluations": [], "base": None, "best_eval_loss": None, "bad_evals": 0,
             "train_tokens": 0, "train_seconds": 0.0, "resumed_from": []}
    start_step = 0
    found = checkpoint.latest(config.checkpoint_dir)
    if found is not None:
        state = checkpoint.load(found, model, optimizer, scheduler)
        start_step = state.pop("global_step")
        state["resumed_from"].append(start_step)
        _info(is_main, f"resuming from {found} at step {start_step}")
    elif is_main:
        state["base"] = evaluate(model)
        _emit(is_main, _scalars(state["base"]), 0)
    if world > 1:
        dist.barrier()

    # ---- train ----
    train_model = model
    if world > 1:
        train_model = torch.nn.parallel.DistributedDataParallel(model, device_ids=[local_rank] if device.type == "cuda" else None)
    stop_flag = _StopFlag()
    previous_handler = signal.signal(signal.SIGTERM, stop_flag)
    progress = None
    if config.progress and is_main:
        from tqdm.auto import tqdm

        progress = tqdm(total=total_steps, initial=start_step, desc="fine-tuning", file=sys.stderr)
    model.train()
    accum = config.gradient_accumulation_steps
    window_loss, window_tokens, window_start = 0.0, 0, time.perf_counter()
    step = start_step
    early_stopped = False
    try:
        while step < total_steps:
            batches = []
            for j in range(accum):
                chunk, _ = plan.micro_batch(step * accum + j, rank)
                if config.packing:
                    batches.append(collate_packed(chunk, pad_id))
                else:
                    batches.append(collate_padded(chunk, pad_id, classification=not causal))
            if causal:
                local_targets = sum(int((b["labels"][:, 1:] != IGNORE_INDEX).sum()) for b in batches)
            else:
                local_targets = sum(len(b["labels"]) for b in batches)
            global_targets = _all_sum(local_targets, world, device)
            step_loss = 0.0
            for j, batch in enumerate(batches):
                window_tokens += int((batch["input_ids"] != pad_id).sum())
                state["slot_tokens"] = state.get("slot_tokens", 0) + batch["input_ids"].numel()
                batch = {k: v.to(device) for k, v in batch.items()}
                sync = j == accum - 1 or world == 1
                context = train_model.no_sync() if (world > 1 and not sync) else _null()
                with context, torch.autocast(device.type, dtype=autocast_dtype, enabled=autocast_dtype is not None):
                    if causal:
                        loss_sum = _causal_loss_sum(train_model, batch)
                    else:
                        logits = train_model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
                        loss_sum = F.cross_entropy(logits.float(), batch["labels"], reduction="sum")
                    # DDP averages gradients over ranks; scaling by world makes the result a mean over all targets.
                    (loss_sum * world / global_targets).backward()
                step_loss += loss_sum.item()
            grad_norm = torch.nn.utils.clip_grad_norm_([p for _, p in trainable], 1.0).item()
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            step += 1
            train_loss = _all_sum(step_loss, world, device) / global_targets
            if not math.isfinite(train_loss):
                raise TrainingError(f"training diverged: train_loss is {train_loss} at step {step}; "
                                    f"lower learning_rate (now {config.learning_rate})")
            window_loss += train_loss
            if progress is not None:
                progress.update(1)
                progress.set_postfix(loss=f"{train_loss:.4f}")
            if step % config.logging_steps == 0 or step == total_steps:
                elapsed = time.perf_counter() - window_start
                tokens = _all_sum(window_tokens, world, device)
                n = step % config.logging_steps or config.logging_steps
                record = {
                    "train_loss": window_loss / n,
                    "learning_rate": scheduler.get_last_lr()[0],
                    "grad_norm": grad_norm if math.isfinite(grad_norm) else 0.0,
                    "epoch": step * accum / plan.per_epoch,
                    "tokens_per_second": tokens / elapsed if elapsed > 0 else 0.0,
                }
                _emit(is_main, record, step)
                state["history"].append({"step": step, **record})
                state["train_tokens"] += tokens
                state["train_seconds"] += elapsed
                window_loss, window_tokens, window_start = 0.0, 0, time.perf_counter()
            if config.eval_steps and step % config.eval_steps == 0 and step < total_steps:
                stop = False
                if is_main:
                    result = evaluate(model)
                    _emit(is_main, _scalars(result), step)
                    state["evaluations"].append({"step": step, **_scalars(result)})
                    if state["best_eval_loss"] is None or result["eval_loss"] < state["best_eval_loss"]:
                        state["best_eval_loss"], state["bad_evals"] = result["eval_loss"], 0
                    else:
                        state["bad_evals"] += 1
                    stop = 0 < config.early_stopping_patience <= state["bad_evals"]
                if _broadcast_flag(stop, world, device):
                    _info(is_main, f"early stopping at step {step}: no eval_loss improvement in "
                                   f"{config.early_stopping_patience} evaluations")
                    early_stopped = True
                    break
            # Any rank's SIGTERM stops all of them at the same step.
            interrupted = stop_flag.raised if world == 1 else _all_sum(float(stop_flag.raised), world, device) > 0
            if interrupted or (config.save_steps and step % config.save_steps == 0 and step < total_steps):
                path = None
                if is_main:
                    path = str(checkpoint.save(config.checkpoint_dir, step, model, optimizer, scheduler, state))
                    _info(is_main, f"checkpoint written: {path}")
                if world > 1:
                    dist.barrier()
                if interrupted:
                    raise Interrupted(step, path)
    finally:
        signal.signal(signal.SIGTERM, previous_handler)
        if progress is not None:
            progress.close()

    # ---- evaluate and save (rank 0 alone) ----
    report = None
    if is_main:
        fine_tuned = evaluate(model)
        _emit(is_main, _scalars(fine_tuned), step)
        state["evaluations"].append({"step": step, **_scalars(fine_tuned)})
        report = {"task": config.task, "validation_rows": len(val_examples), "base": state["base"], "fine_tuned": fine_tuned}
        model_dir = Path(config.model_dir)
        model_dir.mkdir(parents=True, exist_ok=True)
        save_output(model, tokenizer, config, model_dir, dtype)
        (model_dir / "evaluation.json").write_text(json.dumps(report, indent=2))
        # A copy in the output data dir: SageMaker uploads it as the small output.tar.gz the pipeline's Gate
        # reads, so judging a run never means downloading the model archive.
        output_data = Path(config.output_dir) / "data"
        output_data.mkdir(parents=True, exist_ok=True)
        (output_data / "evaluation.json").write_text(json.dumps(report, indent=2))
        pad_fraction = _pad_fraction(items, config) if config.packing else None
        metrics = {
            "history": state["history"],
            "evaluations": state["evaluations"],
            "summary": {
                "global_step": step,
                "total_steps": total_steps,
                "early_stopped": early_stopped,
                "resumed_from_steps": state["resumed_from"],
                "train_examples": len(train_examples),
                "truncated_examples": train_report.truncated,
                "dropped_examples": train_report.dropped_no_target,
                "packed_rows": len(items) if config.packing else None,
                "packed_pad_fraction": pad_fraction,
                "train_tokens": state["train_tokens"],
                "train_seconds": state["train_seconds"],
                "tokens_per_second": state["train_tokens"] / state["train_seconds"] if state["train_seconds"] else 0.0,
                # Fraction of the token slots in this process's training batches that were padding.
                "pad_fraction": 1.0 - (state["train_tokens"] / world) / state["slot_tokens"] if state.get("slot_tokens") else None,
                "world_size": world,
                "trainable_parameters": n_trainable,
            },
            "config": config.to_dict(),
        }
        (model_dir / "training_metrics.json").write_text(json.dumps(metrics, indent=2))
        _plot(state, model_dir / "loss_curve.png", config)
        _info(is_main, _summary_text(report))
    if world > 1:
        dist.barrier()
        dist.destroy_process_group()
    return report


class _null:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def _scalars(result: dict) -> dict:
    keys = ("eval_loss", "perplexity", "token_accuracy", "accuracy", "f1_macro")
    return {k: result[k] for k in keys if k in result}


def _pad_fraction(rows, config: TrainConfig) -> float:
    used = sum(len(e) for row in rows for e in row)
    return 1.0 - used / (len(rows) * config.max_seq_length)


def _plot(state: dict, path: Path, config: TrainConfig) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    steps = [h["step"] for h in state["history"]]
    ax.plot(steps, [h["train_loss"] for h in state["history"]], label="train loss")
    evals = ([{"step": 0, **_scalars(state["base"])}] if state["base"] else []) + state["evaluations"]
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
