"""The proxy's configuration: environment variable names, the typed settings model, and its serializer.

This module imports only the standard library and pydantic, so the CDK app can import it to build the
function's environment with the same model the function validates it with at cold start.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

ENV_TEAM = "TEAM"
ENV_STAGE = "STAGE"
ENV_ENDPOINTS = "ENDPOINTS"
ENV_CONNECT_TIMEOUT = "INVOKE_CONNECT_TIMEOUT_SECONDS"
ENV_READ_TIMEOUT = "INVOKE_READ_TIMEOUT_SECONDS"
ENV_MAX_REQUEST_BYTES = "MAX_REQUEST_BYTES"
ENV_MAX_PREDICT_INPUTS = "MAX_PREDICT_INPUTS"

#: Every variable the proxy reads (Powertools' own variables aside); the stack must set the first three.
ENVIRONMENT_VARIABLES: tuple[str, ...] = (
    ENV_TEAM,
    ENV_STAGE,
    ENV_ENDPOINTS,
    ENV_CONNECT_TIMEOUT,
    ENV_READ_TIMEOUT,
    ENV_MAX_REQUEST_BYTES,
    ENV_MAX_PREDICT_INPUTS,
)

#: IAM actions the function's role needs, on this team stage's endpoints only
#: (`arn:aws:sagemaker:{region}:{account}:endpoint/{team}-{stage}-*`, lower case as SageMaker writes ARNs).
REQUIRED_IAM_ACTIONS: tuple[str, ...] = (
    "sagemaker:InvokeEndpoint",
    "sagemaker:InvokeEndpointWithResponseStream",
    "sagemaker:DescribeEndpoint",
)

#: IAM actions on this team stage's inference components (LoRA endpoints: the base and each adapter), by name
#: (`arn:aws:sagemaker:{region}:{account}:inference-component/{team}-{stage}-{endpoint}-{adapter or base}`).
COMPONENT_IAM_ACTIONS: tuple[str, ...] = (
    "sagemaker:InvokeEndpoint",
    "sagemaker:InvokeEndpointWithResponseStream",
    "sagemaker:DescribeInferenceComponent",
)

#: API Gateway REST APIs end an integration after 29 s by default; the model call must give up before that.
API_GATEWAY_INTEGRATION_LIMIT_SECONDS = 29.0
#: InvokeEndpoint rejects bodies over 6 MiB (botocore's model for BodyBlob).
INVOKE_BODY_LIMIT_BYTES = 6 * 1024 * 1024

# Copies of the shared contract's naming rules (finetune.contract: NAME_PATTERN, endpoint_name), because this
# asset does not ship training_code/; tests/contract/test_names.py checks that they agree.
_NAME = r"[a-z][a-z0-9]*(?:-[a-z0-9]+)*"


def endpoint_name(team: str, stage: str, short_name: str) -> str:
    """The stable SageMaker name of an endpoint of config/teams.yaml, ``{team}-{stage}-{short}``."""
    return f"{team}-{stage}-{short_name}"


_ENDPOINT_NAME = re.compile(r"^[a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}$")  # SageMaker's pattern for EndpointName

Kind = Literal["llm", "classifier"]


class Endpoint(BaseModel):
    """One SageMaker endpoint the proxy may call, as the caller names it and as SageMaker does."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    endpoint_name: str
    """The endpoint's stable SageMaker name, `{team}-{stage}-{name}`."""
    kind: Kind
    """`llm`: LMI (vLLM) container, served on /v1/chat/completions; `classifier`: Hugging Face
    text-classification container, served on /v1/models/{name}/predict."""
    inference_component: str | None = None
    """On an endpoint served by inference components (a base LLM and its LoRA adapters): the component
    this model name invokes, `{team}-{stage}-{endpoint}-base` or `{team}-{stage}-{endpoint}-{adapter}`."""

    @field_validator("endpoint_name", "inference_component")
    @classmethod
    def _sagemaker_name(cls, value: str | None) -> str | None:
        if value is not None and not _ENDPOINT_NAME.match(value):
            raise ValueError(f"{value!r} is not a valid SageMaker endpoint name")
        return value


