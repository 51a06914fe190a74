"""Hostile inputs, table-driven, against every door user data comes through: Validate (the execution input, the
dataset's files and the upload manifest, on moto S3), ``finetune prepare`` (files and flags) and the inference
proxy's request checks.

Each case expects either a clear error (whose message names the field, file or line: the ``words``) or a
documented acceptance (the ``reason`` says why accepting is right). Nothing may raise anything else. The module
prints the tally (tried / clear error / documented acceptance) when it finishes; run with ``-s`` to see it.
"""

from __future__ import annotations

import json
import math
import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from unittest import mock

import boto3
import pytest
from moto import mock_aws

from finetune_cli import main as cli_main
from lambda_handlers.validate_request.errors import InvalidRequest
from lambda_handlers.validate_request.logic import validate_request
from lambda_handlers.validate_request.settings import ValidateSettings

from .conftest import chat_completion, installed
from .events import chat_event, predict_event, rest_event
from .in_process import InProcessRuntime

ROOT = Path(__file__).resolve().parents[2]
DATA, ARTIFACTS = "acme-dev-data-123456789012-us-east-1", "acme-dev-artifacts-123456789012-us-east-1"
CHAT = f"s3://{DATA}/datasets/chat/v1/"
SETTINGS = ValidateSettings(
    team="acme",
    stage="dev",
    data_bucket=DATA,
    artifacts_bucket=ARTIFACTS,
    allowed_instance_types=("ml.g5.2xlarge",),
    max_instance_count=2,
    max_runtime_hours=24,
    allowed_base_models=("smollm2", "minilm"),
    endpoints={"assistant": "llm", "sentiment": "classifier"},
)
AWS_ENV = {
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_SESSION_TOKEN": "testing",
}


def _deep(levels: int, leaf: Any = 1) -> Any:
    value = leaf
    for _ in range(levels):
        value = [value]
    return value


DEEP_TEXT = "[" * 30_000 + "]" * 30_000
HUGE_INT_TEXT = "9" * 4_301  # one digit over Python's int/str conversion limit


@dataclass(frozen=True)
class Case:
    """One hostile input: where it goes, what it is, and what must come back."""

    surface: str
    """validate-input, validate-dataset, validate-manifest, prepare or proxy."""
    id: str
    payload: Any
    words: tuple[str, ...] = ()
    """An error is expected whose message holds every one of these (the field, file or line it names)."""
    accepted: str | None = None
    """Set instead of ``words``: the input is accepted, for this documented reason."""
    extra: dict = field(default_factory=dict)


CASES: list[Case] = []


def error(surface: str, id_: str, payload: Any, *words: str, **extra: Any) -> None:
    CASES.append(Case(surface, id_, payload, tuple(words), None, extra))


def accept(surface: str, id_: str, payload: Any, reason: str, **extra: Any) -> None:
    CASES.append(Case(surface, id_, payload, (), reason, extra))


# ---- Validate: the execution input, every field x every hostile value ------------------------------------------
GOOD_INPUT = {
    "dataset": CHAT,
    "task": "causal-lm",
    "base_model": "smollm2",
    "method": "lora",
    "hyperparameters": {"epochs": 1},
    "instance_type": "ml.g5.2xlarge",
    "instance_count": 1,
    "spot": True,
}
HOSTILE_VALUES = {
    "deep-30000": _deep(30_000),
    "int-5000-digits": 10**5000,
    "int-2**64": 2**64,
    "int-below-int64": -(2**63) - 1,
    "lone-surrogate": "\ud800",
    "surrogate-in-text": "abc\udfffdef",
    "nan": math.nan,
    "infinity": math.inf,
    "minus-1e308": -1e308,
    "long-string": "x" * 200_000,
    "object": {"$ne": 1},
    "list": ["a"],
    "nul": "\x00",
    "path-traversal": "../../etc/passwd",
    "rtl-override": "\u202eevil",
    "string-1e999": "1e999",
}
INPUT_FIELDS = {
    "dataset": "dataset",
    "task": "task",
    "base_model": "base_model",
    "method": "method",
    "instance_type": "instance_type",
    "instance_count": "instance_count",
    "spot": "spot",
    "deploy_to": "deploy_to",
    "threshold": "threshold",
    "hyperparameters.epochs": "epochs",
    "hyperparameters.learning_rate": "learning_rate",
    "hyperparameters.batch_size": "batch_size",
    "hyperparameters.seed": "seed",
    "hyperparameters.max_seq_length": "max_seq_length",
}
for field_name, named in INPUT_FIELDS.items():
    for value_id, value in HOSTILE_VALUES.items():
        raw = json.loads(json.dumps(GOOD_INPUT))
        if field_name.startswith("hyperparameters."):
            raw["hyperparameters"][field_name.split(".", 1)[1]] = value
        else:
            raw[field_name] = value
        error("validate-input", f"{field_name}={value_id}", raw, named)

