"""Lambda code assets assembled from files of this repository, without Docker bundling.

A function sometimes needs files from two places (the Validate step reuses the training container's own
checks from training_code/finetune/). They are copied into a folder named after their content hash, so the
asset hash, and with it the template, is the same on every machine and every run.
"""

from __future__ import annotations

import hashlib
import shutil
import tempfile
from collections.abc import Mapping
from pathlib import Path

from aws_cdk import aws_lambda as lambda_

ROOT = Path(__file__).resolve().parents[2]


def _files(source: Path) -> list[Path]:
    if source.is_file():
        return [source]
    return sorted(
        p
        for p in source.rglob("*")
        if p.is_file() and "__pycache__" not in p.parts and p.suffix not in (".pyc", ".pyo")
    )


def assembled_code(layout: Mapping[str, str]) -> lambda_.Code:
    """``layout`` maps a path inside the asset to a repo-relative file or folder (copied recursively)."""
    copies: list[tuple[str, Path]] = []
    for target, source in sorted(layout.items()):
        source_path = ROOT / source
        if not source_path.exists():
            raise FileNotFoundError(f"Lambda asset source {source} does not exist")
        for file in _files(source_path):
            relative = file.relative_to(source_path) if source_path.is_dir() else Path()
            copies.append((str(Path(target) / relative) if source_path.is_dir() else target, file))
    digest = hashlib.sha256()
    for target, file in copies:
        digest.update(target.encode() + b"\0" + file.read_bytes() + b"\0")
    folder = Path(tempfile.gettempdir()) / "finetune-stack-assets" / digest.hexdigest()[:24]
    if not folder.exists():
        staging = Path(
            tempfile.mkdtemp(prefix="staging-", dir=folder.parent if folder.parent.exists() else _mkdir(folder.parent))
        )
        for target, file in copies:
            destination = staging / target
            destination.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(file, destination)
        try:
            staging.rename(folder)
        except OSError:  # another synthesis made it meanwhile: same content
            shutil.rmtree(staging, ignore_errors=True)
    return lambda_.Code.from_asset(str(folder))


def _mkdir(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    return path
