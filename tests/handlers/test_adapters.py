"""Many LoRA adapters on one endpoint: `model` names the base or an adapter; the proxy invokes its component."""

from __future__ import annotations

import pytest

from lambda_handlers.inference_proxy.settings import (
    SettingsError,
    inference_component_name,
    lambda_environment,
    load_settings,
)

from .conftest import chat_completion, installed, json_body, streaming
from .events import chat_event
from .fake_vllm import FakeVllm

MESSAGES = [{"role": "user", "content": "Hello"}]


@pytest.fixture
def adapter_settings():
    return load_settings(
        lambda_environment(
            team="acme",
            stage="dev",
            endpoints={"chat": "llm", "sentiment": "classifier"},
            adapters={"chat": ("legal", "support")},
        )
    )


def test_environment_names_a_component_per_model_on_the_shared_endpoint(adapter_settings):
    models = {name: (e.endpoint_name, e.inference_component) for name, e in adapter_settings.endpoints.items()}
    assert models == {
        "chat": ("acme-dev-chat", "acme-dev-chat-base"),
        "legal": ("acme-dev-chat", "acme-dev-chat-legal"),
        "support": ("acme-dev-chat", "acme-dev-chat-support"),
        "sentiment": ("acme-dev-sentiment", None),
    }
    assert inference_component_name("acme", "dev", "chat", "legal") == "acme-dev-chat-legal"


@pytest.mark.parametrize(
    ("adapters", "words"),
    [
        ({"sentiment": ("x",)}, "LLM endpoints"),
        ({"chat": ("sentiment",)}, "reuses a model name"),
        ({"chat": ("Bad_Name",)}, "Bad_Name"),
    ],
)
def test_bad_adapter_configuration_fails_at_synthesis(adapters, words):
    with pytest.raises(SettingsError, match=words):
        lambda_environment(
            team="acme", stage="dev", endpoints={"chat": "llm", "sentiment": "classifier"}, adapters=adapters
        )


@pytest.mark.parametrize(
    ("model", "component"),
    [
        ("legal", "acme-dev-chat-legal"),
        ("support", "acme-dev-chat-support"),
        ("chat", "acme-dev-chat-base"),
        ("acme-dev-chat", "acme-dev-chat-base"),
    ],
)
def test_model_name_selects_the_inference_component(proxy, runtime_stub, call, adapter_settings, model, component):
    runtime_stub.add_response(
        "invoke_endpoint",
        {"Body": streaming(chat_completion()), "ContentType": "application/json"},
        expected_params={
            "EndpointName": "acme-dev-chat",
            "InferenceComponentName": component,
            "Body": json_body({"messages": MESSAGES}),
            "ContentType": "application/json",
            "Accept": "application/json",
        },
    )
    with installed(proxy, settings=adapter_settings):
        status, body, _ = call(chat_event({"model": model, "messages": MESSAGES}))
    assert status == 200 and body["model"] == model


def test_adapter_by_its_components_endpoint_name_is_not_found(proxy, call, adapter_settings):
    with installed(proxy, settings=adapter_settings, runtime=FakeVllm()):
        status, body, _ = call(chat_event({"model": "acme-dev-legal", "messages": MESSAGES}))
    assert (status, body["error"]["code"]) == (404, "model_not_found")


def test_streamed_adapter_call_addresses_its_component(proxy, adapter_settings):
    calls = []

    class Recording(FakeVllm):
        def invoke_endpoint_with_response_stream(self, **params):
            calls.append({k: v for k, v in params.items() if k != "Body"})
            return super().invoke_endpoint_with_response_stream(**params)

    from .events import LambdaContext

    with installed(proxy, settings=adapter_settings, runtime=Recording()):
        response = proxy.lambda_handler(
            chat_event({"model": "support", "messages": MESSAGES, "stream": True}), LambdaContext()
        )
    assert response["statusCode"] == 200 and response["body"].endswith("data: [DONE]\n\n")
    assert calls == [
        {
            "EndpointName": "acme-dev-chat",
            "InferenceComponentName": "acme-dev-chat-support",
            "ContentType": "application/json",
            "Accept": "text/event-stream",
        }
    ]


def test_component_scaled_to_zero_is_a_503_with_a_minute_retry_after(proxy, runtime_stub, call, adapter_settings):
    runtime_stub.add_client_error(
        "invoke_endpoint",
        service_error_code="ValidationError",
        http_status_code=400,
        service_message="Inference Component has no capacity to process this request. ApplicationAutoScaling may be "
        "in-progress (if configured) or try to increase the capacity by invoking "
        "UpdateInferenceComponentRuntimeConfig API.",
    )
    with installed(proxy, settings=adapter_settings):
        status, body, headers = call(chat_event({"model": "legal", "messages": MESSAGES}))
    assert (status, body["error"]["code"], headers["Retry-After"]) == (503, "model_scaling_up", "60")
