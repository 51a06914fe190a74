"""Spot interruption in local mode: the first training job's instance is reclaimed (SIGTERM to the job's processes)
after a few steps; the FineTune state machine's Train retry (IsCapacityError -> WaitForCapacity -> Train) starts a
second job over the same checkpoint prefix, which resumes from the checkpoint the first wrote on SIGTERM, so no
step is trained twice."""

from __future__ import annotations

import json
import re

import pytest

from .conftest import classification_run_args, run_local, stage_args

pytestmark = [pytest.mark.local, pytest.mark.synth]

MAX_STEPS = 6
INTERRUPT_AFTER = 3
SPOT_HP = [
    f"max_steps={MAX_STEPS}",
    "batch_size=8",
    "learning_rate=2e-4",
    "max_seq_length=32",
    "max_eval_rows=16",
    "logging_steps=1",
    "save_steps=0",
]  # save_steps=0: the only checkpoint is the one SIGTERM writes


def _trained_steps(log: str) -> list[int]:
    return [int(step) for step in re.findall(r"^metric train_loss=\S+ step=(\d+)$", log, flags=re.MULTILINE)]


def test_an_interrupted_spot_job_is_retried_and_resumes_without_training_a_step_twice(local_state, sst2_csv):
    run = run_local(
        local_state,
        "run",
        *classification_run_args(sst2_csv, SPOT_HP),
        "--interrupt-after-step",
        str(INTERRUPT_AFTER),
        "--json",
    )

    assert run.result is not None, run.output[-3000:]
    states = run.result["states"]
    # Train failed with a capacity error, the retry path ran, and Train ran again before the Gate
    first, second = [i for i, state in enumerate(states) if state == "Train"]
    assert states[first + 1 : second] == ["IsCapacityError", "WaitForCapacity", "CountCapacityAttempt"], states
    assert states[second + 1] == "Gate", states

    job_dirs = local_state / "search-dev" / "runs" / run.result["execution"] / "training-jobs"
    journal = [
        json.loads(line) for line in (local_state / "search-dev" / "sagemaker-journal.jsonl").read_text().splitlines()
    ]
    interrupted, resumed = [
        e for e in journal if e["action"] == "trainingJob" and (job_dirs / e["TrainingJobName"]).is_dir()
    ]
    assert interrupted["TrainingJobStatus"] == "Failed" and resumed["TrainingJobStatus"] == "Completed"
    assert interrupted["FailureReason"].startswith("CapacityError:"), interrupted["FailureReason"]
    assert interrupted["EnableManagedSpotTraining"] is True
    assert interrupted["CheckpointConfig"] == resumed["CheckpointConfig"]  # the retry reads the same checkpoints

    before = _trained_steps((job_dirs / interrupted["TrainingJobName"] / "job.log").read_text())
    after = _trained_steps((job_dirs / resumed["TrainingJobName"] / "job.log").read_text())
    metrics = json.loads((job_dirs / resumed["TrainingJobName"] / "model" / "training_metrics.json").read_text())
    checkpointed = metrics["summary"]["resumed_from_steps"]
    # the second job started from the checkpoint the first wrote when SIGTERM arrived ...
    assert len(checkpointed) == 1 and INTERRUPT_AFTER <= checkpointed[0] < MAX_STEPS, checkpointed
    assert "resuming from" in (job_dirs / resumed["TrainingJobName"] / "job.log").read_text()
    # ... and trained only the steps after it: every step exactly once over the two jobs
    assert max(before) <= checkpointed[0] and min(after) == checkpointed[0] + 1, (before, after)
    assert sorted(before + after) == list(range(1, MAX_STEPS + 1)), (before, after)
    assert [h["step"] for h in metrics["history"]] == list(range(1, MAX_STEPS + 1))


def test_interrupt_after_step_must_name_a_step(tmp_path):
    import io

    from finetune_cli.main import main

    from .conftest import CONFIG

    out = io.StringIO()
    code = main(
        [
            "--config",
            str(CONFIG),
            "local",
            "run",
            str(tmp_path / "reviews.csv"),
            *stage_args(),
            "--task",
            "classification",
            "--base-model",
            "all-minilm-l6-v2",
            "--interrupt-after-step",
            "0",
            "--state-dir",
            str(tmp_path),
        ],
        out=out,
        err=out,
    )
    assert code == 2 and "--interrupt-after-step 0: must be a step number >= 1" in out.getvalue()
