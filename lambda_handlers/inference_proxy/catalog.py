"""GET /v1/models: this team stage's endpoints, their kind and status, as an OpenAI model list."""

from __future__ import annotations

import logging
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from .clients import ControlPlaneClient
from .settings import ProxySettings

logger = logging.getLogger(__name__)

#: Status for an endpoint the stack configured but SageMaker does not know (not created yet, or deleted).
NOT_DEPLOYED = "NotDeployed"
#: Status when DescribeEndpoint itself failed (throttled, denied, unreachable).
UNKNOWN = "Unknown"


def list_models(settings: ProxySettings, control_plane: ControlPlaneClient) -> dict[str, Any]:
    """Each configured endpoint with its kind and its SageMaker status (InService, Creating, ...)."""
    names = sorted(settings.endpoints)
    # Sequential: a team stage has a handful of endpoints, and each DescribeEndpoint takes milliseconds.
    statuses = [_status(control_plane, settings.endpoints[name].endpoint_name) for name in names]
    return {
        "object": "list",
        "data": [
            {
                "id": name,
                "object": "model",
                "owned_by": settings.team,
                "endpoint_name": settings.endpoints[name].endpoint_name,
                "kind": settings.endpoints[name].kind,
                "status": status,
            }
            for name, status in zip(names, statuses, strict=True)
        ],
    }


def _status(control_plane: ControlPlaneClient, endpoint_name: str) -> str:
    try:
        return str(control_plane.describe_endpoint(EndpointName=endpoint_name)["EndpointStatus"])
    except ClientError as error:
        message = str(error.response.get("Error", {}).get("Message", "")).lower()
        if "could not find" in message or "not found" in message:
            return NOT_DEPLOYED
        logger.warning("DescribeEndpoint failed", extra={"endpoint": endpoint_name, "error": str(error)})
        return UNKNOWN
    except (BotoCoreError, KeyError) as error:
        logger.warning("DescribeEndpoint failed", extra={"endpoint": endpoint_name, "error": str(error)})
        return UNKNOWN
