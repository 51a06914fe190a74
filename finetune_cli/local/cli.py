"""The ``finetune local`` subcommands: run, serve, batch (a team stage on this machine, no AWS account)."""

from __future__ import annotations

import argparse
import json
import re
import threading
import time
from pathlib import Path
from typing import Any

from finetune.contract import TASKS

from ..errors import UsageError

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
    run.add_argument("--method", choices=["lora", "qlora", "full"])
    run.add_argument("--deploy-to", help="endpoint short name to deploy to when the gate passes")
    run.add_argument("--threshold", type=float, help="gate threshold on the task's main metric")
    run.add_argument("--name", help="dataset name (default: the input's stem)")
    run.add_argument("--version", help="dataset version (default: local-<time>)")
    run.add_argument("--validation-fraction", type=float, default=0.1, help="held out by prepare (data files only)")
    _local_args(run)
    run.add_argument("--json", action="store_true", help="print one JSON object with the outcome last")

    serve = sub.add_parser("serve", help="the stage's inference API on http://127.0.0.1:PORT/v1 (real proxy handler)")
    stage_args(serve)
    serve.add_argument("--port", type=int, default=8080)
    serve.add_argument("--host", default="127.0.0.1")
    _local_args(serve)


def _local_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--state-dir", type=Path,
                        help="local state folder (default: $FINETUNE_LOCAL_STATE or ./.finetune-local)")


def _pairs(values: list[str], flag: str) -> dict[str, str]:
    pairs = {}
    for value in values:
        name, sep, text = value.partition("=")
        if not sep or not name.strip():
            raise UsageError(f"{flag} {value!r}: expected NAME=VALUE")
        pairs[name.strip()] = text
    return pairs


def _stage(args: argparse.Namespace, out: Any):
    from .stage import LocalStage, state_dir

    return LocalStage(config_path=args.config, team=args.team, stage=args.stage, state=state_dir(args.state_dir),
                      out=out)


def run(args: argparse.Namespace, out: Any) -> int:
    from ..main import execution_name
    from .run import execute, print_result, summarize, upload_dataset

    started = time.monotonic()
    name = args.name or args.input.stem
    version = args.version or time.strftime("local-%Y%m%dT%H%M%S", time.gmtime())
    for flag, value in (("--name", name), ("--version", version)):
        if not _VERSION.fullmatch(value):
            raise UsageError(f"{flag} {value!r}: use letters, digits, '.', '_' and '-'")
    stage = _stage(args, out)
    stage.stage_packaged_model(args.base_model)
    execution = execution_name(name, version)
    run_dir = stage.folder / "runs" / execution
    run_dir.mkdir(parents=True, exist_ok=True)
    with stage.session(run_dir):
        dataset = upload_dataset(stage, args.input, task=args.task, mapping=_pairs(args.map, "--map"), name=name,
                                 version=version, work=run_dir, out=out,
                                 validation_fraction=args.validation_fraction)
        execution_input: dict[str, Any] = {"dataset": dataset, "task": args.task, "base_model": args.base_model,
                                           "hyperparameters": _pairs(args.hp, "--hp"), "instance_count": 1}
        for key in ("method", "deploy_to", "threshold"):
            if getattr(args, key) is not None:
                execution_input[key] = getattr(args, key)
        described, history = execute(stage, layer="training", machine="FineTune", execution_name=execution,
                                     execution_input=execution_input, out=out)
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
        try:
            threading.Event().wait()
        except KeyboardInterrupt:
            pass
    return 0


def stage_model(args: argparse.Namespace, source: Path, out: Any) -> int:
    """``finetune models stage --local``: a base model into the local artifacts bucket."""
    stage = _stage(args, out)
    target = stage.base_model_folder(args.name)
    count = stage.copy_model(source, target)
    print(f"staged {count} files to s3://{stage.artifacts_bucket}/models/base/{args.name}/ (local: {target})", file=out)
    if args.name not in stage.config.training.base_models:
        print(f"note: add {args.name} to training.base_models for {stage.config.qualified_name} in config/teams.yaml; "
              "Validate rejects base models not listed there", file=out)
    return 0


def main(args: argparse.Namespace, out: Any) -> int:
    return {"run": run, "serve": serve}[args.local_command](args, out)
