"""The execution input's schema and every check that needs no AWS call (shared with the ``finetune`` CLI).

Hyperparameter values are checked by the training container's own ``TrainConfig`` so the two never disagree.
"""

from __future__ import annotations

import hashlib
import math
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, StrictBool, StrictFloat, StrictInt, StrictStr, ValidationError

from finetune.config import ConfigError, TrainConfig
from finetune.formats import check_json_value
from finetune.metrics import ACCURACY, EVAL_LOSS

from .errors import InvalidRequest
from .settings import DATASETS_PREFIX, HUB_ID, STAGED_MODEL_NAME, ValidateSettings

if TYPE_CHECKING:
    from pydantic_core import ErrorDetails

Task = Literal["causal-lm", "classification"]
Method = Literal["lora", "qlora", "full"]
HyperparameterValue = StrictStr | StrictBool | StrictInt | StrictFloat

#: SageMaker's limit on MaxWaitTimeInSeconds and MaxRuntimeInSeconds (28 days).
SAGEMAKER_MAX_SECONDS = 28 * 24 * 3600
#: Keys of the execution input that are top-level, never hyperparameters.
_TOP_LEVEL_ONLY = ("task", "method", "base_model")
#: Deepest nesting an execution input may have (it needs 2: hyperparameters hold scalars).
MAX_INPUT_DEPTH = 8
_SEGMENT = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
_ENDPOINT_KIND = {"causal-lm": "llm", "classification": "classifier"}


class ExecutionInput(BaseModel):
    """The FineTune state machine's execution input (unknown keys are errors: a typo never passes silently)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    dataset: StrictStr
    """``s3://<team data bucket>/datasets/<name>/<version>/`` holding ``train/`` and optionally ``validation/``."""
    task: Task
    """``causal-lm`` or ``classification``."""
    base_model: StrictStr
    """A base model the team may fine-tune: a staged name (``models/base/<name>/``) or a hub id."""
    method: Method | None = None
    """``lora``, ``qlora`` (causal-lm only) or ``full``; default: lora for causal-lm, full for classification."""
    hyperparameters: dict[str, HyperparameterValue] = {}
    """Training hyperparameters (``TrainConfig`` names); strings, numbers or booleans."""
    instance_type: StrictStr | None = None
    """SageMaker instance type; default: the team's first allowed type."""
    instance_count: StrictInt = 1
    """Instances; more than one runs torchrun across them."""
    spot: StrictBool | None = None
    """Managed spot training; default: the team's setting."""
    deploy_to: StrictStr | None = None
    """Short name of an endpoint of this stage to deploy the model to when it passes the gate."""
    threshold: StrictFloat | StrictInt | None = None
    """Gate threshold on the task's main metric; default: the team's."""


@dataclass(frozen=True)
class CheckedRequest:
    """An execution input that passed every local check, with the values the pipeline derives from it."""

    request: ExecutionInput
    config: TrainConfig
    dataset_name: str
    dataset_version: str
    dataset_prefix: str
    """``datasets/<name>/<version>/`` in the data bucket."""
    hyperparameters: dict[str, str]
    base_model_s3_uri: str | None
    instance_type: str
    spot: bool


def _where(location: tuple[Any, ...]) -> str:
    parts = [
        str(part)
        for part in location
        if not (
            isinstance(part, str)
            and ("[" in part or part in ("str", "bool", "int", "float", "literal['lora','qlora','full']", "none"))
        )
    ]
    return ".".join(parts) or "(input)"


def describe_schema_error(error: ErrorDetails) -> str:
    """One pydantic error as ``key: problem (got value)``, in the words of someone writing the input."""
    where, kind, value = _where(error["loc"]), error["type"], error.get("input")
    allowed = ", ".join(ExecutionInput.model_fields)
    if kind == "missing":
        return f"{where}: is required"
    if kind == "extra_forbidden":
        return f"{where}: unknown key (allowed: {allowed})"
    if kind == "literal_error":
        return f"{where}: {value!r} is not one of {error['ctx']['expected']}"
    if kind == "dict_type":
        return f"{where}: must be an object of name -> value, got {type(value).__name__}"
    if (
        kind in ("string_type", "bool_type", "int_type", "float_type")
        and len(error["loc"]) >= 2
        and error["loc"][0] == "hyperparameters"
    ):
        return f"{where}: {value!r} must be a string, number or boolean"
    expected = {
        "string_type": "a string",
        "bool_type": "true or false",
        "int_type": "an integer",
        "float_type": "a number",
    }.get(kind)
    if expected:
        return f"{where}: must be {expected}, got {value!r}"
    return f"{where}: {error['msg']} (got {value!r})"


