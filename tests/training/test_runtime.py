"""The run-time contract: the real SageMaker toolkit, SIGTERM and resume, torchrun with two processes."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import REPO, SAMPLES, TRAIN_PY, Run, child_env, dirs_args, run_train

pytestmark = pytest.mark.training


def small_classification(minilm_dir, steps: int, **hp: str) -> list[str]:
    args = {
        "task": "classification",
        "base_model": str(minilm_dir),
        "max_steps": str(steps),
        "batch_size": "8",
        "max_seq_length": "48",
        "learning_rate": "1e-4",
        "max_eval_rows": "32",
        "logging_steps": "1",
        "train": str(SAMPLES / "sst2" / "train.jsonl"),
        "validation": str(SAMPLES / "sst2" / "validation.jsonl"),
    }
    args.update(hp)
    return [x for k, v in args.items() for x in (f"--{k}", v)]


def test_sagemaker_toolkit_runs_train_py(tmp_path, minilm_dir):
    # Given a directory laid out like /opt/ml with string hyperparameters, channels and code
    base = tmp_path / "opt_ml"
    config_dir = base / "input" / "config"
    config_dir.mkdir(parents=True)
    hps = {
        "task": "classification",
        "max_steps": "4",
        "batch_size": "8",
        "max_seq_length": "48",
        "save_steps": "2",
        "max_eval_rows": "32",
        "packing": "false",
    }
    (config_dir / "hyperparameters.json").write_text(json.dumps(hps))
    channels = {"train": SAMPLES / "sst2" / "train.jsonl", "validation": SAMPLES / "sst2" / "validation.jsonl"}
    (config_dir / "inputdataconfig.json").write_text(
        json.dumps(
            {
                name: {"ContentType": "application/jsonlines", "TrainingInputMode": "File"}
                for name in [*channels, "model"]
            }
        )
    )
    (config_dir / "resourceconfig.json").write_text(json.dumps({"current_host": "localhost", "hosts": ["localhost"]}))
    for name, source in channels.items():
        (base / "input" / "data" / name).mkdir(parents=True)
        shutil.copy(source, base / "input" / "data" / name / source.name)
    shutil.copytree(minilm_dir, base / "input" / "data" / "model")
    code = base / "code"
    code.mkdir()
    shutil.copy(TRAIN_PY, code / "train.py")  # no requirements.txt here: the toolkit would pip-install it
    shutil.copytree(
        REPO / "training_code" / "finetune", code / "finetune", ignore=shutil.ignore_patterns("__pycache__")
    )

    # When the real toolkit's `train` command runs it
    proc = subprocess.run(
        [str(Path(sys.executable).parent / "train")],
        capture_output=True,
        text=True,
        timeout=400,
        env=child_env(SAGEMAKER_BASE_DIR=str(base), SAGEMAKER_PROGRAM="train.py"),
        cwd=tmp_path,
    )

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
    (base / "input" / "config" / "resourceconfig.json").write_text(
        json.dumps({"current_host": "localhost", "hosts": ["localhost"]})
    )
    shutil.copytree(
        REPO / "training_code" / "finetune", base / "code" / "finetune", ignore=shutil.ignore_patterns("__pycache__")
    )
    shutil.copy(TRAIN_PY, base / "code" / "train.py")
    proc = subprocess.run(
        [str(Path(sys.executable).parent / "train")],
        capture_output=True,
        text=True,
        timeout=120,
        env=child_env(SAGEMAKER_BASE_DIR=str(base), SAGEMAKER_PROGRAM="train.py"),
        cwd=tmp_path,
    )
    assert proc.returncode != 0
    failure = (base / "output" / "failure").read_text()
    assert failure.startswith("Bad hyperparameters: task='translation': must be one of causal-lm, classification")


def _run_until_sigterm(root: Path, args: list[str], at_step: int) -> int:
    root.mkdir(parents=True, exist_ok=True)
    proc = subprocess.Popen(
        [sys.executable, str(TRAIN_PY), *args, *dirs_args(root)],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env=child_env(),
        cwd=REPO,
    )
    for line in proc.stdout:
        if line.startswith("metric train_loss=") and line.strip().endswith(f"step={at_step}"):
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


def _torchrun(root: Path, args: list[str], port: int) -> Run:
    root.mkdir(parents=True, exist_ok=True)
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--nproc_per_node",
            "2",
            "--master_port",
            str(port),
            str(TRAIN_PY),
            *args,
            *dirs_args(root),
        ],
        capture_output=True,
        text=True,
        timeout=400,
        env=child_env(OMP_NUM_THREADS="1"),
        cwd=REPO,
    )
    return Run(proc.returncode, proc.stdout, proc.stderr, root)


def _losses(run: Run) -> list[tuple[int, float]]:
    return [(h["step"], h["train_loss"]) for h in run.training_metrics()["history"]]


def _restart(run: Run, args: list[str], port: int) -> Run:
    """Run again on the same directories after the model was lost: it resumes from the newest checkpoint."""
    shutil.rmtree(run.model_dir)
    shutil.rmtree(run.root / "output")
    return _torchrun(run.root, args, port)


@pytest.mark.parametrize("strategy", ["ddp", "fsdp"])
def test_torchrun_two_processes_rank0_writes_and_resumes(tmp_path, minilm_dir, strategy):
    # Given a full fine-tune under torchrun with two processes (gloo on CPU), checkpointing at step 2 of 4
    args = small_classification(minilm_dir, 4, save_steps="2", distributed_strategy=strategy)
    port = 29533 if strategy == "ddp" else 29534
    run = _torchrun(tmp_path / strategy, args, port)
    assert run.returncode == 0, run.stderr[-3000:]
    summary = run.training_metrics()["summary"]
    assert summary["world_size"] == 2 and summary["distributed_strategy"] == strategy
    # One process prints: each step's loss appears once.
    assert sum(line.startswith("metric train_loss=") for line in run.stdout.splitlines()) == 4
    assert sorted(p.name for p in (run.root / "checkpoints").iterdir()) == ["step-00000002"]
    assert {p.name for p in run.root.iterdir()} == {"model", "checkpoints", "output"}
    # rank 0 alone wrote the evaluation copy SageMaker uploads; no rank wrote a failure
    assert [str(p.relative_to(run.root)) for p in (run.root / "output").rglob("*") if p.is_file()] == [
        "output/data/evaluation.json"
    ]

    # When the job restarts (a spot interruption after the checkpoint)
    resumed = _restart(run, args, port)

    # Then it resumes at step 2 and trains steps 3 and 4 as the first run did: each rank's dropout RNG, the
    # optimizer and scheduler state and the data position all came back.
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert resumed.training_metrics()["summary"]["resumed_from_steps"] == [2]
    assert sum(line.startswith("metric train_loss=") for line in resumed.stdout.splitlines()) == 2
    assert [s for s, _ in _losses(resumed)] == [1, 2, 3, 4]
    assert [loss for _, loss in _losses(resumed)] == pytest.approx(
        [loss for _, loss in _losses(run)], rel=1e-4, abs=1e-5
    )


def test_fsdp_shards_the_same_training_as_ddp(tmp_path, minilm_dir):
    # Given the same full fine-tune run data parallel and fully sharded over two processes
    args = small_classification(minilm_dir, 3, save_steps="2")
    ddp = _torchrun(tmp_path / "ddp", [*args, "--distributed_strategy", "ddp"], 29535)
    fsdp = _torchrun(tmp_path / "fsdp", [*args, "--distributed_strategy", "fsdp"], 29536)
    assert ddp.returncode == 0, ddp.stderr[-3000:]
    assert fsdp.returncode == 0, fsdp.stderr[-3000:]
    # Then every step's loss, the evaluations and the saved weights agree: sharding changes where the weights
    # live, not the arithmetic
    assert [loss for _, loss in _losses(fsdp)] == pytest.approx([loss for _, loss in _losses(ddp)], rel=1e-5, abs=1e-6)
    assert fsdp.evaluation()["fine_tuned"]["eval_loss"] == pytest.approx(
        ddp.evaluation()["fine_tuned"]["eval_loss"], rel=1e-5
    )
    from safetensors.torch import load_file

    ddp_weights = load_file(ddp.model_dir / "model.safetensors")
    fsdp_weights = load_file(fsdp.model_dir / "model.safetensors")
    assert set(fsdp_weights) == set(ddp_weights)
    assert max((fsdp_weights[k] - ddp_weights[k]).abs().max().item() for k in ddp_weights) < 1e-5
    # and the sharded run's output is an ordinary Hugging Face model
    from transformers import AutoModelForSequenceClassification

    assert AutoModelForSequenceClassification.from_pretrained(fsdp.model_dir).config.id2label == {0: "0", 1: "1"}

    # When a single process is pointed at the sharded run's checkpoint
    shutil.rmtree(fsdp.model_dir)
    single = run_train(fsdp.root, [*args, "--distributed_strategy", "fsdp"])
    # Then it refuses with the reason instead of loading optimizer state it cannot use
    assert single.returncode == 1
    assert "was written by a sharded (fsdp) run and this run is ddp or single-process" in single.failure


def _inverted_validation(path: Path) -> Path:
    rows = [json.loads(line) for line in (SAMPLES / "sst2" / "validation.jsonl").read_text().splitlines()]
    path.write_text("".join(json.dumps({"text": r["text"], "label": 1 - r["label"]}) + "\n" for r in rows))
    return path


@pytest.mark.parametrize(("keep_best", "strategy"), [("true", None), ("false", None), ("true", "fsdp")])
def test_keep_best_writes_the_weights_with_the_lowest_eval_loss(tmp_path, minilm_dir, keep_best, strategy):
    # Given a validation set whose labels contradict the training data, so that learning makes eval_loss worse
    # at every evaluation and the best weights are never the last ones
    args = small_classification(
        minilm_dir,
        6,
        eval_steps="2",
        save_steps="0",
        keep_best=keep_best,
        validation=str(_inverted_validation(tmp_path / "inverted.jsonl")),
    )
    if strategy:  # sharded: rank 0 reads the best weights and sends each rank its shard
        run = _torchrun(tmp_path / "run", [*args, "--distributed_strategy", strategy], 29537)
    else:
        run = run_train(tmp_path / "run", args)
    assert run.returncode == 0, run.stderr[-3000:]
    metrics = run.training_metrics()
    during = {e["step"]: e["eval_loss"] for e in metrics["evaluations"]}
    assert sorted(during) == [2, 4, 6] and during[2] < during[6]
    best_step = min(during, key=during.get)
    written = run.evaluation()["fine_tuned"]["eval_loss"]
    if keep_best == "true":
        # Then the written model is the best evaluation's, re-evaluated after its weights were loaded back
        assert best_step != 6 and metrics["summary"]["selected_step"] == best_step
        assert written == pytest.approx(during[best_step], rel=1e-5)
        assert f"keeping the weights of step {best_step}" in run.stderr
    else:
        assert metrics["summary"]["selected_step"] == 6 and written == pytest.approx(during[6], rel=1e-5)
    # And the model on disk is the one evaluated: reloaded, it gives the reported loss
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from finetune.data import encode_classification, load_channel
    from finetune.evaluate import evaluate_classification

    reloaded = AutoModelForSequenceClassification.from_pretrained(run.model_dir)
    tokenizer = AutoTokenizer.from_pretrained(run.model_dir)
    records = load_channel("classification", str(tmp_path / "inverted.jsonl"), "validation")[:32]
    examples, _ = encode_classification(records, tokenizer, 48, {0: 0, 1: 1})
    again = evaluate_classification(reloaded, examples, tokenizer.pad_token_id, torch.device("cpu"), 16, ["0", "1"])
    assert again["eval_loss"] == pytest.approx(written, rel=1e-4)