# Upper bounds: each names the hyperparameter and its limit.
for name, value, limit in [
    ("batch_size", "5000", "4096"),
    ("max_steps", "1e12", "10000000"),
    ("epochs", "1e6", "1000"),
    ("seed", "4294967296", "4294967295"),
    ("learning_rate", "5", "< 1"),
    ("max_seq_length", "1000000", "131072"),
    ("gradient_accumulation_steps", "100000", "4096"),
    ("lora_r", "65536", "1024"),
    ("eval_steps", "1e9", "10000000"),
    ("max_eval_rows", "1e10", "100000000"),
    ("warmup_ratio", "1e300", "< 1"),
    ("save_steps", "99999999999", "10000000"),
]:
    error("validate-input", f"bound-{name}", {**GOOD_INPUT, "hyperparameters": {name: value}}, name, limit)
for value_id, raw in {
    "not-an-object": [GOOD_INPUT],
    "string": "run it",
    "null": None,
    "deep-top": _deep(50, GOOD_INPUT),
    "unknown-key": {**GOOD_INPUT, "__proto__": {"admin": True}},
    "surrogate-key": {**GOOD_INPUT, "hyperparameters": {"\ud800": 1}},
    "sagemaker-reserved": {**GOOD_INPUT, "hyperparameters": {"sagemaker_program": "evil.py"}},
    "huge-instance-count": {**GOOD_INPUT, "instance_count": 10**6},
}.items():
    words = {
        "not-an-object": "(input)",
        "string": "(input)",
        "null": "(input)",
        "deep-top": "(input)",
        "unknown-key": "__proto__",
        "surrogate-key": "hyperparameters",
        "sagemaker-reserved": "sagemaker_program",
        "huge-instance-count": "instance_count",
    }[value_id]
    error("validate-input", value_id, raw, words)
accept(
    "validate-input",
    "emoji-and-cjk-in-lora-targets",
    {**GOOD_INPUT, "hyperparameters": {"lora_target_modules": "q_proj,k_proj"}},
    "module names are free text checked by PEFT in the job; plain names pass",
)
accept(
    "validate-input",
    "upper-bound-values-exactly",
    {**GOOD_INPUT, "hyperparameters": {"batch_size": 4096, "seed": 4294967295, "epochs": 1000}},
    "the limits themselves are allowed",
)

