"""Argument parsing and the subcommands: submit, status, logs, prepare, models stage, batch.

Exit codes: 0 ok, 2 bad arguments or input (a message naming what is wrong, never a traceback),
1 AWS or runtime failure.
"""

from __future__ import annotations

import argparse
import json
import re
import secrets
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NoReturn

from botocore.exceptions import BotoCoreError, ClientError

from finetune.contract import (
    BATCH_INPUT_PREFIX,
    BATCH_OUTPUT_PREFIX,
    DATASETS_PREFIX,
    TASKS,
    base_model_prefix,
    dataset_prefix,
    stack_name,
)
from lambda_handlers.validate_request.errors import InvalidRequest
from lambda_handlers.validate_request.logic import validate_request
from lambda_handlers.validate_request.settings import HUB_ID, STAGED_MODEL_NAME
from stacks.validate_settings import settings_for_stage

from . import prepare as prepare_module
from .errors import RuntimeFailure, UsageError
from .local import cli as local_cli
from .resources import DEFAULT_CONFIG, StageResources, find_stage, resolve

TRAINING_LOG_GROUP = "/aws/sagemaker/TrainingJobs"
_TERMINAL = {"SUCCEEDED", "FAILED", "TIMED_OUT", "ABORTED"}


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:  # exit 2 with usage, as argparse does, via UsageError
        raise UsageError(f"{self.prog}: {message}")


def _stage_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--team", required=True, help="team name in config/teams.yaml")
    parser.add_argument("--stage", required=True, help="stage name (dev, prod, ...)")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="finetune", description="Fine-tune and serve models on a team stage's platform.")
    parser.add_argument("--config", type=Path, default=DEFAULT_CONFIG, help="teams file (default: config/teams.yaml)")
    parser.add_argument("--profile", help="AWS profile")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    submit = commands.add_parser("submit", help="validate a run locally and start the FineTune pipeline")
    _stage_args(submit)
    submit.add_argument(
        "--dataset", required=True, help="s3://<data bucket>/datasets/<name>/<version>/ or <name>/<version>"
    )
    submit.add_argument("--task", required=True, choices=TASKS)
    submit.add_argument("--base-model", required=True, help="staged base model name or hub id (training.base_models)")
    submit.add_argument("--method", choices=["lora", "qlora", "full"])
    submit.add_argument("--hp", action="append", default=[], metavar="NAME=VALUE", help="hyperparameter (repeatable)")
    submit.add_argument("--instance-type")
    submit.add_argument("--instance-count", type=int, default=1)
    submit.add_argument("--spot", action=argparse.BooleanOptionalAction, default=None)
    submit.add_argument(
        "--deploy-to",
        help="endpoint short name (or a LoRA endpoint's adapter name, for lora/qlora "
        "runs of its base model) to deploy to when the gate passes",
    )
    submit.add_argument("--threshold", type=float, help="gate threshold on the task's main metric")
    submit.add_argument("--dry-run", action="store_true", help="validate and print the input; start nothing")
    submit.add_argument("--wait", action="store_true", help="poll until the execution ends, printing progress")
    submit.add_argument("--poll-seconds", type=float, default=15.0)

    status = commands.add_parser("status", help="recent executions, or one execution in detail")
    _stage_args(status)
    status.add_argument("--execution", help="execution name or ARN")
    status.add_argument("--max", type=int, default=10)

    logs = commands.add_parser("logs", help="print a training job's CloudWatch logs")
    _stage_args(logs)
    target = logs.add_mutually_exclusive_group(required=True)
    target.add_argument("--execution", help="execution name or ARN (its training job)")
    target.add_argument("--job", help="training job name")

    prep = commands.add_parser("prepare", help="CSV/JSONL/Parquet -> the task's canonical JSONL dataset")
    prep.add_argument("input", type=Path)
    prep.add_argument("--task", required=True, choices=TASKS)
    prep.add_argument("--output", type=Path, required=True, help="local output directory")
    prep.add_argument("--map", action="append", default=[], metavar="FIELD=COLUMN", help="column mapping (repeatable)")
    prep.add_argument("--name", help="dataset name (default: the input file's stem)")
    prep.add_argument("--version", default="v1")
    prep.add_argument("--validation-fraction", type=float, default=0.1)
    prep.add_argument("--seed", type=int, default=42)
    prep.add_argument("--tokenizer", help="local Hugging Face model directory for token-length statistics")
    prep.add_argument("--max-seq-length", type=int)
    prep.add_argument("--encoding", help="decode the input with this encoding instead of UTF-8")
    prep.add_argument("--upload", action="store_true", help="upload to s3://<data>/datasets/<name>/<version>/")
    prep.add_argument("--team")
    prep.add_argument("--stage")

    models = commands.add_parser("models", help="base models").add_subparsers(
        dest="models_command", required=True, parser_class=_Parser
    )
    stage = models.add_parser("stage", help="upload a base model to s3://<artifacts>/models/base/<name>/")
    _stage_args(stage)
    stage.add_argument("--name", required=True, help="name runs refer to as base_model")
    stage.add_argument("source", help="local Hugging Face model directory (or a hub id where the network allows)")
    stage.add_argument("--local", action="store_true", help="stage into the local state folder (finetune local)")
    stage.add_argument("--state-dir", type=Path, help="local state folder (with --local)")

    batch = commands.add_parser("batch", help="start the BatchInfer pipeline over a JSONL prefix")
    _stage_args(batch)
    model = batch.add_mutually_exclusive_group(required=True)
    model.add_argument("--model-name", help="an existing SageMaker model")
    model.add_argument("--model-package-arn", help="a model package version in this stage's group")
    model.add_argument("--model-data-url", help="s3://<artifacts bucket>/.../model.tar.gz")
    batch.add_argument("--input", required=True, help="s3://<data bucket>/<prefix>/ holding .jsonl files")
    batch.add_argument("--output", required=True, help="s3://<data bucket>/<prefix>/ for the results")
    batch.add_argument("--instance-type", required=True)
    batch.add_argument("--instance-count", type=int, default=1)
    batch.add_argument("--wait", action="store_true")
    batch.add_argument("--poll-seconds", type=float, default=15.0)

    local_cli.add_parsers(commands, _Parser, _stage_args)
    return parser


