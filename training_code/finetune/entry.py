"""Entry point: maps SageMaker's environment or local flags into TrainConfig, runs the recipe, reports failures.

Heavy imports (torch, transformers) happen only after the configuration and the data have been validated, so bad
input fails in about a second with a clear reason.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import traceback
from pathlib import Path

from .config import ConfigError, TrainConfig
from .errors import TrainingError
from .formats import DataError

_PATH_FLAGS = {
    "train": ("train_path", "SM_CHANNEL_TRAIN", None, "training JSONL file or directory (the train channel)"),
    "validation": ("validation_path", "SM_CHANNEL_VALIDATION", None, "validation JSONL file or directory (optional)"),
    "model_channel": ("model_channel", "SM_CHANNEL_MODEL", None, "directory with base weights (the model channel)"),
    "model_dir": ("model_dir", "SM_MODEL_DIR", "model", "where the fine-tuned model and reports go"),
    "output_dir": ("output_dir", "SM_OUTPUT_DIR", "output", "where the failure reason is written"),
    "checkpoint_dir": (
        "checkpoint_dir",
        "FINETUNE_CHECKPOINT_DIR",
        "checkpoints",
        "checkpoints, resumed from when present",
    ),
}


def build_parser() -> argparse.ArgumentParser:
    """Flags: every hyperparameter as ``--name value`` (strings, as SageMaker passes them) plus the paths."""
    parser = argparse.ArgumentParser(
        prog="train.py",
        allow_abbrev=False,
        description=(
            "Fine-tune a causal LM (LoRA/QLoRA/full) or a text classifier (full/LoRA) on JSONL data. "
            "Under SageMaker the channels and directories come from SM_* variables; locally pass them as flags, e.g. "
            "python training_code/train.py --task classification --base_model DIR --train samples/sst2/train.jsonl "
            "--validation samples/sst2/validation.jsonl --model_dir out/model --progress true"
        ),
    )
    paths = parser.add_argument_group(
        "paths (default: SageMaker's SM_* variables, else ./model, ./output, ./checkpoints)"
    )
    for flag, (_, env, default, help_text) in _PATH_FLAGS.items():
        where = "/opt/ml/checkpoints on SageMaker" if flag == "checkpoint_dir" else f"${env}"
        paths.add_argument(f"--{flag}", default=None, help=f"{help_text} (default: {where}, else {default})")
    hps = parser.add_argument_group("hyperparameters (strings; booleans true/false)")
    docs = _field_docs()
    for field in dataclasses.fields(TrainConfig):
        if not field.metadata.get("path"):
            hps.add_argument(f"--{field.name}", default=None, help=docs.get(field.name, ""))
    return parser


def _field_docs() -> dict[str, str]:
    """Field docstrings of TrainConfig, read from its source (they are attribute docstrings)."""
    import ast
    import inspect
    from itertools import pairwise

    docs: dict[str, str] = {}
    class_def = ast.parse(inspect.getsource(TrainConfig)).body[0]
    if not isinstance(class_def, ast.ClassDef):
        raise TypeError(f"the source of TrainConfig starts with {type(class_def).__name__}, not a class")
    for node, following in pairwise(class_def.body):
        if (
            isinstance(node, ast.AnnAssign)
            and isinstance(node.target, ast.Name)
            and isinstance(following, ast.Expr)
            and isinstance(following.value, ast.Constant)
        ):
            docs[node.target.id] = str(following.value.value).replace("%", "%%")
    return docs


def config_from(argv: list[str], environ: dict[str, str]) -> TrainConfig:
    """The configuration from flags and the SageMaker environment (flags win). Raises ConfigError."""
    args, unknown = build_parser().parse_known_args(argv)
    hyperparameters: dict[str, str] = {}
    if environ.get("SM_HPS"):
        try:
            hyperparameters.update({k: v for k, v in json.loads(environ["SM_HPS"]).items()})
        except json.JSONDecodeError as err:
            raise ConfigError([f"SM_HPS is not valid JSON ({err.msg})"]) from None
    given = vars(args)
    hyperparameters.update({k: v for k, v in given.items() if k not in _PATH_FLAGS and v is not None})
    problems = [f"{u}: unknown command-line argument" for u in unknown if u.startswith("--")]
    paths = {}
    # Under the SageMaker toolkit SM_MODEL_DIR is set; checkpoints go beside it (/opt/ml/checkpoints).
    on_sagemaker = "SM_MODEL_DIR" in environ
    for flag, (name, env, default, _) in _PATH_FLAGS.items():
        value = given[flag] or environ.get(env)
        if value is None and flag == "checkpoint_dir" and on_sagemaker:
            value = str(Path(environ.get("SAGEMAKER_BASE_DIR", "/opt/ml")) / "checkpoints")
        paths[name] = value or default
    try:
        config = TrainConfig.from_hyperparameters(hyperparameters, **paths)
    except ConfigError as err:
        raise ConfigError(problems + err.problems) from None
    if problems:
        raise ConfigError(problems)
    return config


def _write_failure(output_dir: str, reason: str) -> None:
    if int(os.environ.get("RANK", 0)) != 0:
        return
    try:
        Path(output_dir).mkdir(parents=True, exist_ok=True)
        (Path(output_dir) / "failure").write_text(reason + "\n")
    except OSError as err:
        print(f"could not write the failure file in {output_dir}: {err}", file=sys.stderr)


def main(argv: list[str] | None = None, environ: dict[str, str] | None = None) -> int:
    """Run; returns the process exit code (0 success, 1 failure, 143 stopped by SIGTERM after a checkpoint)."""
    argv = sys.argv[1:] if argv is None else argv
    environ = dict(os.environ) if environ is None else environ
    output_dir = environ.get("SM_OUTPUT_DIR", "output")
    for i, arg in enumerate(argv):
        if arg == "--output_dir" and i + 1 < len(argv):
            output_dir = argv[i + 1]
    try:
        config = config_from(argv, environ)
        output_dir = config.output_dir
        from .recipe import Interrupted, run  # torch is imported here, after the inputs are validated

        try:
            run(config)
        except Interrupted as stop:
            print(
                f"stopped by SIGTERM: checkpoint at step {stop.step} in {stop.path}; a restart resumes from it",
                file=sys.stderr,
            )
            return 143
        return 0
    except ConfigError as err:
        reason = "Bad hyperparameters: " + "; ".join(err.problems) + "."
    except DataError as err:
        reason = f"Bad training data: {err}. Fix the file (one JSON object per line, one format per file) and rerun."
    except TrainingError as err:
        reason = f"Training failed: {err}."
    except MemoryError:
        reason = "Out of memory (host RAM): lower batch_size or max_seq_length, or use a larger instance."
    except Exception as err:  # the reason must reach the failure file whatever happened
        if type(err).__name__ == "OutOfMemoryError":
            reason = (
                "Out of GPU memory: lower batch_size (then raise gradient_accumulation_steps to keep the "
                "effective batch), lower max_seq_length, set gradient_checkpointing=true, use method=qlora, "
                "or (method=full on several GPUs) distributed_strategy=fsdp to shard the model across them."
            )
        else:
            traceback.print_exc()
            reason = f"Unexpected error: {type(err).__name__}: {err}"
    print(reason, file=sys.stderr)
    _write_failure(output_dir, reason)
    return 1
