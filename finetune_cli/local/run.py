"""``finetune local run``: prepare the data, then execute the stage's synthesized FineTune state machine locally."""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from finetune.contract import dataset_prefix

from .. import prepare as prepare_module
from ..errors import UsageError
from .stage import LocalStage

_TERMINAL = {"SUCCEEDED", "FAILED", "TIMED_OUT", "ABORTED"}


@dataclass
class RunResult:
    """What ``--json`` prints: the execution's outcome, in the issue's shape."""

    status: str
    states: list[str] = field(default_factory=list)
    evaluation: dict[str, Any] | None = None
    model_package_status: str | None = None
    endpoint: str | None = None
    error: str | None = None
    cause: str | None = None
    execution: str | None = None
    model_package_arn: str | None = None
    training_job: str | None = None
    #: The last failed task's error and cause (what a Catch handed on), when one failed.
    task_error: str | None = None
    task_cause: str | None = None
    seconds: float = 0.0

    def as_json(self) -> dict[str, Any]:
        return asdict(self)


def upload_dataset(
    stage: LocalStage,
    source: Path,
    *,
    task: str,
    mapping: dict[str, str],
    name: str,
    version: str,
    work: Path,
    out: Any,
    validation_fraction: float = 0.1,
) -> str:
    """A data file goes through ``prepare`` (as ``finetune prepare`` does); a directory is taken as an already
    prepared dataset, uploaded file by file. Returns the dataset's S3 prefix."""
    if source.is_dir():
        folder = source
    elif source.is_file():
        folder = work / "dataset"
        manifest = prepare_module.prepare(
            source=source,
            task=task,
            output=folder,
            mapping=mapping,
            name=name,
            version=version,
            validation_fraction=validation_fraction,
            seed=42,
            tokenizer=None,
            max_seq_length=None,
            encoding=None,
        )
        for line in prepare_module.summary(manifest):
            print(line, file=out)
    else:
        raise UsageError(f"{source}: no such file or directory")
    files = sorted(p for p in folder.rglob("*") if p.is_file() and not p.name.startswith("."))
    if not files:
        raise UsageError(f"{source}: no files to upload")
    prefix = dataset_prefix(name, version)
    s3 = stage.client("s3")
    # manifest.json last, as `prepare --upload` does (it may start a run on stages with start_on_manifest).
    for path in sorted(files, key=lambda p: p.name == "manifest.json"):
        s3.upload_file(str(path), stage.data_bucket, prefix + path.relative_to(folder).as_posix())
    uri = f"s3://{stage.data_bucket}/{prefix}"
    print(f"uploaded {len(files)} files to {uri}", file=out, flush=True)
    return uri


def execute(
    stage: LocalStage,
    *,
    layer: str,
    machine: str,
    execution_name: str,
    execution_input: dict[str, Any],
    out: Any,
    poll_seconds: float = 0.25,
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Run one execution of a synthesized state machine in moto's engine; print each state as it starts and ends.
    Returns DescribeExecution's answer and the history."""
    name, _, definition = stage.assembly.state_machine(layer, machine)
    stepfunctions = stage.client("stepfunctions")
    arn = stepfunctions.create_state_machine(
        name=name, definition=definition, roleArn=f"arn:aws:iam::{stage.assembly.account}:role/{name}-local"
    )["stateMachineArn"]
    execution_arn = stepfunctions.start_execution(
        stateMachineArn=arn, name=execution_name, input=json.dumps(execution_input)
    )["executionArn"]
    print(f"execution {execution_name} of {name}", file=out, flush=True)
    seen, entered = 0, {}
    while True:
        history = stepfunctions.get_execution_history(executionArn=execution_arn, maxResults=1000)["events"]
        for event in history[seen:]:
            kind = event["type"]
            if kind.endswith("StateEntered"):
                state = event["stateEnteredEventDetails"]["name"]
                entered[state] = event["timestamp"]
                print(f"  {event['timestamp']:%H:%M:%S} > {state}", file=out, flush=True)
            elif kind.endswith("StateExited"):
                state = event["stateExitedEventDetails"]["name"]
                took = (event["timestamp"] - entered.get(state, event["timestamp"])).total_seconds()
                print(f"  {event['timestamp']:%H:%M:%S} < {state} ({took:.1f} s)", file=out, flush=True)
            elif kind in ("TaskFailed", "LambdaFunctionFailed"):
                details = event.get("taskFailedEventDetails") or event.get("lambdaFunctionFailedEventDetails") or {}
                print(
                    f"    failed: {details.get('error')}: {readable_cause(details.get('cause'))}", file=out, flush=True
                )
        seen = len(history)
        described = stepfunctions.describe_execution(executionArn=execution_arn)
        if described["status"] in _TERMINAL and seen == len(
            stepfunctions.get_execution_history(executionArn=execution_arn, maxResults=1000)["events"]
        ):
            return described, history
        time.sleep(poll_seconds)


def _exited_output(history: list[dict[str, Any]], state: str) -> dict[str, Any] | None:
    for event in reversed(history):
        details = event.get("stateExitedEventDetails")
        if details and details["name"] == state and details.get("output"):
            output: dict[str, Any] = json.loads(details["output"])
            return output
    return None


def summarize(stage: LocalStage, described: dict[str, Any], history: list[dict[str, Any]], seconds: float) -> RunResult:
    states = [e["stateEnteredEventDetails"]["name"] for e in history if e["type"].endswith("StateEntered")]
    result = RunResult(
        status=described["status"],
        states=states,
        error=described.get("error"),
        cause=described.get("cause"),
        execution=described.get("name"),
        seconds=round(seconds, 1),
    )
    failed = [e["taskFailedEventDetails"] for e in history if e["type"] == "TaskFailed"]
    if failed:
        result.task_error, result.task_cause = failed[-1].get("error"), failed[-1].get("cause")
    gated = _exited_output(history, "Gate")
    if gated:
        result.evaluation = gated.get("gated", {}).get("gate")
    train = _exited_output(history, "Train")
    if train:
        result.training_job = train.get("job", {}).get("name")
    for state in ("RegisterLlm", "RegisterClassifier"):
        registered = _exited_output(history, state)
        if registered:
            result.model_package_arn = registered["package"]["arn"]
            result.model_package_status = stage.client("sagemaker").describe_model_package(
                ModelPackageName=result.model_package_arn
            )["ModelApprovalStatus"]
    deployed = _exited_output(history, "EndpointUpdated")
    if deployed and described["status"] == "SUCCEEDED":
        result.endpoint = deployed["target"]["endpoint_name"]
    return result


def print_result(result: RunResult, out: Any) -> None:
    print(f"{result.status} in {result.seconds:.0f} s", file=out)
    if result.evaluation:
        print(f"  gate: {result.evaluation.get('reason')}", file=out)
    if result.model_package_arn:
        print(f"  model package: {result.model_package_arn} ({result.model_package_status})", file=out)
    if result.endpoint:
        print(f"  deployed to endpoint {result.endpoint}", file=out)
    if result.status != "SUCCEEDED":
        print(f"  {result.error}: {readable_cause(result.cause)}", file=out)


def readable_cause(cause: str | None) -> str | None:
    """A Lambda error's message, or a training job's FailureReason, out of the JSON cause Step Functions keeps."""
    try:
        parsed = json.loads(cause or "")
    except ValueError:
        return cause
    if isinstance(parsed, dict):
        return parsed.get("errorMessage") or parsed.get("FailureReason") or cause
    return cause
