"""POST /v1/chat/completions against an LMI endpoint, every SageMaker call checked by botocore's Stubber."""

from __future__ import annotations

import pytest

from .conftest import chat_completion, json_body, streaming
from .events import chat_event

MESSAGES = [
    {"role": "system", "content": "You are terse."},
    {"role": "user", "content": "Say hello."},
]


def expect_invoke(stub, endpoint_name: str, body: dict, answer: dict) -> None:
    stub.add_response(
        "invoke_endpoint",
        {"Body": streaming(answer), "ContentType": "application/json", "InvokedProductionVariant": "AllTraffic"},
        expected_params={
            "EndpointName": endpoint_name,
            "Body": json_body(body),
            "ContentType": "application/json",
            "Accept": "application/json",
        },
    )


def test_chat_completion_forwards_the_openai_body_and_returns_an_openai_response(runtime_stub, call):
    # Given an LLM endpoint that answers in the OpenAI schema
    expect_invoke(
        runtime_stub,
        "acme-dev-chat",
        {"messages": MESSAGES, "max_tokens": 32, "temperature": 0.2, "top_p": 0.9, "stop": ["\n\n"]},
        chat_completion("Hello."),
    )
    # When a client posts an OpenAI request naming the endpoint by its short name
    status, body, headers = call(
        chat_event(
            {"model": "chat", "messages": MESSAGES, "max_tokens": 32, "temperature": 0.2, "top_p": 0.9, "stop": ["\n\n"]}
        )
    )
    # Then it gets the completion back in the OpenAI shape
    assert status == 200
    assert headers["Content-Type"] == "application/json"
    assert body == {
        "id": "chatcmpl-0f3b",
        "object": "chat.completion",
        "created": 1735689600,
        "model": "chat",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "Hello."}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 12, "completion_tokens": 5, "total_tokens": 17},
    }


def test_full_endpoint_name_is_accepted_and_echoed(runtime_stub, call):
    expect_invoke(runtime_stub, "acme-dev-chat", {"messages": MESSAGES}, chat_completion())
    status, body, _ = call(chat_event({"model": "acme-dev-chat", "messages": MESSAGES}))
    assert status == 200
    assert body["model"] == "acme-dev-chat"


def test_proxy_only_fields_are_not_forwarded_and_max_completion_tokens_maps_to_max_tokens(runtime_stub, call):
    # `user` and `stream: false` are accepted from OpenAI clients but mean nothing to the container.
    expect_invoke(
        runtime_stub,
        "acme-dev-chat",
        {"messages": [{"role": "user", "content": [{"type": "text", "text": "hi"}]}], "max_tokens": 7, "n": 2, "seed": 3},
        chat_completion(),
    )
    status, _, _ = call(
        chat_event(
            {
                "model": "chat",
                "messages": [{"role": "user", "content": [{"type": "text", "text": "hi"}]}],
                "max_completion_tokens": 7,
                "n": 2,
                "seed": 3,
                "user": "app-42",
                "stream": False,
            }
        )
    )
    assert status == 200


def test_several_choices_and_missing_id_usage_totals(runtime_stub, call):
    answer = {
        "choices": [
            {"index": 0, "message": {"role": "assistant", "content": "a"}, "finish_reason": "length"},
            {"index": 1, "message": {"role": "assistant", "content": "b"}, "finish_reason": "stop"},
        ],
        "usage": {"prompt_tokens": 3, "completion_tokens": 4},
    }
    expect_invoke(runtime_stub, "acme-dev-chat", {"messages": MESSAGES, "n": 2}, answer)
    status, body, _ = call(chat_event({"model": "chat", "messages": MESSAGES, "n": 2}))
    assert status == 200
    assert body["id"].startswith("chatcmpl-") and len(body["id"]) > len("chatcmpl-")
    assert isinstance(body["created"], int) and body["created"] > 1_700_000_000
    assert [choice["message"]["content"] for choice in body["choices"]] == ["a", "b"]
    assert [choice["finish_reason"] for choice in body["choices"]] == ["length", "stop"]
    assert body["usage"] == {"prompt_tokens": 3, "completion_tokens": 4, "total_tokens": 7}


@pytest.mark.parametrize(
    "answer",
    [
        {"choices": []},
        {"generated_text": "the LMI default schema, not chat"},
        [{"generated_text": "a list"}],
        {"choices": [{"message": {"content": 5}}]},
        {"choices": [{"message": {"content": "x"}}], "usage": {"prompt_tokens": -1}},
    ],
    ids=["no-choices", "text-generation-schema", "list", "content-not-text", "negative-usage"],
)
def test_model_output_that_is_not_a_chat_completion_is_a_502(runtime_stub, call, answer):
    expect_invoke(runtime_stub, "acme-dev-chat", {"messages": MESSAGES}, answer)
    status, body, _ = call(chat_event({"model": "chat", "messages": MESSAGES}))
    assert (status, body["error"]["type"]) == (502, "model_error")
    assert "not a chat completion" in body["error"]["message"]


def test_model_output_that_is_not_json_is_a_502(runtime_stub, call):
    import io

    from botocore.response import StreamingBody

    runtime_stub.add_response(
        "invoke_endpoint",
        {"Body": StreamingBody(io.BytesIO(b"<html>502</html>"), 16), "ContentType": "text/html"},
    )
    status, body, _ = call(chat_event({"model": "chat", "messages": MESSAGES}))
    assert (status, body["error"]["type"]) == (502, "model_error")
    assert "not JSON" in body["error"]["message"]


def test_base64_encoded_body_is_decoded(runtime_stub, call):
    expect_invoke(runtime_stub, "acme-dev-chat", {"messages": MESSAGES}, chat_completion())
    status, _, _ = call(chat_event({"model": "chat", "messages": MESSAGES}, base64_body=True))
    assert status == 200


def test_lmi_finish_reasons_become_openai_words():
    from lambda_handlers.inference_proxy.chat import openai_finish_reason

    assert [openai_finish_reason(r) for r in ("eos_token", "stop_sequence", "length", "max_tokens", None, "other")] \
        == ["stop", "stop", "length", "length", None, "other"]
