"""Atomic training checkpoints: trainable weights, optimizer, scheduler, RNG and loop state.

A checkpoint is written into a hidden staging directory and renamed into place, so a directory named
``step-<n>`` is always complete; a run resumes from the highest such step. The two newest are kept.
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


def _trainable_state(model) -> dict[str, torch.Tensor]:
    trainable = {name for name, p in model.named_parameters() if p.requires_grad}
    state = model.state_dict()
    if len(trainable) == len(list(model.parameters())):
        return {k: v.detach().cpu() for k, v in state.items()}
    return {k: v.detach().cpu() for k, v in state.items() if k in trainable}


def _rng_state() -> dict:
    state = {"python": random.getstate(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def save(directory: str, step: int, model, optimizer, scheduler, loop_state: dict) -> Path:
    """Write checkpoint ``step`` atomically and prune older ones; returns its path."""
    root = Path(directory)
    root.mkdir(parents=True, exist_ok=True)
    final = root / f"{_PREFIX}{step:08d}"
    staging = root / f".staging-{step:08d}-{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir()
    torch.save(_trainable_state(model), staging / "model.pt")
    torch.save(optimizer.state_dict(), staging / "optimizer.pt")
    torch.save(scheduler.state_dict(), staging / "scheduler.pt")
    torch.save(_rng_state(), staging / "rng.pt")
    (staging / "state.json").write_text(json.dumps({"global_step": step, **loop_state}))
    for file in staging.iterdir():
        with open(file, "rb") as handle:
            os.fsync(handle.fileno())
    if final.exists():
        shutil.rmtree(final)
    os.replace(staging, final)
    _fsync_dir(root)
    for old in list_complete(directory)[:-KEEP]:
        shutil.rmtree(old, ignore_errors=True)
    return final


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


def load(path: Path, model, optimizer, scheduler) -> dict:
    """Restore everything saved by ``save``; returns the loop state (with ``global_step``)."""
    state = torch.load(path / "model.pt", map_location="cpu", weights_only=True)
    missing, unexpected = model.load_state_dict(state, strict=False)
    if unexpected:
        raise RuntimeError(f"checkpoint {path} does not match this model: unexpected keys {unexpected[:5]}")
    optimizer.load_state_dict(torch.load(path / "optimizer.pt", map_location="cpu", weights_only=True))
    scheduler.load_state_dict(torch.load(path / "scheduler.pt", map_location="cpu", weights_only=False))
    rng = torch.load(path / "rng.pt", map_location="cpu", weights_only=False)
    random.setstate(rng["python"])
    torch.set_rng_state(rng["torch"])
    if "cuda" in rng and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(rng["cuda"])
    return json.loads((path / "state.json").read_text())
