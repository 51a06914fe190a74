"""The chat container `finetune local serve` runs for LMI (djl-inference) images, over the packaged SmolLM2:
stop strings end the completion as LMI's vLLM rolling batch does, and a malformed field is a 400 naming it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from finetune_cli.local.containers import ChatContainer, ContainerError, container_for
from stacks.components import images
from stacks.settings import ImageVersions

pytestmark = pytest.mark.local

MESSAGES = [{"role": "user", "content": "Write a short paragraph about the ocean."}]
MAX_TOKENS = 12
#: The LMI image the stacks pin (the one local serve picks the chat container for).
LMI_IMAGE = images.lmi_inference("eu-west-1", ImageVersions())


@pytest.fixture(scope="module")
def container(smollm2_dir: Path) -> ChatContainer:
    chat = container_for(LMI_IMAGE, smollm2_dir, {"HF_MODEL_ID": "/opt/ml/model"})  # as the endpoints set it
    assert isinstance(chat, ChatContainer)
    return chat


def invoke(container: ChatContainer, body: dict) -> dict:
    answer, content_type = container.invoke(json.dumps(body).encode(), "application/json", "application/json")
    assert content_type == "application/json"
    return json.loads(answer)


@pytest.fixture(scope="module")
def greedy_ids(smollm2_dir: Path) -> list[int]:
    """The model's greedy completion of MESSAGES, MAX_TOKENS tokens, computed with transformers alone."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(smollm2_dir)
    model = AutoModelForCausalLM.from_pretrained(smollm2_dir, dtype=torch.float32).eval()
    prompt = tokenizer.apply_chat_template(MESSAGES, add_generation_prompt=True, return_tensors="pt", return_dict=True)
    with torch.no_grad():
        output = model.generate(
            **prompt, max_new_tokens=MAX_TOKENS, do_sample=False, pad_token_id=tokenizer.pad_token_id
        )
    return output[0, prompt["input_ids"].shape[1] :].tolist()


def test_stop_string_ends_the_completion_before_it_as_lmi_does(container, greedy_ids):
    # Given the greedy completion without a stop string, and a stop string from its middle (its third word)
    free = invoke(container, {"messages": MESSAGES, "max_tokens": MAX_TOKENS, "temperature": 0})
    free_text = free["choices"][0]["message"]["content"]
    assert free["choices"][0]["finish_reason"] == "length" and free["usage"]["completion_tokens"] == MAX_TOKENS
    stop = " " + free_text.split(" ")[2]

    # When the same request carries it (with a stop string the text never contains beside it)
    body = {"messages": MESSAGES, "max_tokens": MAX_TOKENS, "temperature": 0, "stop": ["@@never@@", stop]}
    stopped = invoke(container, body)

    # Then the content is the free text up to the stop string, which is left out
    [choice] = stopped["choices"]
    assert choice["message"]["content"] == free_text[: free_text.index(stop)], (free_text, stop)
    # And the finish reason is LMI's word for a stop ("eos_token"; the proxy turns it into OpenAI's "stop")
    assert choice["finish_reason"] == "eos_token"
    # And the completion counts the tokens up to the one that completed the stop string, as vLLM does
    decode = container.tokenizer.decode
    expected = next(
        k for k in range(1, len(greedy_ids) + 1) if stop in decode(greedy_ids[:k], skip_special_tokens=True)
    )
    usage = stopped["usage"]
    assert usage["completion_tokens"] == expected < MAX_TOKENS
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]
    assert usage["prompt_tokens"] == free["usage"]["prompt_tokens"]


def test_a_single_stop_string_and_text_content_parts(container):
    # A string `stop` is one stop string; content parts of type text are the message's text (others are ignored)
    parts = [{"type": "text", "text": "Write a short paragraph "}, {"type": "text", "text": "about the ocean."}]
    body = {"messages": [{"role": "user", "content": parts}], "max_tokens": MAX_TOKENS, "temperature": 0}
    free = invoke(container, body)
    text = free["choices"][0]["message"]["content"]
    assert text == invoke(container, {**body, "messages": MESSAGES})["choices"][0]["message"]["content"]
    stopped = invoke(container, {**body, "stop": " "})
    assert stopped["choices"][0]["message"]["content"] == text[: text.index(" ")]
    assert stopped["choices"][0]["finish_reason"] == "eos_token"


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("stop", 7),
        ("stop", ["a", "b", "c", "d", "e"]),  # more than 4
        ("stop", ["fine", None]),
        ("stop", {"text": "x"}),
        ("max_tokens", 0),
        ("max_tokens", -3),
        ("max_tokens", "12"),
        ("max_tokens", 2.5),
        ("max_tokens", True),
        ("temperature", "hot"),
        ("temperature", -1),
        ("top_p", 0),
        ("top_p", [1]),
        ("seed", "lucky"),
    ],
)
def test_a_malformed_field_is_a_400_naming_it(container, field, value):
    with pytest.raises(ContainerError) as raised:
        invoke(container, {"messages": MESSAGES, "max_tokens": 4, "temperature": 0, field: value})
    assert raised.value.status == 400
    assert str(raised.value).startswith(f"{field}: "), str(raised.value)


@pytest.mark.parametrize(
    "body",
    [b"not json", b"[]", b'{"messages": []}', b'{"messages": "hi"}', b'{"messages": [{"content": "hi"}]}'],
)
def test_a_body_that_is_not_a_chat_request_is_a_400(container, body):
    with pytest.raises(ContainerError) as raised:
        container.invoke(body, "application/json", "application/json")
    assert raised.value.status == 400
