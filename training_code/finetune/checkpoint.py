"""Atomic training checkpoints: trainable weights, optimizer, scheduler, RNG and loop state.

A checkpoint is written into a hidden staging directory and renamed into place, so a directory named
``step-<n>`` is always complete; a run resumes from the highest such step. The two newest are kept. Beside them,
``best/`` holds the weights with the lowest validation loss so far, written the same way.

Weights and optimizer state arrive as whole (unsharded) CPU state dicts from ``Parallel.full_state``.
"""

from __future__ import annotations

import json
import os
import random
import shutil
from pathlib import Path

import torch

_PREFIX = "step-"
KEEP = 2


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


def save(directory: str, step: int, model_state: dict, optim_state: dict, scheduler, rng_states: list[dict],
         loop_state: dict) -> Path:
    """Write checkpoint ``step`` atomically and prune older ones; returns its path.

    ``rng_states``: every rank's ``rng_state()``, in rank order.
    """

    def write(staging: Path) -> None:
        torch.save(model_state, staging / "model.pt")
        torch.save(optim_state, staging / "optimizer.pt")
        torch.save(scheduler.state_dict(), staging / "scheduler.pt")
        torch.save(rng_states, staging / "rng.pt")
        (staging / "state.json").write_text(json.dumps({"global_step": step, **loop_state}))

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
    return json.loads((path / "best.json").read_text()), torch.load(path / "model.pt", map_location="cpu", weights_only=True)


def list_complete(directory: str) -> list[Path]:
    """Complete checkpoints, oldest first."""
    root = Path(directory)
    if not root.is_dir():
        return []
    found = [p for p in root.iterdir() if p.is_dir() and p.name.startswith(_PREFIX) and (p / "state.json").is_file()]
    return sorted(found, key=lambda p: int(p.name[len(_PREFIX):]))


def latest(directory: str) -> Path | None:
    """The newest complete checkpoint, or None."""
    found = list_complete(directory)
    return found[-1] if found else None


def load(path: Path, scheduler, rank: int = 0, world: int = 1) -> tuple[dict, dict, dict]:
    """Restore the scheduler and this rank's RNG saved by ``save``; returns (weights, optimizer state, loop state).

    With a different number of processes than the run that saved it, every rank takes rank 0's RNG states.

    The loop state includes ``global_step``; the caller puts the weights and optimizer state back.
    """
    model_state = torch.load(path / "model.pt", map_location="cpu", weights_only=True)
    optim_state = torch.load(path / "optimizer.pt", map_location="cpu", weights_only=True)
    scheduler.load_state_dict(torch.load(path / "scheduler.pt", map_location="cpu", weights_only=False))
    states = torch.load(path / "rng.pt", map_location="cpu", weights_only=False)
    if isinstance(states, dict):  # written before each rank's states were kept: rank 0's alone
        states = [states]
    rng = states[rank] if len(states) == world else states[0]
    random.setstate(rng["python"])
    torch.set_rng_state(rng["torch"])
    if "cuda" in rng and torch.cuda.is_available():
        torch.cuda.set_rng_state(rng["cuda"], torch.cuda.current_device())
    return model_state, optim_state, json.loads((path / "state.json").read_text())
