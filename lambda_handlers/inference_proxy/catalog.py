"""GET /v1/models and /v1/models/{id}: this team stage's endpoints, their kind and status, as an OpenAI model list."""

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
    status, created = _describe(control_plane, endpoint.endpoint_name)
    return {
        "id": name,
        "object": "model",
        # OpenAI's Model has `created` (Unix seconds): when the endpoint was created, 0 while it does not exist.
        "created": created,
        "owned_by": settings.team,
        "endpoint_name": endpoint.endpoint_name,
        "kind": endpoint.kind,
        "status": status,
    }


def _describe(control_plane: ControlPlaneClient, endpoint_name: str) -> tuple[str, int]:
    try:
        description = control_plane.describe_endpoint(EndpointName=endpoint_name)
        created = description.get("CreationTime")
        return str(description["EndpointStatus"]), int(created.timestamp()) if isinstance(created, datetime) else 0
    except ClientError as error:
        message = str(error.response.get("Error", {}).get("Message", "")).lower()
        if "could not find" in message or "not found" in message:
            return NOT_DEPLOYED, 0
        logger.warning("DescribeEndpoint failed", extra={"endpoint": endpoint_name, "error": str(error)})
        return UNKNOWN, 0
    except (BotoCoreError, KeyError) as error:
        logger.warning("DescribeEndpoint failed", extra={"endpoint": endpoint_name, "error": str(error)})
        return UNKNOWN, 0