# ---- Validate: the dataset's files (first lines, ranged GET) -----------------------------------------------------
GOOD_CHAT_LINE = b'{"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]}\n'
GOOD_TEXT_LABEL = b'{"text": "good", "label": 1}\n'
DATASET_CASES = {
    # id: (task, {key under the dataset: body}, words or None, acceptance reason)
    "deep-nesting-line": (
        "causal-lm",
        {"train/a.jsonl": GOOD_CHAT_LINE + DEEP_TEXT.encode() + b"\n"},
        ("train/a.jsonl, line 2", "nested too deeply"),
        None,
    ),
    "int-4301-digits-line": (
        "classification",
        {"train/a.jsonl": b'{"text": "x", "label": ' + HUGE_INT_TEXT.encode() + b"}\n"},
        ("train/a.jsonl, line 1", "4300 digits"),
        None,
    ),
    "int-2**64-label": (
        "classification",
        {"train/a.jsonl": GOOD_TEXT_LABEL + b'{"text": "x", "label": ' + str(2**64).encode() + b"}\n"},
        ("line 2", "label", "out of range"),
        None,
    ),
    "lone-surrogate-text": (
        "causal-lm",
        {"train/a.jsonl": b'{"text": "bad \\ud800 text"}\n'},
        ("train/a.jsonl, line 1", "text", "surrogate"),
        None,
    ),
    "lone-surrogate-content": (
        "causal-lm",
        {
            "train/a.jsonl": b'{"messages": [{"role": "user", "content": '
            b'"\\udc00"}, {"role": "assistant", "content": "x"}]}\n'
        },
        ("line 1", "messages[0].content", "surrogate"),
        None,
    ),
    "surrogate-pair-is-text": (
        "causal-lm",
        {"train/a.jsonl": b'{"text": "smile \\ud83d\\ude00"}\n'},
        None,
        "an escaped surrogate pair is one valid character (U+1F600)",
    ),
    "mixed-labels-one-file": (
        "classification",
        {"train/a.jsonl": GOOD_TEXT_LABEL + b'{"text": "bad", "label": "neg"}\n'},
        ("train/a.jsonl, line 2", "labels must be all integers or all strings"),
        None,
    ),
    "mixed-labels-two-files": (
        "classification",
        {"train/a.jsonl": GOOD_TEXT_LABEL, "validation/b.jsonl": b'{"text": "bad", "label": "neg"}\n'},
        ("validation/b.jsonl, line 1", "train/a.jsonl, line 1", "all integers"),
        None,
    ),
    "list-label": (
        "classification",
        {"train/a.jsonl": b'{"text": "x", "label": ["a", "b"]}\n'},
        ("line 1", '"label" must be an integer or a non-empty string'),
        None,
    ),
    "dict-label": (
        "classification",
        {"train/a.jsonl": b'{"text": "x", "label": {"a": 1}}\n'},
        ("line 1", '"label"'),
        None,
    ),
    "nan-label": ("classification", {"train/a.jsonl": b'{"text": "x", "label": NaN}\n'}, ("line 1", '"label"'), None),
    "bool-label": ("classification", {"train/a.jsonl": b'{"text": "x", "label": true}\n'}, ("line 1", '"label"'), None),
    "not-utf8": ("causal-lm", {"train/a.jsonl": b'{"text": "caf\xe9"}\n'}, ("train/a.jsonl", "line 1", "UTF-8"), None),
    "nul-bytes": ("causal-lm", {"train/a.jsonl": b"\x00\x00\x00\n"}, ("line 1", "malformed JSON"), None),
    "json-array-line": ("causal-lm", {"train/a.jsonl": b"[1, 2, 3]\n"}, ("line 1", "expected a JSON object"), None),
    "empty-file": ("causal-lm", {"train/a.jsonl": b""}, ("train/a.jsonl", "empty"), None),
    "blank-lines-only": ("causal-lm", {"train/a.jsonl": b"\n\n  \n"}, ("train/a.jsonl", "empty"), None),
    "deep-inside-text-field": (
        "causal-lm",
        {"train/a.jsonl": b'{"text": ' + b"[" * 40 + b"]" * 40 + b"}\n"},
        ("line 1", "nested more than 32 levels"),
        None,
    ),
    "crlf-line-endings": (
        "causal-lm",
        {"train/a.jsonl": GOOD_CHAT_LINE.replace(b"\n", b"\r\n") * 2},
        None,
        "CRLF ends lines like LF; the JSON is the same",
    ),
    "bom": ("causal-lm", {"train/a.jsonl": b"\xef\xbb\xbf" + GOOD_CHAT_LINE}, ("line 1", "malformed JSON"), None),
    "first-line-over-sample": (
        "causal-lm",
        {"train/a.jsonl": b'{"text": "' + b"x" * 70_000 + b'"}\n'},
        None,
        "a first line longer than the 64 KiB sample is a warning; the job checks every line",
    ),
    "duplicate-keys": (
        "causal-lm",
        {"train/a.jsonl": b'{"text": "a", "text": "b"}\n'},
        None,
        "JSON allows duplicate keys; the last wins, as in the training container",
    ),
    "no-train-channel": ("causal-lm", {"validation/b.jsonl": GOOD_CHAT_LINE}, ("train/", "required"), None),
    "huge-int-extra-field": (
        "causal-lm",
        {"train/a.jsonl": b'{"text": "x", "id": 1' + b"0" * 30 + b"}\n"},
        ("line 1", "id", "out of range"),
        None,
    ),
}
for case_id, (task, files, words, reason) in DATASET_CASES.items():
    payload = {"task": task, "files": files}
    if words:
        error("validate-dataset", case_id, payload, *words)
    else:
        accept("validate-dataset", case_id, payload, reason)

