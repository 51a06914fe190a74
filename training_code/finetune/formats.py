"""Dataset format detection and per-line validation for JSONL training files (stdlib only).

Formats, detected per file from its first record and required of every other line:
- causal-lm: ``messages`` (``{"messages": [{"role", "content"}, ...]}``), ``prompt-completion``
  (``{"prompt", "completion"}``) or ``text`` (``{"text"}``);
- classification: ``text-label`` (``{"text", "label"}``, label an int or a string).
The validation Lambda runs the same checks on the first lines of S3 objects, and ``finetune prepare`` on its rows.

Lines are decoded by ``decode_json``, which turns hostile JSON (nesting thousands deep, integer literals beyond
Python's 4,300-digit limit or 64 bits, lone UTF-16 surrogates that no UTF-8 file or tokenizer can hold) into a
problem naming the line and field, never a RecursionError, ValueError or UnicodeEncodeError further on.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

MESSAGES = "messages"
PROMPT_COMPLETION = "prompt-completion"
TEXT = "text"
TEXT_LABEL = "text-label"
ROLES = ("system", "user", "assistant")


#: Deepest nesting of arrays and objects accepted in a JSON line (the formats need 3).
MAX_JSON_DEPTH = 32
#: Largest integer magnitude accepted in a JSON value (64-bit); Python's own limit (4,300 digits) would raise.
MAX_JSON_INT = 2**63 - 1
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F][0-9a-fA-F]{2}")


class JsonProblem(ValueError):
    """A JSON text that cannot be used: malformed, too deeply nested, an integer out of range or a lone surrogate."""


def _where(path: list, root: str = "the value") -> str:
    text = "".join(f"[{part}]" if isinstance(part, int) else f".{part}" for part in path).lstrip(".")
    return (text if len(text) <= 80 else text[:77] + "...") or root


def _int_size(value: int) -> str:
    return f"an integer of about {int(value.bit_length() * 0.30103) + 1} digits"


def check_json_value(
    value, max_depth: int = MAX_JSON_DEPTH, check_strings: bool = True, root: str = "the value"
) -> str | None:
    """The first problem in a decoded JSON value (nesting deeper than ``max_depth``, an integer beyond 64 bits, a
    string holding a lone UTF-16 surrogate, which no UTF-8 file or tokenizer can hold), naming where; or None.

    Iterative, so a deep value cannot exhaust the stack here."""
    stack: list[tuple[Any, list[str | int], int]] = [(value, [], 0)]
    while stack:
        item, path, depth = stack.pop()
        if isinstance(item, (dict, list)):
            if depth >= max_depth:
                return f"{_where(path, root)}: nested more than {max_depth} levels deep"
            children = item.items() if isinstance(item, dict) else enumerate(item)
            for key, child in children:
                if check_strings and isinstance(key, str) and _has_lone_surrogate(key):
                    return f"{_where(path, root)}: a key holds a lone UTF-16 surrogate (\\ud800-\\udfff), not text"
                stack.append((child, [*path, key], depth + 1))
        elif isinstance(item, int) and not isinstance(item, bool) and abs(item) > MAX_JSON_INT:
            return f"{_where(path, root)}: {_int_size(item)} is out of range (at most {MAX_JSON_INT})"
        elif check_strings and isinstance(item, str) and _has_lone_surrogate(item):
            return f"{_where(path, root)}: holds a lone UTF-16 surrogate (\\ud800-\\udfff), not text"
    return None


def _has_lone_surrogate(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def decode_json(text: str | bytes, max_depth: int = MAX_JSON_DEPTH):
    """``json.loads`` that raises JsonProblem (a clear reason) instead of RecursionError or ValueError on hostile
    input, and refuses values ``check_json_value`` finds a problem in."""
    try:
        value = json.loads(text)
    except json.JSONDecodeError as err:
        raise JsonProblem(f"malformed JSON ({err.msg} at column {err.colno})") from None
    except RecursionError:
        raise JsonProblem(f"nested too deeply (more than {max_depth} levels of arrays and objects)") from None
    except UnicodeDecodeError as err:
        raise JsonProblem(f"not UTF-8 text ({err.reason} at byte {err.start})") from None
    except ValueError as err:  # an integer literal over Python's 4,300-digit conversion limit
        raise JsonProblem(f"unreadable JSON number ({str(err).split(':')[0]})") from None
    # Lone surrogates only come from \u escapes (decoded UTF-8 holds none): look for them only then.
    raw = text if isinstance(text, str) else text.decode("utf-8", "replace")
    # A str may also carry one unescaped (text that was never UTF-8, e.g. re-serialised by prepare).
    suspect = bool(_SURROGATE_ESCAPE.search(raw)) or (
        isinstance(text, str) and not text.isascii() and _has_lone_surrogate(text)
    )
    problem = check_json_value(value, max_depth, check_strings=suspect)
    if problem:
        raise JsonProblem(problem)
    return value


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
        obj = decode_json(text)
    except JsonProblem as err:
        raise DataError(source, line_number, str(err)) from None
    if not isinstance(obj, dict):
        raise DataError(source, line_number, f"expected a JSON object, got {type(obj).__name__}")
    fmt = _format_of(task, obj)
    if fmt is None:
        keys = ", ".join(sorted(obj)) or "none"
        raise DataError(
            source, line_number, f"unrecognised fields ({keys}) for task={task}; expected {_EXPECTED[task]}"
        )
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
    first_label: tuple[int, object] | None = None
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
        if line_fmt == TEXT_LABEL:
            if first_label is None:
                first_label = (line_number, obj["label"])
            elif problem := mixed_labels(first_label[1], obj["label"], f"line {first_label[0]}"):
                raise DataError(source, line_number, problem)
        records.append(Record(source, line_number, line_fmt, obj))
    if fmt is None:
        raise DataError(source, None, "file is empty: no JSON lines")
    return fmt, records


def mixed_labels(first, label, first_where: str) -> str | None:
    """The problem when ``label`` is an integer and ``first`` (seen at ``first_where``) a string, or the reverse."""
    if isinstance(first, int) == isinstance(label, int):
        return None
    kinds = {True: "an integer", False: "a string"}
    return (
        f"label {_short(label)} is {kinds[isinstance(label, int)]} but {first_where} has label {_short(first)}, "
        f"{kinds[isinstance(first, int)]}: labels must be all integers or all strings"
    )


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
