"""Checkpoints from shared storage: a run resumes only its own (fingerprint), and nothing is ever unpickled."""

from __future__ import annotations

import json
import os
import pickle
import random
from pathlib import Path

import pytest
import torch

from finetune import checkpoint
from finetune.checkpoint import CheckpointError
from finetune.config import TrainConfig

from .conftest import run_train
from .test_runtime import small_classification


def _config(tmp_path: Path, **overrides) -> TrainConfig:
    train = tmp_path / "data" / "train.jsonl"
    if not train.exists():
        train.parent.mkdir(parents=True, exist_ok=True)
        train.write_text('{"text": "good", "label": 1}\n{"text": "bad", "label": 0}\n')
    values = {
        "task": "classification",
        "base_model": "local:minilm",
        "train_path": str(train),
        "checkpoint_dir": str(tmp_path / "checkpoints"),
        "model_dir": str(tmp_path / "model"),
    }
    return TrainConfig(**{**values, **overrides})


def _training_state():
    from transformers import get_cosine_schedule_with_warmup

    torch.manual_seed(0)
    model = torch.nn.Linear(4, 2)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    scheduler = get_cosine_schedule_with_warmup(optimizer, 2, 10)
    for _ in range(3):
        model(torch.randn(3, 4)).sum().backward()
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad()
    return model, optimizer, scheduler


def _save(tmp_path: Path, config: TrainConfig) -> Path:
    model, optimizer, scheduler = _training_state()
    random.seed(7)
    torch.manual_seed(7)
    return checkpoint.save(
        config.checkpoint_dir,
        3,
        model.state_dict(),
        optimizer.state_dict(),
        scheduler,
        [checkpoint.rng_state()],
        {"history": [1.5]},
        run_fingerprint=checkpoint.fingerprint(config),
    )


def test_round_trip_restores_scheduler_rng_and_loop_state_without_pickle(tmp_path):
    # Given a checkpoint written after three steps
    config = _config(tmp_path)
    path = _save(tmp_path, config)
    expected_python, expected_torch = random.random(), torch.rand(3)
    # Then every binary file loads with weights_only=True and the scheduler is JSON, not a pickle
    assert sorted(p.name for p in path.iterdir()) == [
        "fingerprint.json",
        "model.pt",
        "optimizer.pt",
        "rng.pt",
        "scheduler.json",
        "state.json",
    ]
    for name in ("model.pt", "optimizer.pt", "rng.pt"):
        torch.load(path / name, weights_only=True)
    # When a fresh run with the same fingerprint loads it
    _, _, scheduler = _training_state()
    fresh_scheduler_state = scheduler.state_dict()
    random.seed(99)
    torch.manual_seed(99)
    weights, optim_state, loop = checkpoint.load(path, scheduler, run_fingerprint=checkpoint.fingerprint(config))
    # Then the scheduler position, the RNG streams and the loop state are those of the checkpoint
    assert scheduler.state_dict()["last_epoch"] == fresh_scheduler_state["last_epoch"] == 3
    assert scheduler.get_last_lr() == fresh_scheduler_state["_last_lr"]
    assert random.random() == expected_python and torch.equal(torch.rand(3), expected_torch)
    assert loop == {"global_step": 3, "history": [1.5]}
    assert set(weights) == {"weight", "bias"} and optim_state["state"]


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"learning_rate": 1e-4}, "hyperparameters.learning_rate"),
        ({"method": "lora"}, "method"),
        ({"base_model": "local:smollm2"}, "base_model"),
        ({"seed": 7}, "hyperparameters.seed"),
        ({"max_seq_length": 64}, "hyperparameters.max_seq_length"),
    ],
)
def test_a_checkpoint_of_another_run_is_refused_naming_the_field(tmp_path, change, field):
    # Given a checkpoint written by one run
    path = _save(tmp_path, _config(tmp_path))
    # When a run that differs in one result-changing setting finds it
    other = _config(tmp_path, **change)
    _, _, scheduler = _training_state()
    # Then it refuses to resume and names the field
    with pytest.raises(CheckpointError, match=rf"written by a different run: (.*; )?{field} differs"):
        checkpoint.load(path, scheduler, run_fingerprint=checkpoint.fingerprint(other))


def test_changed_training_data_is_a_different_run(tmp_path):
    config = _config(tmp_path)
    path = _save(tmp_path, config)
    with open(config.train_path, "a") as handle:
        handle.write('{"text": "more", "label": 1}\n')
    _, _, scheduler = _training_state()
    with pytest.raises(CheckpointError, match=r"train_files differs \(checkpoint: \[\[\"train.jsonl\", \d+\]\]"):
        checkpoint.load(path, scheduler, run_fingerprint=checkpoint.fingerprint(config))


