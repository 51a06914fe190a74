"""Property tests: no request body, however odd, produces a 500 or an error without the JSON error shape."""

from __future__ import annotations

import json

from hypothesis import HealthCheck, example, given, settings
from hypothesis import event as label_example
from hypothesis import strategies as st

from .conftest import chat_completion, installed
from .events import LambdaContext, chat_event, predict_event
from .in_process import InProcessRuntime

EXPECTED_STATUSES = {200, 400, 403, 404, 413}

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=4),
    max_leaves=20,
)

model_names = st.sampled_from(
    ["chat", "acme-dev-chat", "sentiment", "acme-dev-sentiment", "acme-prod-chat", "globex-dev-chat", "nope", ""]
) | st.text(max_size=30)

# Mostly valid parts, so a fair share of bodies pass validation and reach the (in-process) endpoint.
messages = st.lists(
    st.fixed_dictionaries(
        {
            "role": st.sampled_from(["user", "user", "system", "assistant", "tool", ""]),
            "content": st.one_of(st.text(), st.text(), st.text(), json_values),
        }
    ),
    min_size=1,
    max_size=3,
) | st.lists(json_values, max_size=2)

# Bodies close to valid: the right keys with plausible or wrong values, sometimes an extra key.
near_valid_chat = st.fixed_dictionaries(
    {"model": st.sampled_from(["chat", "acme-dev-chat"]) | model_names, "messages": messages},
    optional={
        "max_tokens": st.integers(-2, 200_000) | st.integers(1, 512) | json_values,
        "temperature": st.floats(-1, 3) | st.floats(0, 2) | json_values,
        "top_p": st.floats(-0.5, 1.5) | st.floats(0.01, 1) | json_values,
        "stop": st.text(max_size=5) | st.lists(st.text(max_size=5), max_size=6),
        "n": st.integers(-1, 10),
        # stream=true needs a streaming runtime (InProcessRuntime has none): streamed bodies are covered through the
        # streaming runtime client in test_streaming.py and test_openai_client.py.
        "stream": st.just(False) | json_values.filter(lambda v: v is not True),
        "max_completion_tokens": st.integers(-1, 100),
        "unexpected": json_values,
    },
)
near_valid_predict = st.fixed_dictionaries(
    {
        "inputs": st.text()
        | st.lists(st.text(max_size=20), max_size=10)
        | st.lists(json_values, max_size=3)
        | json_values
    },
    optional={"parameters": json_values},
)


def answer(body):
    if "inputs" in body:
        return [{"label": "positive", "score": 0.5} for _ in body["inputs"]]
    return chat_completion()


RUNTIME = InProcessRuntime({"acme-dev-chat": answer, "acme-dev-sentiment": answer})


def check(proxy, event) -> None:
    with installed(proxy, runtime=RUNTIME):
        response = proxy.lambda_handler(event, LambdaContext())
    status = response["statusCode"]
    label_example(f"status {status}")
    assert status in EXPECTED_STATUSES, response
    body = json.loads(response["body"])
    if status >= 400:
        assert set(body) == {"error"}
        assert isinstance(body["error"]["type"], str) and body["error"]["type"]
        assert isinstance(body["error"]["message"], str) and "Traceback" not in body["error"]["message"]


PROPERTY_SETTINGS = settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


@PROPERTY_SETTINGS
@given(body=json_values)
def test_arbitrary_json_on_chat(proxy, body):
    check(proxy, chat_event(json.dumps(body)))


@PROPERTY_SETTINGS
@given(body=near_valid_chat)
@example(body={"model": "chat", "messages": [{"role": "user", "content": "\ud800 lone surrogate"}]})
def test_near_valid_chat_bodies(proxy, body):
    check(proxy, chat_event(json.dumps(body)))


@PROPERTY_SETTINGS
@given(
    name=st.sampled_from(["sentiment", "acme-dev-sentiment"])
    | model_names.filter(lambda name: name and "/" not in name),
    body=near_valid_predict | json_values,
)
def test_near_valid_predict_bodies(proxy, name, body):
    check(proxy, predict_event(name, json.dumps(body)))


@PROPERTY_SETTINGS
@given(text=st.text(max_size=200), base64_body=st.booleans())
@example(text='{"model": "chat", "messages": [{"role": "user", "content": "\\ud800"}]}', base64_body=False)
@example(
    text='{"model": "chat", "messages": [{"role": "user", "content": "x"}], "temperature": NaN}', base64_body=False
)
@example(text="[" * 5000, base64_body=False)
def test_arbitrary_text_bodies(proxy, text, base64_body):
    check(proxy, chat_event(text, base64_body=base64_body))


@PROPERTY_SETTINGS
@given(raw=st.binary(max_size=200))
def test_arbitrary_bytes_sent_as_base64(proxy, raw):
    check(proxy, chat_event(raw, base64_body=True))
