"""MiniLM full fine-tuning on real SST-2 sentences: learning, artifacts and metric lines."""

from __future__ import annotations

import re

import pytest

from finetune.metrics import METRIC_DEFINITIONS, parse_metric_line

pytestmark = pytest.mark.training

EXPECTED_FILES = {
    "config.json",
    "model.safetensors",
    "tokenizer.json",
    "tokenizer_config.json",
    "evaluation.json",
    "training_metrics.json",
    "loss_curve.png",
}


def test_fine_tuned_accuracy_beats_base(classification_run):
    # Shipped sample: 800 training rows, all 200 validation rows evaluated.
    report = classification_run.evaluation()
    assert report["task"] == "classification" and report["validation_rows"] == 200
    base, tuned = report["base"], report["fine_tuned"]
    assert tuned["accuracy"] >= 0.80, tuned
    assert tuned["accuracy"] >= base["accuracy"] + 0.15, (base, tuned)
    assert tuned["eval_loss"] < base["eval_loss"]
    matrix = tuned["confusion_matrix"]
    assert matrix["labels"] == ["0", "1"] and sum(map(sum, matrix["matrix"])) == 200


def test_output_dir_holds_the_contract_files_only(classification_run):
    files = {p.name for p in classification_run.model_dir.iterdir()}
    assert files >= EXPECTED_FILES
    assert not {f for f in files if "checkpoint" in f or f.startswith("step-")}
    assert files <= EXPECTED_FILES | {"special_tokens_map.json", "vocab.txt"}


def test_output_reloads_with_label_mapping(classification_run):
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    model = AutoModelForSequenceClassification.from_pretrained(classification_run.model_dir)
    tokenizer = AutoTokenizer.from_pretrained(classification_run.model_dir)
    assert model.config.id2label == {0: "0", 1: "1"}
    assert model.config.num_hidden_layers == 7  # the encoder's 6 and the frozen mean-pooling layer
    with torch.no_grad():
        logits = model(
            **tokenizer(
                ["a masterpiece , moving and funny", "a dull , lifeless mess"], return_tensors="pt", padding=True
            )
        ).logits
    assert logits.argmax(-1).tolist() == [1, 0]


def test_every_metric_line_matches_its_regex(classification_run):
    regexes = {d["Name"]: re.compile(d["Regex"]) for d in METRIC_DEFINITIONS}
    metric_lines = [line for line in classification_run.stdout.splitlines() if line.startswith("metric ")]
    assert metric_lines
    seen = set()
    for line in metric_lines:
        parsed = parse_metric_line(line)
        assert parsed is not None, line
        name, value, _ = parsed
        match = regexes[name].search(line)
        assert match and float(match.group(1)) == pytest.approx(value), line
        seen.add(name)
    assert {"train_loss", "learning_rate", "epoch", "tokens_per_second", "eval_loss", "accuracy", "f1_macro"} <= seen


def test_training_metrics_record_every_logged_step(classification_run):
    metrics = classification_run.training_metrics()
    steps = [h["step"] for h in metrics["history"]]
    assert steps == sorted(set(steps)) and steps[-1] == metrics["summary"]["global_step"] == 50


@pytest.mark.parametrize("method", ["full", "lora"])
def test_sentence_encoder_classifier_reads_the_mean_of_its_token_states(minilm_dir, method):
    # Given all-MiniLM-L6-v2, which declares mean pooling, loaded for classification (classifier_pooling=auto)
    import torch

    from finetune.config import TrainConfig
    from finetune.modeling import declared_pooling, load_model, load_tokenizer

    assert declared_pooling(str(minilm_dir)) == "mean"
    config = TrainConfig(task="classification", method=method, base_model=str(minilm_dir), train_path="unused")
    tokenizer = load_tokenizer(str(minilm_dir), "classification")
    model = load_model(config, str(minilm_dir), tokenizer, torch.device("cpu"), torch.float32, ["0", "1"]).eval()
    bert = model.get_base_model().bert if method == "lora" else model.bert
    batch = tokenizer(["a masterpiece , moving and funny", "dull"], return_tensors="pt", padding=True)

    # Then the first position of the last layer is LayerNorm(mean of the previous layer over the real tokens)
    with torch.no_grad():
        out = bert(**batch, output_hidden_states=True)
    mask = batch["attention_mask"].unsqueeze(-1).float()
    mean = (out.hidden_states[-2] * mask).sum(1) / mask.sum(1)
    expected = torch.nn.functional.layer_norm(mean, (mean.shape[-1],), eps=1e-12)
    torch.testing.assert_close(out.last_hidden_state[:, 0], expected, atol=5e-3, rtol=1e-3)
    # and training cannot change that layer (no gradients, no LoRA adapters on it)
    assert bert.config.num_hidden_layers == 7
    last = [name for name, _ in bert.encoder.layer[-1].named_parameters()]
    assert last and not any("lora" in name for name in last)
    assert not any(p.requires_grad for p in bert.encoder.layer[-1].parameters())


