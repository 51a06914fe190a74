"""``finetune prepare`` publishes its output whole or not at all."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from finetune_cli import prepare as prepare_module
from finetune_cli.errors import UsageError

ROWS = "".join(json.dumps({"text": f"row {i}", "label": i % 2}) + "\n" for i in range(20))


def _prepare(source: Path, output: Path, **overrides) -> dict:
    arguments = {
        "source": source,
        "task": "classification",
        "output": output,
        "mapping": {},
        "name": "d",
        "version": "v1",
        "validation_fraction": 0.2,
        "seed": 1,
        "tokenizer": None,
        "max_seq_length": None,
        "encoding": None,
        **overrides,
    }
    return prepare_module.prepare(**arguments)


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_a_failure_while_writing_leaves_the_previous_output_untouched(tmp_path, monkeypatch):
    # Given an output directory holding a complete earlier prepare
    source = tmp_path / "in.jsonl"
    source.write_text(ROWS)
    output = tmp_path / "out"
    _prepare(source, output)
    before = _files(output)
    assert set(before) == {"manifest.json", "train/train.jsonl", "validation/validation.jsonl"}

    # When a new prepare fails after writing the train file (a full disk while writing the validation file)
    source.write_text(ROWS.replace("row", "new row"))
    real_write = prepare_module.write_jsonl

    def failing_write(path: Path, records: list) -> None:
        if "validation" in path.name:
            path.write_text('{"partial": ')
            raise OSError(28, "No space left on device")
        real_write(path, records)

    monkeypatch.setattr(prepare_module, "write_jsonl", failing_write)
    with pytest.raises(OSError, match="No space left"):
        _prepare(source, output)

    # Then the earlier output is exactly as it was, with no temporary file beside it
    assert _files(output) == before


def test_a_rejected_input_writes_nothing(tmp_path):
    # Given a file whose labels mix integers and strings (found only after every row was read)
    source = tmp_path / "in.jsonl"
    source.write_text(ROWS + json.dumps({"text": "odd", "label": "neutral"}) + "\n")
    output = tmp_path / "out"
    # When prepare rejects it
    with pytest.raises(UsageError, match="line 21: label 'neutral' is a string but line 1 has label 0"):
        _prepare(source, output)
    # Then no output directory or file was created
    assert not output.exists()
