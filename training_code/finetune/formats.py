"""Dataset format detection and per-line validation for JSONL training files (stdlib only).

Formats, detected per file from its first record and required of every other line:
- causal-lm: ``messages`` (``{"messages": [{"role", "content"}, ...]}``), ``prompt-completion``
  (``{"prompt", "completion"}``) or ``text`` (``{"text"}``);
- classification: ``text-label`` (``{"text", "label"}``, label an int or a string).
The validation Lambda runs the same checks on the first lines of S3 objects.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

MESSAGES = "messages"
PROMPT_COMPLETION = "prompt-completion"
TEXT = "text"
TEXT_LABEL = "text-label"
ROLES = ("system", "user", "assistant")


class DataError(ValueError):
    """A problem in the data, naming the file, the line (1-based, when there is one) and what is wrong."""

    def __init__(self, source: str, line: int | None, problem: str):
        self.source, self.line, self.problem = source, line, problem
        where = f"{source}, line {line}" if line is not None else source
        super().__init__(f"{where}: {problem}")


@dataclass(frozen=True)
class Record:
    """One validated example and where it came from."""

    source: str
    line: int
    format: str
    data: dict[str, Any]


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _format_of(task: str, obj: dict[str, Any]) -> str | None:
    if task == "classification":
        return TEXT_LABEL if "text" in obj and "label" in obj else None
    if "messages" in obj:
        return MESSAGES
    if "prompt" in obj and "completion" in obj:
        return PROMPT_COMPLETION
    if "text" in obj:
        return TEXT
    return None


def _check(fmt: str, obj: dict[str, Any]) -> str | None:
    """The problem with a record of a known format, or None."""
    if fmt == MESSAGES:
        messages = obj["messages"]
        if not isinstance(messages, list) or not messages:
            return '"messages" must be a non-empty list of {"role", "content"} objects'
        for i, message in enumerate(messages):
            if not isinstance(message, dict) or "role" not in message or "content" not in message:
                return f'messages[{i}] must be an object with "role" and "content", got {_short(message)}'
            if message["role"] not in ROLES:
                return f"messages[{i}].role is {_short(message['role'])}; expected one of {', '.join(ROLES)}"
            if not isinstance(message["content"], str):
                return f"messages[{i}].content must be a string, got {_short(message['content'])}"
        if not any(m["role"] == "assistant" and m["content"].strip() for m in messages):
            return "no non-empty assistant message: nothing to learn from"
        return None
    if fmt == PROMPT_COMPLETION:
        for key in ("prompt", "completion"):
            if not isinstance(obj[key], str):
                return f'"{key}" must be a string, got {_short(obj[key])}'
        if not obj["completion"].strip():
            return '"completion" is empty: nothing to learn from'
        return None
    if fmt == TEXT:
        if not isinstance(obj["text"], str) or not obj["text"].strip():
            return f'"text" must be a non-empty string, got {_short(obj["text"])}'
        return None
    # TEXT_LABEL
    if not isinstance(obj["text"], str) or not obj["text"].strip():
        return f'"text" must be a non-empty string, got {_short(obj["text"])}'
    label = obj["label"]
    if isinstance(label, bool) or not isinstance(label, (int, str)) or (isinstance(label, str) and not label.strip()):
        return f'"label" must be an integer or a non-empty string, got {_short(label)}'
    return None


_EXPECTED = {
    "causal-lm": '{"messages": [...]}, {"prompt", "completion"} or {"text"}',
    "classification": '{"text", "label"}',
}


def parse_line(task: str, source: str, line_number: int, text: str) -> tuple[str, dict[str, Any]] | None:
    """Validate one JSONL line; returns (format, object), None for a blank line, or raises DataError."""
    if not text.strip():
        return None
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as err:
        raise DataError(source, line_number, f"malformed JSON ({err.msg} at column {err.colno})") from None
    if not isinstance(obj, dict):
        raise DataError(source, line_number, f"expected a JSON object, got {type(obj).__name__}")
    fmt = _format_of(task, obj)
    if fmt is None:
        keys = ", ".join(sorted(obj)) or "none"
        raise DataError(source, line_number, f"unrecognised fields ({keys}) for task={task}; expected {_EXPECTED[task]}")
    problem = _check(fmt, obj)
    if problem:
        raise DataError(source, line_number, problem)
    return fmt, obj


def read_records(task: str, source: str, lines: Iterable[tuple[int, str]]) -> tuple[str, list[Record]]:
    """Validate every line of one file; returns its format and records. Raises DataError on the first problem."""
    if task not in _EXPECTED:
        raise ValueError(f"task must be one of {', '.join(_EXPECTED)}, got {task!r}")
    fmt: str | None = None
    first_line = 0
    records: list[Record] = []
    for line_number, text in lines:
        parsed = parse_line(task, source, line_number, text)
        if parsed is None:
            continue
        line_fmt, obj = parsed
        if fmt is None:
            fmt, first_line = line_fmt, line_number
        elif line_fmt != fmt:
            raise DataError(
                source,
                line_number,
                f"mixed formats: this line is '{line_fmt}' but line {first_line} made the file '{fmt}'; "
                "use one format per file",
            )
        records.append(Record(source, line_number, line_fmt, obj))
    if fmt is None:
        raise DataError(source, None, "file is empty: no JSON lines")
    return fmt, records


def detect_format(task: str, source: str, lines: Iterable[tuple[int, str]]) -> str:
    """The format of one file's lines (all validated), or DataError naming file, line and problem."""
    return read_records(task, source, lines)[0]


def read_file(task: str, path: str) -> tuple[str, list[Record]]:
    """Read and validate one local JSONL file."""
    try:
        with open(path, encoding="utf-8") as handle:
            return read_records(task, path, enumerate(handle, start=1))
    except UnicodeDecodeError as err:
        raise DataError(path, None, f"not UTF-8 text ({err.reason} at byte {err.start})") from None


def label_mapping(records: Iterable[Record]) -> list[int | str]:
    """The sorted distinct labels of classification records; ints and strings may not be mixed."""
    labels = {r.data["label"] for r in records}
    kinds = {type(label) for label in labels}
    if len(kinds) > 1:
        raise DataError("train channel", None, f"labels mix integers and strings: {sorted(map(str, labels))}")
    return sorted(labels)


def check_labels(records: Iterable[Record], known: list[int | str]) -> None:
    """Raise DataError at the first record whose label is not one of the training labels."""
    allowed = set(known)
    for record in records:
        if record.data["label"] not in allowed:
            raise DataError(
                record.source,
                record.line,
                f"unknown label {record.data['label']!r}: not among the training labels {known}",
            )