# ---- Validate: the upload manifest -------------------------------------------------------------------------------
MANIFEST = f"{CHAT}manifest.json"
GOOD_RUN = '"run": {"base_model": "smollm2", "method": "lora"}'
MANIFEST_CASES = {
    "missing-object": (None, ("manifest", MANIFEST, "does not exist"), None),
    "deep-nesting": (DEEP_TEXT.encode(), ("manifest", "nested too deeply"), None),
    "int-4301-digits": (
        (
            '{"task": "causal-lm", ' + GOOD_RUN[:-1] + ', "hyperparameters": {"epochs": ' + HUGE_INT_TEXT + "}}}"
        ).encode(),
        ("manifest", "4300 digits"),
        None,
    ),
    "int-2**64-hyperparameter": (
        ('{"task": "causal-lm", ' + GOOD_RUN[:-1] + ', "hyperparameters": {"epochs": ' + str(2**64) + "}}}").encode(),
        ("run.hyperparameters.epochs", "out of range"),
        None,
    ),
    "lone-surrogate": (
        (b'{"task": "causal-lm", "run": {"base_model": "\\ud800"}}'),
        ("run.base_model", "surrogate"),
        None,
    ),
    "not-an-object": (b"[]", ("manifest", '"run"'), None),
    "not-utf8": (b'{"task": "caf\xe9"}', ("manifest", "UTF-8"), None),
    "too-large": (b'{"pad": "' + b"x" * 300_000 + b'"}', ("manifest", "larger than"), None),
    "nan-threshold": (
        ('{"task": "causal-lm", ' + GOOD_RUN[:-1] + ', "threshold": NaN}}').encode(),
        ("threshold",),
        None,
    ),
    "task-number": (('{"task": 7, ' + GOOD_RUN + "}").encode(), ("task",), None),
    "run-hijacks-dataset": ((b'{"task": "causal-lm", "run": {"dataset": "s3://other/x/"}}'), ("run.dataset",), None),
    "deep-run": (
        ('{"task": "causal-lm", "run": {"hyperparameters": {"epochs": ' + "[" * 20 + "]" * 20 + "}}}").encode(),
        ("hyperparameters.epochs", "nested more than 8"),
        None,
    ),
    "good": (
        ('{"task": "causal-lm", ' + GOOD_RUN + "}").encode(),
        None,
        "a manifest with a run section starts that run",
    ),
}
for case_id, (body, words, reason) in MANIFEST_CASES.items():
    if words:
        error("validate-manifest", case_id, body, *words)
    else:
        accept("validate-manifest", case_id, body, reason)