class ProxySettings(BaseModel):
    """The proxy's configuration, validated once when the function starts."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    team: str = Field(pattern=f"^{_NAME}$")
    """The team whose endpoints this function serves."""
    stage: str = Field(pattern=f"^{_NAME}$")
    """The team's stage (dev, prod, ...); with `team` it forms the endpoint name prefix."""
    endpoints: dict[str, Endpoint]
    """Short name (what callers put in `model`) -> endpoint."""
    connect_timeout_seconds: float = Field(default=2.0, gt=0, le=10)
    """Seconds to open a connection to the SageMaker runtime."""
    read_timeout_seconds: float = Field(default=25.0, gt=0, lt=API_GATEWAY_INTEGRATION_LIMIT_SECONDS)
    """Seconds to wait for the model's answer; below API Gateway's limit so the caller gets our 504."""
    max_request_bytes: int = Field(default=1024 * 1024, ge=1024, le=INVOKE_BODY_LIMIT_BYTES // 2)
    """Largest request body accepted; larger bodies get 413 (half the InvokeEndpoint limit leaves room
    for JSON escaping when the body is re-encoded)."""
    max_predict_inputs: int = Field(default=64, ge=1, le=1024)
    """Most texts in one predict request; more get 413."""

    @property
    def endpoint_prefix(self) -> str:
        """The prefix every endpoint of this team stage carries: `{team}-{stage}-`."""
        return f"{self.team}-{self.stage}-"

    @model_validator(mode="after")
    def _endpoints_belong_to_this_stage(self) -> ProxySettings:
        for short_name, endpoint in self.endpoints.items():
            if not re.fullmatch(_NAME, short_name):
                raise ValueError(f"endpoint short name {short_name!r} must match {_NAME}")
            for name in (endpoint.endpoint_name, endpoint.inference_component):
                if name is not None and not name.startswith(self.endpoint_prefix):
                    raise ValueError(f"{name!r} ({short_name}) does not start with {self.endpoint_prefix!r}")
        if self.connect_timeout_seconds + self.read_timeout_seconds >= API_GATEWAY_INTEGRATION_LIMIT_SECONDS:
            raise ValueError(
                f"connect + read timeout must stay below API Gateway's {API_GATEWAY_INTEGRATION_LIMIT_SECONDS:g} s"
            )
        return self


class SettingsError(RuntimeError):
    """The function's environment is missing or invalid (a deployment error, raised at cold start)."""


def load_settings(environ: Mapping[str, str]) -> ProxySettings:
    """Validate the proxy's environment variables into settings; raise SettingsError naming what is wrong."""
    missing = [name for name in (ENV_TEAM, ENV_STAGE, ENV_ENDPOINTS) if not environ.get(name)]
    if missing:
        raise SettingsError(f"inference proxy: missing environment variables {', '.join(missing)}")
    try:
        raw_endpoints = json.loads(environ[ENV_ENDPOINTS])
    except json.JSONDecodeError as error:
        raise SettingsError(f"inference proxy: {ENV_ENDPOINTS} is not JSON: {error}") from None
    team, stage = environ[ENV_TEAM], environ[ENV_STAGE]
    if isinstance(raw_endpoints, dict):
        # The endpoint name defaults to the stable name the Inference stack gives it.
        raw_endpoints = {
            short: ({"endpoint_name": endpoint_name(team, stage, short), **spec} if isinstance(spec, dict) else spec)
            for short, spec in raw_endpoints.items()
        }
    optional: dict[str, Any] = {  # strings from the environment; ProxySettings parses them
        "connect_timeout_seconds": environ.get(ENV_CONNECT_TIMEOUT),
        "read_timeout_seconds": environ.get(ENV_READ_TIMEOUT),
        "max_request_bytes": environ.get(ENV_MAX_REQUEST_BYTES),
        "max_predict_inputs": environ.get(ENV_MAX_PREDICT_INPUTS),
    }
    try:
        return ProxySettings(
            team=team,
            stage=stage,
            endpoints=raw_endpoints,
            **{key: value for key, value in optional.items() if value not in (None, "")},
        )
    except ValidationError as error:
        raise SettingsError(f"inference proxy: invalid environment: {error}") from None


def inference_component_name(team: str, stage: str, endpoint: str, adapter: str | None = None) -> str:
    """The inference component of `endpoint` serving its base model (`adapter` None) or one LoRA adapter.

    The one definition of these names: the Inference stack creates the components with them, the FineTune
    pipeline's Deploy step adds adapters with them, and the proxy invokes them.
    """
    return qualified_component_name(f"{team}-{stage}", endpoint, adapter)


def qualified_component_name(qualified_name: str, endpoint: str, adapter: str | None = None) -> str:
    """:func:`inference_component_name` from the stage's `{team}-{stage}` (team names may hold hyphens)."""
    return f"{qualified_name}-{endpoint}-{adapter or 'base'}"


def lambda_environment(
    *,
    team: str,
    stage: str,
    endpoints: Mapping[str, Kind],
    adapters: Mapping[str, Sequence[str]] | None = None,
    connect_timeout_seconds: float | None = None,
    read_timeout_seconds: float | None = None,
    max_request_bytes: int | None = None,
    max_predict_inputs: int | None = None,
) -> dict[str, str]:
    """The environment variables for the proxy function (for the Inference stack).

    `endpoints` maps each endpoint's short name to its kind; the endpoint names are the stable
    `{team}-{stage}-{name}`. `adapters` names the LLM endpoints served by inference components, each with
    its LoRA adapters: the endpoint's name then invokes its base component, and each adapter's name (a model
    name of its own) invokes the adapter's component on the same endpoint. The result is validated with the same
    model the function uses at cold start, so a bad value fails synthesis rather than the first request.
    """
    models: dict[str, dict[str, str]] = {}
    for short, kind in sorted(endpoints.items()):
        models[short] = {"endpoint_name": endpoint_name(team, stage, short), "kind": kind}
    for short, names in sorted((adapters or {}).items()):
        if endpoints.get(short) != "llm":
            raise SettingsError(f"inference proxy: adapters are for LLM endpoints; {short!r} is not one")
        models[short]["inference_component"] = inference_component_name(team, stage, short)
        for adapter in names:
            if adapter in models:
                raise SettingsError(f"inference proxy: adapter {adapter!r} of {short!r} reuses a model name")
            models[adapter] = {
                "endpoint_name": endpoint_name(team, stage, short),
                "kind": "llm",
                "inference_component": inference_component_name(team, stage, short, adapter),
            }
    environ = {ENV_TEAM: team, ENV_STAGE: stage, ENV_ENDPOINTS: json.dumps(models, separators=(",", ":"))}
    for name, value in (
        (ENV_CONNECT_TIMEOUT, connect_timeout_seconds),
        (ENV_READ_TIMEOUT, read_timeout_seconds),
        (ENV_MAX_REQUEST_BYTES, max_request_bytes),
        (ENV_MAX_PREDICT_INPUTS, max_predict_inputs),
    ):
        if value is not None:
            environ[name] = str(value)
    load_settings(environ)
    return environ
