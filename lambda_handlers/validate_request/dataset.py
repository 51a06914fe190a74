"""The dataset and base-model checks in S3, with an injected client: listings plus one ranged GET per file."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any, Protocol

from botocore.exceptions import ClientError

from finetune.contract import base_model_prefix
from finetune.formats import TEXT_LABEL, DataError, mixed_labels, read_records

from .errors import InvalidRequest
from .request import CheckedRequest
from .settings import ValidateSettings

logger = logging.getLogger(__name__)

#: File names the training container reads from a channel (``finetune.data.channel_files``).
DATA_SUFFIXES = (".jsonl", ".json")


class S3Client(Protocol):
    """The part of boto3's S3 client Validate uses."""

    def get_paginator(self, operation_name: str) -> Any: ...

    def get_object(self, **kwargs: Any) -> dict[str, Any]: ...


@dataclass
class ChannelReport:
    """What was found under one channel prefix."""

    uri: str
    files: list[tuple[str, int]] = field(default_factory=list)
    """(key, size) of every data file, sorted by key."""
    formats: dict[str, str] = field(default_factory=dict)
    """Detected format of each file whose first lines were read, by S3 URI."""
    first_labels: list[tuple[str, object]] = field(default_factory=list)
    """(where, label) of the first record of each classification file read (each file is checked on its own)."""


def s3_error_text(error: ClientError) -> str:
    """What an S3 error means for the object the user named, in their words."""
    code = error.response.get("Error", {}).get("Code", "")
    if code in ("NoSuchKey", "404", "NotFound"):
        return "does not exist"
    if code in ("AccessDenied", "403", "KMS.AccessDeniedException"):
        return "cannot be read by the pipeline (access denied; is it encrypted with another key?)"
    if code == "InvalidRange":
        return "is empty"
    return f"cannot be read ({code or 'S3 error'})"


def list_data_files(s3: S3Client, bucket: str, prefix: str) -> list[tuple[str, int]]:
    """Every ``*.jsonl``/``*.json`` object under a prefix (hidden names skipped), sorted by key."""
    files: list[tuple[str, int]] = []
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        for item in page.get("Contents", []):
            name = item["Key"].rsplit("/", 1)[-1]
            if name.endswith(DATA_SUFFIXES) and not name.startswith("."):
                files.append((item["Key"], int(item["Size"])))
    return sorted(files)


def read_head_lines(s3: S3Client, bucket: str, key: str, size: int, sample_bytes: int) -> list[tuple[int, str]] | str:
    """The complete lines in the first ``sample_bytes`` of an object (one ranged GET), numbered from 1,
    or the problem (not UTF-8). A last line cut off by the range is dropped."""
    try:
        data = s3.get_object(Bucket=bucket, Key=key, Range=f"bytes=0-{sample_bytes - 1}")["Body"].read()
    except ClientError as error:  # deleted since the listing, or not readable by this function
        return s3_error_text(error)
    if size > len(data):  # the range ended inside the file: the last line may be partial
        data = data[: data.rfind(b"\n") + 1]
    lines: list[tuple[int, str]] = []
    for number, raw in enumerate(data.splitlines(), start=1):
        try:
            lines.append((number, raw.decode("utf-8")))
        except UnicodeDecodeError as error:
            return f"line {number}: not UTF-8 text ({error.reason} at byte {error.start} of the line)"
    return lines


def check_channel(
    s3: S3Client,
    settings: ValidateSettings,
    task: str,
    channel: str,
    prefix: str,
    problems: list[str],
    warnings: list[str],
) -> ChannelReport:
    """List one channel and check the first lines of its first files; append problems and warnings."""
    bucket = settings.data_bucket
    report = ChannelReport(uri=f"s3://{bucket}/{prefix}")
    report.files = list_data_files(s3, bucket, prefix)
    for key, size in report.files[: settings.max_files_checked]:
        uri = f"s3://{bucket}/{key}"
        if size == 0:
            problems.append(f"{uri}: file is empty: no JSON lines")
            continue
        lines = read_head_lines(s3, bucket, key, size, settings.sample_bytes)
        if isinstance(lines, str):
            problems.append(f"{uri}{',' if lines.startswith('line ') else ''} {lines}")
            continue
        if not lines:
            warnings.append(
                f"{uri}: first line is longer than {settings.sample_bytes} bytes; not checked here "
                "(the training job checks every line)"
            )
            continue
        try:
            report.formats[uri], records = read_records(task, uri, lines)
        except DataError as error:
            problems.append(str(error))
            continue
        if report.formats[uri] == TEXT_LABEL and records:
            report.first_labels.append((f"{uri}, line {records[0].line}", records[0].data["label"]))
    unchecked = len(report.files) - settings.max_files_checked
    if unchecked > 0:
        warnings.append(f"{report.uri}: {unchecked} more files not sampled (the training job checks every line)")
    return report


def check_base_model(s3: S3Client, settings: ValidateSettings, name: str) -> str | None:
    """The problem with a staged base model (nothing staged, or no ``config.json``/``.gguf``), or None."""
    prefix = base_model_prefix(name)
    uri = f"s3://{settings.artifacts_bucket}/{prefix}"
    page = (
        s3.get_paginator("list_objects_v2")
        .paginate(Bucket=settings.artifacts_bucket, Prefix=prefix, Delimiter="/")
        .build_full_result()
    )
    names = [item["Key"][len(prefix) :] for item in page.get("Contents", [])]
    if not names:
        return f"base_model: nothing is staged under {uri}; stage it with `finetune models stage --name {name} DIR`"
    if "config.json" not in names and not any(n.endswith(".gguf") for n in names):
        return f"base_model: {uri} has no config.json (nor a .gguf file): not a Hugging Face model directory"
    return None


def check_dataset(s3: S3Client, settings: ValidateSettings, checked: CheckedRequest) -> dict[str, Any]:
    """Check the dataset's channels and the staged base model; InvalidRequest lists every problem."""
    problems: list[str] = []
    warnings: list[str] = []
    task = checked.request.task
    train = check_channel(s3, settings, task, "train", checked.dataset_prefix + "train/", problems, warnings)
    if not train.files:
        problems.append(f"dataset: no .jsonl files under {train.uri} (the train channel is required)")
    validation = check_channel(
        s3, settings, task, "validation", checked.dataset_prefix + "validation/", problems, warnings
    )
    # Each file's labels are one kind (read_records); across files and channels they must agree too.
    labels = train.first_labels + validation.first_labels
    for where, label in labels[1:]:
        problem = mixed_labels(labels[0][1], label, labels[0][0])
        if problem:
            problems.append(f"{where}: {problem}")
            break
    if checked.base_model_s3_uri is not None:
        problem = check_base_model(s3, settings, checked.request.base_model)
        if problem:
            problems.append(problem)
    if problems:
        raise InvalidRequest(problems)
    for warning in warnings:
        logger.warning(warning)
    return {"train": train, "validation": validation if validation.files else None, "warnings": warnings}
