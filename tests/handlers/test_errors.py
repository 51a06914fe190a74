"""Every way a request can fail maps to one status and error type, with a JSON body and no traceback."""

from __future__ import annotations

import json
import os
from unittest import mock

import pytest
from botocore.exceptions import ConnectTimeoutError, ReadTimeoutError

from .conftest import PROXY_ENVIRONMENT, chat_completion, fake_session, installed
from .events import chat_event, predict_event, rest_event
from .in_process import InProcessRuntime

MESSAGES = [{"role": "user", "content": "hi"}]
VALID = {"model": "chat", "messages": MESSAGES}

# (case id, event, status, error type, words the message must contain)
BAD_REQUESTS = [
    ("malformed-json", chat_event('{"model": "chat", "messages": ['), 400, "invalid_request", "not valid JSON"),
    ("empty-body", chat_event(None), 400, "invalid_request", "empty"),
    ("blank-body", chat_event("  \n"), 400, "invalid_request", "empty"),
    ("json-array", chat_event([VALID]), 400, "invalid_request", "JSON object"),
    ("json-string", chat_event('"chat"'), 400, "invalid_request", "JSON object"),
    ("missing-model", chat_event({"messages": MESSAGES}), 400, "invalid_request", "model"),
    ("missing-messages", chat_event({"model": "chat"}), 400, "invalid_request", "messages"),
    ("empty-messages", chat_event({"model": "chat", "messages": []}), 400, "invalid_request", "messages"),
    ("messages-not-list", chat_event({"model": "chat", "messages": "hi"}), 400, "invalid_request", "messages"),
    (
        "bad-role",
        chat_event({"model": "chat", "messages": [{"role": "robot", "content": "x"}]}),
        400,
        "invalid_request",
        "messages.0.role",
    ),
    (
        "content-number",
        chat_event({"model": "chat", "messages": [{"role": "user", "content": 3}]}),
        400,
        "invalid_request",
        "messages.0.content",
    ),
    ("model-number", chat_event({"model": 7, "messages": MESSAGES}), 400, "invalid_request", "model"),
    ("max-tokens-string", chat_event({**VALID, "max_tokens": "16"}), 400, "invalid_request", "max_tokens"),
    ("max-tokens-float", chat_event({**VALID, "max_tokens": 16.5}), 400, "invalid_request", "max_tokens"),
    ("max-tokens-zero", chat_event({**VALID, "max_tokens": 0}), 400, "invalid_request", "max_tokens"),
    ("temperature-too-high", chat_event({**VALID, "temperature": 3}), 400, "invalid_request", "temperature"),
    ("top-p-zero", chat_event({**VALID, "top_p": 0}), 400, "invalid_request", "top_p"),
    ("too-many-stops", chat_event({**VALID, "stop": ["a", "b", "c", "d", "e"]}), 400, "invalid_request", "stop"),
    ("n-too-large", chat_event({**VALID, "n": 100}), 400, "invalid_request", "n"),
    ("stream-string", chat_event({**VALID, "stream": "yes"}), 400, "invalid_request", "stream"),
    ("tools-not-list", chat_event({**VALID, "tools": {"type": "function"}}), 400, "invalid_request", "tools"),
    (
        "image-part",
        chat_event(
            {
                **VALID,
                "messages": [
                    {
                        "role": "user",
                        "content": [{"type": "image_url", "image_url": {"url": "https://example.com/cat.png"}}],
                    }
                ],
            }
        ),
        400,
        "invalid_request",
        "messages.0.content.0: content parts of type 'image_url' are not supported",
    ),
    (
        "tool-message-without-id",
        chat_event({**VALID, "messages": [{"role": "tool", "content": "42"}]}),
        400,
        "invalid_request",
        "messages.0.tool_call_id",
    ),
    (
        "assistant-without-anything",
        chat_event({**VALID, "messages": [{"role": "assistant", "content": None}]}),
        400,
        "invalid_request",
        "content or tool_calls",
    ),
    (
        "tool-choice-unknown-function",
        chat_event({**VALID, "tool_choice": {"type": "function", "function": {"name": "f"}}}),
        400,
        "invalid_request",
        "tool_choice",
    ),
    ("top-logprobs-without-logprobs", chat_event({**VALID, "top_logprobs": 2}), 400, "invalid_request", "top_logprobs"),
    (
        "stream-options-without-stream",
        chat_event({**VALID, "stream_options": {"include_usage": True}}),
        400,
        "invalid_request",
        "stream_options",
    ),
    (
        "logit-bias-out-of-range",
        chat_event({**VALID, "logit_bias": {"50256": 101}}),
        400,
        "invalid_request",
        "logit_bias",
    ),
    (
        "json-schema-without-schema",
        chat_event({**VALID, "response_format": {"type": "json_schema"}}),
        400,
        "invalid_request",
        "response_format.json_schema",
    ),
    ("top-k-below-minus-one", chat_event({**VALID, "top_k": -2}), 400, "invalid_request", "top_k"),
    (
        "conflicting-max-tokens",
        chat_event({**VALID, "max_tokens": 5, "max_completion_tokens": 6}),
        400,
        "invalid_request",
        "disagree",
    ),
    (
        "bad-base64",
        chat_event("not base64!!", base64_body=False) | {"isBase64Encoded": True},
        400,
        "invalid_request",
        "base64",
    ),
    (
        "classifier-on-chat",
        chat_event({"model": "sentiment", "messages": MESSAGES}),
        400,
        "invalid_request",
        "/v1/models/sentiment/predict",
    ),
    ("llm-on-predict", predict_event("chat", {"inputs": ["x"]}), 400, "invalid_request", "/v1/chat/completions"),
    ("predict-empty-inputs", predict_event("sentiment", {"inputs": []}), 400, "invalid_request", "inputs"),
    ("predict-number-inputs", predict_event("sentiment", {"inputs": [1, 2]}), 400, "invalid_request", "inputs"),
    (
        "predict-unknown-field",
        predict_event("sentiment", {"inputs": ["x"], "parameters": {}}),
        400,
        "invalid_request",
        "parameters",
    ),
    (
        "other-team",
        chat_event({"model": "globex-dev-chat", "messages": MESSAGES}),
        403,
        "model_not_permitted",
        "does not belong",
    ),
    (
        "other-stage",
        chat_event({"model": "acme-prod-chat", "messages": MESSAGES}),
        403,
        "model_not_permitted",
        "does not belong",
    ),
    (
        "other-team-predict",
        predict_event("globex-prod-sentiment", {"inputs": ["x"]}),
        403,
        "model_not_permitted",
        "does not belong",
    ),
    ("unknown-model", chat_event({"model": "gpt-4o", "messages": MESSAGES}), 404, "model_not_found", "chat, sentiment"),
    (
        "unknown-in-own-stage",
        chat_event({"model": "acme-dev-other", "messages": MESSAGES}),
        404,
        "model_not_found",
        "acme-dev-other",
    ),
    ("unknown-classifier", predict_event("spam", {"inputs": ["x"]}), 404, "model_not_found", "spam"),
    (
        "too-large",
        chat_event({**VALID, "messages": [{"role": "user", "content": "x" * 70_000}]}),
        413,
        "request_too_large",
        "limit",
    ),
    (
        "too-large-multibyte",
        chat_event(json.dumps({**VALID, "messages": [{"role": "user", "content": "é" * 40_000}]}, ensure_ascii=False)),
        413,
        "request_too_large",
        "limit",
    ),
    ("unknown-route", rest_event("POST", "/v1/completions", body=VALID), 404, "unknown_url", "/v1/completions"),
    ("wrong-method", rest_event("GET", "/v1/chat/completions"), 404, "unknown_url", "GET"),
]


