"""``finetune prepare``: CSV, JSONL or Parquet plus a column mapping -> the task's canonical JSONL dataset.

Rows are validated with the training container's own ``finetune.formats.parse_line``, so what prepare writes is
what training accepts.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import math
import random
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from finetune.config import MAX_VALUES, TrainConfig
from finetune.formats import DataError, JsonProblem, decode_json, mixed_labels, parse_line

from .errors import UsageError

FIELDS = {"classification": ("text", "label"), "causal-lm": ("messages", "prompt", "completion", "text")}
EXAMPLES_SHOWN = 5


@dataclass
class SourceRow:
    """One input row and the first physical line it came from."""

    line: int
    values: dict[str, Any]


@dataclass
class PrepareReport:
    """Counts and examples of everything prepare dropped."""

    rows_read: int = 0
    non_utf8_lines: list[int] = field(default_factory=list)
    dropped_non_utf8: int = 0
    dropped_malformed: list[str] = field(default_factory=list)
    dropped_empty: int = 0
    dropped_duplicate: int = 0
    dropped_invalid: list[str] = field(default_factory=list)


def _decode_lines(data: bytes, report: PrepareReport) -> tuple[str, set[int]]:
    """UTF-8 text of the file, with each line holding non-UTF-8 bytes recorded (1-based) and decoded with
    replacement characters so parsing goes on; the rows on those lines are dropped later."""
    bad: set[int] = set()
    parts: list[str] = []
    for number, raw in enumerate(data.splitlines(keepends=True), start=1):
        try:
            parts.append(raw.decode("utf-8"))
        except UnicodeDecodeError:
            bad.add(number)
            parts.append(raw.decode("utf-8", errors="replace"))
    report.non_utf8_lines = sorted(bad)
    return "".join(parts).lstrip("\ufeff"), bad


def read_rows(path: Path, report: PrepareReport, encoding: str | None) -> tuple[list[SourceRow], list[str]]:
    """The rows and column names of a CSV, JSONL or Parquet file."""
    suffix = path.suffix.lower()
    if suffix == ".parquet":
        try:
            import pandas as pd

            frame = pd.read_parquet(path)
        except Exception as error:  # pyarrow raises many types for a bad file
            raise UsageError(f"{path}: cannot be read as Parquet ({error})") from None
        frame = frame.astype(object).where(frame.notna(), None)
        rows = [SourceRow(i + 1, row) for i, row in enumerate(frame.to_dict(orient="records"))]
        return rows, [str(c) for c in frame.columns]
    if suffix not in (".csv", ".jsonl", ".json"):
        raise UsageError(f"{path}: unknown input format {suffix or '(no suffix)'!r}; use .csv, .jsonl or .parquet")
    data = path.read_bytes()
    if encoding:
        try:
            text, bad = data.decode(encoding), set[int]()
        except (UnicodeDecodeError, LookupError) as error:
            raise UsageError(f"{path}: cannot be decoded as --encoding {encoding}: {error}") from None
    else:
        text, bad = _decode_lines(data, report)
    rows = []
    if suffix == ".csv":
        reader = csv.reader(io.StringIO(text, newline=""))
        try:
            header = next(reader)
        except StopIteration:
            raise UsageError(f"{path}: the file is empty (a CSV needs a header row)") from None
        except csv.Error as error:
            raise _csv_problem(path, reader.line_num, error) from None
        header = [h.strip() for h in header]
        start = reader.line_num + 1
        while True:
            try:
                record = next(reader)
            except StopIteration:
                break
            except csv.Error as error:  # a field over the csv module's size limit, a NUL byte, ...
                raise _csv_problem(path, start, error) from None
            end = reader.line_num
            first, lines = start, set(range(start, end + 1))
            start = end + 1
            if lines & bad:
                report.dropped_non_utf8 += 1
                continue
            if len(record) > len(header):
                report.dropped_malformed.append(f"line {first}: {len(record)} fields but the header has {len(header)}")
                continue
            # A shorter record is allowed: its trailing columns are simply absent from the row.
            rows.append(SourceRow(first, dict(zip(header, record, strict=False))))
        report.rows_read = len(rows) + report.dropped_non_utf8 + len(report.dropped_malformed)
        return rows, header
    columns: dict[str, None] = {}
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        if number in bad:
            report.dropped_non_utf8 += 1
            continue
        try:
            obj = decode_json(line)
        except JsonProblem as error:
            report.dropped_malformed.append(f"line {number}: {error}")
            continue
        if not isinstance(obj, dict):
            report.dropped_malformed.append(f"line {number}: expected a JSON object, got {type(obj).__name__}")
            continue
        columns.update(dict.fromkeys(obj))
        rows.append(SourceRow(number, obj))
    report.rows_read = len(rows) + report.dropped_non_utf8 + len(report.dropped_malformed)
    return rows, list(columns)


def _csv_problem(path: Path, line: int, error: csv.Error) -> UsageError:
    why = str(error)
    if "field larger than field limit" in why:
        why = (
            f"a field is longer than {csv.field_size_limit():,} characters (the csv module's limit); "
            "convert the file to JSONL or Parquet to keep such long texts"
        )
    return UsageError(f"{path}, line {line}: cannot be read as CSV: {why}")


def resolve_mapping(task: str, columns: list[str], mapping: dict[str, str], source: str) -> dict[str, str]:
    """canonical field -> input column, from ``--map`` and same-named columns; UsageError names what is wrong."""
    for canonical, column in mapping.items():
        if canonical not in FIELDS[task]:
            raise UsageError(
                f"--map {canonical}={column}: {canonical!r} is not a field of task={task} "
                f"(fields: {', '.join(FIELDS[task])})"
            )
        if column not in columns:
            raise UsageError(
                f"--map {canonical}={column}: column {column!r} is not in {source} "
                f"(columns: {', '.join(columns) or 'none'})"
            )
    resolved = {name: mapping.get(name, name) for name in FIELDS[task] if mapping.get(name, name) in columns}
    needed: list[tuple[str, ...]] = (
        [("text", "label")] if task == "classification" else [("messages",), ("prompt", "completion"), ("text",)]
    )
    for option in needed:
        if all(name in resolved for name in option):
            return {name: resolved[name] for name in option}
    wanted = " or ".join("+".join(option) for option in needed)
    raise UsageError(
        f"{source}: no columns for task={task} (needs {wanted}; columns: {', '.join(columns) or 'none'});"
        f" map them with --map FIELD=COLUMN, e.g. --map {needed[0][0]}=<column>"
    )


def _clean(value: Any) -> Any:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    if isinstance(value, str):
        return value.strip() or None
    if hasattr(value, "tolist"):  # numpy scalars and arrays from Parquet
        return _clean(value.tolist())
    return value


def canonical_records(
    task: str, rows: list[SourceRow], mapping: dict[str, str], report: PrepareReport, source: str
) -> list[dict[str, Any]]:
    """The canonical records: empty and duplicate rows dropped, each checked with ``parse_line``."""
    records: list[tuple[int, dict[str, Any]]] = []
    seen: set[str] = set()
    for row in rows:
        record = {name: _clean(row.values.get(column)) for name, column in mapping.items()}
        if any(value in (None, [], "") for value in record.values()):
            report.dropped_empty += 1
            continue
        key = json.dumps(record, sort_keys=True, ensure_ascii=False, default=str)
        if key in seen:
            report.dropped_duplicate += 1
            continue
        seen.add(key)
        records.append((row.line, record))
    if task == "classification":
        labels = [r["label"] for _, r in records]
        # Labels that are all integers written as text, or all whole floats, become ints.
        if labels and (
            all(isinstance(lb, str) and re.fullmatch(r"-?[0-9]+", lb) for lb in labels)
            or all(isinstance(lb, float) and lb.is_integer() for lb in labels)
        ):
            for _, record in records:
                record["label"] = int(record["label"])
    valid: list[tuple[int, dict[str, Any]]] = []
    for line, record in records:
        if "label" in record and isinstance(record["label"], (list, dict)):
            # A list or object is not one label (multi-label data is not a task here): never its string form.
            report.dropped_invalid.append(
                f"line {line}: label is a {type(record['label']).__name__}; a label is one integer or string"
            )
            continue
        if "label" in record and not isinstance(record["label"], (int, str)):
            record["label"] = str(record["label"])
        try:
            parse_line(task, source, line, json.dumps(record, ensure_ascii=False))
        except DataError as error:
            report.dropped_invalid.append(f"line {line}: {error.problem}")
            continue
        valid.append((line, record))
    if task == "classification" and valid:
        first_line, first = valid[0]
        for line, record in valid[1:]:
            problem = mixed_labels(first["label"], record["label"], f"line {first_line}")
            if problem:
                raise UsageError(f"{source}, line {line}: {problem}")
    return [record for _, record in valid]


def split(
    records: list[dict[str, Any]],
    fraction: float,
    seed: int,
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """A seeded shuffle and split; at least one validation row whenever the fraction is positive."""
    order = list(range(len(records)))
    random.Random(seed).shuffle(order)
    count = 0 if fraction == 0 or len(records) < 2 else max(1, round(len(records) * fraction))
    validation = sorted(order[:count])
    train = sorted(order[count:])
    return [records[i] for i in train], [records[i] for i in validation]


def _token_text(record: dict[str, Any], tokenizer: Any) -> str:
    if "messages" in record:
        if getattr(tokenizer, "chat_template", None):
            rendered: str = tokenizer.apply_chat_template(record["messages"], tokenize=False)
            return rendered
        return "\n".join(m["content"] for m in record["messages"])
    if "prompt" in record:
        prompt_and_completion: str = record["prompt"] + record["completion"]
        return prompt_and_completion
    text: str = record["text"]
    return text


def token_stats(records: list[dict[str, Any]], tokenizer_dir: str, max_seq_length: int) -> dict[str, Any]:
    """Token-length statistics with the base model's tokenizer (a local Hugging Face directory)."""
    try:
        from transformers import AutoTokenizer
    except ImportError:
        raise UsageError("--tokenizer needs the transformers package (pip install transformers)") from None
    if (
        not (Path(tokenizer_dir) / "tokenizer_config.json").is_file()
        and not (Path(tokenizer_dir) / "tokenizer.json").is_file()
    ):
        raise UsageError(f"--tokenizer {tokenizer_dir}: not a Hugging Face model directory with a tokenizer")
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    lengths = sorted(len(tokenizer(_token_text(r, tokenizer), add_special_tokens=True)["input_ids"]) for r in records)
    if not lengths:
        return {"rows": 0}

    def pct(p: float) -> int:
        return lengths[min(len(lengths) - 1, math.ceil(p / 100 * len(lengths)) - 1)]

    return {
        "rows": len(lengths),
        "min": lengths[0],
        "mean": round(sum(lengths) / len(lengths), 1),
        "p50": pct(50),
        "p95": pct(95),
        "max": lengths[-1],
        "max_seq_length": max_seq_length,
        "over_max_seq_length": sum(1 for n in lengths if n > max_seq_length),
    }