def test_classifier_pooling_cls_keeps_the_models_own_head(minilm_dir):
    import torch

    from finetune.config import TrainConfig
    from finetune.modeling import load_model, load_tokenizer

    config = TrainConfig(
        task="classification", base_model=str(minilm_dir), train_path="unused", classifier_pooling="cls"
    )
    tokenizer = load_tokenizer(str(minilm_dir), "classification")
    model = load_model(config, str(minilm_dir), tokenizer, torch.device("cpu"), torch.float32, ["0", "1"])
    assert model.config.num_hidden_layers == 6 and not hasattr(model.config, "finetune_pooling")


@pytest.mark.parametrize(("scaling", "expected"), [(None, 32 / 16), ("rslora", 32 / 16**0.5), ("standard", 32 / 16)])
def test_lora_scaling_is_alpha_over_rank_by_default_or_alpha_over_sqrt_rank(minilm_dir, scaling, expected):
    import torch

    from finetune.config import TrainConfig
    from finetune.modeling import load_model, load_tokenizer

    chosen = {} if scaling is None else {"lora_scaling": scaling}
    config = TrainConfig(
        task="classification", method="lora", base_model=str(minilm_dir), train_path="unused", **chosen
    )
    assert (config.lora_r, config.lora_alpha) == (16, 32)
    tokenizer = load_tokenizer(str(minilm_dir), "classification")
    model = load_model(config, str(minilm_dir), tokenizer, torch.device("cpu"), torch.float32, ["0", "1"])
    # PEFT's LoRA layers keep a scale per adapter name; attention modules have a float ``scaling`` of their own.
    scales = {m.scaling["default"] for m in model.modules() if isinstance(getattr(m, "scaling", None), dict)}
    assert len(scales) == 1 and scales.pop() == pytest.approx(expected)


def test_lora_plus_ratio_sets_the_b_matrices_learning_rate_and_the_schedule_ends_at_its_floor(minilm_dir):
    import torch

    from finetune.config import TrainConfig
    from finetune.modeling import load_model, load_tokenizer
    from finetune.recipe import _optimizer

    config = TrainConfig(
        task="classification",
        method="lora",
        base_model=str(minilm_dir),
        train_path="unused",
        learning_rate=1e-4,
        lora_plus_ratio=16,
        min_lr_ratio=0.1,
        warmup_ratio=0.0,
    )
    tokenizer = load_tokenizer(str(minilm_dir), "classification")
    model = load_model(config, str(minilm_dir), tokenizer, torch.device("cpu"), torch.float32, ["0", "1"])
    trainable, optimizer, scheduler = _optimizer(config, model, torch.device("cpu"), total_steps=10)
    rate = {id(p): group["lr"] for group in optimizer.param_groups for p in group["params"]}
    named = {n: p for n, p in model.named_parameters() if p.requires_grad}
    # every trainable parameter is optimised once; B matrices at 16x, A matrices and the head at the peak rate
    assert sorted(rate) == sorted(id(p) for p in trainable) and len(rate) == len(named)
    b_rates = [rate[id(p)] for n, p in named.items() if ".lora_B." in n]
    others = [rate[id(p)] for n, p in named.items() if ".lora_B." not in n]
    assert len(b_rates) == sum(".lora_A." in n for n in named) > 0
    assert b_rates == pytest.approx([1.6e-3] * len(b_rates)) and others == pytest.approx([1e-4] * len(others))
    for _ in range(10):
        optimizer.step()
        scheduler.step()
    assert scheduler.get_last_lr() == [pytest.approx(1e-5), pytest.approx(1.6e-4), pytest.approx(1e-5)]
