"""POST /v1/models/{name}/predict against a Hugging Face text-classification endpoint."""

from __future__ import annotations

import pytest

from .conftest import json_body, streaming
from .events import predict_event


def expect_invoke(stub, texts: list[str], answer) -> None:
    stub.add_response(
        "invoke_endpoint",
        {"Body": streaming(answer), "ContentType": "application/json"},
        expected_params={
            "EndpointName": "acme-dev-sentiment",
            "Body": json_body({"inputs": texts}),
            "ContentType": "application/json",
            "Accept": "application/json",
        },
    )


def test_predict_returns_one_label_and_score_per_input_in_order(runtime_stub, call):
    # Given a classifier endpoint answering the inference toolkit's text-classification list
    expect_invoke(
        runtime_stub,
        ["great product", "awful support"],
        [{"label": "positive", "score": 0.98}, {"label": "negative", "score": 0.91}],
    )
    # When a client posts two texts
    status, body, _ = call(predict_event("sentiment", {"inputs": ["great product", "awful support"]}))
    # Then each text gets its label and score, in order
    assert status == 200
    assert body == {
        "model": "sentiment",
        "predictions": [{"label": "positive", "score": 0.98}, {"label": "negative", "score": 0.91}],
    }


def test_a_single_text_is_sent_as_a_list_of_one(runtime_stub, call):
    expect_invoke(runtime_stub, ["fine"], [{"label": "neutral", "score": 0.6}])
    status, body, _ = call(predict_event("sentiment", {"inputs": "fine"}))
    assert status == 200
    assert body["predictions"] == [{"label": "neutral", "score": 0.6}]


def test_full_endpoint_name_in_the_path_is_accepted(runtime_stub, call):
    expect_invoke(runtime_stub, ["ok"], [{"label": "positive", "score": 1}])
    status, body, _ = call(predict_event("acme-dev-sentiment", {"inputs": ["ok"]}))
    assert status == 200
    assert body["model"] == "sentiment"
    assert body["predictions"] == [{"label": "positive", "score": 1.0}]


def test_all_labels_per_input_keep_the_top_one(runtime_stub, call):
    # With top_k configured on the container, each input gets a list of labels.
    expect_invoke(
        runtime_stub,
        ["meh"],
        [[{"label": "negative", "score": 0.3}, {"label": "positive", "score": 0.7}]],
    )
    status, body, _ = call(predict_event("sentiment", {"inputs": ["meh"]}))
    assert status == 200
    assert body["predictions"] == [{"label": "positive", "score": 0.7}]


@pytest.mark.parametrize(
    "answer",
    [
        [{"label": "positive", "score": 0.9}],
        {"label": "positive", "score": 0.9},
        [{"label": "positive"}, {"label": "negative", "score": 0.1}],
        [{"score": 0.5}, {"label": "negative", "score": 0.1}],
        [{"label": "positive", "score": True}, {"label": "negative", "score": 0.1}],
        [{"label": "positive", "score": "0.9"}, {"label": "negative", "score": 0.1}],
        [[], {"label": "negative", "score": 0.1}],
    ],
    ids=["fewer-than-inputs", "object", "no-score", "no-label", "bool-score", "string-score", "empty-list"],
)
def test_malformed_classifier_output_is_a_502(runtime_stub, call, answer):
    expect_invoke(runtime_stub, ["a", "b"], answer)
    status, body, _ = call(predict_event("sentiment", {"inputs": ["a", "b"]}))
    assert (status, body["error"]["code"]) == (502, "model_error")


def test_more_inputs_than_the_limit_is_a_413_before_any_call(runtime_stub, call, settings):
    texts = ["x"] * (settings.max_predict_inputs + 1)
    status, body, _ = call(predict_event("sentiment", {"inputs": texts}))
    assert (status, body["error"]["code"]) == (413, "request_too_large")
    assert str(settings.max_predict_inputs) in body["error"]["message"]