def write_jsonl(path: Path, records: list[dict[str, Any]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as handle:
        for record in records:
            handle.write(json.dumps(record, ensure_ascii=False) + "\n")


def _publish(files: dict[str, str | list[dict[str, Any]]], output: Path) -> None:
    """Write every output file beside its final name, then rename them all into place: a failure part-way
    (a full disk, an unencodable record) leaves no partial or stale-mixed output behind."""
    staged: list[tuple[Path, Path]] = []
    try:
        for relative, content in files.items():
            final = output / relative
            temporary = final.with_name(f".{final.name}.partial")
            staged.append((temporary, final))
            if isinstance(content, str):
                temporary.parent.mkdir(parents=True, exist_ok=True)
                temporary.write_text(content, encoding="utf-8")
            else:
                write_jsonl(temporary, content)
    except BaseException:
        for temporary, _ in staged:
            temporary.unlink(missing_ok=True)
        raise
    for temporary, final in staged:
        temporary.replace(final)


def prepare(
    *,
    source: Path,
    task: str,
    output: Path,
    mapping: dict[str, str],
    name: str,
    version: str,
    validation_fraction: float,
    seed: int,
    tokenizer: str | None,
    max_seq_length: int | None,
    encoding: str | None,
) -> dict[str, Any]:
    """Write ``train/train.jsonl``, ``validation/validation.jsonl`` and ``manifest.json`` under ``output``;
    return the manifest."""
    if not source.is_file():
        raise UsageError(f"{source}: no such file")
    if not 0 <= validation_fraction < 1:
        raise UsageError(f"--validation-fraction {validation_fraction}: must be >= 0 and < 1")
    if not 0 <= seed <= MAX_VALUES["seed"]:
        raise UsageError(f"--seed {seed}: must be >= 0 and <= {MAX_VALUES['seed']}")
    if max_seq_length is not None and not 8 <= max_seq_length <= MAX_VALUES["max_seq_length"]:
        raise UsageError(f"--max-seq-length {max_seq_length}: must be >= 8 and <= {MAX_VALUES['max_seq_length']}")
    if max_seq_length is None:
        max_seq_length = TrainConfig(task=task, train_path="-", base_model="-").max_seq_length
        if max_seq_length is None:
            raise AssertionError("TrainConfig.__post_init__ left max_seq_length unresolved")
    report = PrepareReport()
    rows, columns = read_rows(source, report, encoding)
    if not rows and (report.dropped_malformed or report.dropped_non_utf8):
        shown = "; ".join(report.dropped_malformed[:3]) or f"line {report.non_utf8_lines[0]}: not UTF-8"
        raise UsageError(f"{source}: no readable rows ({shown})")
    fields = resolve_mapping(task, columns, mapping, str(source))
    records = canonical_records(task, rows, fields, report, str(source))
    if not records:
        raise UsageError(
            f"{source}: no usable rows left ({report.rows_read} read, {report.dropped_empty} empty, "
            f"{report.dropped_duplicate} duplicate, {report.dropped_non_utf8} not UTF-8, "
            f"{len(report.dropped_invalid) + len(report.dropped_malformed)} invalid)"
        )
    train, validation = split(records, validation_fraction, seed)
    parsed = parse_line(task, str(source), 1, json.dumps(records[0]))
    if parsed is None:  # None means a blank line, and a dumped record never is one
        raise AssertionError("parse_line returned nothing for a JSON object")
    fmt = parsed[0]
    manifest = {
        "name": name,
        "version": version,
        "task": task,
        "format": fmt,
        "source": source.name,
        "source_sha256": hashlib.sha256(source.read_bytes()).hexdigest(),
        "columns": fields,
        "seed": seed,
        "validation_fraction": validation_fraction,
        "rows": {
            "read": report.rows_read,
            "train": len(train),
            "validation": len(validation),
            "dropped_empty": report.dropped_empty,
            "dropped_duplicate": report.dropped_duplicate,
            "dropped_non_utf8": report.dropped_non_utf8,
            "dropped_malformed": len(report.dropped_malformed),
            "dropped_invalid": len(report.dropped_invalid),
        },
        "non_utf8_lines": report.non_utf8_lines,
        "problems": (report.dropped_malformed + report.dropped_invalid)[:50],
        "token_lengths": token_stats(records, tokenizer, max_seq_length) if tokenizer else None,
        "files": ["train/train.jsonl"] + (["validation/validation.jsonl"] if validation else []),
    }
    files: dict[str, str | list[dict[str, Any]]] = {"train/train.jsonl": train}
    if validation:
        files["validation/validation.jsonl"] = validation
    files["manifest.json"] = json.dumps(manifest, indent=2, ensure_ascii=False) + "\n"
    _publish(files, output)
    return manifest


def summary(manifest: dict[str, Any]) -> list[str]:
    """Human-readable lines for the terminal."""
    rows = manifest["rows"]
    lines = [
        f"read {rows['read']} rows; wrote {rows['train']} train and {rows['validation']} validation "
        f"({manifest['format']} format)",
        f"dropped: {rows['dropped_empty']} empty, {rows['dropped_duplicate']} duplicate, "
        f"{rows['dropped_non_utf8']} with non-UTF-8 bytes, {rows['dropped_malformed']} malformed, "
        f"{rows['dropped_invalid']} invalid",
    ]
    if manifest["non_utf8_lines"]:
        shown = ", ".join(map(str, manifest["non_utf8_lines"][:20]))
        more = len(manifest["non_utf8_lines"]) - 20
        lines.append(
            f"non-UTF-8 bytes on lines {shown}{f' and {more} more' if more > 0 else ''} "
            "(those rows were dropped; pass --encoding if the file is not UTF-8)"
        )
    lines += [f"  {problem}" for problem in manifest["problems"][:EXAMPLES_SHOWN]]
    stats = manifest["token_lengths"]
    if stats and stats.get("rows"):
        lines.append(
            f"tokens per example: min {stats['min']}, mean {stats['mean']}, p50 {stats['p50']}, "
            f"p95 {stats['p95']}, max {stats['max']}; {stats['over_max_seq_length']} rows exceed "
            f"max_seq_length={stats['max_seq_length']} (truncated in training)"
        )
    return lines
