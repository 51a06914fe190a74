"""Packing: batch_size counts examples either way, packed equals padded numerically, and packing is used only
where the model keeps packed examples apart (a padded, length-grouped fallback otherwise)."""

from __future__ import annotations

import pytest

from finetune.data import BatchPlan, Example, collate_micro_batch, encode_causal
from finetune.formats import Record

from .conftest import SAMPLES, child_env, run_train

pytestmark = pytest.mark.training

TEXTS = [
    "The cat sat on the mat.",
    "Paris is in France, a country in Europe.",
    "Two plus two is four.",
    "Rivers flow to the sea, mostly.",
    "A short one.",
    "Bread is made from flour, water and yeast.",
]


def _examples(n: int, lengths=None) -> list[Example]:
    lengths = lengths or [5 + (i * 7) % 30 for i in range(n)]
    return [Example(list(range(1, k + 1)), list(range(1, k + 1)), "f", i) for i, k in enumerate(lengths)]


def test_batch_size_counts_examples_packed_or_not():
    # Given 100 examples and batch_size 8, an epoch is 12 optimizer steps whether or not they are packed
    examples = _examples(100)
    plan = BatchPlan(examples, batch_size=8, world_size=1, seed=3)
    assert plan.per_epoch == 12
    for index in range(plan.per_epoch):
        chunk, _ = plan.micro_batch(index, 0)
        packed = collate_micro_batch(chunk, 0, classification=False, packed_width=64)
        padded = collate_micro_batch(chunk, 0, classification=False, packed_width=None)
        # the same examples' tokens, laid out in fewer (packed) rows without padding inside them
        assert int((packed["labels"] != -100).sum()) + len(chunk) == int((padded["labels"] != -100).sum())
        assert packed["input_ids"].shape[0] <= padded["input_ids"].shape[0] == 8
        assert packed["input_ids"].shape[1] <= 64


def test_length_grouping_sorts_within_megabatches_and_keeps_every_example():
    examples = _examples(400)
    grouped = BatchPlan(examples, batch_size=4, world_size=1, seed=0, group_by_length=True)
    plain = BatchPlan(examples, batch_size=4, world_size=1, seed=0)
    seen = []
    for index in range(grouped.per_epoch):
        seen += [e.line for e in grouped.micro_batch(index, 0)[0]]
    assert sorted(seen) == list(range(400))

    def spread(plan: BatchPlan) -> int:
        batches = (plan.micro_batch(i, 0)[0] for i in range(plan.per_epoch))
        return sum(max(map(len, b)) - min(map(len, b)) for b in batches)

    assert spread(grouped) < spread(plain) / 4


def test_packed_and_padded_batches_give_the_same_loss_and_gradients(smollm2_dir):
    # Given the same micro-batch of real examples, packed into one row and right-padded in four
    import torch
    from transformers import AutoModelForCausalLM

    from finetune.modeling import load_tokenizer
    from finetune.recipe import _causal_loss_sum

    tokenizer = load_tokenizer(str(smollm2_dir), "causal-lm")
    model = AutoModelForCausalLM.from_pretrained(smollm2_dir, dtype=torch.float32).eval()
    records = [Record("f", i, "text", {"text": t}) for i, t in enumerate(TEXTS[:4])]
    examples, _ = encode_causal(records, tokenizer, 64)

    def loss_and_grad(packed_width):
        model.zero_grad()
        batch = collate_micro_batch(examples, tokenizer.pad_token_id, classification=False, packed_width=packed_width)
        loss = _causal_loss_sum(model, batch)
        loss.backward()
        return loss.item(), model.model.layers[3].mlp.down_proj.weight.grad.clone(), batch["input_ids"].shape[0]

    packed_loss, packed_grad, packed_rows = loss_and_grad(64)
    padded_loss, padded_grad, padded_rows = loss_and_grad(None)
    assert (packed_rows, padded_rows) == (1, 4)
    assert packed_loss == pytest.approx(padded_loss, rel=1e-4)
    # and both equal the plain loss over full-vocabulary logits at every position (the head runs at targets only)
    padded = collate_micro_batch(examples, tokenizer.pad_token_id, classification=False, packed_width=None)
    with torch.no_grad():
        logits = model(input_ids=padded["input_ids"], attention_mask=padded["attention_mask"]).logits
    reference = torch.nn.functional.cross_entropy(
        logits[:, :-1].flatten(0, 1), padded["labels"][:, 1:].flatten(), ignore_index=-100, reduction="sum"
    )
    assert padded_loss == pytest.approx(reference.item(), rel=1e-4)
    torch.testing.assert_close(packed_grad, padded_grad, rtol=1e-3, atol=1e-5)


def _tiny(architecture: str):
    import torch
    import transformers

    torch.manual_seed(0)
    if architecture == "llama":
        config = transformers.LlamaConfig(
            vocab_size=512, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64
        )
    else:
        config = transformers.MambaConfig(vocab_size=512, hidden_size=32, num_hidden_layers=2, state_size=4)
    return transformers.AutoModelForCausalLM.from_config(config)


@pytest.mark.parametrize("architecture, supported", [("llama", True), ("mamba", False)])
def test_packing_probe_tells_attention_with_position_masking_from_a_recurrent_model(architecture, supported):
    from finetune.modeling import packing_supported

    ok, why = packing_supported(_tiny(architecture))
    assert ok is supported
    assert ("different logits" in why) is not supported


def test_model_that_cannot_pack_trains_on_padded_batches_with_a_notice(tmp_path, smollm2_dir):
    # Given a (tiny, random) recurrent model, which carries state from one packed example into the next
    import torch
    import transformers

    tokenizer = transformers.AutoTokenizer.from_pretrained(smollm2_dir)
    config = transformers.MambaConfig(
        vocab_size=len(tokenizer),
        hidden_size=16,
        num_hidden_layers=1,
        state_size=4,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    torch.manual_seed(0)
    transformers.MambaForCausalLM(config).save_pretrained(tmp_path / "mamba")
    tokenizer.save_pretrained(tmp_path / "mamba")

    # When it is fine-tuned with the causal-lm default (packing on)
    run = run_train(
        tmp_path / "run",
        [
            "--task",
            "causal-lm",
            "--method",
            "full",
            "--base_model",
            str(tmp_path / "mamba"),
            "--train",
            str(SAMPLES / "dolly" / "train.jsonl"),
            "--validation",
            str(SAMPLES / "dolly" / "validation.jsonl"),
            "--max_steps",
            "2",
            "--batch_size",
            "2",
            "--max_seq_length",
            "64",
            "--max_eval_rows",
            "4",
            "--save_steps",
            "0",
        ],
        timeout=300,
        env=child_env(),
    )

    # Then it trains on padded batches and says why, in one line
    assert run.returncode == 0, run.stderr[-3000:]
    notices = [line for line in run.stderr.splitlines() if line.startswith("packing off:")]
    assert len(notices) == 1 and "padded, length-grouped batches" in notices[0], run.stderr[-2000:]
    summary = run.training_metrics()["summary"]
    assert summary["packing"] is False and summary["global_step"] == 2
