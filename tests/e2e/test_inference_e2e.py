"""End to end: models fine-tuned here by the training container, packed as model.tar.gz, served by the
inference containers' code in this process, and called through the inference proxy with API Gateway events.

The classifier is served by the Hugging Face inference toolkit's own default handler (no custom code in the
artifact); the LLM by a stand-in for LMI's chat-completions schema over the fine-tuned weights.
"""

from __future__ import annotations

import json
import os
from unittest import mock

import pytest

from tests.handlers.events import LambdaContext, chat_event, decode, predict_event

from .conftest import CLASSIFIER_ENDPOINT, LLM_ENDPOINT, digests

pytestmark = pytest.mark.training

POSITIVE = ["a masterpiece, moving and funny", "an utterly delightful, beautifully acted film"]
NEGATIVE = ["a dull, lifeless mess", "boring, tedious and far too long"]


def call(proxy, event: dict) -> tuple[int, dict]:
    return decode(proxy.lambda_handler(event, LambdaContext()))


@pytest.mark.parametrize("artifact", ["classifier_artifact", "llm_artifact"])
def test_model_tar_gz_round_trips_the_model_dir(request, artifact):
    # Given the model directory train.py wrote, packed as SageMaker uploads it and unpacked as hosting does
    artifact = request.getfixturevalue(artifact)
    # Then every member sits at the archive root, relative and inside it
    assert "config.json" in artifact.members
    assert all(not name.startswith(("/", "./")) and ".." not in name.split("/") for name in artifact.members)
    # And the unpacked directory holds exactly the same files, byte for byte
    assert digests(artifact.unpacked) == digests(artifact.run.model_dir)


def test_hf_container_defaults_load_the_classifier_with_no_custom_code(
    handler_service, classifier_artifact, classifier_container
):
    from transformers import TextClassificationPipeline

    # The artifact carries no code/inference.py, so the toolkit keeps its default load/preprocess/predict/postprocess
    assert not (classifier_artifact.unpacked / "code").exists()
    service = classifier_container.service
    default = handler_service.HuggingFaceHandlerService
    for name in ("load", "preprocess", "predict", "postprocess", "transform_fn"):
        assert getattr(service, name).__func__ is getattr(default, name), name
    # And its default load built a text-classification pipeline over the fine-tuned weights and their labels
    pipeline = classifier_container.pipeline
    assert isinstance(pipeline, TextClassificationPipeline)
    trained = json.loads((classifier_artifact.run.model_dir / "config.json").read_text())
    assert {str(k): v for k, v in pipeline.model.config.id2label.items()} == trained["id2label"]
    assert pipeline.tokenizer.name_or_path == str(classifier_artifact.unpacked)
    # Even without HF_TASK the toolkit infers the task from the architecture train.py saved
    with mock.patch.dict(os.environ):
        assert (
            handler_service.infer_task_from_model_architecture(str(classifier_artifact.unpacked / "config.json"))
            == "text-classification"
        )


def test_predict_route_labels_clear_examples_with_the_fine_tuned_classifier(
    proxy, serve, classifier_artifact, classifier_container
):
    # Given the sentiment endpoint answered by the HF container's defaults over the fine-tuned MiniLM
    runtime = serve({CLASSIFIER_ENDPOINT: classifier_container})
    id2label = json.loads((classifier_artifact.unpacked / "config.json").read_text())["id2label"]
    positive, negative = id2label["1"], id2label["0"]  # SST-2: 1 is positive, 0 negative
    texts = [POSITIVE[0], NEGATIVE[0], POSITIVE[1], NEGATIVE[1]]
    # When a client posts clear examples through API Gateway
    status, body = call(proxy, predict_event("sentiment", {"inputs": texts}))
    # Then each gets the label train.py stored for its class, with a confident score
    assert status == 200, body
    assert body["model"] == "sentiment"
    labels = [p["label"] for p in body["predictions"]]
    assert labels == [positive, negative, positive, negative], body
    assert all(0.5 < p["score"] <= 1.0 for p in body["predictions"]), body
    # And the proxy sent the toolkit's schema and passed its answer through unchanged
    [invocation] = runtime.calls
    assert (invocation.endpoint_name, invocation.request) == (CLASSIFIER_ENDPOINT, {"inputs": texts})
    assert (invocation.content_type, invocation.accept) == ("application/json", "application/json")
    direct = classifier_container.pipeline(texts)
    assert [p["score"] for p in body["predictions"]] == pytest.approx([d["score"] for d in direct], abs=1e-6)


