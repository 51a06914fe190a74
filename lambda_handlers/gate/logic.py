"""The Gate decision, as plain logic over an injected S3 client.

The training container writes ``evaluation.json`` into ``/opt/ml/output/data``, which SageMaker uploads as
``<output path>/<job>/output/output.tar.gz`` (small: no model weights). The gate reads it from there, never the
model archive, and copies it to ``evaluations/<job>/evaluation.json`` so the model package can cite it as its
model-quality statistics.
"""

from __future__ import annotations

import io
import json
import math
import tarfile
from dataclasses import asdict, dataclass
from typing import Any, Protocol

MAX_OUTPUT_ARCHIVE_BYTES = 50 * 1024 * 1024
from finetune.contract import MAIN_METRIC as MAIN_METRICS  # noqa: E402  (the asset ships finetune/contract.py)


class GateInputError(ValueError):
    """The job output cannot be judged: missing, too large, or without the expected evaluation."""


class S3Client(Protocol):
    def get_object(self, **kwargs: Any) -> dict[str, Any]: ...
    def head_object(self, **kwargs: Any) -> dict[str, Any]: ...
    def put_object(self, **kwargs: Any) -> dict[str, Any]: ...


@dataclass(frozen=True)
class GateResult:
    passed: bool
    metric: str
    higher_is_better: bool
    fine_tuned: float
    base: float | None
    threshold: float | None
    reason: str
    evaluation_s3_uri: str


def split_s3_uri(uri: str) -> tuple[str, str]:
    if not uri.startswith("s3://") or "/" not in uri[5:]:
        raise GateInputError(f"{uri!r} is not an s3://bucket/key URI")
    bucket, key = uri[5:].split("/", 1)
    return bucket, key


def read_evaluation(s3: S3Client, output_archive_uri: str) -> dict[str, Any]:
    """evaluation.json from the job's output.tar.gz."""
    bucket, key = split_s3_uri(output_archive_uri)
    size = s3.head_object(Bucket=bucket, Key=key)["ContentLength"]
    if size > MAX_OUTPUT_ARCHIVE_BYTES:
        raise GateInputError(
            f"{output_archive_uri} is {size} bytes; the output archive should hold only reports "
            "(write model files to the model directory, not /opt/ml/output/data)"
        )
    body = s3.get_object(Bucket=bucket, Key=key)["Body"].read()
    try:
        with tarfile.open(fileobj=io.BytesIO(body), mode="r:gz") as archive:
            member = next((m for m in archive.getmembers() if m.name.lstrip("./") == "evaluation.json"), None)
            if member is None:
                raise GateInputError(
                    f"{output_archive_uri} has no evaluation.json; did the training job finish its final evaluation?"
                )
            extracted = archive.extractfile(member)
            if extracted is None:
                raise GateInputError(f"{output_archive_uri}: evaluation.json is not a regular file")
            evaluation: dict[str, Any] = json.load(extracted)
            return evaluation
    except (tarfile.TarError, json.JSONDecodeError, OSError) as error:
        raise GateInputError(f"{output_archive_uri}: cannot read evaluation.json ({error})") from None


def decide(evaluation: dict[str, Any], *, threshold: float | None) -> tuple[bool, str, bool, float, float | None, str]:
    """Pass when the fine-tuned main metric beats the base model's and meets the threshold (if any)."""
    task = evaluation.get("task")
    if task not in MAIN_METRICS:
        raise GateInputError(f"evaluation.json has task {task!r}; expected one of {sorted(MAIN_METRICS)}")
    metric, higher_is_better = MAIN_METRICS[task]
    try:
        fine_tuned = float(evaluation["fine_tuned"][metric])
    except (KeyError, TypeError, ValueError):
        raise GateInputError(f"evaluation.json has no fine_tuned.{metric}") from None
    base_raw = (evaluation.get("base") or {}).get(metric)
    base = float(base_raw) if base_raw is not None else None
    if not math.isfinite(fine_tuned):
        return False, metric, higher_is_better, fine_tuned, base, f"fine-tuned {metric} is {fine_tuned}"

    def better(a: float, b: float) -> bool:
        return a > b if higher_is_better else a < b

    def at_least(a: float, b: float) -> bool:
        return a >= b if higher_is_better else a <= b

    word = "at least" if higher_is_better else "at most"
    if base is not None and not better(fine_tuned, base):
        return (
            False,
            metric,
            higher_is_better,
            fine_tuned,
            base,
            f"fine-tuned {metric} {fine_tuned:.4f} does not improve on the base model's {base:.4f}",
        )
    if threshold is not None and not at_least(fine_tuned, threshold):
        return (
            False,
            metric,
            higher_is_better,
            fine_tuned,
            base,
            f"fine-tuned {metric} {fine_tuned:.4f} misses the threshold ({word} {threshold:.4f})",
        )
    reason = f"fine-tuned {metric} {fine_tuned:.4f}" + (f" vs base {base:.4f}" if base is not None else "")
    if threshold is not None:
        reason += f", threshold {word} {threshold:.4f}"
    return True, metric, higher_is_better, fine_tuned, base, reason


def run_gate(s3: S3Client, *, output_archive_uri: str, evaluation_s3_uri: str, threshold: float | None) -> GateResult:
    evaluation = read_evaluation(s3, output_archive_uri)
    passed, metric, higher_is_better, fine_tuned, base, reason = decide(evaluation, threshold=threshold)
    bucket, key = split_s3_uri(evaluation_s3_uri)
    s3.put_object(
        Bucket=bucket, Key=key, Body=json.dumps(evaluation, indent=2).encode(), ContentType="application/json"
    )
    return GateResult(passed, metric, higher_is_better, fine_tuned, base, threshold, reason, evaluation_s3_uri)


def as_dict(result: GateResult) -> dict[str, Any]:
    return asdict(result)
