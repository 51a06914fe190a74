"""The in-process seam the end-to-end test plugs a real model into."""

from __future__ import annotations

import io

import pytest
from botocore.exceptions import ClientError, ParamValidationError

from .conftest import installed
from .events import chat_event, list_models_event, predict_event
from .in_process import InProcessControlPlane, InProcessRuntime


def upper_classifier(body):
    return [{"label": "SHOUT" if text.isupper() else "calm", "score": 1.0} for text in body["inputs"]]


def test_in_process_runtime_answers_invoke_endpoint_from_the_callable():
    runtime = InProcessRuntime({"acme-dev-sentiment": upper_classifier})
    response = runtime.invoke_endpoint(
        EndpointName="acme-dev-sentiment",
        Body=b'{"inputs": ["HI", "hi"]}',
        ContentType="application/json",
        Accept="application/json",
    )
    assert response["Body"].read() == b'[{"label": "SHOUT", "score": 1.0}, {"label": "calm", "score": 1.0}]'
    assert response["ContentType"] == "application/json"
    [recorded] = runtime.calls
    assert (recorded.endpoint_name, recorded.request) == ("acme-dev-sentiment", {"inputs": ["HI", "hi"]})
    assert 0 <= runtime.last_model_seconds < 1


def test_in_process_runtime_validates_against_botocore_and_fails_like_sagemaker():
    runtime = InProcessRuntime({"acme-dev-sentiment": upper_classifier})
    with pytest.raises(ParamValidationError):
        runtime.invoke_endpoint(EndpointName="acme-dev-sentiment", Body=b"{}", Bogus=1)
    with pytest.raises(ClientError) as too_large:
        runtime.invoke_endpoint(
            EndpointName="acme-dev-sentiment", Body=b"x" * (6 * 1024 * 1024 + 1), ContentType="application/json"
        )
    assert too_large.value.response["Error"]["Code"] == "ValidationError"
    with pytest.raises(ClientError) as missing:
        runtime.invoke_endpoint(EndpointName="acme-dev-nope", Body=io.BytesIO(b"{}"), ContentType="application/json")
    assert missing.value.response["Error"]["Code"] == "ValidationError"
    with pytest.raises(ClientError) as failed:
        runtime.invoke_endpoint(
            EndpointName="acme-dev-sentiment", Body=b'{"inputs": 3}', ContentType="application/json"
        )
    assert failed.value.response["Error"]["Code"] == "ModelError"
    assert failed.value.response["OriginalStatusCode"] == 500


def test_handler_serves_predict_chat_and_list_through_in_process_endpoints(proxy, call):
    def echo_chat(body):
        last = body["messages"][-1]["content"]
        return {
            "choices": [{"index": 0, "message": {"role": "assistant", "content": last[::-1]}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
        }

    runtime = InProcessRuntime({"acme-dev-sentiment": upper_classifier, "acme-dev-chat": echo_chat})
    control_plane = InProcessControlPlane({"acme-dev-chat": "InService"})
    with installed(proxy, runtime=runtime, control_plane=control_plane):
        predicted = call(predict_event("sentiment", {"inputs": ["LOUD", "quiet"]}))
        chatted = call(chat_event({"model": "chat", "messages": [{"role": "user", "content": "abc"}], "max_tokens": 4}))
        listed = call(list_models_event())
    assert predicted[:2] == (
        200,
        {"model": "sentiment", "predictions": [{"label": "SHOUT", "score": 1.0}, {"label": "calm", "score": 1.0}]},
    )
    assert chatted[0] == 200 and chatted[1]["choices"][0]["message"]["content"] == "cba"
    assert runtime.calls[-1].request == {"messages": [{"role": "user", "content": "abc"}], "max_tokens": 4}
    assert [(m["id"], m["status"]) for m in listed[1]["data"]] == [("chat", "InService"), ("sentiment", "NotDeployed")]
