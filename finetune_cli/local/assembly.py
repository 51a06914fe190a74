"""A team stage as CloudFormation would deploy it, read from the cloud assembly that ``make synth`` writes.

Local mode runs the synthesized artifacts, not a copy of their logic: the state machine definitions, the Lambda
assets and their environment variables, the training image's code directory. This module finds (or synthesizes) the
assembly and resolves the CloudFormation intrinsics in it to the values a deployment in the stage's account would
produce (physical names come from the templates; resources without a name get a stable local one).
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from finetune.contract import qualified_name, stack_name

from ..errors import RuntimeFailure, UsageError

REPO = Path(__file__).resolve().parents[2]
#: Names an already synthesized assembly to use as is (skips the freshness check).
ASSEMBLY_VARIABLE = "FINETUNE_LOCAL_ASSEMBLY"
#: What a synthesized assembly is built from: newer files here make a cached assembly stale.
SOURCES = ("app.py", "cdk.json", "stacks", "lambda_handlers", "training_code")


def _newest_source(config_path: Path) -> float:
    newest = config_path.stat().st_mtime
    for name in SOURCES:
        path = REPO / name
        files = (
            [path] if path.is_file() else (p for p in path.rglob("*") if p.is_file() and "__pycache__" not in p.parts)
        )
        for item in files:
            newest = max(newest, item.stat().st_mtime)
    return newest


def _fresh(assembly: Path, qualified_name: str, newest: float) -> bool:
    manifest = assembly / f"assembly-{qualified_name}" / "manifest.json"
    return manifest.is_file() and manifest.stat().st_mtime >= newest


def locate_assembly(*, config_path: Path, team: str, stage: str, cache: Path, out: Any) -> Path:
    """The repo's ``cdk.out`` when it holds this stage and is newer than every source; else a synthesis of just
    this stage into ``cache`` (reused while fresh)."""
    qualified = qualified_name(team, stage)
    explicit = os.environ.get(ASSEMBLY_VARIABLE)
    if explicit:  # an assembly synthesized by the caller (the test suite's, for one)
        return Path(explicit)
    newest = _newest_source(config_path)
    for candidate in (REPO / "cdk.out", cache):
        if _fresh(candidate, qualified, newest):
            return candidate
    print(f"synthesizing {qualified} into {cache} (cdk.out is missing or older than the sources)", file=out, flush=True)
    from app import build_app  # the CDK app itself: heavy imports only when a synthesis is needed

    cache.mkdir(parents=True, exist_ok=True)
    build_app(config_path, teams=team, stage_names=stage, outdir=str(cache)).synth()
    if not _fresh(cache, qualified, 0):
        raise RuntimeFailure(f"synthesis wrote no assembly for {qualified} under {cache}")
    return cache


@dataclass
class Stack:
    """One synthesized stack: its deployed name and template."""

    name: str
    template: dict[str, Any]

    @property
    def resources(self) -> dict[str, Any]:
        resources: dict[str, Any] = self.template.get("Resources", {})
        return resources


@dataclass
class LambdaFunction:
    """A Lambda function of the stage: where its asset is, its handler and its environment."""

    logical_id: str
    name: str
    arn: str
    asset_dir: Path
    handler: str
    environment: dict[str, str]


def _name(props: dict[str, Any], key: str, default: str) -> str:
    """A physical-name property of a template resource (a string in the templates this app synthesizes)."""
    name: str = props.get(key, default)
    return name


@dataclass
class StageAssembly:
    """The synthesized stacks of one team stage and a resolver for their intrinsics."""

    root: Path
    qualified_name: str
    account: str
    region: str
    stacks: dict[str, Stack] = field(default_factory=dict)

    @classmethod
    def load(cls, root: Path, qualified_name: str) -> StageAssembly:
        folder = root / f"assembly-{qualified_name}"
        try:
            manifest = json.loads((folder / "manifest.json").read_text())
        except FileNotFoundError:
            raise UsageError(f"{root} holds no assembly for {qualified_name} (run make synth)") from None
        stacks: dict[str, Stack] = {}
        environment: str | None = None
        for artifact in manifest["artifacts"].values():
            if artifact["type"] != "aws:cloudformation:stack":
                continue
            properties = artifact["properties"]
            template = json.loads((folder / properties["templateFile"]).read_text())
            stacks[properties["stackName"]] = Stack(properties["stackName"], template)
            environment = artifact["environment"]
        where = re.fullmatch(r"aws://(\d{12})/([a-z0-9-]+)", environment or "")
        if where is None:
            raise RuntimeFailure(f"{folder}: no stack with an aws://<account>/<region> environment ({environment})")
        account, region = where.groups()
        return cls(root=root, qualified_name=qualified_name, account=account, region=region, stacks=stacks)

    def stack(self, layer: str) -> Stack | None:
        """The stack of a layer (``data``, ``training``, ``inference`` ...), None when the stage has none."""
        return self.stacks.get(stack_name(self.qualified_name, layer))

    def outputs(self, layer: str) -> dict[str, str]:
        stack = self.stack(layer)
        if stack is None:
            return {}
        return {key: self.resolve(output["Value"], stack) for key, output in stack.template.get("Outputs", {}).items()}

    def of_type(self, stack: Stack, resource_type: str) -> dict[str, dict[str, Any]]:
        return {k: v for k, v in stack.resources.items() if v["Type"] == resource_type}

    # --- intrinsics ----------------------------------------------------------------------------------------
    def _arn(self, service: str, resource: str) -> str:
        return f"arn:aws:{service}:{self.region}:{self.account}:{resource}"

    def physical_name(self, stack: Stack, logical_id: str) -> str:
        """What ``Ref`` of a resource returns after deployment."""
        resource = stack.resources.get(logical_id)
        if resource is None:
            raise RuntimeFailure(f"{stack.name}: Ref to unknown resource {logical_id}")
        kind, props = resource["Type"], resource.get("Properties", {})
        generated = f"{stack.name}-{logical_id}"[:63]
        if kind == "AWS::S3::Bucket":
            return _name(props, "BucketName", generated.lower())
        if kind == "AWS::SNS::Topic":
            return self._arn("sns", _name(props, "TopicName", generated))
        if kind == "AWS::StepFunctions::StateMachine":
            return self._arn("states", f"stateMachine:{props.get('StateMachineName', generated)}")
        if kind == "AWS::Lambda::Function":
            return _name(props, "FunctionName", generated)
        if kind == "AWS::SSM::Parameter":
            return _name(props, "Name", generated)
        name_keys = {
            "AWS::SageMaker::ModelPackageGroup": "ModelPackageGroupName",
            "AWS::SageMaker::Endpoint": "EndpointName",
            "AWS::SageMaker::EndpointConfig": "EndpointConfigName",
            "AWS::SageMaker::Model": "ModelName",
            "AWS::IAM::Role": "RoleName",
        }
        if kind in name_keys:
            return _name(props, name_keys[kind], generated)
        return generated

    def attribute(self, stack: Stack, logical_id: str, attribute: str) -> str:
        kind = stack.resources.get(logical_id, {}).get("Type", "")
        name = self.physical_name(stack, logical_id)
        if attribute == "Arn":
            arns = {
                "AWS::Lambda::Function": ("lambda", f"function:{name}"),
                "AWS::IAM::Role": ("iam", f"role/{name}"),
                "AWS::KMS::Key": ("kms", f"key/{name}"),
                "AWS::S3::Bucket": ("s3", name),
                "AWS::SageMaker::ModelPackageGroup": ("sagemaker", f"model-package-group/{name}"),
            }
            if name.startswith("arn:"):
                return name
            service, resource = arns.get(kind, ("local", f"{kind}/{name}"))
            if service == "iam":
                return f"arn:aws:iam::{self.account}:{resource}"
            if service == "s3":
                return f"arn:aws:s3:::{resource}"
            return self._arn(service, resource)
        if attribute == "GroupId":
            return f"sg-{abs(hash(logical_id)) % 16**17:017x}"
        if attribute in ("EndpointConfigName", "ModelName", "EndpointName", "Name", "TopicName"):
            return name.rsplit(":", 1)[-1]
        return name

    def _output(self, stack_name: str, output_name: str) -> Any:
        stack = self.stacks.get(stack_name)
        if stack is None or output_name not in stack.template.get("Outputs", {}):
            raise RuntimeFailure(f"the assembly has no output {output_name} of stack {stack_name}")
        return self.resolve(stack.template["Outputs"][output_name]["Value"], stack)

    def _export(self, export_name: str) -> Any:
        for stack in self.stacks.values():
            for output in stack.template.get("Outputs", {}).values():
                if self.resolve(output.get("Export", {}).get("Name"), stack) == export_name:
                    return self.resolve(output["Value"], stack)
        raise RuntimeFailure(f"no stack of {self.qualified_name} exports {export_name}")

    def _pseudo(self, name: str, stack: Stack) -> str | None:
        return {
            "AWS::Partition": "aws",
            "AWS::Region": self.region,
            "AWS::AccountId": self.account,
            "AWS::URLSuffix": "amazonaws.com",
            "AWS::StackName": stack.name,
            "AWS::NoValue": None,
        }.get(name, "")

    def resolve(self, value: Any, stack: Stack) -> Any:
        """``value`` with every intrinsic function replaced by its deployed value."""
        if isinstance(value, list):
            return [self.resolve(item, stack) for item in value]
        if not isinstance(value, dict):
            return value
        if len(value) == 1:
            ((key, argument),) = value.items()
            if key == "Ref":
                if argument.startswith("AWS::"):
                    return self._pseudo(argument, stack)
                if argument in stack.template.get("Parameters", {}):
                    return stack.template["Parameters"][argument].get("Default", "")
                return self.physical_name(stack, argument)
            if key == "Fn::GetAtt":
                logical_id, attribute = argument if isinstance(argument, list) else argument.split(".", 1)
                return self.attribute(stack, logical_id, attribute)
            if key == "Fn::Join":
                separator, parts = argument
                return separator.join(str(self.resolve(part, stack)) for part in self.resolve(parts, stack))
            if key == "Fn::GetStackOutput":
                return self._output(argument["StackName"], argument["OutputName"])
            if key == "Fn::ImportValue":
                return self._export(self.resolve(argument, stack))
            if key == "Fn::Select":
                index, items = argument
                return self.resolve(items, stack)[int(self.resolve(index, stack))]
            if key == "Fn::Split":
                separator, text = argument
                return str(self.resolve(text, stack)).split(separator)
            if key == "Fn::Sub":
                text, variables = (argument, {}) if isinstance(argument, str) else argument
                variables = {k: self.resolve(v, stack) for k, v in variables.items()}

                def substitute(match: re.Match[str]) -> str:
                    name = match.group(1)
                    if name in variables:
                        return str(variables[name])
                    if name.startswith("AWS::"):
                        return str(self._pseudo(name, stack))
                    if "." in name:
                        return str(self.attribute(stack, *name.split(".", 1)))
                    return str(self.physical_name(stack, name))

                return re.sub(r"\$\{([^}!]+)\}", substitute, text)
        return {key: self.resolve(item, stack) for key, item in value.items()}

    # --- what local mode runs ---------------------------------------------------------------------------------
    def asset_dir(self, asset_hash: str) -> Path:
        path = self.root / f"asset.{asset_hash}"
        if not path.is_dir():
            raise RuntimeFailure(f"asset {asset_hash} is missing from {self.root} (synthesize again)")
        return path

    def lambda_functions(self) -> dict[str, LambdaFunction]:
        """Every Python Lambda function of the stage, keyed by name and by ARN."""
        functions: dict[str, LambdaFunction] = {}
        for stack in self.stacks.values():
            for logical_id, resource in self.of_type(stack, "AWS::Lambda::Function").items():
                props = resource["Properties"]
                if not str(props.get("Runtime", "")).startswith("python"):
                    continue
                key = str(props["Code"].get("S3Key", ""))
                name = self.physical_name(stack, logical_id)
                function = LambdaFunction(
                    logical_id=logical_id,
                    name=name,
                    arn=self._arn("lambda", f"function:{name}"),
                    asset_dir=self.asset_dir(key.removesuffix(".zip")),
                    handler=props["Handler"],
                    environment={
                        k: str(v)
                        for k, v in self.resolve(props.get("Environment", {}).get("Variables", {}), stack).items()
                    },
                )
                functions[name] = functions[function.arn] = function
        return functions

    def state_machine(self, layer: str, name_suffix: str) -> tuple[str, str, str]:
        """(name, ARN, definition JSON) of the state machine named ``{qualified}-{name_suffix}`` in a layer."""
        stack = self.stack(layer)
        wanted = f"{self.qualified_name}-{name_suffix}"
        if stack is not None:
            for logical_id, resource in self.of_type(stack, "AWS::StepFunctions::StateMachine").items():
                props = resource["Properties"]
                if props.get("StateMachineName") == wanted:
                    definition = self.resolve(props.get("DefinitionString"), stack)
                    return wanted, self.physical_name(stack, logical_id), definition
        raise UsageError(f"{self.qualified_name} has no {name_suffix} state machine in its {layer} stack")

    def training_code_dir(self, image_uri: str) -> Path:
        """The training image's build context (its code), from the asset hash the image URI is tagged with."""
        tag = image_uri.rsplit(":", 1)[-1]
        if not re.fullmatch(r"[0-9a-f]{64}", tag):
            raise RuntimeFailure(f"training image {image_uri} is not an asset of this assembly")
        return self.asset_dir(tag)
