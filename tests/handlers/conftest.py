"""Fixtures for the inference proxy: its environment, stubbed SageMaker clients, and the handler."""

from __future__ import annotations

import importlib
import io
import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any
from unittest import mock

import boto3
import pytest
from botocore.response import StreamingBody
from botocore.stub import Stubber

from .events import LambdaContext, decode

TEAM, STAGE = "acme", "dev"
ENDPOINTS = {
    "chat": {"endpoint_name": "acme-dev-chat", "kind": "llm"},
    "sentiment": {"endpoint_name": "acme-dev-sentiment", "kind": "classifier"},
}
PROXY_ENVIRONMENT = {
    "TEAM": TEAM,
    "STAGE": STAGE,
    "ENDPOINTS": json.dumps(ENDPOINTS),
    "INVOKE_READ_TIMEOUT_SECONDS": "20",
    "MAX_REQUEST_BYTES": "65536",
    "MAX_PREDICT_INPUTS": "8",
    # No AWS account here: fake credentials so clients build, and tracing off outside Lambda.
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_SESSION_TOKEN": "testing",
    "POWERTOOLS_TRACE_DISABLED": "true",
    "POWERTOOLS_SERVICE_NAME": "inference-proxy",
    "POWERTOOLS_METRICS_NAMESPACE": "FineTuneStackTest",
}


@pytest.fixture(scope="session")
def proxy():
    """The handler module, imported (once) under the proxy's environment as Lambda would import it."""
    with mock.patch.dict(os.environ, PROXY_ENVIRONMENT):
        return importlib.import_module("lambda_handlers.inference_proxy.handler")


@pytest.fixture(scope="session")
def settings(proxy):
    return proxy.SETTINGS


def fake_session() -> boto3.session.Session:
    return boto3.session.Session(aws_access_key_id="testing", aws_secret_access_key="testing", region_name="us-east-1")


@contextmanager
def installed(proxy, *, runtime: Any = None, control_plane: Any = None, settings: Any = None) -> Iterator[None]:
    """Route the handler's calls to these clients (and settings) for the duration of the block."""
    current = proxy._dependencies
    previous = proxy.use_dependencies(
        proxy.Dependencies(
            settings=settings or current.settings,
            runtime=runtime or current.runtime,
            control_plane=control_plane or current.control_plane,
        )
    )
    try:
        yield
    finally:
        proxy.use_dependencies(previous)


@pytest.fixture
def runtime_stub(proxy, settings) -> Iterator[Stubber]:
    """A real, configured `sagemaker-runtime` client behind a Stubber, installed in the handler.

    Stubber validates every call against botocore's model of InvokeEndpoint; the test asserts the
    exact parameters with `expected_params`, and `assert_no_pending_responses` runs at teardown.
    """
    client = proxy.create_runtime_client(settings, session=fake_session())
    with Stubber(client) as stubber, installed(proxy, runtime=client):
        yield stubber
        stubber.assert_no_pending_responses()


@pytest.fixture
def control_plane_stub(proxy, settings) -> Iterator[Stubber]:
    """A real `sagemaker` client behind a Stubber, installed in the handler."""
    client = proxy.create_control_plane_client(settings, session=fake_session())
    with Stubber(client) as stubber, installed(proxy, control_plane=client):
        yield stubber
        stubber.assert_no_pending_responses()


@pytest.fixture
def call(proxy):
    """Invoke the Lambda handler with an event; return (status, JSON body, headers)."""

    def invoke(event: dict[str, Any]) -> tuple[int, dict[str, Any], dict[str, str]]:
        response = proxy.lambda_handler(event, LambdaContext())
        status, body = decode(response)
        # REST API responses from Powertools carry headers in multiValueHeaders.
        headers = dict(response.get("headers") or {})
        headers.update({name: values[-1] for name, values in (response.get("multiValueHeaders") or {}).items()})
        return status, body, headers

    return invoke


def json_body(payload: Any) -> bytes:
    """The exact bytes the proxy sends to an endpoint for `payload` (compact JSON)."""
    return json.dumps(payload, separators=(",", ":")).encode()


def streaming(payload: Any) -> StreamingBody:
    """An InvokeEndpoint response body carrying `payload` as JSON."""
    data = json.dumps(payload).encode()
    return StreamingBody(io.BytesIO(data), len(data))


def chat_completion(content: str = "Hello from the model.", **overrides: Any) -> dict[str, Any]:
    """What the LMI container answers to a chat-completions body."""
    return {
        "id": "chatcmpl-0f3b",
        "object": "chat.completion",
        "created": 1735689600,
        "model": "lmi",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": content},
                "logprobs": None,
                "finish_reason": "stop",
            }
        ],
        "usage": {"prompt_tokens": 12, "completion_tokens": 5, "total_tokens": 17},
        **overrides,
    }
