"""Reading channels, tokenising examples, packing and batching."""

from __future__ import annotations

import bisect
import os
import random
from dataclasses import dataclass, field
from pathlib import Path

from .formats import MESSAGES, PROMPT_COMPLETION, TEXT, DataError, Record, read_file

IGNORE_INDEX = -100


def channel_files(path: str, channel: str) -> list[str]:
    """The JSONL files of a channel (a file, or a directory searched recursively), sorted."""
    root = Path(path)
    if root.is_file():
        return [str(root)]
    if not root.is_dir():
        raise DataError(f"{channel} channel", None, f"{path} does not exist")
    files = sorted(
        str(p)
        for p in root.rglob("*")
        if p.is_file() and p.suffix in (".jsonl", ".json") and not p.name.startswith(".")
    )
    if not files:
        raise DataError(f"{channel} channel", None, f"{path} holds no .jsonl files")
    return files


def load_channel(task: str, path: str, channel: str) -> list[Record]:
    """Every validated record of a channel, files in sorted order."""
    records: list[Record] = []
    for file in channel_files(path, channel):
        records.extend(read_file(task, file)[1])
    return records


def split_records(records: list[Record], fraction: float, seed: int) -> tuple[list[Record], list[Record]]:
    """A seeded (train, validation) split, at least one row on each side."""
    if len(records) < 2:
        raise DataError("train channel", None, f"only {len(records)} row(s): too few to hold out a validation split")
    order = list(range(len(records)))
    random.Random(seed).shuffle(order)
    n_val = min(len(records) - 1, max(1, round(len(records) * fraction)))
    held = set(order[:n_val])
    return [r for i, r in enumerate(records) if i not in held], [records[i] for i in sorted(held)]


@dataclass
class Example:
    """One tokenised example: ids, labels (IGNORE_INDEX where no loss) or a class id."""

    input_ids: list[int]
    labels: list[int] | int
    source: str = ""
    line: int = 0

    def __len__(self) -> int:
        return len(self.input_ids)


@dataclass
class EncodeReport:
    """What tokenisation dropped or cut."""

    truncated: int = 0
    dropped_no_target: int = 0
    dropped_where: list[str] = field(default_factory=list)


def _strip_double_bos(ids: list[int], bos: int | None) -> list[int]:
    while bos is not None and len(ids) >= 2 and ids[0] == bos and ids[1] == bos:
        ids = ids[1:]
    return ids


def _chat_spans(tokenizer, messages: list[dict]) -> tuple[str, list[tuple[int, int]]]:
    """The rendered conversation and the character spans of assistant turns (content through end-of-turn).

    Works with any chat template (no ``{% generation %}`` markers needed): each assistant turn starts where the
    rendering of the preceding messages with a generation prompt ends, and ends where the rendering including it
    ends, less trailing whitespace.
    """
    full = tokenizer.apply_chat_template(messages, tokenize=False)
    spans = []
    for i, message in enumerate(messages):
        if message["role"] != "assistant":
            continue
        prefix = tokenizer.apply_chat_template(messages[:i], tokenize=False, add_generation_prompt=True) if i else ""
        through = tokenizer.apply_chat_template(messages[: i + 1], tokenize=False).rstrip()
        if not full.startswith(prefix) or not full.startswith(through):
            raise ValueError("the chat template does not render conversations prefix by prefix")
        spans.append((len(prefix), len(through)))
    return full, spans


