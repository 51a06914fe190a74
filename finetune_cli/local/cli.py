"""The ``finetune local`` subcommands: run, serve, batch (a team stage on this machine, no AWS account)."""

from __future__ import annotations

import argparse
import contextlib
import json
import re
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from finetune.contract import BATCH_INPUT_PREFIX, BATCH_OUTPUT_PREFIX, METHODS, TASKS, base_model_prefix

from ..errors import UsageError

if TYPE_CHECKING:  # the stage (moto, the assembly) loads only when a local command runs
    from .stage import LocalStage

#: The run's dataset version when none is given: a new prefix per run, as `prepare --upload` requires.
_VERSION = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")


def add_parsers(commands: Any, parser_class: type, stage_args: Any) -> None:
    local = commands.add_parser("local", help="run a team stage's pipelines and API on this machine (no AWS)")
    sub = local.add_subparsers(dest="local_command", required=True, parser_class=parser_class)

    run = sub.add_parser("run", help="prepare a dataset and run the stage's synthesized FineTune pipeline locally")
    stage_args(run)
    run.add_argument("input", type=Path, help="CSV/JSONL/Parquet file (prepared first), or a prepared dataset folder")
    run.add_argument("--task", required=True, choices=TASKS)
    run.add_argument("--base-model", required=True, help="a name on the stage's training.base_models")
    run.add_argument("--map", action="append", default=[], metavar="FIELD=COLUMN", help="column mapping (repeatable)")
    run.add_argument("--hp", action="append", default=[], metavar="NAME=VALUE", help="hyperparameter (repeatable)")
    run.add_argument("--method", choices=METHODS)
    run.add_argument("--deploy-to", help="endpoint short name to deploy to when the gate passes")
    run.add_argument("--threshold", type=float, help="gate threshold on the task's main metric")
    run.add_argument("--name", help="dataset name (default: the input's stem)")
    run.add_argument("--version", help="dataset version (default: local-<time>)")
    run.add_argument("--validation-fraction", type=float, default=0.1, help="held out by prepare (data files only)")
    run.add_argument(
        "--interrupt-after-step",
        type=int,
        metavar="N",
        help="reclaim the first spot training job's instance after step N (SIGTERM), as a spot "
        "interruption would; the Train step's retry resumes from its checkpoint",
    )
    _local_args(run)
    run.add_argument("--json", action="store_true", help="print one JSON object with the outcome last")

    batch = sub.add_parser("batch", help="run the stage's synthesized BatchInfer pipeline over local JSONL files")
    stage_args(batch)
    batch.add_argument("input", type=Path, help="a .jsonl file or a folder of them")
    model = batch.add_mutually_exclusive_group(required=True)
    model.add_argument("--model-name", help="an existing (local) SageMaker model")
    model.add_argument("--model-package-arn", help="a model package version a local run registered")
    model.add_argument("--model-data-url", help="s3://<artifacts bucket>/.../model.tar.gz in the local store")
    batch.add_argument("--output", type=Path, required=True, help="local folder for the .out files")
    batch.add_argument("--instance-type", help="one of the stage's training.instance_types (default: the first)")
    batch.add_argument("--json", action="store_true", help="print one JSON object with the outcome last")
    _local_args(batch)

    serve = sub.add_parser("serve", help="the stage's inference API on http://127.0.0.1:PORT/v1 (real proxy handler)")
    stage_args(serve)
    serve.add_argument("--port", type=int, default=8080)
    serve.add_argument("--host", default="127.0.0.1")
    _local_args(serve)


def _local_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--state-dir", type=Path, help="local state folder (default: $FINETUNE_LOCAL_STATE or ./.finetune-local)"
    )


def _pairs(values: list[str], flag: str) -> dict[str, str]:
    pairs = {}
    for value in values:
        name, sep, text = value.partition("=")
        if not sep or not name.strip():
            raise UsageError(f"{flag} {value!r}: expected NAME=VALUE")
        pairs[name.strip()] = text
    return pairs


def _stage(args: argparse.Namespace, out: Any) -> LocalStage:
    from .stage import LocalStage, state_dir

    return LocalStage(
        config_path=args.config, team=args.team, stage=args.stage, state=state_dir(args.state_dir), out=out
    )


