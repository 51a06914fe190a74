"""A second evaluation domain, composed offline from installed code: API docstrings labelled with their library.

``library``: classification. Each row is the first paragraph of a public function's, class's or method's docstring
(at least 40 characters, names of the library removed so the label is not spelled out in the text) and its label is
the library it documents: numpy (numerics), matplotlib (plotting), sqlalchemy (databases) or the Python standard
library's networking and e-mail modules (network). Rows are deduplicated, balanced (the same number per label),
shuffled with a fixed seed and split 80/20 into train and validation; nothing is hand-written or filtered by
outcome. The content depends on the installed versions (recorded in ``sources.json`` beside the files).
"""

from __future__ import annotations

import importlib
import inspect
import json
import random
import re
from importlib import metadata
from pathlib import Path

SOURCES = {
    "numpy": [
        "numpy",
        "numpy.linalg",
        "numpy.fft",
        "numpy.random",
        "numpy.ma",
        "numpy.polynomial.polynomial",
        "numpy.lib.recfunctions",
    ],
    "matplotlib": [
        "matplotlib.pyplot",
        "matplotlib.axes",
        "matplotlib.figure",
        "matplotlib.colors",
        "matplotlib.patches",
        "matplotlib.text",
        "matplotlib.lines",
        "matplotlib.ticker",
        "matplotlib.transforms",
    ],
    "sqlalchemy": [
        "sqlalchemy",
        "sqlalchemy.orm",
        "sqlalchemy.sql.expression",
        "sqlalchemy.engine",
        "sqlalchemy.schema",
        "sqlalchemy.types",
        "sqlalchemy.pool",
        "sqlalchemy.event",
    ],
    "network": [
        "email.message",
        "email.utils",
        "email.parser",
        "http.client",
        "http.server",
        "http.cookiejar",
        "urllib.request",
        "urllib.parse",
        "smtplib",
        "ftplib",
        "socket",
        "ssl",
        "imaplib",
        "poplib",
        "socketserver",
    ],
}
PER_LABEL = 400
_NAMES = re.compile(r"\b(numpy|np|matplotlib|mpl|pyplot|plt|sqlalchemy|sa|python)\b", re.IGNORECASE)


def _first_paragraph(doc: str | None) -> str | None:
    if not doc:
        return None
    paragraph = inspect.cleandoc(doc).split("\n\n")[0]
    text = " ".join(_NAMES.sub("", paragraph).split())
    return text[:400] if len(text) >= 40 else None


def _docstrings(module_name: str) -> list[str]:
    module = importlib.import_module(module_name)
    found = []
    for name, member in sorted(vars(module).items()):
        if name.startswith("_") or not (inspect.isfunction(member) or inspect.isclass(member) or callable(member)):
            continue
        found.append(_first_paragraph(getattr(member, "__doc__", None)))
        if inspect.isclass(member):
            for method_name, method in sorted(vars(member).items()):
                if not method_name.startswith("_") and callable(method):
                    found.append(_first_paragraph(getattr(method, "__doc__", None)))
    return [text for text in found if text]


def rows(seed: int = 0) -> list[dict]:
    """Balanced, deduplicated, shuffled ``{"text", "label"}`` rows."""
    by_label: dict[str, list[str]] = {}
    seen: set[str] = set()
    for label, modules in SOURCES.items():
        texts = []
        for module_name in modules:
            for text in _docstrings(module_name):
                if text not in seen:
                    seen.add(text)
                    texts.append(text)
        by_label[label] = texts
    per_label = min(PER_LABEL, *map(len, by_label.values()))
    rng = random.Random(seed)
    out = []
    for label, texts in by_label.items():
        rng.shuffle(texts)
        out += [{"text": text, "label": label} for text in texts[:per_label]]
    rng.shuffle(out)
    return out


def write_dataset(kind: str, directory: Path) -> tuple[Path, Path]:
    """Write train.jsonl and validation.jsonl (80/20) under ``directory``; returns their paths."""
    if kind != "library":
        raise ValueError(f"unknown docstring dataset {kind!r}: only 'library'")
    data = rows()
    directory.mkdir(parents=True, exist_ok=True)
    cut = len(data) * 4 // 5
    train, validation = directory / "train.jsonl", directory / "validation.jsonl"
    train.write_text("".join(json.dumps(r) + "\n" for r in data[:cut]))
    validation.write_text("".join(json.dumps(r) + "\n" for r in data[cut:]))
    versions = {p: metadata.version(p) for p in ("numpy", "matplotlib", "sqlalchemy")}
    (directory / "sources.json").write_text(json.dumps({"modules": SOURCES, "versions": versions}, indent=2))
    return train, validation


if __name__ == "__main__":
    import collections

    sample = rows()
    print(len(sample), collections.Counter(r["label"] for r in sample))
    for r in sample[:5]:
        print(r)
