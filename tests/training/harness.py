"""Running the training container's entry (train.py) in a subprocess, as the tests and fixtures do."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
TRAIN_PY = REPO / "training_code" / "train.py"
SAMPLES = REPO / "samples"
SHARED_DATA = REPO.parent / "shared" / "data"
# Two cores are shared; fixed threads keep runs comparable and deterministic.
THREADS = "2"


def child_env(**extra: str) -> dict[str, str]:
    """Environment for a training subprocess: no hub, fixed threads, no SageMaker leftovers."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("SM_", "SAGEMAKER_", "RANK", "WORLD_SIZE", "LOCAL_RANK"))
    }
    env.update(
        HF_HUB_OFFLINE="1",
        TRANSFORMERS_OFFLINE="1",
        OMP_NUM_THREADS=THREADS,
        MKL_NUM_THREADS=THREADS,
        TOKENIZERS_PARALLELISM="false",
        PYTHONUNBUFFERED="1",
    )
    env.update(extra)
    return env


@dataclass
class Run:
    """A finished train.py process and its directories."""

    returncode: int
    stdout: str
    stderr: str
    root: Path

    @property
    def model_dir(self) -> Path:
        return self.root / "model"

    @property
    def failure(self) -> str | None:
        path = self.root / "output" / "failure"
        return path.read_text() if path.exists() else None

    def evaluation(self) -> dict:
        return json.loads((self.model_dir / "evaluation.json").read_text())

    def training_metrics(self) -> dict:
        return json.loads((self.model_dir / "training_metrics.json").read_text())


def dirs_args(root: Path) -> list[str]:
    return [
        "--model_dir",
        str(root / "model"),
        "--output_dir",
        str(root / "output"),
        "--checkpoint_dir",
        str(root / "checkpoints"),
    ]


def run_train(root: Path, args: list[str], timeout: float = 600, env: dict | None = None) -> Run:
    """Run train.py in a subprocess with local-run flags rooted at ``root``."""
    root.mkdir(parents=True, exist_ok=True)
    proc = subprocess.run(
        [sys.executable, str(TRAIN_PY), *args, *dirs_args(root)],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env or child_env(),
        cwd=REPO,
    )
    return Run(proc.returncode, proc.stdout, proc.stderr, root)


# Shipped SST-2 sample: 800 train rows, 200 validation rows (disjoint, from ../shared/data/sst2-sample).
CLASSIFICATION_ARGS = [
    "--task",
    "classification",
    "--method",
    "full",
    "--train",
    str(SAMPLES / "sst2" / "train.jsonl"),
    "--validation",
    str(SAMPLES / "sst2" / "validation.jsonl"),
    "--epochs",
    "2",
    "--batch_size",
    "32",
    "--learning_rate",
    "1.5e-4",
    "--warmup_ratio",
    "0.1",
    "--max_seq_length",
    "64",
    "--logging_steps",
    "5",
    "--save_steps",
    "0",
]

CAUSAL_ARGS = [
    "--task",
    "causal-lm",
    "--method",
    "lora",
    "--train",
    str(SAMPLES / "dolly" / "train.jsonl"),
    "--validation",
    str(SAMPLES / "dolly" / "validation.jsonl"),
    "--max_steps",
    "8",
    "--batch_size",
    "1",
    "--max_seq_length",
    "384",
    "--learning_rate",
    "5e-4",
    "--lora_r",
    "16",
    "--lora_alpha",
    "32",
    "--max_eval_rows",
    "16",
    "--logging_steps",
    "1",
    "--save_steps",
    "0",
]