def test_settings_that_do_not_change_the_result_resume(tmp_path):
    path = _save(tmp_path, _config(tmp_path))
    _, _, scheduler = _training_state()
    again = _config(tmp_path, logging_steps=5, save_steps=10, progress=True)
    checkpoint.load(path, scheduler, run_fingerprint=checkpoint.fingerprint(again))


class _Payload:
    """An object whose unpickling runs code: what a hostile checkpoint would hold."""

    def __reduce__(self):
        return (os.system, ("echo pwned > /dev/null",))


@pytest.mark.parametrize("name", ["model.pt", "optimizer.pt", "rng.pt"])
def test_a_checkpoint_holding_a_pickled_object_is_refused(tmp_path, name):
    # Given a checkpoint in which one file was replaced by a pickled object
    config = _config(tmp_path)
    path = _save(tmp_path, config)
    torch.save({"weight": _Payload()}, path / name)
    _, _, scheduler = _training_state()
    # Then loading refuses it with a clear message, without running the object's code
    with pytest.raises(CheckpointError, match=rf"{name} holds something other than tensors .* refused: .*weights_only"):
        checkpoint.load(path, scheduler, run_fingerprint=checkpoint.fingerprint(config))


def test_a_pickled_scheduler_or_best_weights_are_refused(tmp_path):
    config = _config(tmp_path)
    path = _save(tmp_path, config)
    (path / "scheduler.json").unlink()
    (path / "scheduler.pt").write_bytes(pickle.dumps({"last_epoch": 3}))
    _, _, scheduler = _training_state()
    with pytest.raises(CheckpointError, match="scheduler as a pickle"):
        checkpoint.load(path, scheduler, run_fingerprint=checkpoint.fingerprint(config))
    best = checkpoint.save_best(config.checkpoint_dir, 3, 0.5, {"weight": torch.ones(2)})
    torch.save({"weight": _Payload()}, best / "model.pt")
    with pytest.raises(CheckpointError, match=r"model\.pt holds something other than tensors"):
        checkpoint.load_best(config.checkpoint_dir)


def test_a_checkpoint_without_a_fingerprint_is_refused(tmp_path):
    config = _config(tmp_path)
    path = _save(tmp_path, config)
    (path / "fingerprint.json").unlink()
    _, _, scheduler = _training_state()
    with pytest.raises(CheckpointError, match=r"records no fingerprint\.json"):
        checkpoint.load(path, scheduler, run_fingerprint=checkpoint.fingerprint(config))


@pytest.mark.training
def test_resuming_another_runs_checkpoint_fails_with_a_failure_file(tmp_path, minilm_dir):
    # Given a run that left a checkpoint at step 1 in its checkpoint directory
    first = run_train(tmp_path, small_classification(minilm_dir, 2, save_steps="1", max_eval_rows="8"))
    assert first.returncode == 0, first.stderr[-2000:]
    assert (tmp_path / "checkpoints" / "step-00000001" / "fingerprint.json").is_file()
    # When a run with another learning rate is pointed at the same directory
    second = run_train(
        tmp_path, small_classification(minilm_dir, 2, save_steps="1", max_eval_rows="8", learning_rate="3e-4")
    )
    # Then it fails before training, and the failure file names the field that differs
    assert second.returncode == 1
    assert "hyperparameters.learning_rate differs (checkpoint: 0.0001, this run: 0.0003)" in second.failure
    assert (
        json.loads((tmp_path / "checkpoints" / "step-00000001" / "fingerprint.json").read_text())["hyperparameters"][
            "learning_rate"
        ]
        == 1e-4
    )


def test_every_torch_load_in_the_code_refuses_pickles():
    """A guard for code written later: any ``torch.load`` call must pass ``weights_only=True``."""
    import ast

    root = Path(__file__).resolve().parents[2]
    offenders, seen = [], 0
    for folder in ("training_code", "finetune_cli", "lambda_handlers", "bench", "hosts"):
        for source in sorted((root / folder).rglob("*.py")):
            for node in ast.walk(ast.parse(source.read_text(), str(source))):
                if (
                    isinstance(node, ast.Call)
                    and isinstance(node.func, ast.Attribute)
                    and node.func.attr == "load"
                    and isinstance(node.func.value, ast.Name)
                    and node.func.value.id == "torch"
                ):
                    seen += 1
                    safe = any(
                        k.arg == "weights_only" and isinstance(k.value, ast.Constant) and k.value.value is True
                        for k in node.keywords
                    )
                    if not safe:
                        offenders.append(f"{source.relative_to(root)}:{node.lineno}")
    assert seen >= 1 and offenders == []