# ---- finetune prepare: files and flags ---------------------------------------------------------------------------
GOOD_JSONL = '{"text": "good movie", "label": 1}\n{"text": "bad movie", "label": 0}\n{"text": "fine", "label": 1}\n'
PREPARE_CASES: dict[str, tuple[str, bytes, list[str], tuple[str, ...] | None, str | None]] = {
    # id: (suffix, content, extra flags, words of the error (exit 2), or None and the acceptance reason)
    "deep-nesting-line": (
        ".jsonl",
        (GOOD_JSONL + DEEP_TEXT + "\n").encode(),
        [],
        None,
        "the line is dropped; the manifest's problems name it (line 4: nested too deeply)",
    ),
    "deep-nesting-only": (
        ".jsonl",
        (DEEP_TEXT + "\n").encode(),
        [],
        ("no readable rows", "line 1", "nested too deeply"),
        None,
    ),
    "int-4301-digits-label": (
        ".jsonl",
        (GOOD_JSONL + '{"text": "x", "label": ' + HUGE_INT_TEXT + "}\n").encode(),
        [],
        None,
        "the line is dropped; the manifest's problems name it (4300 digits)",
    ),
    "lone-surrogate-only-row": (
        ".jsonl",
        b'{"text": "a\\ud800b", "label": 1}\n',
        [],
        ("no readable rows", "line 1: text: holds a lone UTF-16 surrogate"),
        None,
    ),
    "lone-surrogate-row": (
        ".jsonl",
        (GOOD_JSONL + '{"text": "a\\ud800b", "label": 1}\n').encode(),
        [],
        None,
        "the line is dropped (surrogate, named in problems); the rest is written",
    ),
    "csv-field-over-limit": (
        ".csv",
        ("text,label\nok,1\n" + "x" * 131_073 + ",0\n").encode(),
        [],
        ("line 3", "131,072 characters", "JSONL or Parquet"),
        None,
    ),
    "csv-field-over-limit-quoted": (
        ".csv",
        ('text,label\n"' + "y" * 200_000 + '",1\n').encode(),
        [],
        ("line 2", "131,072"),
        None,
    ),
    "list-label": (
        ".jsonl",
        (GOOD_JSONL + '{"text": "x", "label": ["a", "b"]}\n').encode(),
        [],
        None,
        "the row is dropped as invalid: 'label is a list' (never turned into the string \"['a', 'b']\")",
    ),
    "dict-label": (
        ".jsonl",
        (GOOD_JSONL + '{"text": "x", "label": {"a": 1}}\n').encode(),
        [],
        None,
        "the row is dropped as invalid: 'label is a dict'",
    ),
    "only-list-labels": (
        ".jsonl",
        b'{"text": "x", "label": ["a"]}\n{"text": "y", "label": ["b"]}\n',
        [],
        ("no usable rows",),
        None,
    ),
    "mixed-int-and-string-labels": (
        ".jsonl",
        (GOOD_JSONL + '{"text": "meh", "label": "neutral"}\n').encode(),
        [],
        ("line 4", "labels must be all integers or all strings"),
        None,
    ),
    "nan-label": (
        ".jsonl",
        (GOOD_JSONL + '{"text": "x", "label": NaN}\n').encode(),
        [],
        None,
        "NaN is no label: the row is dropped as empty",
    ),
    "bool-label": (
        ".jsonl",
        (GOOD_JSONL + '{"text": "x", "label": true}\n').encode(),
        [],
        None,
        "the row is dropped as invalid ('label' must be an integer or a non-empty string)",
    ),
    "int-2**64-label": (
        ".jsonl",
        (GOOD_JSONL + f'{{"text": "x", "label": {2**64}}}\n').encode(),
        [],
        None,
        "the line is dropped as malformed: the label is out of range",
    ),
    "not-utf8-line": (
        ".jsonl",
        GOOD_JSONL.encode() + b'{"text": "caf\xe9", "label": 1}\n',
        [],
        None,
        "the row is dropped; the summary names the non-UTF-8 line",
    ),
    "empty-file": (".jsonl", b"", [], ("no columns",), None),
    "empty-csv": (".csv", b"", [], ("empty",), None),
    "csv-formula": (
        ".csv",
        b'text,label\n"=HYPERLINK(""http://x"")",1\nplain,0\n',
        [],
        None,
        "prepare writes JSON for training, not a spreadsheet: formulas are plain text",
    ),
    "csv-extra-fields": (
        ".csv",
        b"text,label\na,1\nb,0,extra\nc,0\n",
        [],
        None,
        "the row is dropped as malformed, naming line 3",
    ),
    "csv-nul-byte": (
        ".csv",
        b"text,label\na\x00b,1\nc,0\n",
        [],
        None,
        "a NUL is a character like any other in the text",
    ),
    "bad-suffix": (".exe", b"MZ", [], ("unknown input format",), None),
    "parquet-garbage": (".parquet", b"not parquet", [], ("cannot be read as Parquet",), None),
    "seed-negative": (".jsonl", GOOD_JSONL.encode(), ["--seed", "-1"], ("--seed", "4294967295"), None),
    "seed-huge": (".jsonl", GOOD_JSONL.encode(), ["--seed", "9" * 5000], ("--seed",), None),
    "max-seq-length-huge": (
        ".jsonl",
        GOOD_JSONL.encode(),
        ["--max-seq-length", "10000000"],
        ("--max-seq-length", "131072"),
        None,
    ),
    "validation-fraction-nan": (
        ".jsonl",
        GOOD_JSONL.encode(),
        ["--validation-fraction", "nan"],
        ("--validation-fraction",),
        None,
    ),
    "validation-fraction-one": (
        ".jsonl",
        GOOD_JSONL.encode(),
        ["--validation-fraction", "1"],
        ("--validation-fraction",),
        None,
    ),
    "map-unknown-field": (".jsonl", GOOD_JSONL.encode(), ["--map", "evil=text"], ("--map evil=text",), None),
    "map-missing-column": (".jsonl", GOOD_JSONL.encode(), ["--map", "text=nope"], ("column 'nope'",), None),
    "name-traversal": (".jsonl", GOOD_JSONL.encode(), ["--name", "../../etc"], ("--name",), None),
    "bad-encoding": (".jsonl", GOOD_JSONL.encode(), ["--encoding", "no-such-codec"], ("--encoding",), None),
    "good": (".jsonl", GOOD_JSONL.encode(), [], None, "a clean file is prepared"),
}
for case_id, (suffix, content, flags, words, reason) in PREPARE_CASES.items():
    payload = {"suffix": suffix, "content": content, "flags": flags}
    if words:
        error("prepare", case_id, payload, *words)
    else:
        accept("prepare", case_id, payload, reason)

