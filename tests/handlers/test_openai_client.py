"""OpenAI-client conformance: the official `openai` package (sync and async) against the proxy as it runs.

Path: openai client -> HTTP -> API Gateway emulator (REST, STREAM transfer mode) -> Lambda Runtime API
emulator -> the proxy's own runtime client (inference_proxy.runtime) -> the real handler -> a fake LMI/vLLM
container (fake_vllm.FakeVllm) behind a botocore-validated sagemaker-runtime client. Every feature is
read through the client's own types, and every failure must arrive as the client's matching exception.
"""

from __future__ import annotations

import asyncio
import json
import threading

import openai
import pytest
from openai import AsyncOpenAI, OpenAI
from openai.types import Model
from openai.types.chat import ChatCompletion, ChatCompletionChunk
from pydantic import BaseModel

from .conftest import installed
from .fake_vllm import FINGERPRINT, FakeVllm
from .in_process import InProcessControlPlane
from .lambda_emulator import streaming_lambda

WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current temperature in a city.",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}
ASK = [{"role": "user", "content": "What is the weather in Paris?"}]


@pytest.fixture(scope="module")
def gateway(proxy):
    with streaming_lambda(proxy.stream_handler) as server:
        yield server


@pytest.fixture
def vllm(proxy):
    fake = FakeVllm()
    control_plane = InProcessControlPlane({"acme-dev-chat": "InService", "acme-dev-sentiment": "Creating"})
    with installed(proxy, runtime=fake, control_plane=control_plane):
        yield fake


@pytest.fixture
def client(gateway, vllm):
    with OpenAI(base_url=gateway.base_url, api_key="sigv4-in-production", max_retries=0, timeout=20) as openai_client:
        yield openai_client


# --- non-streaming -------------------------------------------------------------------------------------------


def test_plain_completion_is_a_chat_completion_with_usage_details_and_fingerprint(client, vllm):
    raw = client.chat.completions.with_raw_response.create(
        model="chat", messages=[{"role": "developer", "content": "Be brief."}, *ASK], max_completion_tokens=32
    )
    completion = raw.parse()
    assert isinstance(completion, ChatCompletion)
    assert completion.choices[0].message.content == "You said: What is the weather in Paris?"
    assert completion.choices[0].finish_reason == "stop"
    assert completion.model == "chat" and completion.system_fingerprint == FINGERPRINT
    assert completion.usage.total_tokens == completion.usage.prompt_tokens + completion.usage.completion_tokens
    assert completion.usage.prompt_tokens_details.cached_tokens == 0
    assert raw.headers["x-request-id"]
    assert vllm.requests[-1]["messages"][0] == {"role": "developer", "content": "Be brief."}
    assert vllm.requests[-1]["max_tokens"] == 32


def test_tool_calling_round_trip(client, vllm):
    first = client.chat.completions.create(
        model="chat", messages=ASK, tools=[WEATHER_TOOL], tool_choice="auto", parallel_tool_calls=False
    )
    choice = first.choices[0]
    assert choice.finish_reason == "tool_calls" and choice.message.content is None
    (call,) = choice.message.tool_calls
    assert (call.type, call.function.name, json.loads(call.function.arguments)) == (
        "function",
        "get_weather",
        {"city": "Paris"},
    )
    # The application runs the tool and sends the history back: assistant tool_calls with content null,
    # then the tool's result.
    second = client.chat.completions.create(
        model="chat",
        tools=[WEATHER_TOOL],
        messages=[
            *ASK,
            choice.message.model_dump(exclude_none=True) | {"content": None},
            {"role": "tool", "tool_call_id": call.id, "content": '{"celsius": 21}'},
        ],
    )
    assert second.choices[0].message.content == 'The tool said {"celsius": 21}.'
    forwarded = vllm.requests[-1]["messages"]
    assert forwarded[1]["content"] is None and forwarded[1]["tool_calls"][0]["id"] == call.id
    assert forwarded[2] == {"role": "tool", "tool_call_id": call.id, "content": '{"celsius": 21}'}
    assert vllm.requests[0]["parallel_tool_calls"] is False


class Weather(BaseModel):
    city: str
    celsius: int


