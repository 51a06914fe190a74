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
from .parallel import Parallel


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
    if world > 1 and not dist.is_initialized():
        dist.init_process_group(backend="nccl" if torch.cuda.is_available() else "gloo")
    is_main = rank == 0
    if config.distributed_strategy == "fsdp" and world == 1:
        _info(is_main, "distributed_strategy=fsdp with one process: nothing to shard, training the whole model here")
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
    parallel = Parallel(config.distributed_strategy, rank, world, device)
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
    # A sharded model stays on the CPU until FSDP moves it to the device one block at a time.
    model = load_model(config, location, tokenizer, device, dtype, labels, place=not parallel.sharded)
    model = parallel.prepare(model, autocast_dtype)
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
                   f"{total_steps} steps, {n_trainable:,} trainable parameters, {world} process(es) on {device}, "
                   f"{getattr(model.config, '_attn_implementation', None) or 'default'} attention")

    def evaluate(target_model) -> dict:
        size = config.batch_size * 2
        if causal:
            return evaluate_causal(target_model, val_examples, pad_id, device, size, autocast_dtype)
        return evaluate_classification(target_model, val_examples, pad_id, device, size, [str(l) for l in labels], autocast_dtype)

    # ---- setup: resume or evaluate the base ----
    state = {"history": [], "evaluations": [], "base": None, "best_eval_loss": None, "bad_evals": 0,
             "train_tokens": 0, "train_seconds": 0.0, "resumed_from": [], "sharded": parallel.sharded}
    start_step = 0
    run_fingerprint = checkpoint.fingerprint(config)  # a checkpoint of any other run is refused, not resumed
    found = checkpoint.latest(config.checkpoint_dir)
    if found is not None:
        model_state, optim_state, state = checkpoint.load(found, scheduler, rank, world, run_fingerprint=run_fingerprint)
        if state.get("sharded", False) != parallel.sharded:
            raise TrainingError(
                f"checkpoint {found} was written by a {'sharded (fsdp)' if state.get('sharded') else 'ddp or single-process'} "
                f"run and this run is {'sharded (fsdp)' if parallel.sharded else 'ddp or single-process'}; resume with the "
                f"same distributed_strategy and more than one process, or empty the checkpoint directory to start over")
        parallel.load_state(model, model_state, optimizer, optim_state)
        del model_state, optim_state
        start_step = state.pop("global_step")
        state["resumed_from"].append(start_step)
        _info(is_main, f"resuming from {found} at step {start_step}")
    else:
        if is_main:
            checkpoint.clear_best(config.checkpoint_dir)  # a leftover of an earlier run must not be picked
        if parallel.evaluates:
            state["base"] = evaluate(model)
            _emit(is_main, _scalars(state["base"]), 0)
    parallel.barrier()

    # ---- train ----
    train_model = parallel.wrap(model)
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
            global_targets = parallel.sum(local_targets)
            step_loss = 0.0
            for j, batch in enumerate(batches):
                window_tokens += int((batch["input_ids"] != pad_id).sum())
                state["slot_tokens"] = state.get("slot_tokens", 0) + batch["input_ids"].numel()
                batch = {k: v.to(device) for k, v in batch.items()}
                with parallel.accumulate(train_model, sync=j == accum - 1), torch.autocast(device.type, dtype=autocast_dtype, enabled=autocast_dtype is not None):
                    if causal:
                        loss_sum = _causal_loss_sum(train_model, batch)
                    else:
                        logits = train_model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
                        loss_sum = F.cross_entropy(logits.float(), batch["labels"], reduction="sum")
                    # DDP and FSDP average gradients over ranks; scaling by world makes it a mean over all targets.
                    (loss_sum * world / global_targets).backward()
                step_loss += loss_sum.item()
            grad_norm = torch.nn.utils.clip_grad_norm_([p for _, p in trainable], 1.0)
            grad_norm = (grad_norm.full_tensor() if hasattr(grad_norm, "full_tensor") else grad_norm).item()
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            step += 1
            train_loss = parallel.sum(step_loss) / global_targets
            if not math.isfinite(train_loss):
                raise TrainingError(f"training diverged: train_loss is {train_loss} at step {step}; "
                                    f"lower learning_rate (now {config.learning_rate})")
            window_loss += train_loss
            if progress is not None:
                progress.update(1)
                progress.set_postfix(loss=f"{train_loss:.4f}")
            if step % config.logging_steps == 0 or step == total_steps:
                elapsed = time.perf_counter() - window_start
                tokens = parallel.sum(window_tokens)
                n = step % config.logging_steps or config.logging_steps
                record = {
                    "train_loss": window_loss / n,
                    "learning_rate": scheduler.get_last_lr()[0],
                    "grad_norm": grad_norm if math.isfinite(grad_norm) else 0.0,
                    "epoch": step * accum / plan.per_epoch,
                    "tokens_per_second": tokens / elapsed if elapsed > 0 else 0.0,
                }
                _emit(is_main, record, step)
                # The window's own counts too, so throughput can be computed over any range of steps.
                state["history"].append({"step": step, **record, "window_tokens": tokens, "window_seconds": elapsed})
                state["train_tokens"] += tokens
                state["train_seconds"] += elapsed
                window_loss, window_tokens, window_start = 0.0, 0, time.perf_counter()
            if config.eval_steps and step % config.eval_steps == 0 and step < total_steps:
                improved = stop = False
                if parallel.evaluates:
                    result = evaluate(model)
                if is_main:
                    _emit(is_main, _scalars(result), step)
                    state["evaluations"].append({"step": step, **_scalars(result)})
                    improved = state["best_eval_loss"] is None or result["eval_loss"] < state["best_eval_loss"]
                    if improved:
                        state["best_eval_loss"], state["bad_evals"] = result["eval_loss"], 0
                    else:
                        state["bad_evals"] += 1
                    stop = 0 < config.early_stopping_patience <= state["bad_evals"]
                improved, stop = parallel.from_main(improved, stop)
                if improved and config.keep_best:
                    weights, _ = parallel.full_state(model)
                    if is_main:
                        checkpoint.save_best(config.checkpoint_dir, step, result["eval_loss"], weights)
                    del weights
                if stop:
                    _info(is_main, f"early stopping at step {step}: no eval_loss improvement in "
                                   f"{config.early_stopping_patience} evaluations")
                    early_stopped = True
                    break
            # Any rank's SIGTERM stops all of them at the same step.
            interrupted = parallel.sum(float(stop_flag.raised)) > 0
            if interrupted or (config.save_steps and step % config.save_steps == 0 and step < total_steps):
                path = None
                weights, optim_state = parallel.full_state(model, optimizer)
                rng_states = parallel.gather(checkpoint.rng_state())
                if is_main:
                    path = str(checkpoint.save(config.checkpoint_dir, step, weights, optim_state, scheduler, rng_states,
                                               state, run_fingerprint=run_fingerprint))
                    _info(is_main, f"checkpoint written: {path}")
                del weights, optim_state
                parallel.barrier()
                if interrupted:
                    raise Interrupted(step, path)
    finally:
        signal.signal(signal.SIGTERM, previous_handler)
        if progress is not None:
            progress.close()

    # ---- evaluate, keep the best weights, save (rank 0 writes) ----
    fine_tuned = evaluate(model) if parallel.evaluates else None
    if is_main:
        _emit(is_main, _scalars(fine_tuned), step)
        state["evaluations"].append({"step": step, **_scalars(fine_tuned)})
    selected_step = step
    # Rank 0 decides from the best weights it wrote; under FSDP it then sends each rank its shard of them.
    best = checkpoint.load_best(config.checkpoint_dir) if (config.keep_best and config.eval_steps and is_main) else None
    use_best, = parallel.from_main(best is not None and best[0]["eval_loss"] < fine_tuned["eval_loss"])
    if use_best:
        meta, weights = best if best is not None else ({}, None)
        if is_main or parallel.sharded:  # other DDP ranks write nothing, so their copies may stay as they are
            parallel.load_state(model, weights)
        del weights
        if is_main:
            selected_step = meta["step"]
            _info(is_main, f"keeping the weights of step {selected_step} (eval_loss {meta['eval_loss']:.4f}): better "
                           f"than the last step's {fine_tuned['eval_loss']:.4f}")
        fine_tuned = evaluate(model) if parallel.evaluates else None
    output_state = parallel.full_state(model)[0] if parallel.sharded else None
    report = None
    if is_main:
        report = {"task": config.task, "validation_rows": len(val_examples), "base": state["base"], "fine_tuned": fine_tuned}
        model_dir = Path(config.model_dir)
        model_dir.mkdir(parents=True, exist_ok=True)
        save_output(model, tokenizer, config, model_dir, dtype, state_dict=output_state)
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
                # The step whose weights were written: the last, or the one with the lowest eval_loss (keep_best).
                "selected_step": selected_step,
                "distributed_strategy": "fsdp" if parallel.sharded else ("ddp" if world > 1 else "none"),
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
