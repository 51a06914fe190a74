"""Every Step Functions state machine of a synthesized app, checked as Step Functions checks it at
CreateStateMachine, before anyone deploys it.

Two independent checkers, both real: asl-validator (the npm package the Step Functions tooling uses; JSON schema
of every state type, path and intrinsic syntax, transitions, terminal states) and moto's States Language parser
(LocalStack's ANTLR grammar, the engine a local run executes). A definition lives in the template as a
`DefinitionString` built with `Fn::Join`; its tokens are replaced by well-formed placeholders of the right kind
(an ARN of the right service for `Fn::GetAtt ... Arn`, a name for `Ref`) before either checker sees it.

Used by `make synth` (scripts/synth_report.py: a finding fails it) and by the tests.
"""

from __future__ import annotations

import contextlib
import io
import json
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from scripts.cloud_assembly import Assembly

ROOT = Path(__file__).resolve().parents[1]
NODE_SCRIPT = ROOT / "scripts" / "asl_validate.js"

PARTITION, REGION, ACCOUNT = "aws", "eu-west-1", "111111111111"
PSEUDO_PARAMETERS = {
    "AWS::Partition": PARTITION,
    "AWS::Region": REGION,
    "AWS::AccountId": ACCOUNT,
    "AWS::URLSuffix": "amazonaws.com",
    "AWS::StackName": "stack",
    "AWS::NoValue": "",
}

# `Fn::GetAtt [X, Arn]` placeholders by resource type: the ARN shape that service really has.
_ARN_OF_TYPE = {
    "AWS::IAM::Role": "arn:{p}:iam::{a}:role/{n}",
    "AWS::Lambda::Function": "arn:{p}:lambda:{r}:{a}:function:{n}",
    "AWS::SNS::Topic": "arn:{p}:sns:{r}:{a}:{n}",
    "AWS::KMS::Key": "arn:{p}:kms:{r}:{a}:key/{n}",
    "AWS::S3::Bucket": "arn:{p}:s3:::{n}",
    "AWS::Logs::LogGroup": "arn:{p}:logs:{r}:{a}:log-group:{n}",
    "AWS::StepFunctions::StateMachine": "arn:{p}:states:{r}:{a}:stateMachine:{n}",
    "AWS::SageMaker::ModelPackageGroup": "arn:{p}:sagemaker:{r}:{a}:model-package-group/{n}",
}
# `Ref X` returns an ARN for these types, a name for the others.
_REF_IS_ARN = {"AWS::SNS::Topic", "AWS::StepFunctions::StateMachine"}
# The property that names a resource, where the template sets it: the placeholder is then the real name.
_NAME_PROPERTY = {
    "AWS::S3::Bucket": "BucketName",
    "AWS::Lambda::Function": "FunctionName",
    "AWS::IAM::Role": "RoleName",
    "AWS::SNS::Topic": "TopicName",
    "AWS::Logs::LogGroup": "LogGroupName",
    "AWS::StepFunctions::StateMachine": "StateMachineName",
    "AWS::SageMaker::Endpoint": "EndpointName",
    "AWS::SageMaker::ModelPackageGroup": "ModelPackageGroupName",
}


