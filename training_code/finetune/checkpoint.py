"""Atomic training checkpoints: trainable weights, optimizer, scheduler, RNG and loop state.

A checkpoint is written into a hidden staging directory and renamed into place, so a directory named
``step-<n>`` is always complete; a run resumes from the highest such step. The two newest are kept. Beside them,
``best/`` holds the weights with the lowest validation loss so far, written the same way.

Weights and optimizer state arrive as whole (unsharded) CPU state dicts from ``Parallel.full_state``.

Checkpoints live in shared storage (S3, synced by SageMaker), so loading one never unpickles: weights, optimizer
and RNG states are tensors (and plain numbers) read with ``torch.load(weights_only=True)``; the scheduler and loop
state are JSON. Each checkpoint records ``fingerprint.json``, what produced it (base model, method, task, data
files and sizes, the hyperparameters that change the result); a run resumes only from its own.
"""

from __future__ import annotations

import json
import os
import random
import shutil
from pathlib import Path

import torch

from .errors import TrainingError

_PREFIX = "step-"
KEEP = 2
FINGERPRINT_FILE = "fingerprint.json"
#: Hyperparameters that change neither the weights nor which weights are kept: left out of the fingerprint.
_NOT_RESULT_CHANGING = ("progress", "logging_steps", "save_steps", "task", "method", "base_model", "torch_compile")


class CheckpointError(TrainingError):
    """A checkpoint this run must not resume from (another run's, or holding something other than tensors)."""


def _files(path: str | None) -> list[list] | None:
    """``[relative name, size]`` of every file under ``path`` (a file or a directory), sorted; None if no path.

    Names are relative to the channel, so the same data mounted elsewhere (a restart) gives the same list."""
    if not path:
        return None
    root = Path(path)
    if root.is_file():
        return [[root.name, root.stat().st_size]]
    if not root.is_dir():
        return []
    return sorted(
        [str(p.relative_to(root)), p.stat().st_size]
        for p in root.rglob("*")
        if p.is_file() and not p.name.startswith(".")
    )


def fingerprint(config) -> dict:
    """What produces a run's weights: base model, method, task, data files and sizes, result-changing
    hyperparameters (a ``TrainConfig``). JSON-ready."""
    from .data import channel_files  # the files the run actually reads

    def data(path: str | None, channel: str) -> list[list] | None:
        if not path:
            return None
        root = Path(path)
        files = channel_files(path, channel)
        base = root if root.is_dir() else root.parent
        return [[str(Path(f).relative_to(base)), Path(f).stat().st_size] for f in files]

    hyperparameters = {
        name: getattr(config, name) for name in type(config).hyperparameter_names() if name not in _NOT_RESULT_CHANGING
    }
    model_dir = config.model_channel or (
        config.base_model if config.base_model and Path(config.base_model).is_dir() else None
    )
    return json.loads(
        json.dumps(
            {
                "base_model": config.base_model,
                "base_model_files": _files(model_dir),
                "method": config.method,
                "task": config.task,
                "train_files": data(config.train_path, "train"),
                "validation_files": data(config.validation_path, "validation"),
                "hyperparameters": hyperparameters,
            }
        )
    )