def test_predict_route_accepts_a_single_text(proxy, serve, classifier_artifact, classifier_container):
    serve({CLASSIFIER_ENDPOINT: classifier_container})
    id2label = json.loads((classifier_artifact.unpacked / "config.json").read_text())["id2label"]
    status, body = call(proxy, predict_event("acme-dev-sentiment", {"inputs": NEGATIVE[0]}))
    assert status == 200, body
    assert [p["label"] for p in body["predictions"]] == [id2label["0"]]


CHAT = [
    {"role": "system", "content": "You are a helpful assistant."},
    {"role": "user", "content": "Write a short paragraph about the ocean."},
]


def test_chat_completions_route_generates_with_the_fine_tuned_smollm2(proxy, serve, llm_artifact, llm_container):
    from transformers import AutoTokenizer

    # Given the chat endpoint answered by the fine-tuned SmolLM2 on LMI's chat-completions schema
    runtime = serve({LLM_ENDPOINT: llm_container})
    # When an OpenAI client posts a chat completion through API Gateway
    request = {"model": "chat", "messages": CHAT, "max_tokens": 16, "temperature": 0, "top_p": 0.9}
    status, body = call(proxy, chat_event(request))
    # Then it gets an OpenAI chat completion with generated text
    assert status == 200, body
    assert body["object"] == "chat.completion" and body["model"] == "chat"
    assert body["id"].startswith("chatcmpl-") and isinstance(body["created"], int)
    [choice] = body["choices"]
    assert choice["index"] == 0 and choice["message"]["role"] == "assistant"
    content = choice["message"]["content"]
    assert isinstance(content, str) and content.strip(), body
    assert choice["finish_reason"] in ("stop", "length"), body
    # And usage counts the tokens the artifact's tokenizer makes of the prompt and the completion
    tokenizer = AutoTokenizer.from_pretrained(llm_artifact.unpacked)
    prompt_tokens = len(tokenizer.apply_chat_template(CHAT, add_generation_prompt=True, return_dict=True)["input_ids"])
    usage = body["usage"]
    assert usage["prompt_tokens"] == prompt_tokens
    assert 0 < len(tokenizer.encode(content, add_special_tokens=False)) <= usage["completion_tokens"] <= 16
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]
    if choice["finish_reason"] == "length":
        assert usage["completion_tokens"] == 16
    # And the endpoint got the OpenAI body without the proxy-only `model`
    [invocation] = runtime.calls
    assert invocation.endpoint_name == LLM_ENDPOINT
    assert invocation.request == {"messages": CHAT, "max_tokens": 16, "temperature": 0, "top_p": 0.9}


def test_chat_completions_stop_sequence_ends_the_completion_as_openai_says(proxy, serve, llm_container):
    # Given the same greedy request, once without and once with a stop sequence the text is sure to contain
    serve({LLM_ENDPOINT: llm_container})
    base = {"model": "acme-dev-chat", "messages": CHAT, "max_tokens": 16, "temperature": 0}
    _, free = call(proxy, chat_event(base))
    status, stopped = call(proxy, chat_event({**base, "stop": [" "]}))
    assert status == 200, stopped
    free_text = free["choices"][0]["message"]["content"]
    assert " " in free_text, free_text
    # Then the completion ends before the stop sequence: the free text up to its first space
    [choice] = stopped["choices"]
    assert choice["message"]["content"] == free_text[: free_text.index(" ")]
    assert stopped["usage"]["completion_tokens"] < free["usage"]["completion_tokens"]
    # And it says so in OpenAI's words, although LMI's vLLM rolling batch reports it as "eos_token"
    # (see containers.LMI_FINISH_REASONS): the proxy maps the container's words to OpenAI's.
    assert choice["finish_reason"] == "stop"
