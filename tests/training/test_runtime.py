"""The run-time contract: the real SageMaker toolkit, SIGTERM and resume, torchrun with two processes."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import REPO, SAMPLES, TRAIN_PY, Run, child_env, dirs_args, run_train

pytestmark = pytest.mark.training


def small_classification(minilm_dir, steps: int, **hp: str) -> list[str]:
    args = {"task": "classification", "base_model": str(minilm_dir), "max_steps": str(steps), "batch_size": "8",
            "max_seq_length": "48", "learning_rate": "1e-4", "max_eval_rows": "32", "logging_steps": "1",
            "train": str(SAMPLES / "sst2" / "train.jsonl"), "validation": str(SAMPLES / "sst2" / "validation.jsonl")}
    args.update(hp)
    return [x for k, v in args.items() for x in (f"--{k}", v)]


def test_sagemaker_toolkit_runs_train_py(tmp_path, minilm_dir):
    # Given a directory laid out like /opt/ml with string hyperparameters, channels and code
    base = tmp_path / "opt_ml"
    config_dir = base / "input" / "config"
    config_dir.mkdir(parents=True)
    hps = {"task": "classification", "max_steps": "4", "batch_size": "8", "max_seq_length": "48",
           "save_steps": "2", "max_eval_rows": "32", "packing": "false"}
    (config_dir / "hyperparameters.json").write_text(json.dumps(hps))
    channels = {"train": SAMPLES / "sst2" / "train.jsonl", "validation": SAMPLES / "sst2" / "validation.jsonl"}
    (config_dir / "inputdataconfig.json").write_text(json.dumps(
        {name: {"ContentType": "application/jsonlines", "TrainingInputMode": "File"} for name in [*channels, "model"]}))
    (config_dir / "resourceconfig.json").write_text(json.dumps({"current_host": "localhost", "hosts": ["localhost"]}))
    for name, source in channels.items():
        (base / "input" / "data" / name).mkdir(parents=True)
        shutil.copy(source, base / "input" / "data" / name / source.name)
    shutil.copytree(minilm_dir, base / "input" / "data" / "model")
    code = base / "code"
    code.mkdir()
    shutil.copy(TRAIN_PY, code / "train.py")  # no requirements.txt here: the toolkit would pip-install it
    shutil.copytree(REPO / "training_code" / "finetune", code / "finetune", ignore=shutil.ignore_patterns("__pycache__"))

    # When the real toolkit's `train` command runs it
    proc = subprocess.run([str(Path(sys.executable).parent / "train")], capture_output=True, text=True, timeout=400,
                          env=child_env(SAGEMAKER_BASE_DIR=str(base), SAGEMAKER_PROGRAM="train.py"), cwd=tmp_path)

    # Then the model directory, checkpoints and success marker are where SageMaker expects them
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    report = json.loads((base / "model" / "evaluation.json").read_text())
    assert report["validation_rows"] == 32 and report["fine_tuned"]["accuracy"] > 0
    # the copy SageMaker uploads as output.tar.gz, which the pipeline's Gate reads
    assert json.loads((base / "output" / "data" / "evaluation.json").read_text()) == report
    assert [p.name for p in (base / "checkpoints").iterdir()] == ["step-00000002"]
    assert not (base / "output" / "failure").exists()
    assert "metric train_loss=" in proc.stdout + proc.stderr


def test_toolkit_reports_our_failure_reason(tmp_path):
    base = tmp_path / "opt_ml"
    (base / "input" / "config").mkdir(parents=True)
    (base / "input" / "config" / "hyperparameters.json").write_text(json.dumps({"task": "translation"}))
    (base / "input" / "config" / "inputdataconfig.json").write_text("{}")
    (base / "input" / "config" / "resourceconfig.json").write_text(json.dumps({"current_host": "localhost", "hosts": ["localhost"]}))
    shutil.copytree(REPO / "training_code" / "finetune", base / "code" / "finetune", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(TRAIN_PY, base / "code" / "train.py")
    proc = subprocess.run([str(Path(sys.executable).parent / "train")], capture_output=True, text=True, timeout=120,
                          env=child_env(SAGEMAKER_BASE_DIR=str(base), SAGEMAKER_PROGRAM="train.py"), cwd=tmp_path)
    assert proc.returncode != 0
    failure = (base / "output" / "failure").read_text()
    assert failure.startswith("Bad hyperparameters: task='translation': must be one of causal-lm, classification")


def _run_until_sigterm(root: Path, args: list[str], at_step: int) -> int:
    root.mkdir(parents=True, exist_ok=True)
    proc = subprocess.Popen([sys.executable, str(TRAIN_PY), *args, *dirs_args(root)], stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, text=True, env=child_env(), cwd=REPO)
    for line in proc.stdout:
        if line.startswith(f"metric train_loss=") and line.strip().endswith(f"step={at_step}"):
            proc.send_signal(signal.SIGTERM)
            break
    proc.stdout.read()
    return proc.wait(timeout=300)


def test_sigterm_checkpoint_and_resume_match_uninterrupted_run(tmp_path, minilm_dir):
    args = small_classification(minilm_dir, 8, save_steps="0")
    # Given an uninterrupted reference run
    reference = run_train(tmp_path / "reference", args)
    assert reference.returncode == 0, reference.stderr[-2000:]
    # When the same run is stopped by SIGTERM after step 3 and restarted
    code = _run_until_sigterm(tmp_path / "resumed", args, at_step=3)
    assert code == 143
    checkpoints = sorted(p.name for p in (tmp_path / "resumed" / "checkpoints").iterdir())
    assert len(checkpoints) == 1 and 3 <= int(checkpoints[0].split("-")[1]) < 8
    assert not (tmp_path / "resumed" / "model").exists()
    resumed = run_train(tmp_path / "resumed", args)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    # Then it ends at the same step with every step trained exactly once, and the same results
    summary = resumed.training_metrics()["summary"]
    assert summary["global_step"] == 8 and summary["resumed_from_steps"] == [int(checkpoints[0].split("-")[1])]
    steps = [h["step"] for h in resumed.training_metrics()["history"]]
    assert steps == list(range(1, 9))
    ref_losses = [h["train_loss"] for h in reference.training_metrics()["history"]]
    res_losses = [h["train_loss"] for h in resumed.training_metrics()["history"]]
    assert res_losses == pytest.approx(ref_losses, rel=1e-3, abs=1e-4)
    ref_eval, res_eval = reference.evaluation()["fine_tuned"], resumed.evaluation()["fine_tuned"]
    assert res_eval["eval_loss"] == pytest.approx(ref_eval["eval_loss"], rel=1e-3, abs=1e-4)
    assert res_eval["accuracy"] == pytest.approx(ref_eval["accuracy"], abs=1 / 32 + 1e-9)
    assert resumed.evaluation()["base"] == reference.evaluation()["base"]


def test_torchrun_two_processes_rank0_writes(tmp_path, minilm_dir):
    root = tmp_path / "ddp"
    args = small_classification(minilm_dir, 4, save_steps="2")
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29533",
         str(TRAIN_PY), *args, *dirs_args(root)],
        capture_output=True, text=True, timeout=400, env=child_env(OMP_NUM_THREADS="1"), cwd=REPO)
    assert proc.returncode == 0, proc.stderr[-3000:]
    run = Run(proc.returncode, proc.stdout, proc.stderr, root)
    assert run.training_metrics()["summary"]["world_size"] == 2
    # One process prints: each step's loss appears once.
    assert [line for line in proc.stdout.splitlines() if line.startswith("metric train_loss=")] == [
        line for line in proc.stdout.splitlines() if line.startswith("metric train_loss=")][:4]
    assert sum(line.startswith("metric train_loss=") for line in proc.stdout.splitlines()) == 4
    assert sorted(p.name for p in (root / "checkpoints").iterdir()) == ["step-00000002"]
    assert {p.name for p in root.iterdir()} == {"model", "checkpoints", "output"}
    # rank 0 alone wrote the evaluation copy SageMaker uploads; no rank wrote a failure
    assert [str(p.relative_to(root)) for p in (root / "output").rglob("*") if p.is_file()] == [
        "output/data/evaluation.json"]
