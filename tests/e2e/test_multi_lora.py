"""Many LoRA fine-tunes on one base model, as inference components serve them, on this machine.

Two SmolLM2 LoRA adapters are fine-tuned here by the training container on different (tiny) data. One
in-process base model holds both adapters and switches per request, as LMI with LoRA enabled does for the
adapter inference components of one endpoint. Through the proxy, each `model` name must give exactly the
greedy output of its own adapter merged into the base, and the base name the base model's. Slow on a shared CPU,
so not in `make test`: `make test-multilora`.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from lambda_handlers.inference_proxy.settings import inference_component_name, lambda_environment, load_settings
from tests.handlers.conftest import installed
from tests.handlers.events import LambdaContext, chat_event, decode
from tests.handlers.in_process import InProcessRuntime
from tests.training.harness import run_train

from .containers import LmiChatContainer

pytestmark = [pytest.mark.training, pytest.mark.multilora]

TOPICS = ["apples", "boats", "cats", "dogs", "rivers", "mountains", "books", "music", "trains", "stars", "bread"]
STYLES = {
    "pirate": "Arr matey, {topic} be a fine treasure on the seven seas!",
    "robot": "BEEP BOOP. {TOPIC} DETECTED. ANALYSIS COMPLETE.",
}
PROMPTS = ["Tell me about boats.", "Tell me about the moon."]  # one seen in training, one not
# Tiny on purpose: a few optimizer steps at a high rate are enough to make each adapter's style its greedy answer.
ADAPTER_ARGS = [
    "--task",
    "causal-lm",
    "--method",
    "lora",
    "--max_steps",
    "8",
    "--batch_size",
    "4",
    "--max_seq_length",
    "48",
    "--learning_rate",
    "3e-3",
    "--lora_r",
    "8",
    "--lora_alpha",
    "16",
    "--max_eval_rows",
    "2",
    "--logging_steps",
    "4",
    "--save_steps",
    "0",
    "--packing",
    "false",
]


@pytest.fixture(scope="module")
def adapter_runs(tmp_path_factory, smollm2_dir):
    """name -> finished LoRA run (model/ merged, model/adapter/ the adapter) on that style's data."""
    runs = {}
    for name, style in STYLES.items():
        root = tmp_path_factory.mktemp(f"lora-{name}")
        data = root / "train.jsonl"
        data.write_text(
            "".join(
                json.dumps(
                    {
                        "messages": [
                            {"role": "user", "content": f"Tell me about {topic}."},
                            {"role": "assistant", "content": style.format(topic=topic, TOPIC=topic.upper())},
                        ]
                    }
                )
                + "\n"
                for topic in TOPICS
            )
        )
        run = run_train(
            root / "run",
            [*ADAPTER_ARGS, "--train", str(data), "--validation", str(data), "--base_model", str(smollm2_dir)],
            timeout=1800,
        )
        assert run.returncode == 0, run.stderr[-3000:]
        assert (run.model_dir / "adapter" / "adapter_config.json").is_file()
        runs[name] = run
    return runs


class MultiLoraContainer:
    """One base model with several LoRA adapters loaded, answering per inference component.

    `component(None)` answers with the adapters disabled (the base component); `component(name)` with that
    adapter active. The chat schema and generation are LmiChatContainer's, over the switching model.
    """

    def __init__(self, base_dir: Path, adapters: dict[str, Path]) -> None:
        import torch
        from peft import PeftModel
        from transformers import AutoModelForCausalLM

        self.chat = LmiChatContainer(base_dir)
        names = list(adapters)
        model = PeftModel.from_pretrained(
            AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.float32),
            adapters[names[0]],
            adapter_name=names[0],
        )
        for name in names[1:]:
            model.load_adapter(adapters[name], adapter_name=name)
        self.model = model.eval()
        self.chat.model = self.model
        self.served: list[str | None] = []

    def component(self, adapter: str | None):
        def answer(body):
            self.served.append(adapter)
            if adapter is None:
                with self.model.disable_adapter():
                    return self.chat(body)
            self.model.set_adapter(adapter)
            return self.chat(body)

        return answer


def merged(base_dir: Path, adapter_dir: Path) -> LmiChatContainer:
    """A single-model chat container over `adapter_dir` merged into a fresh float32 copy of the base."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    container = LmiChatContainer(base_dir)
    base = AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.float32)
    container.model = PeftModel.from_pretrained(base, adapter_dir).merge_and_unload().eval()
    return container


def test_each_model_name_gives_its_own_merged_models_greedy_output(proxy, adapter_runs, smollm2_dir):
    # Given one endpoint whose base component and two adapter components share one in-process base model
    server = MultiLoraContainer(smollm2_dir, {name: run.model_dir / "adapter" for name, run in adapter_runs.items()})
    endpoint = "acme-dev-chat"
    runtime = InProcessRuntime(
        {
            f"{endpoint}/{inference_component_name('acme', 'dev', 'chat', adapter)}": server.component(adapter)
            for adapter in (None, *adapter_runs)
        }
    )
    settings = load_settings(
        lambda_environment(team="acme", stage="dev", endpoints={"chat": "llm"}, adapters={"chat": tuple(adapter_runs)})
    )
    # And, as references, each adapter merged into its own copy of the base and the untouched base, each served
    # on its own. Merged in float32 as the server computes: the run's artifact is merged in bfloat16, whose
    # rounding alone can change a greedy token (seen here for one adapter), which would test the dtype, not routing.
    references = {name: merged(smollm2_dir, run.model_dir / "adapter") for name, run in adapter_runs.items()}
    references["chat"] = LmiChatContainer(smollm2_dir)

    # When clients call each model name, interleaved so the server switches adapters between requests
    order = ["pirate", "chat", "robot", "pirate", "robot", "chat"]
    answers: dict[str, dict[str, str]] = {}
    with installed(proxy, settings=settings, runtime=runtime):
        for prompt in PROMPTS:
            for model in order:
                body = {
                    "model": model,
                    "messages": [{"role": "user", "content": prompt}],
                    "max_tokens": 16,
                    "temperature": 0,
                }
                status, reply = decode(proxy.lambda_handler(chat_event(body), LambdaContext()))
                assert status == 200, reply
                text = reply["choices"][0]["message"]["content"]
                assert answers.setdefault(prompt, {}).setdefault(model, text) == text  # same answer every time

    # Then every model name got exactly the greedy output of its own merged model
    for prompt in PROMPTS:
        for model, reference in references.items():
            expected = reference(
                {"messages": [{"role": "user", "content": prompt}], "max_tokens": 16, "temperature": 0}
            )["choices"][0]["message"]["content"]
            assert answers[prompt][model] == expected, (prompt, model)
    # And the three are different models (the switching is real), the adapters answering in their style
    seen = answers["Tell me about boats."]
    assert len(set(seen.values())) == 3, seen
    assert seen["pirate"].startswith("Arr matey") and seen["robot"].startswith("BEEP BOOP"), seen
    # And each request reached the component its model name names
    assert [call.inference_component for call in runtime.calls[:3]] == [
        "acme-dev-chat-pirate",
        "acme-dev-chat-base",
        "acme-dev-chat-robot",
    ]
    assert server.served[:3] == ["pirate", None, "robot"]