# ---- the inference proxy's request checks ------------------------------------------------------------------------
MESSAGES = [{"role": "user", "content": "hi"}]
VALID = {"model": "chat", "messages": MESSAGES}
PROXY_CASES = {
    # id: (event, words of the 4xx error, or None and the acceptance reason)
    "deep-nesting-body": (chat_event(DEEP_TEXT), ("not valid JSON",), None),
    "deep-nesting-content": (
        chat_event('{"model": "chat", "messages": [{"role": "user", "content": ' + "[" * 5000 + "]" * 5000 + "}]}"),
        ("not valid JSON",),
        None,
    ),
    "int-4301-digits-max-tokens": (
        chat_event('{"model": "chat", "messages": [], "max_tokens": ' + HUGE_INT_TEXT + "}"),
        ("number out of range", "column"),
        None,
    ),
    "int-4301-digits-seed": (
        chat_event('{"model": "chat", "messages": [{"role": "user", "content": "hi"}], "seed": ' + HUGE_INT_TEXT + "}"),
        ("number out of range", "column"),
        None,
    ),
    "seed-2**64": (chat_event({**VALID, "seed": 2**64}), ("seed",), None),
    "seed-negative": (chat_event({**VALID, "seed": -1}), None, "vLLM takes any 64-bit seed, negative ones too"),
    "seed-int64-max": (chat_event({**VALID, "seed": 2**63 - 1}), None, "the largest 64-bit seed is forwarded"),
    "lone-surrogate-content": (
        chat_event('{"model": "chat", "messages": [{"role": "user", "content": "\\ud800"}]}'),
        ("not valid JSON", "hex escape", "column 67"),
        None,
    ),
    "lone-surrogate-model": (
        chat_event('{"model": "\\udfff", "messages": [{"role": "user", "content": "x"}]}'),
        ("not valid JSON", "surrogate", "column 17"),
        None,
    ),
    "surrogate-pair": (
        chat_event('{"model": "chat", "messages": [{"role": "user", "content": "\\ud83d\\ude00"}]}'),
        None,
        "an escaped surrogate pair is one valid character, forwarded as such",
    ),
    "nan-temperature": (
        chat_event('{"model": "chat", "messages": [{"role": "user", "content": "x"}], "temperature": NaN}'),
        ("temperature",),
        None,
    ),
    "infinity-top-p": (
        chat_event('{"model": "chat", "messages": [{"role": "user", "content": "x"}], "top_p": Infinity}'),
        ("top_p",),
        None,
    ),
    "max-tokens-1e308": (
        chat_event('{"model": "chat", "messages": [{"role": "user", "content": "x"}], "max_tokens": 1e308}'),
        ("max_tokens",),
        None,
    ),
    "max-tokens-2**64": (chat_event({**VALID, "max_tokens": 2**64}), ("max_tokens",), None),
    "n-huge": (chat_event({**VALID, "n": 10**30}), ("n",), None),
    "messages-2000": (chat_event({**VALID, "messages": MESSAGES * 2000}), ("over the limit of 65536 bytes",), None),
    "messages-1100-short": (
        chat_event({**VALID, "messages": [{"role": "user", "content": ""}] * 1100}),
        ("messages",),
        None,
    ),
    "content-over-limit": (
        chat_event({**VALID, "messages": [{"role": "user", "content": "x" * 70_000}]}),
        ("limit",),
        None,
    ),
    "not-utf8-body": (
        chat_event(b'{"model": "chat", "messages": [{"role": "user", "content": "caf\xe9"}]}'),
        ("JSON",),
        None,
    ),
    "null-model": (chat_event({**VALID, "model": None}), ("model",), None),
    "model-traversal": (chat_event({**VALID, "model": "../../acme-prod-chat"}), ("../../acme-prod-chat",), None),
    "model-other-account-arn": (
        chat_event({**VALID, "model": "arn:aws:sagemaker:us-east-1:999999999999:endpoint/x"}),
        ("arn:aws:sagemaker",),
        None,
    ),
    "stop-100": (chat_event({**VALID, "stop": ["x"] * 100}), ("stop",), None),
    "stop-deep": (chat_event({**VALID, "stop": _deep(100, "x")}), ("stop",), None),
    "role-tool": (
        chat_event({**VALID, "messages": [{"role": "function", "content": "x"}]}),
        ("messages.0.role",),
        None,
    ),
    "content-parts-image": (
        chat_event(
            {
                **VALID,
                "messages": [
                    {"role": "user", "content": [{"type": "image_url", "image_url": {"url": "file:///etc/passwd"}}]}
                ],
            }
        ),
        ("messages.0.content",),
        None,
    ),
    "name-too-long": (
        chat_event({**VALID, "messages": [{"role": "user", "content": "x", "name": "n" * 65}]}),
        ("messages.0.name",),
        None,
    ),
    "user-too-long": (chat_event({**VALID, "user": "u" * 257}), ("user",), None),
    "body-is-number": (chat_event("12345"), ("JSON object",), None),
    "body-is-null": (chat_event("null"), ("JSON object",), None),
    "duplicate-keys": (
        chat_event('{"model": "chat", "model": "chat", "messages": [{"role": "user", "content": "x"}]}'),
        None,
        "JSON allows duplicate keys; the last wins, and it is checked like any other",
    ),
    "nul-in-content": (
        chat_event({**VALID, "messages": [{"role": "user", "content": "a\x00b"}]}),
        None,
        "a NUL is a character of the text; the model sees it JSON-escaped",
    ),
    "rtl-override-content": (
        chat_event({**VALID, "messages": [{"role": "user", "content": "\u202eevil"}]}),
        None,
        "any Unicode text is a valid prompt",
    ),
    "predict-deep": (predict_event("sentiment", '{"inputs": ' + "[" * 5000 + "]" * 5000 + "}"), ("JSON",), None),
    "predict-too-many": (predict_event("sentiment", {"inputs": ["x"] * 100}), ("inputs",), None),
    "predict-huge-int": (
        predict_event("sentiment", '{"inputs": ' + HUGE_INT_TEXT + "}"),
        ("number out of range", "column"),
        None,
    ),
    "predict-surrogate": (
        predict_event("sentiment", '{"inputs": ["\\ud800"]}'),
        ("not valid JSON", "hex escape", "column 20"),
        None,
    ),
    "predict-object-input": (predict_event("sentiment", {"inputs": [{"text": "x"}]}), ("inputs",), None),
    "predict-traversal-name": (predict_event("../sentiment", {"inputs": ["x"]}), ("../sentiment",), None),
    "predict-long-name": (predict_event("s" * 5000, {"inputs": ["x"]}), ("s" * 20,), None),
    "route-traversal": (rest_event("POST", "/v1/../admin", body=VALID), ("/v1/../admin",), None),
    "good": (chat_event(VALID), None, "a valid request is forwarded"),
}
for case_id, (event, words, reason) in PROXY_CASES.items():
    if words:
        error("proxy", case_id, event, *words)
    else:
        accept("proxy", case_id, event, reason)


