"""End-to-end fixtures: real fine-tuning runs, their artifacts packed and unpacked as SageMaker does, the
inference containers serving them in this process, and the proxy handler calling those containers."""

from __future__ import annotations

import hashlib
import importlib
import os
import tarfile
from dataclasses import dataclass
from pathlib import Path
from unittest import mock

import pytest

from tests.handlers.conftest import PROXY_ENVIRONMENT, installed
from tests.handlers.in_process import InProcessRuntime
from tests.training.harness import Run

from .containers import TOOLKIT_PINS, HuggingFaceInferenceContainer, LmiChatContainer, import_handler_service

CLASSIFIER_ENDPOINT = "acme-dev-sentiment"  # ENDPOINTS in tests/handlers/conftest.py: {team}-{stage}-{name}
LLM_ENDPOINT = "acme-dev-chat"


@dataclass
class Artifact:
    """A training run's model directory, packed to model.tar.gz and unpacked where a container reads it."""

    run: Run
    tarball: Path
    members: list[str]
    unpacked: Path


def digests(root: Path) -> dict[str, str]:
    """sha256 of every file under root, by relative path."""
    return {
        path.relative_to(root).as_posix(): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(root.rglob("*"))
        if path.is_file()
    }


def pack_model_dir(model_dir: Path, tarball: Path) -> list[str]:
    """model.tar.gz as SageMaker uploads /opt/ml/model: the directory's contents at the archive root."""
    with tarfile.open(tarball, "w:gz") as archive:
        for path in sorted(model_dir.rglob("*")):
            archive.add(path, arcname=path.relative_to(model_dir).as_posix(), recursive=False)
    with tarfile.open(tarball, "r:gz") as archive:
        return archive.getnames()


def unpack_model_tarball(tarball: Path, target: Path) -> Path:
    """What hosting does before the container starts: model.tar.gz extracted into /opt/ml/model."""
    target.mkdir(parents=True)
    with tarfile.open(tarball, "r:gz") as archive:
        archive.extractall(target, filter="data")
    return target


def artifact_from(run: Run, root: Path) -> Artifact:
    assert run.returncode == 0, run.stderr[-3000:]
    tarball = root / "model.tar.gz"
    members = pack_model_dir(run.model_dir, tarball)
    return Artifact(run, tarball, members, unpack_model_tarball(tarball, root / "opt-ml-model"))


@pytest.fixture(scope="session")
def classifier_artifact(tmp_path_factory, classification_run) -> Artifact:
    """MiniLM fully fine-tuned on the shipped SST-2 sample by train.py (the session run tests/training checks)."""
    return artifact_from(classification_run, tmp_path_factory.mktemp("e2e-classifier"))


@pytest.fixture(scope="session")
def llm_artifact(tmp_path_factory, causal_run) -> Artifact:
    """SmolLM2-135M-Instruct after LoRA on the shipped Dolly sample, merged by train.py (the same session run)."""
    return artifact_from(causal_run, tmp_path_factory.mktemp("e2e-llm"))


@pytest.fixture(scope="session")
def handler_service():
    module = import_handler_service()
    if module is None:
        pytest.skip(
            "the Hugging Face inference toolkit is not installed: pip install --no-deps " + " ".join(TOOLKIT_PINS)
        )
    return module


@pytest.fixture(scope="session")
def classifier_container(handler_service, classifier_artifact) -> HuggingFaceInferenceContainer:
    """The HF PyTorch inference container's defaults over the unpacked artifact: HF_TASK and nothing else (skipped,
    through `handler_service`, where the toolkit is not installed)."""
    return HuggingFaceInferenceContainer(classifier_artifact.unpacked, {"HF_TASK": "text-classification"})


@pytest.fixture(scope="session")
def llm_container(llm_artifact) -> LmiChatContainer:
    return LmiChatContainer(llm_artifact.unpacked)


@pytest.fixture(scope="session")
def proxy():
    """The proxy's handler module, imported under its Lambda environment (as tests/handlers does)."""
    with mock.patch.dict(os.environ, PROXY_ENVIRONMENT):
        return importlib.import_module("lambda_handlers.inference_proxy.handler")


@pytest.fixture
def serve(proxy):
    """Install an InProcessRuntime answering the given endpoints; returns it (its `.calls` record each invoke)."""
    blocks = []

    def start(models: dict) -> InProcessRuntime:
        runtime = InProcessRuntime(models)
        block = installed(proxy, runtime=runtime)
        block.__enter__()
        blocks.append(block)
        return runtime

    yield start
    for block in reversed(blocks):
        block.__exit__(None, None, None)