class TokenResolver:
    """Replaces CloudFormation intrinsics in one stack's values with well-formed literals.

    `Ref` and `Fn::GetAtt ... Arn` give a value of the shape the resource's type really returns, with the
    resource's own name where the template sets one; `Fn::GetStackOutput` (a cross-stack reference) follows the
    producing stack's output when the assembly holds that stack.
    """

    def __init__(self, resources: dict[str, dict] | None = None, assembly: Assembly | None = None) -> None:
        self.resources = resources or {}
        self.assembly = assembly

    def __call__(self, value: Any) -> Any:
        if isinstance(value, list):
            return [self(v) for v in value]
        if not isinstance(value, dict):
            return value
        if "Fn::Join" in value:
            separator, parts = value["Fn::Join"]
            return separator.join(str(self(p)) for p in parts)
        if "Ref" in value:
            return self._ref(value["Ref"])
        if "Fn::GetAtt" in value:
            logical_id, attribute = value["Fn::GetAtt"]
            if attribute == "Arn":
                return self._arn(logical_id)
            return "sg-0123456789abcdef0" if "GroupId" in attribute else f"{logical_id}-{attribute}"
        if "Fn::GetStackOutput" in value:
            return self._stack_output(value["Fn::GetStackOutput"])
        if "Fn::ImportValue" in value:
            return "imported-value"
        if "Fn::Sub" in value:
            text = value["Fn::Sub"] if isinstance(value["Fn::Sub"], str) else value["Fn::Sub"][0]
            return re.sub(r"\$\{([^}]+)\}", lambda m: PSEUDO_PARAMETERS.get(m.group(1), "x"), text)
        if "Fn::Select" in value:
            index, items = value["Fn::Select"]
            resolved = self(items)
            return resolved[index] if isinstance(resolved, list) else f"selected-{index}"
        if "Fn::Split" in value:
            separator, text = value["Fn::Split"]
            return str(self(text)).split(separator)
        return {k: self(v) for k, v in value.items()}

    def _name(self, logical_id: str) -> str:
        resource = self.resources.get(logical_id, {})
        explicit = resource.get("Properties", {}).get(_NAME_PROPERTY.get(resource.get("Type", ""), ""))
        return str(self(explicit)) if explicit is not None else logical_id.lower()[:40]

    def _arn(self, logical_id: str) -> str:
        kind = self.resources.get(logical_id, {}).get("Type", "AWS::IAM::Role")
        pattern = _ARN_OF_TYPE.get(kind, "arn:{p}:iam::{a}:role/{n}")
        return pattern.format(p=PARTITION, r=REGION, a=ACCOUNT, n=self._name(logical_id))

    def _ref(self, ref: str) -> str:
        if ref in PSEUDO_PARAMETERS:
            return PSEUDO_PARAMETERS[ref]
        if self.resources.get(ref, {}).get("Type") in _REF_IS_ARN:
            return self._arn(ref)
        if ref in self.resources:
            return self._name(ref)
        return f"ref-{ref.lower()[:20]}"

    def _stack_output(self, reference: dict) -> Any:
        if self.assembly is None:
            return "imported-value"
        producer = self.assembly.by_stack_name(reference["StackName"])
        output = producer.template["Outputs"][reference["OutputName"]]["Value"]
        return TokenResolver(producer.template.get("Resources", {}), self.assembly)(output)


def resolve_tokens(value: Any, resources: dict[str, dict] | None = None, assembly: Assembly | None = None) -> Any:
    """`value` with every CloudFormation intrinsic replaced by a well-formed literal (see TokenResolver)."""
    return TokenResolver(resources, assembly)(value)


@dataclass(frozen=True)
class StateMachine:
    """One state machine of a synthesized stage, with its definition resolved to plain JSON."""

    stage: str
    stack: str
    logical_id: str
    definition: dict

    @property
    def name(self) -> str:
        return f"{self.stage}/{self.stack}/{self.logical_id}"


@dataclass(frozen=True)
class Finding:
    """A problem one checker found in one state machine, naming the state and field where it can."""

    state_machine: str
    checker: str
    message: str

    def __str__(self) -> str:
        return f"{self.state_machine}: {self.checker}: {self.message}"


def state_machines(assembly: Assembly) -> list[StateMachine]:
    """Every AWS::StepFunctions::StateMachine of every stack, its DefinitionString resolved."""
    machines = []
    for (stage, stack_name), stack in sorted(assembly.stacks.items()):
        resources = stack.template.get("Resources", {})
        for logical_id, resource in sorted(resources.items()):
            if resource["Type"] != "AWS::StepFunctions::StateMachine":
                continue
            properties = resource["Properties"]
            text = (
                resolve_tokens(properties["DefinitionString"], resources, assembly)
                if "DefinitionString" in properties
                else json.dumps(properties["Definition"])
            )
            machines.append(StateMachine(stage, stack_name, logical_id, json.loads(text)))
    return machines


class AslValidatorUnavailable(RuntimeError):
    """Node or the pinned asl-validator package is missing (run `make deps`)."""


def _node() -> str:
    project_node = ROOT / "node_modules" / ".bin" / "node"
    node = str(project_node) if project_node.exists() else shutil.which("node")
    if node is None or not (ROOT / "node_modules" / "asl-validator").is_dir():
        raise AslValidatorUnavailable(
            "asl-validator is not installed: run `make deps` (npm ci installs it from package.json)"
        )
    return node


