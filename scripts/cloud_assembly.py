"""Reading a synthesized cloud assembly: the stacks of every stage, their templates, metadata and the
rule-pack acknowledgements recorded there. Used by the synth report, the diagram and the tests."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class SynthesizedStack:
    """One synthesized stack of a team stage."""

    stage: str
    name: str  # construct id within the stage, e.g. "Data"
    template: dict
    metadata: dict
    stack_name: str = ""  # the CloudFormation stack name, e.g. "search-dev-data"
    stage_dir: Path | None = None  # the stage's nested assembly folder (asset paths are relative to it)

    def asset_source(self, object_key: str) -> Path:
        """The folder or file in the assembly that `cdk deploy` uploads as ``object_key`` (a Lambda's S3Key)."""
        if self.stage_dir is None:
            raise ValueError(f"{self.stage}/{self.name}: read without its assembly folder")
        for manifest in sorted(self.stage_dir.glob("*.assets.json")):
            for entry in json.loads(manifest.read_text())["files"].values():
                if any(d.get("objectKey") == object_key for d in entry["destinations"].values()):
                    return (self.stage_dir / entry["source"]["path"]).resolve()
        raise KeyError(f"{self.stage}/{self.name}: no asset uploads as {object_key}")

    def resources_of_type(self, resource_type: str) -> dict[str, dict]:
        return {
            logical_id: resource
            for logical_id, resource in self.template["Resources"].items()
            if resource["Type"] == resource_type
        }


@dataclass(frozen=True)
class Assembly:
    """A synthesized app: every stack of every team stage, by (stage, stack construct id)."""

    outdir: Path
    stacks: dict[tuple[str, str], SynthesizedStack]

    def stack(self, stage: str, name: str) -> SynthesizedStack:
        return self.stacks[(stage, name)]

    def by_stack_name(self, stack_name: str) -> SynthesizedStack:
        """The stack CloudFormation knows as ``stack_name`` (what ``Fn::GetStackOutput`` names)."""
        for stack in self.stacks.values():
            if stack.stack_name == stack_name:
                return stack
        raise KeyError(f"no stack named {stack_name} in {self.outdir}")

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
                stage=stage,
                name=name,
                template=json.loads((stage_dir / template_file).read_text()),
                metadata=json.loads(metadata_file.read_text()) if metadata_file.exists() else {},
                stack_name=artifact["properties"].get("stackName", name),
                stage_dir=stage_dir,
            )
    return Assembly(outdir=outdir, stacks=stacks)


def read_app_stacks(outdir: Path) -> dict[str, SynthesizedStack]:
    """The stacks at the top of the assembly, outside every team stage (the delivery pipeline and its
    cross-region support stacks), by display name; empty when the pipeline is off."""
    manifest_file = outdir / "manifest.json"
    if not manifest_file.exists():
        return {}
    stacks = {}
    for artifact in json.loads(manifest_file.read_text())["artifacts"].values():
        if artifact["type"] != "aws:cloudformation:stack":
            continue
        template_file = artifact["properties"]["templateFile"]
        name = artifact.get("displayName", template_file.removesuffix(".template.json"))
        metadata_file = outdir / template_file.replace(".template.json", ".metadata.json")
        stacks[name] = SynthesizedStack(
            stage="",
            name=name,
            template=json.loads((outdir / template_file).read_text()),
            metadata=json.loads(metadata_file.read_text()) if metadata_file.exists() else {},
        )
    return stacks


def acknowledgements(assembly: Assembly) -> list[dict[str, str]]:
    """Every acknowledgement recorded in the assembly (stage, construct path, rule, reason), sorted."""
    rows = []
    for (stage, _stack_name), stack in sorted(assembly.stacks.items()):
        for path, entries in sorted(stack.metadata.items()):
            for entry in entries:
                if entry["type"] != "aws:cdk:acknowledged-rules":
                    continue
                for rule, reason in sorted(entry["data"].items()):
                    rows.append({"stage": stage, "path": path, "rule": rule, "reason": reason})
    return rows
