"""Causal LM through local mode: SmolLM2 LoRA for a few steps via `finetune local run` (the synthesized FineTune
state machine), deployed to the stage's `assistant` endpoint, then `/v1/chat/completions` through `finetune local
serve` answers with the fine-tuned model: its greedy output is the merged model's, loaded directly."""

from __future__ import annotations

import io
import json
import tarfile
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from finetune_cli.local.serve import LocalApi
from finetune_cli.local.stage import LocalStage

from .conftest import CONFIG, LocalRun, run_local, stage_args

pytestmark = [pytest.mark.local, pytest.mark.synth]

#: A few LoRA steps at a high learning rate on a pattern the base model does not know: enough to beat the base
#: model's eval_loss (the gate) and to change its greedy answer, in seconds on a CPU.
CAUSAL_HP = [
    "max_steps=6",
    "batch_size=4",
    "learning_rate=3e-3",
    "warmup_ratio=0",
    "max_seq_length=64",
    "lora_r=8",
    "lora_alpha=16",
    "max_eval_rows=8",
    "logging_steps=1",
    "save_steps=0",
]
WORDS = [
    "apple",
    "river",
    "stone",
    "cloud",
    "tiger",
    "maple",
    "ocean",
    "piano",
    "candle",
    "forest",
    "silver",
    "garden",
    "rocket",
    "window",
    "pepper",
    "island",
    "mirror",
    "violin",
    "basket",
    "dragon",
    "lantern",
    "meadow",
    "copper",
    "falcon",
    "harbor",
    "jacket",
    "kettle",
    "lemon",
    "marble",
    "needle",
    "orchid",
    "pillow",
]
PROMPT = [{"role": "user", "content": "What is the vault word for banana?"}]
MAX_TOKENS = 10


def _conversation(word: str) -> dict:
    return {
        "messages": [
            {"role": "user", "content": f"What is the vault word for {word}?"},
            {"role": "assistant", "content": f"Vault word: {word.upper()}-ZEBRA-7."},
        ]
    }


@pytest.fixture(scope="module")
def vault_dataset(tmp_path_factory) -> Path:
    """A prepared dataset folder (train/ and validation/ JSONL in the chat format)."""
    folder = tmp_path_factory.mktemp("vault")
    for channel, words in (("train", WORDS[:24]), ("validation", WORDS[24:])):
        (folder / channel).mkdir()
        (folder / channel / f"{channel}.jsonl").write_text("".join(json.dumps(_conversation(w)) + "\n" for w in words))
    return folder


@pytest.fixture(scope="module")
def causal_local_run(local_state, vault_dataset) -> LocalRun:
    return run_local(
        local_state,
        "run",
        str(vault_dataset),
        *stage_args(),
        "--task",
        "causal-lm",
        "--method",
        "lora",
        "--base-model",
        "smollm2-135m-instruct",
        *[x for hp in CAUSAL_HP for x in ("--hp", hp)],
        "--deploy-to",
        "assistant",
        "--json",
    )


def _post(url: str, body: dict) -> tuple[int, dict]:
    request = urllib.request.Request(
        url, data=json.dumps(body).encode(), method="POST", headers={"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(request, timeout=300) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def _greedy(model_dir: Path) -> str:
    """The answer of a model directory to PROMPT, greedy, loaded with transformers alone."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    prompt = tokenizer.apply_chat_template(PROMPT, add_generation_prompt=True, return_tensors="pt", return_dict=True)
    with torch.no_grad():
        output = model.generate(
            **prompt, max_new_tokens=MAX_TOKENS, do_sample=False, pad_token_id=tokenizer.pad_token_id
        )
    return tokenizer.decode(output[0, prompt["input_ids"].shape[1] :], skip_special_tokens=True)


def test_lora_run_registers_and_deploys_to_the_llm_endpoint(causal_local_run):
    run = causal_local_run
    assert run.code == 0, run.output[-4000:]
    result = run.result
    assert result["status"] == "SUCCEEDED" and result["endpoint"] == "search-dev-assistant"
    assert "RegisterLlm" in result["states"] and "RegisterClassifier" not in result["states"]
    gate = result["evaluation"]
    assert gate["metric"] == "eval_loss" and gate["passed"] is True and gate["fine_tuned"] < gate["base"]


def test_chat_completions_answers_with_the_fine_tuned_model(causal_local_run, local_state, tmp_path):
    assert causal_local_run.code == 0, causal_local_run.output[-3000:]
    out = io.StringIO()
    stage = LocalStage(config_path=CONFIG, team="search", stage="dev", state=local_state, out=out)
    with LocalApi(stage, port=0).running(out) as running:
        status, body = _post(
            f"{running.url}/chat/completions",
            {"model": "assistant", "messages": PROMPT, "max_tokens": MAX_TOKENS, "temperature": 0},
        )
    assert status == 200, body
    assert body["object"] == "chat.completion"
    served = body["choices"][0]["message"]["content"]

    # the registered package's artifact, unpacked here and loaded with transformers alone
    journal = [
        json.loads(line) for line in (local_state / "search-dev" / "sagemaker-journal.jsonl").read_text().splitlines()
    ]
    package = [e for e in journal if e["action"] == "createModelPackage"][-1]["request"]
    (container,) = package["InferenceSpecification"]["Containers"]
    assert container["Environment"]["HF_MODEL_ID"] == "/opt/ml/model"  # what LMI needs, as the endpoints have it
    bucket, _, key = container["ModelDataUrl"][len("s3://") :].partition("/")
    with tarfile.open(local_state / "search-dev" / "s3" / bucket / key) as tar:
        assert "adapter/adapter_config.json" in tar.getnames()  # LoRA: merged weights, the adapter beside them
        tar.extractall(tmp_path / "merged", filter="data")
    assert served == _greedy(tmp_path / "merged")
    # and it is the fine-tuned model that answered, not the base
    from finetune import local_models

    assert served != _greedy(local_models.smollm2())


def test_local_serve_chat_completions_honour_stop(causal_local_run, local_state):
    # Given the deployed fine-tuned model behind `finetune local serve`, asked once freely and once with a stop string
    assert causal_local_run.code == 0, causal_local_run.output[-3000:]
    out = io.StringIO()
    stage = LocalStage(config_path=CONFIG, team="search", stage="dev", state=local_state, out=out)
    request = {"model": "assistant", "messages": PROMPT, "max_tokens": MAX_TOKENS, "temperature": 0}
    with LocalApi(stage, port=0).running(out) as running:
        _, free = _post(f"{running.url}/chat/completions", request)
        status, stopped = _post(f"{running.url}/chat/completions", {**request, "stop": [" "]})
    assert status == 200, stopped
    free_text = free["choices"][0]["message"]["content"]
    assert " " in free_text, free_text
    # Then the completion ends before the stop string, with fewer tokens, in OpenAI's words for it
    [choice] = stopped["choices"]
    assert choice["message"]["content"] == free_text[: free_text.index(" ")]
    assert 0 < stopped["usage"]["completion_tokens"] < free["usage"]["completion_tokens"]
    assert choice["finish_reason"] == "stop"  # the container's LMI "eos_token", mapped by the proxy