def _pairs(values: list[str], flag: str) -> dict[str, str]:
    pairs: dict[str, str] = {}
    for value in values:
        name, sep, text = value.partition("=")
        if not sep or not name.strip():
            raise UsageError(f"{flag} {value!r}: expected NAME=VALUE")
        pairs[name.strip()] = text
    return pairs


def execution_name(dataset_name: str, version: str) -> str:
    """``<dataset>-<version>-<time>-<random>``: Step Functions' characters, at most 80."""
    stem = re.sub(r"[^A-Za-z0-9_-]+", "-", f"{dataset_name}-{version}").strip("-")[:50]
    return f"{stem}-{time.strftime('%Y%m%dT%H%M%S', time.gmtime())}-{secrets.token_hex(3)}"


class Cli:
    """The subcommands, with the boto3 session injected (tests pass one under moto)."""

    def __init__(self, args: argparse.Namespace, session: Any, out: Any):
        self.args, self.session, self.out = args, session, out

    def print(self, *parts: Any) -> None:
        print(*parts, file=self.out)

    def resources(self) -> StageResources:
        return resolve(self.session, find_stage(self.args.config, self.args.team, self.args.stage))

    def client(self, service: str, resources: StageResources) -> Any:
        return self.session.client(service, region_name=resources.config.region)

    def _machine(self, arn: str | None, what: str, stack: str) -> str:
        if not arn:
            raise RuntimeFailure(f"the {what} state machine is not deployed: no output in stack {stack}")
        return arn

    # --- submit ---------------------------------------------------------------------------------------
    def submit(self) -> int:
        args, res = self.args, self.resources()
        dataset = args.dataset
        if not dataset.startswith("s3://"):
            dataset = f"s3://{res.data_bucket}/{DATASETS_PREFIX}{dataset.strip('/')}/"
        execution_input: dict[str, Any] = {
            "dataset": dataset,
            "task": args.task,
            "base_model": args.base_model,
            "hyperparameters": _pairs(args.hp, "--hp"),
            "instance_count": args.instance_count,
        }
        for key in ("method", "instance_type", "spot", "deploy_to", "threshold"):
            if getattr(args, key) is not None:
                execution_input[key] = getattr(args, key)
        settings = settings_for_stage(res.config, res.data_bucket, res.artifacts_bucket)
        result = validate_request(execution_input, settings, self.client("s3", res))
        for warning in result["warnings"]:
            self.print(f"warning: {warning}")
        self.print(
            f"valid: {result['train_files']} train and {result['validation_files']} validation files "
            f"({', '.join(result['formats'])}); {result['instance_count']} x {result['instance_type']}"
            f"{' (spot)' if result['spot'] else ''}"
        )
        if args.dry_run:
            self.print(json.dumps(execution_input, indent=2))
            return 0
        arn = self._machine(
            res.fine_tune_state_machine_arn, "FineTune", stack_name(res.config.qualified_name, "training")
        )
        stepfunctions = self.client("stepfunctions", res)
        name = execution_name(result["dataset_name"], result["dataset_version"])
        started = stepfunctions.start_execution(stateMachineArn=arn, name=name, input=json.dumps(execution_input))
        self.print(f"started {name}\n  {started['executionArn']}")
        return self._wait(stepfunctions, started["executionArn"]) if args.wait else 0

    def _wait(self, stepfunctions: Any, execution_arn: str) -> int:
        seen = 0
        while True:
            history = stepfunctions.get_execution_history(executionArn=execution_arn, maxResults=1000)["events"]
            for event in history[seen:]:
                if event["type"].endswith("StateEntered"):
                    self.print(f"  {event['timestamp']:%H:%M:%S} {event['stateEnteredEventDetails']['name']}")
            seen = len(history)
            described = stepfunctions.describe_execution(executionArn=execution_arn)
            if described["status"] in _TERMINAL:
                self.print(f"{described['status']}")
                if described["status"] != "SUCCEEDED":
                    self.print(f"  {described.get('error', '')}: {described.get('cause', '')}")
                    return 1
                return 0
            time.sleep(self.args.poll_seconds)

    # --- status ---------------------------------------------------------------------------------------
    def _execution_arn(self, res: StageResources, machine_arn: str, execution: str) -> str:
        if execution.startswith("arn:"):
            return execution
        return machine_arn.replace(":stateMachine:", ":execution:") + f":{execution}"

    def status(self) -> int:
        res = self.resources()
        arn = self._machine(
            res.fine_tune_state_machine_arn, "FineTune", stack_name(res.config.qualified_name, "training")
        )
        stepfunctions = self.client("stepfunctions", res)
        if self.args.execution:
            described = stepfunctions.describe_execution(
                executionArn=self._execution_arn(res, arn, self.args.execution)
            )
            self.print(
                f"{described['name']}: {described['status']} (started {described['startDate']:%Y-%m-%d %H:%M:%S})"
            )
            if described.get("error") or described.get("cause"):
                self.print(f"  {described.get('error', '')}: {described.get('cause', '')}")
            if described.get("output"):
                self.print(described["output"])
            return 0
        executions = stepfunctions.list_executions(stateMachineArn=arn, maxResults=self.args.max)["executions"]
        if not executions:
            self.print("no executions yet")
        for item in executions:
            self.print(f"{item['name']:<70} {item['status']:<10} {item['startDate']:%Y-%m-%d %H:%M:%S}")
        return 0

    # --- logs -----------------------------------------------------------------------------------------
    def logs(self) -> int:
        res = self.resources()
        job = self.args.job
        if not job:
            arn = self._machine(
                res.fine_tune_state_machine_arn, "FineTune", stack_name(res.config.qualified_name, "training")
            )
            job = self._training_job(
                self.client("stepfunctions", res), self._execution_arn(res, arn, self.args.execution)
            )
        logs = self.client("logs", res)
        streams = logs.describe_log_streams(logGroupName=TRAINING_LOG_GROUP, logStreamNamePrefix=f"{job}/")
        if not streams["logStreams"]:
            raise RuntimeFailure(f"no log streams for training job {job} in {TRAINING_LOG_GROUP} yet")
        for stream in streams["logStreams"]:
            self.print(f"== {stream['logStreamName']}")
            token: str | None = None
            while True:
                kwargs: dict[str, str] = {"nextToken": token} if token else {}
                page = logs.get_log_events(
                    logGroupName=TRAINING_LOG_GROUP, logStreamName=stream["logStreamName"], startFromHead=True, **kwargs
                )
                for event in page["events"]:
                    self.print(event["message"])
                if not page["events"] or page.get("nextForwardToken") == token:
                    break
                token = page.get("nextForwardToken")
        return 0

    def _training_job(self, stepfunctions: Any, execution_arn: str) -> str:
        history = stepfunctions.get_execution_history(executionArn=execution_arn, maxResults=1000)["events"]
        for event in history:
            details = event.get("taskSubmittedEventDetails") or event.get("taskScheduledEventDetails") or {}
            if details.get("resourceType") == "sagemaker" and "createTrainingJob" in details.get("resource", ""):
                text = details.get("output") or details.get("parameters") or "{}"
                name = json.loads(text).get("TrainingJobName")
                if isinstance(name, str) and name:
                    return name
        raise RuntimeFailure(f"execution {execution_arn} has not started a training job (yet)")

    # --- prepare --------------------------------------------------------------------------------------
    def prepare(self) -> int:
        args = self.args
        if args.upload and not (args.team and args.stage):
            raise UsageError("prepare --upload needs --team and --stage")
        name = args.name or args.input.stem
        for flag, value in (("--name", name), ("--version", args.version)):
            if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}", value):
                raise UsageError(f"{flag} {value!r}: use letters, digits, '.', '_' and '-'")
        manifest = prepare_module.prepare(
            source=args.input,
            task=args.task,
            output=args.output,
            mapping=_pairs(args.map, "--map"),
            name=name,
            version=args.version,
            validation_fraction=args.validation_fraction,
            seed=args.seed,
            tokenizer=args.tokenizer,
            max_seq_length=args.max_seq_length,
            encoding=args.encoding,
        )
        for line in prepare_module.summary(manifest):
            self.print(line)
        self.print(f"wrote {args.output}")
        if args.upload:
            res = self.resources()
            prefix = dataset_prefix(name, args.version)
            s3 = self.client("s3", res)
            if s3.list_objects_v2(Bucket=res.data_bucket, Prefix=prefix, MaxKeys=1).get("KeyCount", 0):
                raise UsageError(f"s3://{res.data_bucket}/{prefix} already exists; choose a new --version")
            for relative in [*manifest["files"], "manifest.json"]:  # the manifest last: it may trigger a run
                s3.upload_file(str(args.output / relative), res.data_bucket, prefix + relative)
            self.print(f"uploaded s3://{res.data_bucket}/{prefix}")
        return 0

    # --- models stage -------------------------------------------------------------------------------
    def models(self) -> int:
        args = self.args
        if not STAGED_MODEL_NAME.match(args.name):
            raise UsageError(f"--name {args.name!r}: use letters, digits, '.', '_' and '-' (no '/')")
        source = Path(args.source)
        if not source.exists():
            if not HUB_ID.match(args.source):
                raise UsageError(f"{args.source}: no such directory (nor a hub id org/name)")
            source = self._download(args.source)
        if not source.is_dir() or not ((source / "config.json").is_file() or list(source.glob("*.gguf"))):
            raise UsageError(f"{source}: not a Hugging Face model directory (no config.json or .gguf file)")
        if args.local:
            return local_cli.stage_model(args, source, self.out)
        res = self.resources()
        s3 = self.client("s3", res)
        prefix = base_model_prefix(args.name)
        files = sorted(
            p
            for p in source.rglob("*")
            if p.is_file() and not any(part.startswith(".") for part in p.relative_to(source).parts)
        )
        for path in files:
            s3.upload_file(str(path), res.artifacts_bucket, prefix + path.relative_to(source).as_posix())
        self.print(f"uploaded {len(files)} files to s3://{res.artifacts_bucket}/{prefix}")
        if args.name not in res.config.training.base_models:
            self.print(
                f"note: add {args.name} to training.base_models for {res.config.qualified_name} in "
                "config/teams.yaml; Validate rejects base models not listed there"
            )
        return 0

    def _download(self, hub_id: str) -> Path:
        try:
            from huggingface_hub import snapshot_download
        except ImportError:
            raise UsageError(f"{hub_id}: downloading from the hub needs huggingface_hub") from None
        try:
            return Path(snapshot_download(hub_id, local_dir=tempfile.mkdtemp(prefix="finetune-model-")))
        except Exception as error:
            raise RuntimeFailure(f"{hub_id}: download failed ({error})") from None

    # --- local -----------------------------------------------------------------------------------------
    def local(self) -> int:
        return local_cli.main(self.args, self.out)

    # --- batch ------------------------------------------------------------------------------------------
    def batch(self) -> int:
        args, res = self.args, self.resources()
        # BatchInfer's Validate state admits only these prefixes: say so before starting an execution.
        for flag, uri, root in (
            ("--input", args.input, BATCH_INPUT_PREFIX),
            ("--output", args.output, BATCH_OUTPUT_PREFIX),
        ):
            allowed = f"s3://{res.data_bucket}/{root}"
            if not uri.startswith(allowed) or not uri[len(allowed) :].strip("/"):
                raise UsageError(
                    f"{flag} {uri!r}: must be a prefix under {allowed} (BatchInfer reads and writes only there)"
                )
        source, target = args.input.rstrip("/") + "/", args.output.rstrip("/") + "/"
        if args.model_data_url and not args.model_data_url.startswith(f"s3://{res.artifacts_bucket}/"):
            raise UsageError(f"--model-data-url {args.model_data_url!r}: must be in s3://{res.artifacts_bucket}/")
        if args.instance_count < 1:
            raise UsageError(f"--instance-count {args.instance_count}: must be >= 1")
        s3 = self.client("s3", res)
        prefix = source[len(f"s3://{res.data_bucket}/") :]
        listed = s3.list_objects_v2(Bucket=res.data_bucket, Prefix=prefix).get("Contents", [])
        if not any(item["Key"].endswith(".jsonl") for item in listed):
            raise UsageError(f"--input {source}: holds no .jsonl files")
        arn = self._machine(
            res.batch_infer_state_machine_arn, "BatchInfer", stack_name(res.config.qualified_name, "inference")
        )
        execution_input = {
            key: value
            for key, value in (
                ("model_name", args.model_name),
                ("model_package_arn", args.model_package_arn),
                ("model_data_url", args.model_data_url),
            )
            if value
        }
        execution_input.update(
            {
                "input": source,
                "output": target,
                "instance_type": args.instance_type,
                "instance_count": args.instance_count,
            }
        )
        stepfunctions = self.client("stepfunctions", res)
        name = execution_name("batch", prefix.strip("/").rsplit("/", 1)[-1])
        started = stepfunctions.start_execution(stateMachineArn=arn, name=name, input=json.dumps(execution_input))
        self.print(f"started {name}\n  {started['executionArn']}")
        return self._wait(stepfunctions, started["executionArn"]) if args.wait else 0


def main(argv: Sequence[str] | None = None, *, session: Any = None, out: Any = None, err: Any = None) -> int:
    """Run the tool; returns the exit code."""
    out, err = out or sys.stdout, err or sys.stderr
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
        if session is None:
            import boto3

            session = boto3.Session(profile_name=args.profile)
        cli = Cli(args, session, out)
        command = "models" if args.command == "models" else args.command
        status: int = getattr(cli, command)()
        return status
    except UsageError as error:
        print(f"finetune: error: {error}", file=err)
        return 2
    except InvalidRequest as error:
        print("finetune: the run is not valid:", file=err)
        for problem in error.problems:
            print(f"  - {problem}", file=err)
        return 2
    except RuntimeFailure as error:
        print(f"finetune: {error}", file=err)
        return 1
    except (ClientError, BotoCoreError) as error:
        print(f"finetune: AWS error: {error}", file=err)
        return 1
    except OSError as error:
        print(f"finetune: {error}", file=err)
        return 1
    except KeyboardInterrupt:
        return 130


__all__ = ["build_parser", "execution_name", "main"]