def encode_causal(records: list[Record], tokenizer, max_seq_length: int) -> tuple[list[Example], EncodeReport]:
    """Tokenise causal-lm records: loss on assistant turns / completions (and the EOS that ends them) only."""
    report = EncodeReport()
    examples = []
    eos, bos = tokenizer.eos_token_id, tokenizer.bos_token_id
    has_template = bool(getattr(tokenizer, "chat_template", None))
    for record in records:
        data = record.data
        if record.format == PROMPT_COMPLETION:
            messages = [
                {"role": "user", "content": data["prompt"]},
                {"role": "assistant", "content": data["completion"]},
            ]
        elif record.format == MESSAGES:
            messages = data["messages"]
        else:
            messages = None
        if messages is not None and has_template:
            text, spans = _chat_spans(tokenizer, messages)
            enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
            ids = list(enc["input_ids"])
            labels = [IGNORE_INDEX] * len(ids)
            for k, (a, _) in enumerate(enc["offset_mapping"]):
                if any(s <= a < e for s, e in spans):
                    labels[k] = ids[k]
            if ids and ids[-1] != eos and eos is not None and labels[-1] != IGNORE_INDEX:
                ids.append(eos)
                labels.append(eos)
        elif messages is not None:
            # No chat template: plain prompt/response concatenation, loss on responses.
            ids, labels = [], []
            if bos is not None:
                ids, labels = [bos], [IGNORE_INDEX]
            for m in messages:
                piece = tokenizer(m["content"] + ("\n" if m["role"] != "assistant" else ""), add_special_tokens=False)[
                    "input_ids"
                ]
                ids += piece
                labels += piece if m["role"] == "assistant" else [IGNORE_INDEX] * len(piece)
                if m["role"] == "assistant" and eos is not None:
                    ids.append(eos)
                    labels.append(eos)
        else:  # TEXT
            assert record.format == TEXT
            ids = list(tokenizer(data["text"], add_special_tokens=True)["input_ids"])
            if eos is not None and (not ids or ids[-1] != eos):
                ids.append(eos)
            labels = list(ids)
            if bos is not None and ids and ids[0] == bos:
                labels[0] = IGNORE_INDEX
        ids = _strip_double_bos(ids, bos)
        labels = labels[len(labels) - len(ids) :]
        if len(ids) > max_seq_length:
            report.truncated += 1
            ids, labels = ids[:max_seq_length], labels[:max_seq_length]
        # labels[0] never counts (nothing predicts the first token)
        if not any(label != IGNORE_INDEX for label in labels[1:]):
            report.dropped_no_target += 1
            report.dropped_where.append(f"{record.source}:{record.line}")
            continue
        examples.append(Example(ids, labels, record.source, record.line))
    return examples, report


def encode_classification(
    records: list[Record], tokenizer, max_seq_length: int, label_to_id: dict
) -> tuple[list[Example], EncodeReport]:
    """Tokenise classification records (truncated to max_seq_length)."""
    report = EncodeReport()
    texts = [r.data["text"] for r in records]
    encoded = tokenizer(texts, truncation=False, add_special_tokens=True)["input_ids"]
    examples = []
    for record, ids in zip(records, encoded, strict=True):
        if len(ids) > max_seq_length:
            report.truncated += 1
            ids = ids[: max_seq_length - 1] + ids[-1:]  # keep the closing special token
        examples.append(Example(list(ids), label_to_id[record.data["label"]], record.source, record.line))
    return examples, report


def pack_best_fit_decreasing(examples: list[Example], capacity: int) -> list[list[Example]]:
    """Best-fit-decreasing bin packing of examples into rows of at most ``capacity`` tokens (deterministic)."""
    order = sorted(range(len(examples)), key=lambda i: (-len(examples[i]), i))
    bins: list[list[Example]] = []
    free: list[tuple[int, int]] = []  # sorted (remaining capacity, bin index)
    for i in order:
        size = len(examples[i])
        pos = bisect.bisect_left(free, (size, -1))
        if pos < len(free):
            remaining, b = free.pop(pos)
            bins[b].append(examples[i])
            if remaining - size > 0:
                bisect.insort(free, (remaining - size, b))
        else:
            bins.append([examples[i]])
            if capacity - size > 0:
                bisect.insort(free, (capacity - size, len(bins) - 1))
    return bins


def _width(rows: list[list[Example]]) -> int:
    return max(sum(len(e) for e in row) for row in rows)