def asl_validator_findings(machines: list[StateMachine]) -> list[Finding]:
    """asl-validator over every definition, in one Node process."""
    if not machines:
        return []
    payload = json.dumps([{"name": m.name, "definition": m.definition} for m in machines])
    result = subprocess.run(
        [_node(), str(NODE_SCRIPT)], input=payload, capture_output=True, text=True, cwd=ROOT, check=False, timeout=300
    )
    if result.returncode != 0:
        raise RuntimeError(f"asl-validator did not run: {result.stderr.strip()[-2000:]}")
    return [
        Finding(entry["name"], "asl-validator", f"{error['code']}: {error['message']}")
        for entry in json.loads(result.stdout)
        for error in entry["errors"]
    ]


def _printed_parse_errors(parse, text: str) -> tuple[list[str], Exception | None]:
    """Run one of moto's parsers, returning what its ANTLR error listeners printed and what it raised.

    The intrinsic-function parser and the lexers keep ANTLR's console listener, so a syntax error there is
    printed to stderr and the parse carries on; a printed error is as much a finding as a raised one.
    """
    printed = io.StringIO()
    raised: Exception | None = None
    with contextlib.redirect_stderr(printed):
        try:
            parse(text)
        except Exception as error:  # any parser failure is a finding, reported with its type
            raised = error
    errors = [line.strip() for line in printed.getvalue().splitlines() if re.match(r"\s*line \d+:\d+ ", line)]
    return errors, raised


def _intrinsic_fields(states: dict, prefix: str = ""):
    """(state path, field path, expression) for every `.$` field whose value is an intrinsic function call."""

    def walk(value: Any, path: str):
        if isinstance(value, dict):
            for key, child in value.items():
                child_path = f"{path}/{key}" if path else key
                if key.endswith(".$") and isinstance(child, str) and child.strip().startswith("States."):
                    yield child_path, child
                elif key not in ("States",):
                    yield from walk(child, child_path)
        elif isinstance(value, list):
            for index, child in enumerate(value):
                yield from walk(child, f"{path}[{index}]")

    for state_name, state in states.items():
        state_path = f"{prefix}{state_name}"
        yield from ((state_path, field, expression) for field, expression in walk(state, ""))
        for nested in _nested_state_maps(state):
            yield from _intrinsic_fields(nested, prefix=f"{state_path}/")


def _nested_state_maps(state: dict):
    for branch in state.get("Branches", []):
        yield branch.get("States", {})
    for key in ("ItemProcessor", "Iterator"):
        if key in state:
            yield state[key].get("States", {})


def moto_findings(machines: list[StateMachine]) -> list[Finding]:
    """moto's States Language parser over every definition: whole-machine parse, then each intrinsic call on its
    own so that a printed error names its state and field."""
    from moto.stepfunctions.parser.asl.parse.asl_parser import AmazonStateLanguageParser
    from moto.stepfunctions.parser.asl.parse.intrinsic.intrinsic_parser import IntrinsicParser

    findings = []
    for machine in machines:
        field_errors = set()
        for state, field, expression in _intrinsic_fields(machine.definition.get("States", {})):
            errors, raised = _printed_parse_errors(IntrinsicParser.parse, expression)
            for error in errors:
                field_errors.add(error)
                findings.append(Finding(machine.name, "moto", f"/States/{state}/{field}: {error} in {expression!r}"))
            if raised is not None and not errors:
                findings.append(
                    Finding(machine.name, "moto", f"/States/{state}/{field}: {type(raised).__name__}: {raised}")
                )
        errors, raised = _printed_parse_errors(AmazonStateLanguageParser.parse, json.dumps(machine.definition))
        findings.extend(Finding(machine.name, "moto", error) for error in errors if error not in field_errors)
        if raised is not None:
            findings.append(Finding(machine.name, "moto", f"{type(raised).__name__}: {raised}"))
    return findings


def check(assembly: Assembly) -> tuple[list[StateMachine], list[Finding]]:
    """Every state machine of the app and every finding of both checkers."""
    machines = state_machines(assembly)
    return machines, asl_validator_findings(machines) + moto_findings(machines)
