"""A team stage's Validate settings from its config: ``stacks.settings`` types in, plain values out.

The Validate function's settings module ships in its Lambda asset without ``stacks/``, so it takes plain values
(names, numbers, tuples, mappings). This module is the one place that reads them out of a :class:`StageConfig`:
the Training stack builds the function's environment from them, and the CLI validates a request locally with them.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from lambda_handlers.validate_request.settings import (
    AdapterTarget,
    EndpointKind,
    ValidateSettings,
    lambda_environment,
)
from stacks.settings import StageConfig


def deployable_endpoints(stage_config: StageConfig) -> dict[str, EndpointKind]:
    """Endpoints a run deploys a whole model to: all but those served by inference components (their
    adapters are the targets there)."""
    return {endpoint.name: endpoint.kind for endpoint in stage_config.endpoints if endpoint.lora is None}


def adapter_targets(stage_config: StageConfig) -> dict[str, AdapterTarget]:
    """Each declared LoRA adapter of the stage, with its endpoint and base model."""
    return {
        adapter.name: AdapterTarget(
            endpoint=endpoint.name, base_model=endpoint.lora.base_model, max_lora_rank=endpoint.lora.max_lora_rank
        )
        for endpoint in stage_config.endpoints
        if endpoint.lora is not None
        for adapter in endpoint.lora.adapters
    }


def validate_values(
    stage_config: StageConfig,
    data_bucket: str,
    artifacts_bucket: str,
    *,
    allowed_base_models: Sequence[str] | None = None,
) -> dict[str, Any]:
    """The keyword arguments of :func:`lambda_environment` (and the fields of :class:`ValidateSettings`) for one
    team stage. ``allowed_base_models`` defaults to the config's ``training.base_models``."""
    limits = stage_config.training
    return {
        "team": stage_config.team,
        "stage": stage_config.name,
        "data_bucket": data_bucket,
        "artifacts_bucket": artifacts_bucket,
        "allowed_instance_types": tuple(limits.instance_types),
        "max_instance_count": limits.max_instance_count,
        "max_runtime_hours": limits.max_runtime_hours,
        "default_spot": limits.spot,
        "allowed_base_models": tuple(limits.base_models if allowed_base_models is None else allowed_base_models),
        "endpoints": deployable_endpoints(stage_config),
        "adapters": adapter_targets(stage_config),
    }


def settings_for_stage(
    stage_config: StageConfig,
    data_bucket: str,
    artifacts_bucket: str,
    *,
    allowed_base_models: Sequence[str] | None = None,
) -> ValidateSettings:
    """What Validate enforces for one team stage (the CLI checks a request locally with it before submitting)."""
    values = validate_values(stage_config, data_bucket, artifacts_bucket, allowed_base_models=allowed_base_models)
    return ValidateSettings(**values)


def validate_environment(
    stage_config: StageConfig,
    data_bucket: str,
    artifacts_bucket: str,
    *,
    allowed_base_models: Sequence[str] | None = None,
) -> dict[str, str]:
    """The Validate function's environment for one team stage (bucket names may be CDK tokens)."""
    values = validate_values(stage_config, data_bucket, artifacts_bucket, allowed_base_models=allowed_base_models)
    return lambda_environment(**values)