# ---- running one case --------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def s3():
    with mock.patch.dict(os.environ, AWS_ENV), mock_aws():
        client = boto3.client("s3", region_name="us-east-1")
        for bucket in (DATA, ARTIFACTS):
            client.create_bucket(Bucket=bucket)
        client.put_object(Bucket=ARTIFACTS, Key="models/base/smollm2/config.json", Body=b"{}")
        yield client


def _empty_bucket(s3) -> None:
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=DATA):
        for item in page.get("Contents", []):
            s3.delete_object(Bucket=DATA, Key=item["Key"])


def _validate(case: Case, s3) -> str | None:
    """The error message, or None when Validate accepted the input."""
    _empty_bucket(s3)
    if case.surface == "validate-input":
        s3.put_object(Bucket=DATA, Key="datasets/chat/v1/train/a.jsonl", Body=GOOD_CHAT_LINE)
        raw = case.payload
    elif case.surface == "validate-dataset":
        for key, body in case.payload["files"].items():
            s3.put_object(Bucket=DATA, Key=f"datasets/chat/v1/{key}", Body=body)
        raw = {
            **GOOD_INPUT,
            "task": case.payload["task"],
            "method": "lora" if case.payload["task"] == "causal-lm" else "full",
        }
    else:
        s3.put_object(Bucket=DATA, Key="datasets/chat/v1/train/a.jsonl", Body=GOOD_CHAT_LINE)
        if case.payload is not None:
            s3.put_object(Bucket=DATA, Key="datasets/chat/v1/manifest.json", Body=case.payload)
        raw = {"manifest": MANIFEST}
    try:
        validate_request(raw, SETTINGS, s3)
    except InvalidRequest as caught:
        return str(caught)
    return None


