"""MiniLM full fine-tuning on real SST-2 sentences: learning, artifacts and metric lines."""

from __future__ import annotations

import re

import pytest

from finetune.metrics import METRIC_DEFINITIONS, parse_metric_line

pytestmark = pytest.mark.training

EXPECTED_FILES = {"config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json",
                  "evaluation.json", "training_metrics.json", "loss_curve.png"}


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
    assert EXPECTED_FILES <= files
    assert not {f for f in files if "checkpoint" in f or f.startswith("step-")}
    assert files <= EXPECTED_FILES | {"special_tokens_map.json", "vocab.txt"}


def test_output_reloads_with_label_mapping(classification_run):
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    model = AutoModelForSequenceClassification.from_pretrained(classification_run.model_dir)
    tokenizer = AutoTokenizer.from_pretrained(classification_run.model_dir)
    assert model.config.id2label == {0: "0", 1: "1"}
    with torch.no_grad():
        logits = model(**tokenizer(["a masterpiece , moving and funny", "a dull , lifeless mess"], return_tensors="pt",
                                   padding=True)).logits
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