@pytest.mark.parametrize(
    ("event", "status", "error_type", "words"),
    [case[1:] for case in BAD_REQUESTS],
    ids=[case[0] for case in BAD_REQUESTS],
)
def test_bad_request_gets_its_status_and_openai_error_body(proxy, call, event, status, error_type, words):
    # An endpoint that would answer: a bad request must be refused before it reaches it.
    runtime = InProcessRuntime({"acme-dev-chat": lambda body: chat_completion()})
    with installed(proxy, runtime=runtime):
        got_status, body, headers = call(event)
    assert (got_status, body["error"]["code"]) == (status, error_type)
    # OpenAI's error body: the coarse type, the precise code, the field at fault (or null), the message.
    assert set(body) == {"error"} and set(body["error"]) == {"type", "code", "param", "message"}
    assert body["error"]["type"] == ("permission_error" if status == 403 else "invalid_request_error")
    assert headers["x-request-id"]
    assert words in body["error"]["message"]
    assert "Traceback" not in body["error"]["message"]
    assert headers["Content-Type"] == "application/json"
    assert runtime.calls == []


# (case id, error code, HTTP status from SageMaker, message, modeled fields, proxy status, error type)
ENDPOINT_ERRORS = [
    ("throttled", "ThrottlingException", 400, "Rate exceeded", {}, 429, "rate_limit_exceeded"),
    (
        "model-error",
        "ModelError",
        424,
        "Received server error (500) from primary",
        {
            "OriginalStatusCode": 500,
            "OriginalMessage": "CUDA out of memory",
            "LogStreamArn": "arn:aws:logs:us-east-1:123456789012:log-group:/aws/sagemaker/Endpoints/acme-dev-chat",
        },
        502,
        "model_error",
    ),
    (
        "model-rejected-input",
        "ModelError",
        424,
        "Received client error (400) from primary",
        {"OriginalStatusCode": 400, "OriginalMessage": "context too long"},
        502,
        "model_error",
    ),
    ("model-not-ready", "ModelNotReadyException", 429, "Model not ready", {}, 503, "model_unavailable"),
    (
        "endpoint-not-found",
        "ValidationError",
        400,
        "Endpoint acme-dev-chat of account 123456789012 not found.",
        {},
        503,
        "model_unavailable",
    ),
    (
        "endpoint-not-in-service",
        "ValidationError",
        400,
        "Endpoint acme-dev-chat is not in service",
        {},
        503,
        "model_unavailable",
    ),
    ("service-unavailable", "ServiceUnavailable", 503, "Service unavailable", {}, 503, "model_unavailable"),
    ("internal-dependency", "InternalDependencyException", 530, "dependency failed", {}, 503, "model_unavailable"),
    ("internal-failure", "InternalFailure", 500, "Internal failure", {}, 502, "model_error"),
    ("other-validation", "ValidationError", 400, "1 validation error detected", {}, 502, "model_error"),
    (
        "access-denied",
        "AccessDeniedException",
        400,
        "not authorized to perform sagemaker:InvokeEndpoint",
        {},
        502,
        "model_error",
    ),
]