def parse_input(raw: Any) -> ExecutionInput:
    """The execution input as a typed model, or InvalidRequest naming every bad key."""
    if not isinstance(raw, dict):
        raise InvalidRequest([f"(input): must be a JSON object, got {type(raw).__name__}"])
    # Deep nesting, 64-bit overflow and lone surrogates are refused first: str() of a huge integer raises, and the
    # schema's own messages would print such values.
    problem = check_json_value(raw, max_depth=MAX_INPUT_DEPTH, root="(input)")
    if problem:
        raise InvalidRequest([problem])
    try:
        return ExecutionInput.model_validate(raw)
    except ValidationError as error:
        # Union members report one error each; keep one line per key.
        problems = list(dict.fromkeys(describe_schema_error(e) for e in error.errors()))
        by_key: dict[str, str] = {}
        for problem in problems:
            by_key.setdefault(problem.split(":", 1)[0], problem)
        raise InvalidRequest(list(by_key.values())) from None


def hyperparameter_string(value: HyperparameterValue) -> str:
    """A value as SageMaker passes hyperparameters: a string; booleans as ``true``/``false``."""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def parse_dataset_uri(uri: str, data_bucket: str) -> tuple[str, str, str] | str:
    """``(name, version, prefix)`` of ``s3://<data bucket>/datasets/<name>/<version>/``, or the problem."""
    example = f"s3://{data_bucket}/{DATASETS_PREFIX}<name>/<version>/"
    if not uri.startswith("s3://"):
        return f"dataset: {uri!r} is not an S3 URI; expected {example}"
    bucket, _, key = uri[len("s3://") :].partition("/")
    if bucket != data_bucket:
        return f"dataset: bucket {bucket!r} is not this team stage's data bucket; datasets must be under {example}"
    parts = key.rstrip("/").split("/")
    if len(parts) != 3 or parts[0] + "/" != DATASETS_PREFIX or not all(_SEGMENT.match(p) for p in parts[1:]):
        return f"dataset: {uri!r} is not a dataset version prefix; expected {example}"
    return parts[1], parts[2], f"{DATASETS_PREFIX}{parts[1]}/{parts[2]}/"


