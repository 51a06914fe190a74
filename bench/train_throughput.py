"""Training throughput: our loop against the strongest Hugging Face configurations, same model, LoRA, data, precision.

Rows, each in its own process so peak memory is separable (ru_maxrss of that process):

- ``ours``: the recipe (packed micro-batches of ``--batch_size`` examples, loss only where targets are).
- ``hf_group_by_length``: the HF Trainer, padding collator, length-grouped batches of ``--batch_size`` examples.
- ``hf_flattening``: the HF Trainer with ``DataCollatorWithFlattening`` (padding-free), ``--batch_size`` examples.
- ``ours_bf16``, ``ours_compile``: ours with bf16 autocast (CPUs with AVX-512 BF16 or AMX) or torch.compile.
- ``trl_sft_packing``: TRL's ``SFTTrainer`` with ``packing=True`` (best-fit decreasing, padding-free), as many
  packed rows of ``--max_seq_length`` per step as give the tokens per step closest to the others'.

Every row trains the same tokenised examples (our tokenisation: chat template, loss on assistant turns), the same
LoRA on the same base, fp32 on CPU (bf16 autocast on CUDA), for ``--steps`` optimizer steps; steps 2..N are timed.
Prints JSON: per row useful (non-pad) tokens/s, pad fraction, tokens per step and peak RSS; the best peer and
our ratio to it; the 1-minute load average around each row (a shared machine skews rows run far apart).

    .venv/bin/python bench/train_throughput.py                       # CPU: SmolLM2-135M + LoRA, Dolly sample
    .venv/bin/python bench/train_throughput.py --rows ours hf_flattening --steps 4
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "training_code"))

ROWS = ("ours", "hf_group_by_length", "hf_flattening", "trl_sft_packing", "ours_bf16", "ours_compile")
PEERS = ("hf_group_by_length", "hf_flattening", "trl_sft_packing")
#: Our rows with one lever changed: bf16 autocast (a different precision, so never compared with the fp32 peers)
#: and torch.compile of the model's forward.
OURS = {"ours": {}, "ours_bf16": {"precision": "bf16"}, "ours_compile": {"torch_compile": True}}


def _data_path(arg: str | None) -> Path:
    if arg:
        return Path(arg)
    shared = REPO.parent / "shared" / "data" / "dolly-sample" / "train.jsonl"
    return shared if shared.is_file() else REPO / "samples" / "dolly" / "train.jsonl"


def _model_dir(name: str) -> Path:
    from finetune import local_models

    return local_models.smollm2() if name == "smollm2" else Path(name)


def _config(args, workdir: Path, **overrides):
    from finetune.config import TrainConfig

    values = dict(
        task="causal-lm",
        method="lora",
        base_model=str(_model_dir(args.model)),
        train_path=str(args.data),
        max_steps=args.steps,
        batch_size=args.batch_size,
        max_seq_length=args.max_seq_length,
        learning_rate=2e-4,
        warmup_ratio=0.0,
        save_steps=0,
        max_eval_rows=args.eval_rows,
        seed=args.seed,
        model_dir=str(workdir / "model"),
        output_dir=str(workdir / "out"),
        checkpoint_dir=str(workdir / "ckpt"),
    )
    values.update(overrides)
    return TrainConfig(**values)


def _peak_rss_gib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def run_ours(args, workdir: Path, **overrides) -> dict:
    from finetune import recipe

    config = _config(args, workdir, **overrides)
    parallel, dtype = recipe._start_processes(config)
    setup = recipe.build(config, parallel, dtype)
    state = recipe.resume_or_evaluate_base(setup)
    recipe.train(setup, state)  # no save; the evaluation after training runs without gradients
    after = recipe.evaluate(setup)
    timed = [h for h in state.history if h["step"] >= 2]  # the first step's time includes warm-up
    useful, seconds = sum(h["window_tokens"] for h in timed), sum(h["window_seconds"] for h in timed)
    total_useful = sum(h["window_tokens"] for h in state.history)
    return {
        "useful_tokens_per_second": useful / seconds,
        "useful_tokens": useful,
        "seconds": seconds,
        "pad_fraction": 1 - total_useful / state.slot_tokens,
        "steps": state.step,
        "useful_tokens_per_step": total_useful / state.step,
        "slot_tokens_per_step": state.slot_tokens / state.step,
        "packing": setup.packing,
        "precision": config.precision,
        "torch_compile": config.torch_compile,
        # held-out loss (the validation split's first --eval_rows examples) before and after the timed steps
        "eval_loss_base": state.base["eval_loss"],
        "eval_loss_after": after["eval_loss"],
    }


def _hf_common(args, workdir: Path):
    import torch

    from finetune.data import encode_causal, load_channel
    from finetune.modeling import device_and_dtype, load_model, load_tokenizer

    config = _config(args, workdir)
    tokenizer = load_tokenizer(config.base_model, "causal-lm")
    examples, _ = encode_causal(load_channel("causal-lm", str(args.data), "train"), tokenizer, args.max_seq_length)
    device, dtype = device_and_dtype(0)
    torch.manual_seed(args.seed)
    model = load_model(config, config.base_model, tokenizer, device, dtype)
    return tokenizer, examples, model, device


def _training_args(args, workdir: Path, device, batch_size: int, **extra):
    return dict(
        output_dir=str(workdir / "trainer"),
        max_steps=args.steps,
        per_device_train_batch_size=batch_size,
        learning_rate=2e-4,
        lr_scheduler_type="cosine",
        warmup_steps=0,
        logging_strategy="no",
        save_strategy="no",
        report_to=[],
        use_cpu=device.type == "cpu",
        bf16=device.type == "cuda",
        dataloader_num_workers=0,
        remove_unused_columns=False,
        seed=args.seed,
        max_grad_norm=1.0,
        **extra,
    )


def _timed_trainer(trainer_cls, build_args, counts: dict, **kwargs) -> tuple[object, list[float]]:
    from transformers import TrainerCallback

    marks: list[float] = []

    class Clock(TrainerCallback):
        def on_step_end(self, *_, **__):
            marks.append(time.perf_counter())

    trainer = trainer_cls(args=build_args, callbacks=[Clock()], **kwargs)
    return trainer, marks


def _trainer_result(args, counts: dict, marks: list[float]) -> dict:
    steps = len(marks)
    useful = sum(counts["useful"][1:steps])
    seconds = marks[-1] - marks[0]
    return {
        "useful_tokens_per_second": useful / seconds,
        "useful_tokens": useful,
        "seconds": seconds,
        "pad_fraction": 1 - sum(counts["useful"][:steps]) / sum(counts["slots"][:steps]),
        "steps": steps,
        "useful_tokens_per_step": sum(counts["useful"][:steps]) / steps,
        "slot_tokens_per_step": sum(counts["slots"][:steps]) / steps,
    }


def run_hf(args, workdir: Path, flattening: bool) -> dict:
    from datasets import Dataset
    from transformers import DataCollatorWithFlattening, Trainer, TrainingArguments

    from finetune.data import Example, collate_padded

    tokenizer, examples, model, device = _hf_common(args, workdir)
    # group_by_length reads each row's length from its "input_ids".
    dataset = Dataset.from_list([{"input_ids": e.input_ids, "labels": e.labels} for e in examples])
    counts: dict = {"useful": [], "slots": []}
    flatten = DataCollatorWithFlattening(return_position_ids=True)

    def collator(batch):
        if flattening:
            out = flatten(batch)
            counts["useful"].append(out["input_ids"].numel())
        else:
            out = collate_padded(
                [Example(b["input_ids"], b["labels"]) for b in batch], tokenizer.pad_token_id, classification=False
            )
            counts["useful"].append(int(out["attention_mask"].sum()))
        counts["slots"].append(out["input_ids"].numel())
        return out

    extra = {} if flattening else {"train_sampling_strategy": "group_by_length"}
    training_args = TrainingArguments(**_training_args(args, workdir, device, args.batch_size, **extra))
    trainer, marks = _timed_trainer(
        Trainer, training_args, counts, model=model, train_dataset=dataset, data_collator=collator
    )
    trainer.train()
    return _trainer_result(args, counts, marks)


def run_trl(args, workdir: Path) -> dict:
    from datasets import Dataset
    from trl import SFTConfig, SFTTrainer

    tokenizer, examples, model, device = _hf_common(args, workdir)
    mean_length = sum(map(len, examples)) / len(examples)
    # Packed rows of max_seq_length per step closest to the others' tokens per step (batch_size examples).
    rows = max(1, round(args.batch_size * mean_length / args.max_seq_length))
    dataset = Dataset.from_list([{"input_ids": e.input_ids, "labels": e.labels} for e in examples])
    config = SFTConfig(
        **_training_args(args, workdir, device, rows),
        packing=True,
        max_length=args.max_seq_length,
        dataset_num_proc=None,
    )
    counts: dict = {"useful": [], "slots": []}
    trainer, marks = _timed_trainer(
        SFTTrainer, config, counts, model=model, train_dataset=dataset, processing_class=tokenizer
    )
    inner = trainer.data_collator

    def collator(batch):
        out = inner(batch)
        counts["useful"].append(int((out["input_ids"] != tokenizer.pad_token_id).sum()))
        counts["slots"].append(out["input_ids"].numel())
        return out

    trainer.data_collator = collator
    trainer.train()
    return {**_trainer_result(args, counts, marks), "packed_rows_per_step": rows}


def run_row(args) -> dict:
    with tempfile.TemporaryDirectory() as tmp, contextlib.redirect_stdout(sys.stderr):
        workdir = Path(tmp)
        if args.row in OURS:
            result = run_ours(args, workdir, **OURS[args.row])
        elif args.row == "trl_sft_packing":
            result = run_trl(args, workdir)
        else:
            result = run_hf(args, workdir, flattening=args.row == "hf_flattening")
    return {**result, "peak_rss_gib": _peak_rss_gib()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="smollm2", help="smollm2 | a local HF directory")
    parser.add_argument(
        "--data", default=None, type=lambda s: Path(s) if s else None, help="causal-lm JSONL (default: Dolly sample)"
    )
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--batch_size", type=int, default=8, help="examples per optimizer step (all rows)")
    parser.add_argument("--max_seq_length", type=int, default=384)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--eval_rows", type=int, default=32, help="held-out examples our rows evaluate")
    parser.add_argument("--rows", nargs="*", default=list(ROWS), choices=ROWS)
    parser.add_argument("--concurrent", action="store_true", help="run the rows at the same time (a shared machine)")
    parser.add_argument("--row", choices=ROWS, help=argparse.SUPPRESS)  # one row, in this process
    args = parser.parse_args()
    args.data = _data_path(str(args.data) if args.data else None)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    if args.row:
        print(json.dumps(run_row(args)))
        return
    import torch

    results, load = {}, {}
    commands = {
        row: [
            sys.executable,
            __file__,
            "--row",
            row,
            "--model",
            args.model,
            "--data",
            str(args.data),
            "--steps",
            str(args.steps),
            "--batch_size",
            str(args.batch_size),
            "--max_seq_length",
            str(args.max_seq_length),
            "--seed",
            str(args.seed),
            "--eval_rows",
            str(args.eval_rows),
        ]
        for row in args.rows
    }
    # One after another by default; --concurrent starts every row at once, so on a machine shared with other work
    # all rows see the same load (each still in its own process, so peak RSS stays separable).
    batches = [args.rows] if args.concurrent else [[row] for row in args.rows]
    for batch in batches:
        before = os.getloadavg()[0]
        procs = {
            row: subprocess.Popen(commands[row], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO)
            for row in batch
        }
        for row, proc in procs.items():
            stdout, stderr = proc.communicate()
            load[row] = {"before": before, "after": os.getloadavg()[0]}
            lines = [line for line in stdout.splitlines() if line.startswith("{")]
            results[row] = json.loads(lines[-1]) if proc.returncode == 0 and lines else {"error": stderr[-1500:]}
    peers = {k: v for k, v in results.items() if k in PEERS and "useful_tokens_per_second" in v}
    result = {
        "device": torch.cuda.get_device_name(0)
        if torch.cuda.is_available()
        else f"cpu ({torch.get_num_threads()} threads)",
        "precision_of_fp32_rows": "bf16 autocast" if torch.cuda.is_available() else "fp32",
        "model": args.model,
        "method": "lora",
        "data": str(args.data),
        "steps": args.steps,
        "examples_per_step": args.batch_size,
        "max_seq_length": args.max_seq_length,
        "rows": results,
        "rows_run": "concurrently" if args.concurrent else "one after another",
        # 1-minute load averages before and after each row: other work on a shared machine skews the comparison.
        "load_average": load,
    }
    if peers and "useful_tokens_per_second" in results.get("ours", {}):
        best = max(peers, key=lambda k: peers[k]["useful_tokens_per_second"])
        result["best_peer"] = best
        result["ratio_to_best_peer"] = (
            results["ours"]["useful_tokens_per_second"] / peers[best]["useful_tokens_per_second"]
        )
        result["peak_rss_ratio_to_best_peer"] = results["ours"]["peak_rss_gib"] / peers[best]["peak_rss_gib"]
        result["tokens_per_step_ratio_to_best_peer"] = (
            results["ours"]["useful_tokens_per_step"] / peers[best]["useful_tokens_per_step"]
        )
    for lever in ("ours_bf16", "ours_compile"):
        if "useful_tokens_per_second" in results.get(lever, {}) and "useful_tokens_per_second" in results.get(
            "ours", {}
        ):
            result[f"{lever}_speedup_over_ours"] = (
                results[lever]["useful_tokens_per_second"] / results["ours"]["useful_tokens_per_second"]
            )
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
