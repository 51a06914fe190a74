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
            {
                "model": "chat",
                "messages": MESSAGES,
                "max_tokens": 32,
                "temperature": 0.2,
                "top_p": 0.9,
                "stop": ["\n\n"],
            }
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
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": "Hello."},
                "logprobs": None,
                "finish_reason": "stop",
            }
        ],
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
        {
            "messages": [{"role": "user", "content": [{"type": "text", "text": "hi"}]}],
            "n": 2,
            "seed": 3,
            "max_tokens": 7,
        },
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
    assert (status, body["error"]["code"]) == (502, "model_error")
    assert "not a chat completion" in body["error"]["message"]


def test_model_output_that_is_not_json_is_a_502(runtime_stub, call):
    import io

    from botocore.response import StreamingBody

    runtime_stub.add_response(
        "invoke_endpoint",
        {"Body": StreamingBody(io.BytesIO(b"<html>502</html>"), 16), "ContentType": "text/html"},
    )
    status, body, _ = call(chat_event({"model": "chat", "messages": MESSAGES}))
    assert (status, body["error"]["code"]) == (502, "model_error")
    assert "not JSON" in body["error"]["message"]


def test_base64_encoded_body_is_decoded(runtime_stub, call):
    expect_invoke(runtime_stub, "acme-dev-chat", {"messages": MESSAGES}, chat_completion())
    status, _, _ = call(chat_event({"model": "chat", "messages": MESSAGES}, base64_body=True))
    assert status == 200


def test_lmi_finish_reasons_become_openai_words():
    from lambda_handlers.inference_proxy.chat import openai_finish_reason

    assert [openai_finish_reason(r) for r in ("eos_token", "stop_sequence", "length", "max_tokens", None, "other")] == [
        "stop",
        "stop",
        "length",
        "length",
        None,
        "other",
    ]


TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "Current weather in a city.",
            "parameters": {
                "type": "object",
                "properties": {"city": {"type": "string", "default": None}},
                "required": ["city"],
            },
        },
    }
]
TOOL_CALL = {
    "id": "chatcmpl-tool-1",
    "type": "function",
    "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
}


def test_the_openai_surface_is_checked_then_forwarded_as_sent(runtime_stub, call):
    # Every option vLLM's OpenAI server takes, known to the proxy or not, reaches the container unchanged.
    request = {
        "messages": [
            {"role": "developer", "content": "Use tools when they help."},
            {"role": "user", "content": "Weather in Paris?"},
            {"role": "assistant", "content": None, "tool_calls": [TOOL_CALL]},
            {"role": "tool", "tool_call_id": "chatcmpl-tool-1", "content": '{"celsius": 21}'},
        ],
        "tools": TOOLS,
        "tool_choice": "auto",
        "parallel_tool_calls": False,
        "response_format": {
            "type": "json_schema",
            "json_schema": {
                "name": "answer",
                "schema": {"type": "object", "properties": {"text": {"type": "string"}}},
                "strict": True,
            },
        },
        "logprobs": True,
        "top_logprobs": 2,
        "logit_bias": {"50256": -100},
        "n": 1,
        "seed": 7,
        "stop": "END",
        "top_k": 40,
        "min_p": 0.05,
        "repetition_penalty": 1.1,
        "guided_decoding_backend": "xgrammar",
    }
    expect_invoke(runtime_stub, "acme-dev-chat", {**request, "max_tokens": 64}, chat_completion())
    status, _, _ = call(chat_event({"model": "chat", **request, "max_completion_tokens": 64}))
    assert status == 200


def test_tool_calls_logprobs_fingerprint_and_usage_details_come_back(runtime_stub, call):
    logprobs = {
        "content": [
            {
                "token": "{",
                "logprob": -0.01,
                "bytes": [123],
                "top_logprobs": [{"token": "{", "logprob": -0.01, "bytes": [123]}],
            }
        ]
    }
    answer = chat_completion(
        system_fingerprint="fp_vllm_0_9",
        choices=[
            {
                "index": 0,
                "message": {"role": "assistant", "content": None, "tool_calls": [TOOL_CALL]},
                "logprobs": logprobs,
                "finish_reason": "tool_calls",
            }
        ],
        usage={
            "prompt_tokens": 30,
            "completion_tokens": 9,
            "total_tokens": 39,
            "prompt_tokens_details": {"cached_tokens": 16},
        },
    )
    expect_invoke(runtime_stub, "acme-dev-chat", {"messages": MESSAGES, "tools": TOOLS}, answer)
    status, body, _ = call(chat_event({"model": "chat", "messages": MESSAGES, "tools": TOOLS}))
    assert status == 200
    choice = body["choices"][0]
    assert choice["message"]["tool_calls"] == [TOOL_CALL] and choice["message"]["content"] is None
    assert (choice["finish_reason"], choice["logprobs"]) == ("tool_calls", logprobs)
    assert body["system_fingerprint"] == "fp_vllm_0_9"
    assert body["usage"]["prompt_tokens_details"] == {"cached_tokens": 16}


def test_empty_tool_calls_list_from_vllm_is_omitted(runtime_stub, call):
    answer = chat_completion(
        choices=[
            {"index": 0, "message": {"role": "assistant", "content": "hi", "tool_calls": []}, "finish_reason": "stop"}
        ]
    )
    expect_invoke(runtime_stub, "acme-dev-chat", {"messages": MESSAGES}, answer)
    status, body, _ = call(chat_event({"model": "chat", "messages": MESSAGES}))
    assert status == 200 and "tool_calls" not in body["choices"][0]["message"]
