"""Training throughput: our loop (packing, no pad compute) vs a plain HF Trainer (padding collator, no packing).

Same model, LoRA/full setting, tokenised examples and number of optimizer steps, in one process. Prints JSON with
useful (non-pad) tokens per second, pad fraction and, on CUDA, MFU against H100 bf16 peak.

    .venv/bin/python bench/train_throughput.py                      # CPU: SmolLM2-135M + LoRA on the Dolly sample
    python bench/train_throughput.py --model llama-1b-random        # CUDA: Llama-shaped ~1B, random weights, MFU
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import os
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "training_code"))

H100_BF16_PEAK = 989e12


def _data_path(arg: str | None) -> Path:
    if arg:
        return Path(arg)
    shared = REPO.parent / "shared" / "data" / "dolly-sample" / "train.jsonl"
    return shared if shared.is_file() else REPO / "samples" / "dolly" / "train.jsonl"


def _model_dir(name: str, workdir: Path) -> Path:
    from finetune import local_models

    if name == "smollm2":
        return local_models.smollm2()
    if name == "llama-1b-random":
        import torch
        from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

        tokenizer = AutoTokenizer.from_pretrained(local_models.smollm2())
        config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=2048, intermediate_size=5632, num_hidden_layers=22,
                             num_attention_heads=32, num_key_value_heads=4, max_position_embeddings=4096,
                             bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                             tie_word_embeddings=False)
        torch.manual_seed(0)
        model = LlamaForCausalLM(config).to(torch.bfloat16)
        target = workdir / "llama-1b-random"
        model.save_pretrained(target)
        tokenizer.save_pretrained(target)
        return target
    return Path(name)


def flops_per_token(n_params: int, n_layers: int, d_model: int, context: float, method: str) -> float:
    """Training FLOPs per token: 6N (full) or 4N (LoRA: no weight gradients) plus attention 12*L*d*context."""
    return (6 if method == "full" else 4) * n_params + 12 * n_layers * d_model * context


def run_ours(args, model_dir: Path, data: Path, workdir: Path) -> dict:
    from finetune.config import TrainConfig
    from finetune.recipe import run

    validation = data.with_name("validation.jsonl")
    config = TrainConfig(task="causal-lm", method=args.method, base_model=str(model_dir), train_path=str(data),
                         validation_path=str(validation) if validation.is_file() else None, max_steps=args.steps, batch_size=args.batch_size, max_seq_length=args.max_seq_length,
                         learning_rate=args.learning_rate, packing=True, max_eval_rows=2, save_steps=0,
                         warmup_ratio=0.0, model_dir=str(workdir / "ours-model"), output_dir=str(workdir / "ours-out"),
                         checkpoint_dir=str(workdir / "ours-ckpt"), seed=args.seed)
    run(config)
    metrics = json.loads((workdir / "ours-model" / "training_metrics.json").read_text())
    summary = metrics["summary"]
    # Steps 2..N, as for the baseline: the first step's time includes warm-up (logging_steps is 1 by default).
    timed = [h for h in metrics["history"] if h["step"] >= 2]
    useful, seconds = sum(h["window_tokens"] for h in timed), sum(h["window_seconds"] for h in timed)
    return {"useful_tokens": useful, "seconds": seconds, "useful_tokens_per_second": useful / seconds,
            "pad_fraction": summary["pad_fraction"], "steps": summary["global_step"], "first_step_excluded": True,
            "all_steps_useful_tokens_per_second": summary["tokens_per_second"]}


def run_baseline(args, model_dir: Path, data: Path, workdir: Path) -> dict:
    import torch
    from transformers import Trainer, TrainerCallback, TrainingArguments

    from finetune.data import collate_padded, encode_causal, load_channel
    from finetune.modeling import device_and_dtype, load_model, load_tokenizer
    from finetune.config import TrainConfig

    config = TrainConfig(task="causal-lm", method=args.method, base_model=str(model_dir), train_path=str(data),
                         max_seq_length=args.max_seq_length, model_dir=str(workdir / "b"), checkpoint_dir=str(workdir / "bc"))
    tokenizer = load_tokenizer(str(model_dir), "causal-lm")
    examples, _ = encode_causal(load_channel("causal-lm", str(data), "train"), tokenizer, args.max_seq_length)
    device, dtype = device_and_dtype(0)
    model = load_model(config, str(model_dir), tokenizer, device, dtype)
    counts = {"useful": [], "slots": []}

    def collator(batch):
        out = collate_padded(batch, tokenizer.pad_token_id, classification=False)
        counts["useful"].append(int(out["attention_mask"].sum()))
        counts["slots"].append(out["input_ids"].numel())
        return out

    marks: list[float] = []

    class Clock(TrainerCallback):
        def on_step_end(self, *_, **__):
            if device.type == "cuda":
                torch.cuda.synchronize()
            marks.append(time.perf_counter())

    training_args = TrainingArguments(
        output_dir=str(workdir / "baseline"), max_steps=args.steps, per_device_train_batch_size=args.batch_size,
        learning_rate=args.learning_rate, lr_scheduler_type="cosine", warmup_steps=0, logging_strategy="no",
        save_strategy="no", report_to=[], use_cpu=device.type == "cpu", bf16=device.type == "cuda",
        dataloader_num_workers=0, remove_unused_columns=False, seed=args.seed, max_grad_norm=1.0,
    )
    trainer = Trainer(model=model, args=training_args, train_dataset=examples, data_collator=collator, callbacks=[Clock()])
    trainer.train()
    del trainer, model
    # Steps 2..N: the first step's time includes warm-up.
    useful = sum(counts["useful"][1 : args.steps])
    seconds = marks[-1] - marks[0]
    return {"useful_tokens": useful, "seconds": seconds, "useful_tokens_per_second": useful / seconds,
            "pad_fraction": 1 - sum(counts["useful"][: args.steps]) / sum(counts["slots"][: args.steps]),
            "steps": len(marks), "first_step_excluded": True}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="smollm2", help="smollm2 | llama-1b-random | a local HF directory")
    parser.add_argument("--data", default=None, help="causal-lm JSONL (default: Dolly sample)")
    parser.add_argument("--method", default="lora", choices=["lora", "full"])
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--batch_size", type=int, default=4)
    parser.add_argument("--max_seq_length", type=int, default=512)
    parser.add_argument("--learning_rate", type=float, default=2e-4)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    import torch

    data = _data_path(args.data)
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        model_dir = _model_dir(args.model, workdir)
        # Both loops print progress and metric lines; stdout is kept for the JSON result alone.
        with contextlib.redirect_stdout(sys.stderr):
            load = {"before": os.getloadavg()[0]}
            baseline = run_baseline(args, model_dir, data, workdir)
            load["after_baseline"] = os.getloadavg()[0]
            gc.collect()
            ours = run_ours(args, model_dir, data, workdir)
            load["after_ours"] = os.getloadavg()[0]
        from transformers import AutoConfig

        config = AutoConfig.from_pretrained(model_dir)
    result = {
        "device": torch.cuda.get_device_name(0) if torch.cuda.is_available() else f"cpu ({torch.get_num_threads()} threads)",
        "model": args.model, "method": args.method, "data": str(data), "steps": args.steps,
        "batch_size": args.batch_size, "max_seq_length": args.max_seq_length,
        "ours": ours, "hf_trainer_padding": baseline,
        # 1-minute load averages: other work on a shared machine skews the comparison.
        "load_average": load,
        "speedup_useful_tokens_per_second": ours["useful_tokens_per_second"] / baseline["useful_tokens_per_second"],
    }
    if torch.cuda.is_available():
        from transformers import AutoModelForCausalLM

        n_params = sum(p.numel() for p in AutoModelForCausalLM.from_config(config).parameters())
        context = args.max_seq_length / 2
        per_token = flops_per_token(n_params, config.num_hidden_layers, config.hidden_size, context, args.method)
        result["mfu"] = {
            "formula": f"({'6' if args.method == 'full' else '4'}N + 12*L*d*context) * tokens/s / 989e12 (H100 bf16)",
            "n_params": n_params, "context": context,
            "ours": per_token * ours["useful_tokens_per_second"] / H100_BF16_PEAK,
            "hf_trainer_padding": per_token * baseline["useful_tokens_per_second"] / H100_BF16_PEAK,
        }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
