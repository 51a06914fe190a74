"""Validate's configuration: environment variable names, the typed settings model and ``lambda_environment``.

Imports only the standard library and pydantic, so the CDK Training stack can import it to build the function's
environment with the same model the function validates at cold start (a bad value fails synthesis).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

# Re-exported (`as` makes that explicit) for the handler and the tests; the asset ships finetune/.
from finetune.contract import BASE_MODELS_PREFIX as BASE_MODELS_PREFIX
from finetune.contract import DATASETS_PREFIX as DATASETS_PREFIX
from finetune.contract import NAME_PATTERN

ENV_TEAM = "TEAM"
ENV_STAGE = "STAGE"
ENV_DATA_BUCKET = "DATA_BUCKET"
ENV_ARTIFACTS_BUCKET = "ARTIFACTS_BUCKET"
ENV_ALLOWED_INSTANCE_TYPES = "ALLOWED_INSTANCE_TYPES"
ENV_MAX_INSTANCE_COUNT = "MAX_INSTANCE_COUNT"
ENV_MAX_RUNTIME_HOURS = "MAX_RUNTIME_HOURS"
ENV_DEFAULT_SPOT = "DEFAULT_SPOT"
ENV_ALLOWED_BASE_MODELS = "ALLOWED_BASE_MODELS"
ENV_ENDPOINTS = "ENDPOINTS"
ENV_ADAPTERS = "ADAPTERS"
ENV_SAMPLE_BYTES = "SAMPLE_BYTES"
ENV_MAX_FILES_CHECKED = "MAX_FILES_CHECKED"

REQUIRED_VARIABLES: tuple[str, ...] = (
    ENV_TEAM,
    ENV_STAGE,
    ENV_DATA_BUCKET,
    ENV_ARTIFACTS_BUCKET,
    ENV_ALLOWED_INSTANCE_TYPES,
    ENV_MAX_INSTANCE_COUNT,
    ENV_MAX_RUNTIME_HOURS,
    ENV_ALLOWED_BASE_MODELS,
)
_JSON_VARIABLES = {
    ENV_ALLOWED_INSTANCE_TYPES: "allowed_instance_types",
    ENV_ALLOWED_BASE_MODELS: "allowed_base_models",
    ENV_ENDPOINTS: "endpoints",
    ENV_ADAPTERS: "adapters",
}
_PLAIN_VARIABLES = {
    ENV_TEAM: "team",
    ENV_STAGE: "stage",
    ENV_DATA_BUCKET: "data_bucket",
    ENV_ARTIFACTS_BUCKET: "artifacts_bucket",
    ENV_MAX_INSTANCE_COUNT: "max_instance_count",
    ENV_MAX_RUNTIME_HOURS: "max_runtime_hours",
    ENV_DEFAULT_SPOT: "default_spot",
    ENV_SAMPLE_BYTES: "sample_bytes",
    ENV_MAX_FILES_CHECKED: "max_files_checked",
}

#: IAM actions the function's role needs: read the dataset and the staged base models (bucket-level
#: ListBucket, object-level GetObject on the data and artifacts buckets), and decrypt with the team key.
REQUIRED_IAM_ACTIONS: tuple[str, ...] = ("s3:ListBucket", "s3:GetObject", "kms:Decrypt")

_NAME = NAME_PATTERN  # team and stage names, as config/teams.yaml admits them
_BUCKET = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
STAGED_MODEL_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
"""A base model staged under ``models/base/<name>/`` (no slash)."""
HUB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*$")
"""A Hugging Face hub id, ``<org>/<name>``."""

EndpointKind = Literal["llm", "classifier"]


class AdapterTarget(BaseModel):
    """Where a LoRA run that names this adapter in ``deploy_to`` goes, and which base model it must have."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    endpoint: str
    """The inference-component endpoint's short name."""
    base_model: str
    """The base model the endpoint serves: a run of any other base model cannot load as its adapter."""
    max_lora_rank: int = Field(default=16, ge=1)
    """The highest LoRA rank the endpoint's LMI container loads (its OPTION_MAX_LORA_RANK)."""