def _flatten(value: dict, prefix: str = "") -> dict:
    flat = {}
    for key, item in value.items():
        if isinstance(item, dict):
            flat.update(_flatten(item, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = item
    return flat


def _short(value) -> str:
    text = json.dumps(value)
    return text if len(text) <= 200 else text[:197] + "..."


def check_fingerprint(path: Path, expected: dict) -> None:
    """Raise CheckpointError naming each field in which checkpoint ``path`` differs from this run's fingerprint."""
    file = path / FINGERPRINT_FILE
    fix = (
        "checkpoints are resumed only by the run that wrote them; point this run at an empty checkpoint "
        "directory (the FineTune pipeline gives every execution its own)"
    )
    if not file.is_file():
        raise CheckpointError(
            f"checkpoint {path} records no {FINGERPRINT_FILE} (what produced it), so it cannot be "
            f"told apart from another run's; {fix}"
        )
    try:
        saved = json.loads(file.read_text())
    except (ValueError, OSError) as error:
        raise CheckpointError(f"checkpoint {path}: {FINGERPRINT_FILE} is unreadable ({error}); {fix}") from None
    if not isinstance(saved, dict):
        raise CheckpointError(f"checkpoint {path}: {FINGERPRINT_FILE} is not a JSON object; {fix}")
    ours, theirs = _flatten(expected), _flatten(saved)
    differing = [name for name in dict.fromkeys([*ours, *theirs]) if ours.get(name) != theirs.get(name)]
    if differing:
        details = "; ".join(
            f"{name} differs (checkpoint: {_short(theirs.get(name))}, this run: {_short(ours.get(name))})"
            for name in differing[:5]
        )
        more = f" and {len(differing) - 5} more fields" if len(differing) > 5 else ""
        raise CheckpointError(f"checkpoint {path} was written by a different run: {details}{more}; {fix}")


def _load_tensors(file: Path):
    """``torch.load`` that never unpickles an arbitrary object; CheckpointError says why a file is refused."""
    try:
        return torch.load(file, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise CheckpointError(f"checkpoint file {file} is missing: the checkpoint is incomplete") from None
    except Exception as error:  # pickle and zip errors have many types; all mean "refused"
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise CheckpointError(
            f"checkpoint file {file} holds something other than tensors and plain numbers (a pickled object?), "
            f"refused: checkpoints come from shared storage and are loaded with weights_only=True ({first[:300]})"
        ) from None


def _rng_to_tensors(state: dict) -> dict:
    """``rng_state()`` as tensors and plain numbers (loadable with weights_only=True)."""
    version, internal, gauss_next = state["python"]
    saved = {
        "python_version": int(version),
        "python": torch.tensor(internal, dtype=torch.int64),
        "python_gauss_next": gauss_next,
        "torch": state["torch"],
    }
    if "cuda" in state:
        saved["cuda"] = state["cuda"]
    return saved


def _rng_from_tensors(saved: dict) -> dict:
    state = {
        "python": (
            saved["python_version"],
            tuple(int(v) for v in saved["python"].tolist()),
            saved["python_gauss_next"],
        ),
        "torch": saved["torch"],
    }
    if "cuda" in saved:
        state["cuda"] = saved["cuda"]
    return state


def rng_state() -> dict:
    """This process's random number generator states (dropout differs per rank, so each rank's is kept)."""
    state = {"python": random.getstate(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state(torch.cuda.current_device())
    return state


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_atomically(root: Path, name: str, write) -> Path:
    """Call ``write(staging_dir)``, fsync what it wrote, and rename the directory to ``root/name``."""
    root.mkdir(parents=True, exist_ok=True)
    final = root / name
    staging = root / f".staging-{name}-{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir()
    write(staging)
    for file in staging.iterdir():
        with open(file, "rb") as handle:
            os.fsync(handle.fileno())
    if final.exists():
        shutil.rmtree(final)
    os.replace(staging, final)
    _fsync_dir(root)
    return final


def save(
    directory: str,
    step: int,
    model_state: dict,
    optim_state: dict,
    scheduler,
    rng_states: list[dict],
    loop_state: dict,
    *,
    run_fingerprint: dict,
) -> Path:
    """Write checkpoint ``step`` atomically and prune older ones; returns its path.

    ``rng_states``: every rank's ``rng_state()``, in rank order. ``run_fingerprint``: ``fingerprint(config)``.
    """

    def write(staging: Path) -> None:
        torch.save(model_state, staging / "model.pt")
        torch.save(optim_state, staging / "optimizer.pt")
        # allow_nan=False and no default=: a value JSON cannot hold fails here, at save, not at resume.
        (staging / "scheduler.json").write_text(json.dumps(scheduler.state_dict(), allow_nan=False))
        torch.save([_rng_to_tensors(state) for state in rng_states], staging / "rng.pt")
        (staging / "state.json").write_text(json.dumps({"global_step": step, **loop_state}))
        (staging / FINGERPRINT_FILE).write_text(json.dumps(run_fingerprint, indent=1, sort_keys=True))

    final = _write_atomically(Path(directory), f"{_PREFIX}{step:08d}", write)
    for old in list_complete(directory)[:-KEEP]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def save_best(directory: str, step: int, eval_loss: float, model_state: dict) -> Path:
    """Keep ``model_state`` as the best weights so far (replacing the previous best)."""

    def write(staging: Path) -> None:
        torch.save(model_state, staging / "model.pt")
        (staging / "best.json").write_text(json.dumps({"step": step, "eval_loss": eval_loss}))

    return _write_atomically(Path(directory), "best", write)


def clear_best(directory: str) -> None:
    """Forget the best weights (a fresh run starts without any)."""
    shutil.rmtree(Path(directory) / "best", ignore_errors=True)


def load_best(directory: str) -> tuple[dict, dict] | None:
    """``({"step", "eval_loss"}, weights)`` of the best evaluation so far, or None."""
    path = Path(directory) / "best"
    if not (path / "best.json").is_file():
        return None
    return json.loads((path / "best.json").read_text()), _load_tensors(path / "model.pt")


def list_complete(directory: str) -> list[Path]:
    """Complete checkpoints, oldest first."""
    root = Path(directory)
    if not root.is_dir():
        return []
    found = [p for p in root.iterdir() if p.is_dir() and p.name.startswith(_PREFIX) and (p / "state.json").is_file()]
    return sorted(found, key=lambda p: int(p.name[len(_PREFIX) :]))


def latest(directory: str) -> Path | None:
    """The newest complete checkpoint, or None."""
    found = list_complete(directory)
    return found[-1] if found else None


def load(path: Path, scheduler, rank: int = 0, world: int = 1, *, run_fingerprint: dict) -> tuple[dict, dict, dict]:
    """Restore the scheduler and this rank's RNG saved by ``save``; returns (weights, optimizer state, loop state).

    Raises CheckpointError, before anything is restored, when the checkpoint's fingerprint differs from
    ``run_fingerprint`` (naming the fields) or a file holds anything but tensors, numbers and JSON.
    With a different number of processes than the run that saved it, every rank takes rank 0's RNG states.

    The loop state includes ``global_step``; the caller puts the weights and optimizer state back.
    """
    check_fingerprint(path, run_fingerprint)
    if (path / "scheduler.pt").exists() and not (path / "scheduler.json").exists():
        raise CheckpointError(
            f"checkpoint {path} keeps its scheduler as a pickle (scheduler.pt), refused: "
            "checkpoints from shared storage are never unpickled"
        )
    model_state = _load_tensors(path / "model.pt")
    optim_state = _load_tensors(path / "optimizer.pt")
    states = _load_tensors(path / "rng.pt")
    try:
        scheduler_state = json.loads((path / "scheduler.json").read_text())
        loop_state = json.loads((path / "state.json").read_text())
        rngs = [_rng_from_tensors(state) for state in states]
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as error:
        raise CheckpointError(
            f"checkpoint {path} is not one this code wrote ({type(error).__name__}: {error}); "
            "point this run at an empty checkpoint directory"
        ) from None
    scheduler.load_state_dict(scheduler_state)
    rng = rngs[rank] if len(rngs) == world else rngs[0]
    random.setstate(rng["python"])
    torch.set_rng_state(rng["torch"])
    if "cuda" in rng and torch.cuda.is_available():
        torch.cuda.set_rng_state(rng["cuda"], torch.cuda.current_device())
    return model_state, optim_state, loop_state
