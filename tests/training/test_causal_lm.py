"""SmolLM2-135M-Instruct with LoRA on real Dolly instructions, plus the tokenisation and packing contracts."""

from __future__ import annotations

import json

import pytest

from finetune.data import IGNORE_INDEX, collate_packed, encode_causal, pack_balanced, pack_best_fit_decreasing
from finetune.formats import Record

pytestmark = pytest.mark.training


def test_lora_lowers_eval_loss(causal_run):
    report = causal_run.evaluation()
    assert report["task"] == "causal-lm" and report["validation_rows"] >= 12
    assert report["fine_tuned"]["eval_loss"] < report["base"]["eval_loss"], report
    assert report["fine_tuned"]["perplexity"] < report["base"]["perplexity"]


def test_adapter_kept_beside_merged_model(causal_run):
    adapter = causal_run.model_dir / "adapter"
    assert (adapter / "adapter_model.safetensors").is_file()
    assert json.loads((adapter / "adapter_config.json").read_text())["r"] == 16
    config = json.loads((causal_run.model_dir / "config.json").read_text())
    assert config["dtype"] == "bfloat16" and "quantization_config" not in config


def test_output_reloads_generates_and_stops_at_eos(causal_run):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(causal_run.model_dir)
    model = AutoModelForCausalLM.from_pretrained(causal_run.model_dir, dtype=torch.float32)
    assert tokenizer.pad_token_id != tokenizer.eos_token_id
    prompt = tokenizer.apply_chat_template(
        [{"role": "user", "content": "Name three primary colors."}],
        add_generation_prompt=True,
        return_tensors="pt",
        return_dict=True,
    )
    with torch.no_grad():
        out = model.generate(**prompt, max_new_tokens=64, do_sample=False)
    new = out[0, prompt["input_ids"].shape[1] :].tolist()
    assert len(new) > 1 and new[-1] == tokenizer.eos_token_id, tokenizer.decode(new)
    assert tokenizer.decode(new, skip_special_tokens=True).strip()


def test_chat_labels_cover_assistant_turns_and_eos_only(smollm2_dir):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(smollm2_dir)
    record = Record(
        "f",
        1,
        "messages",
        {"messages": [{"role": "user", "content": "Say hi"}, {"role": "assistant", "content": "Hi there"}]},
    )
    [example], _ = encode_causal([record], tokenizer, 256)
    targets = [t for t in example.labels if t != IGNORE_INDEX]
    assert tokenizer.decode(targets) == "Hi there<|im_end|>"
    assert targets[-1] == tokenizer.eos_token_id
    assert example.input_ids[:2].count(tokenizer.bos_token_id) <= 1


def test_packed_rows_do_not_attend_across_examples(smollm2_dir):
    # Given two examples packed into one row, their logits equal those of each example run alone.
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(smollm2_dir)
    model = AutoModelForCausalLM.from_pretrained(smollm2_dir, dtype=torch.float32).eval()
    records = [
        Record("f", i, "text", {"text": t})
        for i, t in enumerate(["The cat sat on the mat.", "Paris is in France, a country."])
    ]
    examples, _ = encode_causal(records, tokenizer, 64)
    rows = pack_best_fit_decreasing(examples, 64)
    assert len(rows) == 1
    batch = collate_packed(rows, tokenizer.pad_token_id)
    with torch.no_grad():
        packed = model(input_ids=batch["input_ids"], position_ids=batch["position_ids"], use_cache=False).logits[0]
        at = 0
        for example in rows[0]:
            alone = model(input_ids=torch.tensor([example.input_ids]), use_cache=False).logits[0]
            torch.testing.assert_close(packed[at : at + len(example)], alone, atol=2e-4, rtol=1e-3)
            at += len(example)


def test_best_fit_decreasing_fills_rows():
    from finetune.data import Example

    examples = [Example([1] * n, [1] * n) for n in (60, 50, 40, 30, 20, 10, 5, 5)]
    rows = pack_best_fit_decreasing(examples, 64)
    assert sorted(len(e) for row in rows for e in row) == sorted(len(e) for e in examples)
    assert all(sum(len(e) for e in row) <= 64 for row in rows)
    assert len(rows) == 4  # 220 tokens need at least 4 rows of 64


def test_balanced_packing_keeps_the_row_count_and_evens_the_rows():
    # Given examples best fit decreasing packs into a full row and a short one (the short one padded to the full
    # width), balanced packing uses as many rows, no wider than any example allows, and so fewer padded slots.
    from finetune.data import Example

    examples = [Example([1] * n, [1] * n) for n in (40, 30, 20, 20, 10, 5)]
    greedy = pack_best_fit_decreasing(examples, 100)
    balanced = pack_balanced(examples, 100)
    widths = [sum(len(e) for e in row) for row in balanced]
    assert sorted(len(e) for row in balanced for e in row) == sorted(len(e) for e in examples)
    assert len(balanced) == len(greedy) == 2
    assert max(sum(len(e) for e in row) for row in greedy) == 100
    assert max(widths) == 65  # 125 tokens in 2 rows, every subset a multiple of 5: one row holds 65
    assert len(balanced) * max(widths) < len(greedy) * 100
    # A single example wider than the even split sets the width.
    assert (
        max(
            sum(len(e) for e in row)
            for row in pack_balanced(
                [Example([1] * 90, [1] * 90), Example([1] * 10, [1] * 10), Example([1] * 20, [1] * 20)], 100
            )
        )
        == 90
    )