class ValidateSettings(BaseModel):
    """What Validate enforces for one team stage, from the function's environment."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    team: str = Field(pattern=f"^{_NAME}$")
    """The team whose runs this function validates."""
    stage: str = Field(pattern=f"^{_NAME}$")
    """The team's stage (dev, prod, ...)."""
    data_bucket: str = Field(pattern=_BUCKET.pattern)
    """The team stage's data bucket; datasets anywhere else are rejected."""
    artifacts_bucket: str = Field(pattern=_BUCKET.pattern)
    """The team stage's artifacts bucket, holding staged base models under ``models/base/<name>/``."""
    allowed_instance_types: tuple[str, ...] = Field(min_length=1)
    """SageMaker instance types a training job may use."""
    max_instance_count: int = Field(ge=1, le=64)
    """Most instances one training job may use."""
    max_runtime_hours: int = Field(ge=1, le=672)
    """Longest a training job may run (SageMaker's MaxRuntimeInSeconds)."""
    default_spot: bool = True
    """Managed spot training when the input does not say."""
    allowed_base_models: tuple[str, ...] = ()
    """Base models this team may fine-tune: staged names (``models/base/<name>/``) or hub ids (``org/name``)."""
    endpoints: dict[str, EndpointKind] = Field(default_factory=dict)
    """This stage's endpoints (short name -> kind) that ``deploy_to`` may name."""
    adapters: dict[str, AdapterTarget] = Field(default_factory=dict)
    """LoRA adapters of this stage's inference-component endpoints that ``deploy_to`` may name instead."""
    sample_bytes: int = Field(default=65536, ge=1024, le=8 * 1024 * 1024)
    """Bytes read from the start of each dataset file (one ranged GET) to check its first lines."""
    max_files_checked: int = Field(default=20, ge=1, le=1000)
    """Most files per channel whose first lines are read (all are listed and counted)."""

    @field_validator("allowed_base_models")
    @classmethod
    def _model_names(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for name in value:
            if not (STAGED_MODEL_NAME.match(name) or HUB_ID.match(name)):
                raise ValueError(f"{name!r} is neither a staged model name nor a hub id (org/name)")
        return value


class SettingsError(RuntimeError):
    """The function's environment is missing or invalid (a deployment error, raised at cold start)."""


def load_settings(environ: Mapping[str, str]) -> ValidateSettings:
    """Validate the function's environment variables; raise SettingsError naming every problem."""
    missing = [name for name in REQUIRED_VARIABLES if not environ.get(name)]
    if missing:
        raise SettingsError(f"validate-request: missing environment variables {', '.join(missing)}")
    values: dict[str, object] = {}
    for variable, field in _JSON_VARIABLES.items():
        if environ.get(variable):
            try:
                values[field] = json.loads(environ[variable])
            except json.JSONDecodeError as error:
                raise SettingsError(f"validate-request: {variable} is not JSON: {error}") from None
    for variable, field in _PLAIN_VARIABLES.items():
        if environ.get(variable):
            values[field] = environ[variable]
    try:
        return ValidateSettings.model_validate(values)
    except ValidationError as error:
        reverse = {field: variable for variable, field in {**_JSON_VARIABLES, **_PLAIN_VARIABLES}.items()}
        problems = [f"{reverse.get(str(e['loc'][0]), e['loc'][0])}: {e['msg']}" for e in error.errors()]
        raise SettingsError("validate-request: invalid environment: " + "; ".join(problems)) from None


def lambda_environment(
    *,
    team: str,
    stage: str,
    data_bucket: str,
    artifacts_bucket: str,
    allowed_instance_types: Sequence[str],
    max_instance_count: int,
    max_runtime_hours: int,
    default_spot: bool,
    allowed_base_models: Sequence[str],
    endpoints: Mapping[str, EndpointKind],
    adapters: Mapping[str, AdapterTarget] | None = None,
) -> dict[str, str]:
    """The Validate function's environment from plain values (the Training stack passes a team stage's, read from
    its config by ``stacks.validate_settings``).

    Bucket names may be CDK tokens at synthesis; they are checked only when they are plain names. The result is
    validated with the same model the function uses at cold start, so a bad value fails synthesis.
    """
    environ = {
        ENV_TEAM: team,
        ENV_STAGE: stage,
        ENV_DATA_BUCKET: data_bucket,
        ENV_ARTIFACTS_BUCKET: artifacts_bucket,
        ENV_ALLOWED_INSTANCE_TYPES: json.dumps(list(allowed_instance_types), separators=(",", ":")),
        ENV_MAX_INSTANCE_COUNT: str(max_instance_count),
        ENV_MAX_RUNTIME_HOURS: str(max_runtime_hours),
        ENV_DEFAULT_SPOT: "true" if default_spot else "false",
        ENV_ALLOWED_BASE_MODELS: json.dumps(list(allowed_base_models), separators=(",", ":")),
        ENV_ENDPOINTS: json.dumps(dict(endpoints), separators=(",", ":"), sort_keys=True),
        ENV_ADAPTERS: json.dumps(
            {name: target.model_dump() for name, target in (adapters or {}).items()},
            separators=(",", ":"),
            sort_keys=True,
        ),
    }
    # Bucket names are CDK tokens when they come from the Data stack; they resolve at deploy time, so stand-ins
    # take their place in the check, which still validates every other value at synthesis.
    check = {variable: ("token-placeholder" if "${Token[" in value else value) for variable, value in environ.items()}
    load_settings(check)
    return environ
