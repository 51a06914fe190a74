"""Metric names, their stdout format and the CloudWatch regexes that parse them (stdlib only).

The training loop prints one line per value, ``metric <name>=<value> step=<n>``; the Training stack imports
``METRIC_DEFINITIONS`` for ``AlgorithmSpecification.MetricDefinitions``.
"""

from __future__ import annotations

import math
import re

TRAIN_LOSS = "train_loss"
LEARNING_RATE = "learning_rate"
GRAD_NORM = "grad_norm"
EPOCH = "epoch"
TOKENS_PER_SECOND = "tokens_per_second"
EVAL_LOSS = "eval_loss"
PERPLEXITY = "perplexity"
TOKEN_ACCURACY = "token_accuracy"
ACCURACY = "accuracy"
F1_MACRO = "f1_macro"

METRIC_NAMES: tuple[str, ...] = (
    TRAIN_LOSS,
    LEARNING_RATE,
    GRAD_NORM,
    EPOCH,
    TOKENS_PER_SECOND,
    EVAL_LOSS,
    PERPLEXITY,
    TOKEN_ACCURACY,
    ACCURACY,
    F1_MACRO,
)

# A finite decimal or scientific-notation number, as format_metric writes it.
_NUMBER = r"[-+]?[0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?"


def metric_regex(name: str) -> str:
    """The CloudWatch regex for one metric; its single capture group is the value."""
    return rf"metric {name}=({_NUMBER}) step=[0-9]+"


METRIC_DEFINITIONS: list[dict[str, str]] = [{"Name": name, "Regex": metric_regex(name)} for name in METRIC_NAMES]

_LINE = re.compile(rf"^metric ([a-z0-9_]+)=({_NUMBER}) step=([0-9]+)$")


def format_metric(name: str, value: float, step: int) -> str:
    """One stdout line, exactly ``metric <name>=<value> step=<n>``.

    Raises ValueError for an unknown name or a non-finite value, which no regex could carry.
    """
    if name not in METRIC_NAMES:
        raise ValueError(f"unknown metric name {name!r}; known: {', '.join(METRIC_NAMES)}")
    value = float(value)
    if not math.isfinite(value):
        raise ValueError(f"metric {name} at step {step} is not finite ({value})")
    if int(step) < 0:
        raise ValueError(f"metric {name}: step must be >= 0, got {step}")
    return f"metric {name}={value:.6g} step={int(step)}"


def parse_metric_line(line: str) -> tuple[str, float, int] | None:
    """The (name, value, step) of a metric line, or None when the line is not one."""
    match = _LINE.match(line.strip())
    if match is None or match.group(1) not in METRIC_NAMES:
        return None
    return match.group(1), float(match.group(2)), int(match.group(3))
