"""GET /v1/models and /v1/models/{id}: this team stage's endpoints and LoRA adapters, their kind and status, as an
OpenAI model list."""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from .clients import ControlPlaneClient
from .routing import resolve_model
from .settings import ProxySettings

logger = logging.getLogger(__name__)

#: Status for an endpoint the stack configured but SageMaker does not know (not created yet, or deleted).
NOT_DEPLOYED = "NotDeployed"
#: Status when DescribeEndpoint itself failed (throttled, denied, unreachable).
UNKNOWN = "Unknown"


def list_models(settings: ProxySettings, control_plane: ControlPlaneClient) -> dict[str, Any]:
    """Each configured endpoint with its kind and its SageMaker status (InService, Creating, ...)."""
    # Sequential: a team stage has a handful of endpoints, and each DescribeEndpoint takes milliseconds.
    return {"object": "list", "data": [_entry(settings, control_plane, name) for name in sorted(settings.endpoints)]}


def retrieve_model(name: str, settings: ProxySettings, control_plane: ControlPlaneClient) -> dict[str, Any]:
    """One model entry (OpenAI's `models.retrieve`): `name` is a short name or this stage's endpoint name."""
    model = resolve_model(name, settings, kind=None)
    return _entry(settings, control_plane, model.short_name)


def _entry(settings: ProxySettings, control_plane: ControlPlaneClient, name: str) -> dict[str, Any]:
    endpoint = settings.endpoints[name]
    component = endpoint.inference_component
    if component is None:
        status, created = _describe(control_plane, "DescribeEndpoint", endpoint.endpoint_name)
    else:
        # A base model or LoRA adapter on a shared endpoint: its own component says whether it serves (an
        # adapter the FineTune pipeline has not deployed yet is NotDeployed on an endpoint in service).
        status, created = _describe(control_plane, "DescribeInferenceComponent", component)
    entry: dict[str, Any] = {
        "id": name,
        "object": "model",
        # OpenAI's Model has `created` (Unix seconds): when the endpoint or component was created, 0 while it
        # does not exist.
        "created": created,
        "owned_by": settings.team,
        "endpoint_name": endpoint.endpoint_name,
        "kind": endpoint.kind,
        "status": status,
    }
    if component is not None:
        entry["inference_component"] = component
        base = _base_model(settings, endpoint.endpoint_name)
        if base is not None and base != name:
            entry["parent"] = base  # vLLM's model card names a LoRA adapter's base model `parent`
    return entry


def _base_model(settings: ProxySettings, endpoint_name: str) -> str | None:
    """The short name that calls the base component of `endpoint_name` (the endpoint's own short name)."""
    short = endpoint_name.removeprefix(settings.endpoint_prefix)
    return short if short in settings.endpoints else None


def _describe(control_plane: ControlPlaneClient, operation: str, name: str) -> tuple[str, int]:
    try:
        if operation == "DescribeEndpoint":
            description = control_plane.describe_endpoint(EndpointName=name)
            status = description["EndpointStatus"]
        else:
            description = control_plane.describe_inference_component(InferenceComponentName=name)
            status = description["InferenceComponentStatus"]
        created = description.get("CreationTime")
        return str(status), int(created.timestamp()) if isinstance(created, datetime) else 0
    except ClientError as error:
        message = str(error.response.get("Error", {}).get("Message", "")).lower()
        if "could not find" in message or "not found" in message:
            return NOT_DEPLOYED, 0
        logger.warning(f"{operation} failed", extra={"resource": name, "error": str(error)})
        return UNKNOWN, 0
    except (BotoCoreError, KeyError) as error:
        logger.warning(f"{operation} failed", extra={"resource": name, "error": str(error)})
        return UNKNOWN, 0
