"""Validation metrics: causal-lm eval_loss/perplexity/token_accuracy; classification accuracy/f1_macro/eval_loss."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from .data import IGNORE_INDEX, Example, collate_padded


def _batches(examples: list[Example], size: int):
    # Length-sorted so padding inside each evaluation batch is small.
    order = sorted(range(len(examples)), key=lambda i: len(examples[i]))
    for start in range(0, len(order), size):
        yield [examples[i] for i in order[start : start + size]]


@torch.no_grad()
def evaluate_causal(model, examples: list[Example], pad_id: int, device, batch_size: int, autocast_dtype=None) -> dict:
    """Token-weighted loss over target tokens, its perplexity, and next-token accuracy."""
    was_training = model.training
    model.eval()
    loss_sum, correct, count = 0.0, 0, 0
    for chunk in _batches(examples, batch_size):
        batch = collate_padded(chunk, pad_id, classification=False)
        batch = {k: v.to(device) for k, v in batch.items()}
        with torch.autocast(device.type, dtype=autocast_dtype, enabled=autocast_dtype is not None):
            logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        logits = logits[:, :-1].float()
        targets = batch["labels"][:, 1:]
        keep = targets != IGNORE_INDEX
        loss_sum += F.cross_entropy(logits[keep], targets[keep], reduction="sum").item()
        correct += (logits[keep].argmax(-1) == targets[keep]).sum().item()
        count += keep.sum().item()
    model.train(was_training)
    loss = loss_sum / max(count, 1)
    return {
        "eval_loss": loss,
        "perplexity": math.exp(min(loss, 50.0)),
        "token_accuracy": correct / max(count, 1),
        "target_tokens": count,
    }


@torch.no_grad()
def evaluate_classification(
    model, examples: list[Example], pad_id: int, device, batch_size: int, label_names: list[str], autocast_dtype=None
) -> dict:
    """Accuracy, macro F1, mean cross-entropy and the confusion matrix (rows: true label, columns: predicted)."""
    was_training = model.training
    model.eval()
    k = len(label_names)
    confusion = [[0] * k for _ in range(k)]
    loss_sum = 0.0
    for chunk in _batches(examples, batch_size):
        batch = collate_padded(chunk, pad_id, classification=True)
        batch = {key: v.to(device) for key, v in batch.items()}
        with torch.autocast(device.type, dtype=autocast_dtype, enabled=autocast_dtype is not None):
            logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits.float()
        loss_sum += F.cross_entropy(logits, batch["labels"], reduction="sum").item()
        for truth, pred in zip(batch["labels"].tolist(), logits.argmax(-1).tolist(), strict=True):
            confusion[truth][pred] += 1
    model.train(was_training)
    total = sum(map(sum, confusion))
    f1s = []
    for c in range(k):
        tp = confusion[c][c]
        predicted = sum(confusion[r][c] for r in range(k))
        actual = sum(confusion[c])
        precision = tp / predicted if predicted else 0.0
        recall = tp / actual if actual else 0.0
        f1s.append(2 * precision * recall / (precision + recall) if precision + recall else 0.0)
    return {
        "accuracy": sum(confusion[c][c] for c in range(k)) / max(total, 1),
        "f1_macro": sum(f1s) / k,
        "eval_loss": loss_sum / max(total, 1),
        "confusion_matrix": {"labels": label_names, "matrix": confusion},
    }
