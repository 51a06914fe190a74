"""The AWS clients the proxy uses: their interfaces (for injection) and their configured factories."""

from __future__ import annotations

from typing import Any, Protocol

from .settings import ProxySettings


class RuntimeClient(Protocol):
    """The part of a `sagemaker-runtime` client the proxy calls."""

    def invoke_endpoint(self, **kwargs: Any) -> dict[str, Any]: ...

    def invoke_endpoint_with_response_stream(self, **kwargs: Any) -> dict[str, Any]: ...


class ControlPlaneClient(Protocol):
    """The part of a `sagemaker` client the proxy calls."""

    def describe_endpoint(self, **kwargs: Any) -> dict[str, Any]: ...


def create_runtime_client(settings: ProxySettings, session: Any = None) -> RuntimeClient:
    """A `sagemaker-runtime` client that gives up before API Gateway does and never retries.

    No retries: an LLM call is expensive and not idempotent, a retry after a read timeout would
    overrun API Gateway's limit, and callers get 429/503 with Retry-After to retry themselves.
    """
    import boto3
    from botocore.config import Config

    config = Config(
        connect_timeout=settings.connect_timeout_seconds,
        read_timeout=settings.read_timeout_seconds,
        retries={"mode": "standard", "total_max_attempts": 1},
        tcp_keepalive=True,
    )
    client: RuntimeClient = (session or boto3.session.Session()).client("sagemaker-runtime", config=config)
    return client


def create_control_plane_client(settings: ProxySettings, session: Any = None) -> ControlPlaneClient:
    """A `sagemaker` client for DescribeEndpoint, with short timeouts (it only lists status)."""
    import boto3
    from botocore.config import Config

    config = Config(
        connect_timeout=settings.connect_timeout_seconds,
        read_timeout=5,
        retries={"mode": "standard", "total_max_attempts": 2},
    )
    client: ControlPlaneClient = (session or boto3.session.Session()).client("sagemaker", config=config)
    return client