def pack_balanced(examples: list[Example], capacity: int) -> list[list[Example]]:
    """As few rows as best fit decreasing needs at ``capacity``, packed as narrow as they will go.

    A micro-batch's rows are padded to its widest row, so best fit decreasing alone (fill each row to
    ``capacity``, leave the last one short) pads the short row up to ``capacity``: about a fifth of the slots on
    Dolly-like data. Searching for the narrowest capacity that still fits the examples in the same number of rows
    evens the rows out (about 8% padding there) at the cost of a few more packings of a handful of examples.
    """
    rows = pack_best_fit_decreasing(examples, capacity)
    total = sum(len(e) for e in examples)
    low, high = max(max(len(e) for e in examples), -(-total // len(rows))), _width(rows) - 1
    while low <= high:
        middle = (low + high) // 2
        trial = pack_best_fit_decreasing(examples, middle)
        if len(trial) <= len(rows):
            rows, high = trial, _width(trial) - 1
        else:
            low = middle + 1
    return rows


def collate_packed(rows: list[list[Example]], pad_id: int):
    """Packed rows -> input_ids, position_ids (restarting per example) and labels; no attention mask, so the
    model's packed-sequence masking keeps examples from attending to each other. Rows are padded to the longest;
    padding forms its own segment and carries no loss."""
    import torch

    width = _width(rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    pos = torch.zeros((len(rows), width), dtype=torch.long)
    labels = torch.full((len(rows), width), IGNORE_INDEX, dtype=torch.long)
    for r, row in enumerate(rows):
        at = 0
        for example in row:
            n = len(example)
            ids[r, at : at + n] = torch.tensor(example.input_ids)
            labels[r, at : at + n] = torch.tensor(example.labels)
            # The first token of each example is never a target of the previous one.
            labels[r, at] = IGNORE_INDEX
            pos[r, at : at + n] = torch.arange(n)
            at += n
        if at < width:
            pos[r, at:] = torch.arange(width - at)
    return {"input_ids": ids, "position_ids": pos, "labels": labels}


def collate_padded(examples: list[Example], pad_id: int, classification: bool):
    """Right-padded batch with an attention mask."""
    import torch

    width = max(len(e) for e in examples)
    ids = torch.full((len(examples), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(examples), width), dtype=torch.long)
    for r, example in enumerate(examples):
        ids[r, : len(example)] = torch.tensor(example.input_ids)
        mask[r, : len(example)] = 1
    batch = {"input_ids": ids, "attention_mask": mask}
    if classification:
        batch["labels"] = torch.tensor([e.labels for e in examples], dtype=torch.long)
    else:
        labels = torch.full((len(examples), width), IGNORE_INDEX, dtype=torch.long)
        for r, example in enumerate(examples):
            labels[r, : len(example)] = torch.tensor(example.labels)
        batch["labels"] = labels
    return batch


class BatchPlan:
    """Deterministic micro-batches of examples derived from (seed, epoch): resuming at a global step needs no data
    state.

    ``batch_size`` counts examples whether or not they are packed: packing changes how a micro-batch's examples are
    laid out in rows (see ``collate_micro_batch``), never how many there are, so the optimizer steps per epoch and the
    examples behind each step are the same either way. Each epoch shuffles the examples with ``seed + epoch``; a
    global micro-batch of ``batch_size * world_size`` examples is split by rank. The incomplete tail of an epoch is
    dropped.

    ``group_by_length``: after shuffling, each run of ``GROUP_MEGABATCHES`` global micro-batches is sorted longest
    first, so padded batches hold examples of similar length (what the Hugging Face Trainer's ``group_by_length``
    does); for padded causal-lm batches, where padding would otherwise be most of the compute.
    """

    GROUP_MEGABATCHES = 50

    def __init__(self, items: list, batch_size: int, world_size: int, seed: int, group_by_length: bool = False):
        self.items, self.batch_size, self.world_size, self.seed = items, batch_size, world_size, seed
        self.group_by_length = group_by_length
        self.per_epoch = len(items) // (batch_size * world_size)
        if self.per_epoch == 0:
            raise DataError(
                "train channel",
                None,
                f"{len(items)} training examples are fewer than one batch (batch_size={batch_size} x {world_size} "
                "processes); add data or lower batch_size",
            )
        self._epoch = -1
        self._order: list[int] = []

    def micro_batch(self, index: int, rank: int) -> tuple[list, float]:
        """The items of global micro-batch ``index`` for ``rank``, and the fractional epoch it belongs to."""
        epoch, within = divmod(index, self.per_epoch)
        if epoch != self._epoch:
            self._order = list(range(len(self.items)))
            random.Random(self.seed * 1000003 + epoch).shuffle(self._order)
            if self.group_by_length:
                self._order = self._grouped(self._order)
            self._epoch = epoch
        size = self.batch_size * self.world_size
        chunk = self._order[within * size : (within + 1) * size]
        mine = chunk[rank * self.batch_size : (rank + 1) * self.batch_size]
        return [self.items[i] for i in mine], epoch + within / self.per_epoch

    def _grouped(self, order: list[int]) -> list[int]:
        mega = self.GROUP_MEGABATCHES * self.batch_size * self.world_size
        grouped: list[int] = []
        for start in range(0, len(order), mega):
            grouped += sorted(order[start : start + mega], key=lambda i: -len(self.items[i]))
        return grouped


def collate_micro_batch(examples: list[Example], pad_id: int, *, classification: bool, packed_width: int | None):
    """One micro-batch as tensors: packed into rows of at most ``packed_width`` tokens (``pack_balanced``: the
    fewest rows, as even as they go; no attention mask, position ids restarting per example) or, when
    ``packed_width`` is None, right-padded."""
    if packed_width is None:
        return collate_padded(examples, pad_id, classification=classification)
    return collate_packed(pack_balanced(examples, packed_width), pad_id)


def rank_env() -> tuple[int, int, int]:
    """(rank, local_rank, world_size) from torchrun's environment."""
    return int(os.environ.get("RANK", 0)), int(os.environ.get("LOCAL_RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))