def run(args: argparse.Namespace, out: Any) -> int:
    from ..main import execution_name
    from .run import execute, print_result, summarize, upload_dataset

    started = time.monotonic()
    name = args.name or args.input.stem
    version = args.version or time.strftime("local-%Y%m%dT%H%M%S", time.gmtime())
    for flag, value in (("--name", name), ("--version", version)):
        if not _VERSION.fullmatch(value):
            raise UsageError(f"{flag} {value!r}: use letters, digits, '.', '_' and '-'")
    if args.interrupt_after_step is not None and args.interrupt_after_step < 1:
        raise UsageError(f"--interrupt-after-step {args.interrupt_after_step}: must be a step number >= 1")
    stage = _stage(args, out)
    stage.stage_packaged_model(args.base_model)
    execution = execution_name(name, version)
    run_dir = stage.folder / "runs" / execution
    run_dir.mkdir(parents=True, exist_ok=True)
    with stage.session(run_dir) as services:
        services.interrupt_training_after_step = args.interrupt_after_step
        dataset = upload_dataset(
            stage,
            args.input,
            task=args.task,
            mapping=_pairs(args.map, "--map"),
            name=name,
            version=version,
            work=run_dir,
            out=out,
            validation_fraction=args.validation_fraction,
        )
        execution_input: dict[str, Any] = {
            "dataset": dataset,
            "task": args.task,
            "base_model": args.base_model,
            "hyperparameters": _pairs(args.hp, "--hp"),
            "instance_count": 1,
        }
        for key in ("method", "deploy_to", "threshold"):
            if getattr(args, key) is not None:
                execution_input[key] = getattr(args, key)
        described, history = execute(
            stage,
            layer="training",
            machine="FineTune",
            execution_name=execution,
            execution_input=execution_input,
            out=out,
        )
        result = summarize(stage, described, history, time.monotonic() - started)
    print_result(result, out)
    if args.json:
        print(json.dumps(result.as_json()), file=out)
    return 0 if result.status == "SUCCEEDED" else 1


def serve(args: argparse.Namespace, out: Any) -> int:
    from .serve import LocalApi

    api = LocalApi(_stage(args, out), port=args.port, host=args.host)
    print("loading the models local runs deployed:", file=out, flush=True)
    with api.running(out):
        print(f"serving {api.stage.config.qualified_name} on {api.url} (Ctrl-C stops)", file=out, flush=True)
        print(f"  curl -s {api.url}/models", file=out, flush=True)
        with contextlib.suppress(KeyboardInterrupt):
            threading.Event().wait()
    return 0


def stage_model(args: argparse.Namespace, source: Path, out: Any) -> int:
    """``finetune models stage --local``: a base model into the local artifacts bucket."""
    stage = _stage(args, out)
    target = stage.base_model_folder(args.name)
    count = stage.copy_model(source, target)
    print(
        f"staged {count} files to s3://{stage.artifacts_bucket}/{base_model_prefix(args.name)} (local: {target})",
        file=out,
    )
    if args.name not in stage.config.training.base_models:
        print(
            f"note: add {args.name} to training.base_models for {stage.config.qualified_name} in config/teams.yaml; "
            "Validate rejects base models not listed there",
            file=out,
        )
    return 0


def batch(args: argparse.Namespace, out: Any) -> int:
    from ..main import execution_name
    from .run import execute, print_result, summarize

    started = time.monotonic()
    files = sorted(args.input.rglob("*.jsonl")) if args.input.is_dir() else [args.input]
    if not files or not all(f.is_file() and f.suffix == ".jsonl" for f in files):
        raise UsageError(f"{args.input}: give a .jsonl file or a folder holding .jsonl files")
    stage = _stage(args, out)
    execution = execution_name("batch", args.input.stem)
    run_dir = stage.folder / "runs" / execution
    with stage.session(run_dir):
        # BatchInfer reads and writes only under the data bucket's batch prefixes.
        input_prefix, output_prefix = f"{BATCH_INPUT_PREFIX}{execution}/", f"{BATCH_OUTPUT_PREFIX}{execution}/"
        root = args.input if args.input.is_dir() else args.input.parent
        for path in files:
            stage.client("s3").upload_file(
                str(path), stage.data_bucket, f"{input_prefix}{path.relative_to(root).as_posix()}"
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
                "input": f"s3://{stage.data_bucket}/{input_prefix}",
                "output": f"s3://{stage.data_bucket}/{output_prefix}",
                "instance_type": args.instance_type or stage.config.training.instance_types[0],
                "instance_count": 1,
            }
        )
        described, history = execute(
            stage,
            layer="inference",
            machine="BatchInfer",
            execution_name=execution,
            execution_input=execution_input,
            out=out,
        )
        result = summarize(stage, described, history, time.monotonic() - started)
        s3 = stage.client("s3")
        written = []
        for item in s3.list_objects_v2(Bucket=stage.data_bucket, Prefix=output_prefix).get("Contents", []):
            target = args.output / item["Key"][len(output_prefix) :]
            target.parent.mkdir(parents=True, exist_ok=True)
            s3.download_file(stage.data_bucket, item["Key"], str(target))
            written.append(str(target))
    print_result(result, out)
    for path in written:
        print(f"  wrote {path}", file=out)
    if args.json:
        print(json.dumps({**result.as_json(), "outputs": written}), file=out)
    return 0 if result.status == "SUCCEEDED" else 1


def main(args: argparse.Namespace, out: Any) -> int:
    return {"run": run, "serve": serve, "batch": batch}[args.local_command](args, out)
