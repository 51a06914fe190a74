"""Local mode runs (`finetune local ...`) against the test session's synthesized assembly, in one state folder.

The expensive runs (each trains a model) happen once per session in fixtures and are shared by the tests."""

from __future__ import annotations

import csv
import io
import json
import os
from dataclasses import dataclass
from pathlib import Path

import pytest

from finetune_cli.main import main

ROOT = Path(__file__).resolve().parents[2]
SAMPLES = ROOT / "samples"
CONFIG = ROOT / "config" / "teams.yaml"
#: Few steps on a small sample: enough for MiniLM to beat its untrained classifier head on SST-2.
CLASSIFICATION_HP = [
    "max_steps=40",
    "batch_size=16",
    "learning_rate=2e-4",
    "warmup_ratio=0.1",
    "max_seq_length=48",
    "max_eval_rows=64",
    "logging_steps=10",
]


@dataclass
class LocalRun:
    """One `finetune local ...` command: exit code, what it printed, and the --json object when asked for."""

    code: int
    output: str
    result: dict | None


def run_local(state: Path, *argv: str) -> LocalRun:
    out, err = io.StringIO(), io.StringIO()
    code = main(["--config", str(CONFIG), "local", *argv, "--state-dir", str(state)], out=out, err=err)
    text = out.getvalue() + err.getvalue()
    result = None
    if "--json" in argv and code in (0, 1):
        result = json.loads(out.getvalue().strip().splitlines()[-1])
    return LocalRun(code, text, result)


def stage_args(team: str = "search", stage: str = "dev") -> list[str]:
    return ["--team", team, "--stage", stage]


def classification_run_args(data: Path, hyperparameters: list[str]) -> list[str]:
    """`local run` of MiniLM on the review CSV (text and label columns mapped) on search-dev, with these --hp."""
    return [
        str(data),
        *stage_args(),
        "--task",
        "classification",
        "--base-model",
        "all-minilm-l6-v2",
        "--map",
        "text=review",
        "--map",
        "label=sentiment",
        *[x for hp in hyperparameters for x in ("--hp", hp)],
    ]


@pytest.fixture(scope="session")
def local_state(assembly, tmp_path_factory):
    """The state folder local runs share, and the session's assembly as the one they execute."""
    previous = os.environ.get("FINETUNE_LOCAL_ASSEMBLY")
    os.environ["FINETUNE_LOCAL_ASSEMBLY"] = str(assembly.outdir)
    yield tmp_path_factory.mktemp("finetune-local")
    if previous is None:
        os.environ.pop("FINETUNE_LOCAL_ASSEMBLY", None)
    else:
        os.environ["FINETUNE_LOCAL_ASSEMBLY"] = previous


@pytest.fixture(scope="session")
def sst2_csv(tmp_path_factory) -> Path:
    """400 SST-2 rows as a CSV with its own column names (so --map is exercised)."""
    path = tmp_path_factory.mktemp("data") / "reviews.csv"
    rows = [json.loads(line) for line in (SAMPLES / "sst2" / "train.jsonl").read_text().splitlines()[:400]]
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["review", "sentiment"])
        writer.writerows([row["text"], row["label"]] for row in rows)
    return path


@pytest.fixture(scope="session")
def classification_local_run(local_state, sst2_csv) -> LocalRun:
    """A classifier fine-tuned, registered and deployed to the stage's `sentiment` endpoint."""
    return run_local(
        local_state,
        "run",
        *classification_run_args(sst2_csv, CLASSIFICATION_HP),
        "--validation-fraction",
        "0.2",
        "--deploy-to",
        "sentiment",
        "--json",
    )