def _prepare(case: Case, tmp_path: Path) -> str | None:
    source = tmp_path / f"input{case.payload['suffix']}"
    source.write_bytes(case.payload["content"])
    output = tmp_path / "out"
    task = ["--task", "classification"]
    out, err = _Buffer(), _Buffer()
    code = cli_main(
        ["prepare", str(source), *task, "--output", str(output), *case.payload["flags"]],
        session=object(),
        out=out,
        err=err,
    )
    if code == 0:
        manifest = json.loads((output / "manifest.json").read_text())
        lines = [json.loads(line) for line in (output / "train" / "train.jsonl").read_text().splitlines()]
        assert lines and len(lines) == manifest["rows"]["train"]
        if "dropped" in case.accepted:  # the acceptance drops the hostile row and says so
            rows = manifest["rows"]
            assert sum(rows[k] for k in rows if k.startswith("dropped")) == 1, rows
        return None
    assert code == 2, err.text
    # Never a partial output: nothing (not even a temporary file) was left behind.
    assert not output.exists() or not any(p.is_file() for p in output.rglob("*")), list(output.rglob("*"))
    return err.text


class _Buffer:
    def __init__(self) -> None:
        self.text = ""

    def write(self, text: str) -> int:
        self.text += text
        return len(text)

    def flush(self) -> None:
        pass


def _proxy(case: Case, proxy, call) -> str | None:
    runtime = InProcessRuntime(
        {
            "acme-dev-chat": lambda body: chat_completion(),
            "acme-dev-sentiment": lambda body: [{"label": "POSITIVE", "score": 0.9}],
        }
    )
    with installed(proxy, runtime=runtime):
        status, body, _ = call(case.payload)
    if status == 200:
        assert len(runtime.calls) == 1
        return None
    assert 400 <= status < 500, (status, body)
    assert runtime.calls == []  # refused before reaching the model
    assert set(body) == {"error"} and "Traceback" not in body["error"]["message"]
    return body["error"]["message"]


TALLY: Counter = Counter()


@pytest.fixture(scope="module", autouse=True)
def tally():
    yield
    print(
        f"\nhostile-input tally: tried {TALLY['tried']}, clear error {TALLY['error']}, "
        f"documented acceptance {TALLY['accept']}; by surface: "
        + ", ".join(f"{s} {TALLY['tried:' + s]}" for s in sorted({c.surface for c in CASES}))
    )


def test_the_table_covers_at_least_200_inputs_on_every_surface():
    surfaces = Counter(case.surface for case in CASES)
    assert len(CASES) >= 200 and len({(c.surface, c.id) for c in CASES}) == len(CASES)
    assert set(surfaces) == {"validate-input", "validate-dataset", "validate-manifest", "prepare", "proxy"}
    assert all(c.accepted or c.words for c in CASES)


@pytest.mark.parametrize("case", CASES, ids=[f"{c.surface}:{c.id}" for c in CASES])
def test_hostile_input_gets_a_clear_error_or_a_documented_acceptance(case, request, tmp_path):
    # When the input goes through its door (any exception other than the door's own error fails the test)
    if case.surface.startswith("validate"):
        message = _validate(case, request.getfixturevalue("s3"))
    elif case.surface == "prepare":
        message = _prepare(case, tmp_path)
    else:
        message = _proxy(case, request.getfixturevalue("proxy"), request.getfixturevalue("call"))
    TALLY["tried"] += 1
    TALLY[f"tried:{case.surface}"] += 1
    # Then it is the expected outcome: an error naming what is wrong and where, or an acceptance with its reason
    if case.accepted:
        assert message is None, f"expected acceptance ({case.accepted}), got: {message}"
        TALLY["accept"] += 1
    else:
        assert message is not None, "accepted, but an error was expected"
        for word in case.words:
            assert word in message, f"{word!r} not in {message[:600]!r}"
        assert "Traceback" not in message
        if case.surface != "prepare":  # a state machine's cause and an HTTP error body stay small
            assert len(message) < 4000, len(message)
        TALLY["error"] += 1