def test_structured_output_with_parse(client, vllm):
    completion = client.chat.completions.parse(model="chat", messages=ASK, response_format=Weather)
    parsed = completion.choices[0].message.parsed
    assert isinstance(parsed, Weather) and parsed == Weather(city="Paris", celsius=21)
    response_format = vllm.requests[-1]["response_format"]
    assert response_format["type"] == "json_schema" and response_format["json_schema"]["name"] == "Weather"


def test_json_object_logprobs_sampling_options_and_vllm_extras_reach_the_container(client, vllm):
    completion = client.chat.completions.create(
        model="chat",
        messages=ASK,
        response_format={"type": "json_object"},
        logprobs=True,
        top_logprobs=2,
        logit_bias={"50256": -100},
        n=2,
        seed=11,
        stop=["\n\n"],
        temperature=0.3,
        extra_body={"top_k": 20, "repetition_penalty": 1.05, "min_p": 0.1},
    )
    assert [json.loads(choice.message.content) for choice in completion.choices] == [{"answer": "hello"}] * 2
    top = completion.choices[0].logprobs.content[0].top_logprobs
    assert len(top) == 2 and top[0].logprob == -0.5
    sent = vllm.requests[-1]
    assert {key: sent[key] for key in ("logit_bias", "n", "seed", "stop", "top_k", "repetition_penalty", "min_p")} == {
        "logit_bias": {"50256": -100},
        "n": 2,
        "seed": 11,
        "stop": ["\n\n"],
        "top_k": 20,
        "repetition_penalty": 1.05,
        "min_p": 0.1,
    }


def test_models_list_and_retrieve(client):
    models = client.models.list().data
    assert [(model.id, model.created > 0 or model.created == 0) for model in models] == [
        ("chat", True),
        ("sentiment", True),
    ]
    model = client.models.retrieve("chat")
    assert isinstance(model, Model) and (model.id, model.owned_by) == ("chat", "acme")
    assert isinstance(model.created, int)


# --- failures as the client's exception classes ---------------------------------------------------------------


def test_invalid_request_is_bad_request_error_with_param_and_code(client):
    with pytest.raises(openai.BadRequestError) as raised:
        client.chat.completions.create(
            model="chat",
            messages=[
                {
                    "role": "user",
                    "content": [{"type": "image_url", "image_url": {"url": "https://example.com/cat.png"}}],
                }
            ],
        )
    assert raised.value.status_code == 400
    assert (raised.value.code, raised.value.param, raised.value.type) == (
        "invalid_request",
        "messages.0.content.0",
        "invalid_request_error",
    )
    assert "not supported" in raised.value.message


def test_unknown_model_is_not_found_error_with_model_not_found(client):
    with pytest.raises(openai.NotFoundError) as raised:
        client.chat.completions.create(model="gpt-4o", messages=ASK)
    assert (raised.value.code, raised.value.param) == ("model_not_found", "model")
    with pytest.raises(openai.NotFoundError) as raised:
        client.models.retrieve("gpt-4o")
    assert raised.value.code == "model_not_found"


def test_other_teams_model_is_permission_denied(client):
    with pytest.raises(openai.PermissionDeniedError) as raised:
        client.models.retrieve("globex-prod-chat")
    assert raised.value.type == "permission_error"


@pytest.mark.parametrize(
    ("code", "exception", "status"),
    [
        ("ThrottlingException", openai.RateLimitError, 429),
        ("ModelNotReadyException", openai.InternalServerError, 503),
        ("ModelError", openai.InternalServerError, 502),
    ],
)
@pytest.mark.parametrize("stream", [False, True], ids=["buffered", "streamed"])
def test_endpoint_failures_before_the_first_byte_keep_their_status(client, vllm, code, exception, status, stream):
    vllm.fail_with = code
    with pytest.raises(exception) as raised:
        result = client.chat.completions.create(model="chat", messages=ASK, stream=stream)
        list(result)
    assert raised.value.status_code == status
    if status in (429, 503):
        assert int(raised.value.response.headers["retry-after"]) > 0


# --- streaming ------------------------------------------------------------------------------------------------