def check_request(raw: Any, settings: ValidateSettings) -> CheckedRequest:
    """Every check of an execution input that needs no AWS call; InvalidRequest lists every problem found."""
    request = parse_input(raw)
    problems: list[str] = []

    dataset = parse_dataset_uri(request.dataset, settings.data_bucket)
    if isinstance(dataset, str):
        problems.append(dataset)
        dataset = ("", "", "")

    # Base model: allowed by the team's config; staged names become the model channel, hub ids a hyperparameter.
    base_model_s3_uri: str | None = None
    allowed = settings.allowed_base_models
    if request.base_model not in allowed:
        if allowed:
            problems.append(
                f"base_model: {request.base_model!r} is not allowed for {settings.team}-{settings.stage}; "
                f"allowed: {', '.join(allowed)}"
            )
        else:
            problems.append(
                f"base_model: {request.base_model!r} is not allowed: {settings.team}-{settings.stage} "
                "lists no base models (training.base_models in config/teams.yaml)"
            )
    elif not HUB_ID.match(request.base_model) and STAGED_MODEL_NAME.match(request.base_model):
        base_model_s3_uri = f"s3://{settings.artifacts_bucket}/models/base/{request.base_model}/"

    # Hyperparameters: checked by the training container's own TrainConfig.
    hyperparameters: dict[str, str] = {}
    for name, value in request.hyperparameters.items():
        if name in _TOP_LEVEL_ONLY:
            problems.append(
                f'hyperparameters.{name}: give {name} as the top-level "{name}" key, not as a hyperparameter'
            )
        elif name.startswith("sagemaker_"):
            problems.append(f"hyperparameters.{name}: names starting with sagemaker_ are reserved for SageMaker")
        else:
            hyperparameters[name] = hyperparameter_string(value)
    hyperparameters["task"] = request.task
    if request.method is not None:
        hyperparameters["method"] = request.method
    if base_model_s3_uri is None:
        hyperparameters["base_model"] = request.base_model  # a hub id: the training container fetches it
    config: TrainConfig | None = None
    try:
        config = TrainConfig.from_hyperparameters(
            hyperparameters, train_path="train", model_channel="model" if base_model_s3_uri else None
        )
    except ConfigError as error:
        for problem in error.problems:
            name = problem.split("=", 1)[0]
            prefix = "" if name in ("task", "method") else "hyperparameters."
            problems.append(f"{prefix}{problem}")
    if config is not None:
        if config.method is None:
            raise AssertionError("TrainConfig.__post_init__ left method unresolved")
        hyperparameters["method"] = config.method  # the resolved default, so the job and the report agree

    # Compute: within the team's limits.
    instance_type = request.instance_type or settings.allowed_instance_types[0]
    if instance_type not in settings.allowed_instance_types:
        problems.append(
            f"instance_type: {instance_type!r} is not allowed for {settings.team}-{settings.stage}; "
            f"allowed: {', '.join(settings.allowed_instance_types)}"
        )
    if not 1 <= request.instance_count <= settings.max_instance_count:
        problems.append(
            f"instance_count: {request.instance_count} is outside 1..{settings.max_instance_count} "
            f"(the team's training.max_instance_count)"
        )
    spot = settings.default_spot if request.spot is None else request.spot

    # Deployment and gate.
    if request.deploy_to is not None:
        kind = settings.endpoints.get(request.deploy_to)
        if kind is None:
            known = ", ".join(sorted(settings.endpoints)) or "none configured"
            problems.append(
                f"deploy_to: {request.deploy_to!r} is not an endpoint of "
                f"{settings.team}-{settings.stage} (endpoints: {known})"
            )
        elif kind != _ENDPOINT_KIND[request.task]:
            problems.append(
                f"deploy_to: endpoint {request.deploy_to!r} serves {kind} models; "
                f"task={request.task} needs a {_ENDPOINT_KIND[request.task]} endpoint"
            )
    if request.threshold is not None:
        threshold = float(request.threshold)
        if request.task == "classification" and not (math.isfinite(threshold) and 0 <= threshold <= 1):
            problems.append(f"threshold: {request.threshold!r} must be an accuracy between 0 and 1")
        elif request.task == "causal-lm" and not (math.isfinite(threshold) and threshold > 0):
            problems.append(f"threshold: {request.threshold!r} must be a positive eval_loss")

    if problems or config is None:
        raise InvalidRequest(problems)
    name, version, prefix = dataset
    return CheckedRequest(
        request=request,
        config=config,
        dataset_name=name,
        dataset_version=version,
        dataset_prefix=prefix,
        hyperparameters=hyperparameters,
        base_model_s3_uri=base_model_s3_uri,
        instance_type=instance_type,
        spot=spot,
    )


def main_metric(task: str) -> tuple[str, bool]:
    """The metric the Gate compares and whether higher is better."""
    return (ACCURACY, True) if task == "classification" else (EVAL_LOSS, False)


#: Longest job name prefix: SageMaker's 63-character job name less the Train step's ``-{8 hex}`` suffix.
JOB_NAME_PREFIX_MAX = 54


def job_name_prefix(team: str, stage: str, dataset_name: str, dataset_version: str) -> str:
    """A readable SageMaker job name prefix ``{team}-{stage}-{dataset}-{version}-{hash}`` (``[a-zA-Z0-9-]``, at
    most 54 characters; the Train step appends a fresh 8-hex suffix per attempt).

    It starts with ``{team}-{stage}-`` so the stage's EventBridge rule and IAM scoping recognise its jobs. The
    dataset part is sanitised and cut to fit, so it alone could collide (``my.data``/``my_data``, or long names
    that differ late); the 6-hex hash of the unsanitised ``name/version`` keeps distinct datasets apart.
    """
    head = f"{team}-{stage}-"
    digest = hashlib.sha256(f"{dataset_name}/{dataset_version}".encode()).hexdigest()[:6]
    readable = re.sub(r"-{2,}", "-", re.sub(r"[^A-Za-z0-9-]+", "-", f"{dataset_name}-{dataset_version}")).strip("-")
    room = JOB_NAME_PREFIX_MAX - len(head) - len(digest) - 1
    readable = readable[: max(room, 0)].rstrip("-")
    return f"{head}{readable}-{digest}" if readable else f"{head}{digest}"