@pytest.mark.parametrize(
    ("code", "http_status", "message", "fields", "status", "error_type"),
    [case[1:] for case in ENDPOINT_ERRORS],
    ids=[case[0] for case in ENDPOINT_ERRORS],
)
def test_endpoint_error_maps_to_status(runtime_stub, call, code, http_status, message, fields, status, error_type):
    runtime_stub.add_client_error(
        "invoke_endpoint",
        service_error_code=code,
        service_message=message,
        http_status_code=http_status,
        modeled_fields=fields or None,
        expected_params={
            "EndpointName": "acme-dev-chat",
            "Body": json.dumps({"messages": MESSAGES}, separators=(",", ":")).encode(),
            "ContentType": "application/json",
            "Accept": "application/json",
        },
    )
    got_status, body, headers = call(chat_event(VALID))
    assert (got_status, body["error"]["code"]) == (status, error_type)
    # SageMaker's and the container's own words stay in the logs.
    for private in ("CUDA", "context too long", "arn:aws:logs", "not authorized"):
        assert private not in body["error"]["message"]
    if status in (429, 503):
        assert int(headers["Retry-After"]) > 0


@pytest.mark.parametrize(
    ("exception", "status", "error_type"),
    [
        (ReadTimeoutError(endpoint_url="https://runtime.sagemaker.us-east-1.amazonaws.com"), 504, "timeout"),
        (
            ConnectTimeoutError(endpoint_url="https://runtime.sagemaker.us-east-1.amazonaws.com"),
            503,
            "model_unavailable",
        ),
    ],
    ids=["read-timeout", "connect-timeout"],
)
def test_network_failures_map_to_status_without_retrying(proxy, settings, call, exception, status, error_type):
    # Given the proxy's real runtime client, whose HTTP send fails the way urllib3 does
    client = proxy.create_runtime_client(settings, session=fake_session())
    attempts = []

    def fail(request, **_):
        attempts.append(request.url)
        raise exception

    client.meta.events.register("before-send.sagemaker-runtime.InvokeEndpoint", fail)
    with installed(proxy, runtime=client):
        got_status, body, _ = call(chat_event(VALID))
    assert (got_status, body["error"]["code"]) == (status, error_type)
    # One attempt: a retry would overrun API Gateway's 29 s integration limit.
    assert attempts == ["https://runtime.sagemaker.us-east-1.amazonaws.com/endpoints/acme-dev-chat/invocations"]


def test_runtime_client_times_out_below_api_gateway_limit(proxy, settings):
    client = proxy.create_runtime_client(settings, session=fake_session())
    config = client.meta.config
    assert config.read_timeout == settings.read_timeout_seconds == 20
    assert config.connect_timeout + config.read_timeout < 29
    assert config.retries["total_max_attempts"] == 1


def test_unexpected_fault_is_a_json_500_without_traceback(proxy, call):
    class Broken:
        def invoke_endpoint(self, **_):
            raise RuntimeError("secret internal detail")

    with installed(proxy, runtime=Broken()):
        status, body, _ = call(chat_event(VALID))
    assert (status, body["error"]["code"]) == (500, "internal_error")
    assert "secret" not in body["error"]["message"] and "Traceback" not in body["error"]["message"]


def test_callable_raising_in_process_becomes_a_model_error(proxy, call):
    def crash(_body):
        raise ValueError("boom")

    with installed(proxy, runtime=InProcessRuntime({"acme-dev-chat": crash})):
        status, body, _ = call(chat_event(VALID))
    assert (status, body["error"]["code"]) == (502, "model_error")


def test_clients_built_at_import_are_configured_from_the_environment(proxy, settings):
    # The clients Lambda really uses: the runtime one at cold start, the control-plane one on first use.
    with mock.patch.dict(os.environ, PROXY_ENVIRONMENT):
        runtime, control_plane = proxy._dependencies.runtime, proxy._default_control_plane()
    assert runtime.meta.service_model.service_name == "sagemaker-runtime"
    assert control_plane.meta.service_model.service_name == "sagemaker"
    assert runtime.meta.region_name == "us-east-1"
    assert (runtime.meta.config.read_timeout, runtime.meta.config.retries["total_max_attempts"]) == (20, 1)
    assert control_plane.meta.config.read_timeout == 5