def test_stream_yields_chunks_then_usage_and_ends_cleanly(client, gateway, vllm):
    stream = client.chat.completions.create(
        model="chat", messages=ASK, stream=True, stream_options={"include_usage": True}
    )
    chunks = list(stream)
    assert all(isinstance(chunk, ChatCompletionChunk) for chunk in chunks)
    assert {chunk.id for chunk in chunks} == {"chatcmpl-vllm-stream"} and {c.model for c in chunks} == {"chat"}
    text = "".join(chunk.choices[0].delta.content or "" for chunk in chunks if chunk.choices)
    assert text == "You said: What is the weather in Paris?"
    finishes = [chunk.choices[0].finish_reason for chunk in chunks if chunk.choices]
    assert finishes[-1] == "stop" and set(finishes[:-1]) == {None}
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == len(text.split())
    assert gateway.runtime_api.response_modes[-1] == "streaming"
    assert vllm.requests[-1]["stream"] is True and vllm.requests[-1]["stream_options"] == {"include_usage": True}


def test_stream_without_include_usage_has_no_usage_chunk(client):
    chunks = list(client.chat.completions.create(model="chat", messages=ASK, stream=True))
    assert all(chunk.usage is None for chunk in chunks) and chunks[-1].choices[0].finish_reason == "stop"


def test_first_chunk_reaches_the_client_before_the_container_has_finished(client, vllm):
    vllm.hold_after_first_chunk = threading.Event()
    stream = client.chat.completions.create(model="chat", messages=ASK, stream=True)
    iterator = iter(stream)
    first = next(iterator)  # would block forever (then fail the fake's wait) if the proxy buffered
    assert first.choices[0].delta.role == "assistant"
    assert not vllm.hold_after_first_chunk.is_set()
    vllm.hold_after_first_chunk.set()
    assert "".join(chunk.choices[0].delta.content or "" for chunk in iterator).startswith("You said:")


def test_streamed_tool_call_deltas_reassemble(client):
    chunks = list(client.chat.completions.create(model="chat", messages=ASK, tools=[WEATHER_TOOL], stream=True))
    calls = [call for chunk in chunks for call in (chunk.choices[0].delta.tool_calls or [])]
    assert calls[0].function.name == "get_weather" and calls[0].id == "chatcmpl-tool-7"
    assert json.loads("".join(call.function.arguments or "" for call in calls)) == {"city": "Paris"}
    assert chunks[-1].choices[0].finish_reason == "tool_calls"


def test_mid_stream_failure_ends_the_stream_with_an_error_event(client, vllm):
    vllm.fail_after_chunks = 3
    received = []
    with pytest.raises(openai.APIError) as raised:
        for chunk in client.chat.completions.create(model="chat", messages=ASK, stream=True):
            received.append(chunk)
    assert len(received) == 3
    assert raised.value.code == "model_error" and "failed while streaming" in raised.value.message
    assert "CUDA" not in raised.value.message  # the container's words stay in the logs
    # The connection is reusable: the client's next call works.
    assert client.chat.completions.create(model="chat", messages=ASK).choices[0].message.content


def test_stream_helper_of_the_client_accumulates_the_final_completion(client):
    with client.chat.completions.stream(model="chat", messages=ASK) as stream:
        for _ in stream:
            pass
        final = stream.get_final_completion()
    assert final.choices[0].message.content == "You said: What is the weather in Paris?"


# --- async client ---------------------------------------------------------------------------------------------


def test_async_client_completion_stream_retrieve_and_errors(gateway, vllm):
    async def scenario() -> None:
        async with AsyncOpenAI(base_url=gateway.base_url, api_key="x", max_retries=0, timeout=20) as client:
            completion = await client.chat.completions.create(model="chat", messages=ASK)
            assert isinstance(completion, ChatCompletion) and completion.choices[0].message.content
            stream = await client.chat.completions.create(
                model="chat", messages=ASK, stream=True, stream_options={"include_usage": True}
            )
            chunks = [chunk async for chunk in stream]
            assert isinstance(chunks[0], ChatCompletionChunk) and chunks[-1].usage is not None
            parsed = await client.chat.completions.parse(model="chat", messages=ASK, response_format=Weather)
            assert parsed.choices[0].message.parsed == Weather(city="Paris", celsius=21)
            assert (await client.models.retrieve("sentiment")).id == "sentiment"
            with pytest.raises(openai.NotFoundError):
                await client.models.retrieve("nope")
            with pytest.raises(openai.BadRequestError):
                await client.chat.completions.create(model="chat", messages=[])

    asyncio.run(scenario())
