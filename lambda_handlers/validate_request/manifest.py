"""Runs started by a dataset upload: the input `{"manifest": "s3://<data>/datasets/<name>/<version>/manifest.json"}`
(what the stage's EventBridge rule sends) becomes a full request from the manifest's `run` section."""

from __future__ import annotations

import re
from typing import Any

from botocore.exceptions import ClientError

from finetune.formats import JsonProblem, decode_json

from .dataset import S3Client, s3_error_text
from .errors import InvalidRequest
from .settings import ValidateSettings

MAX_MANIFEST_BYTES = 256 * 1024
_KEY = re.compile(r"^datasets/[^/]+/[^/]+/manifest\.json$")


def is_manifest_request(raw: Any) -> bool:
    return isinstance(raw, dict) and set(raw) == {"manifest"}


def request_from_manifest(raw: dict[str, Any], settings: ValidateSettings, s3: S3Client) -> dict[str, Any]:
    """The run request a manifest describes: its `run` section plus the dataset folder and the task."""
    uri = raw["manifest"]
    prefix = f"s3://{settings.data_bucket}/"
    if not isinstance(uri, str) or not uri.startswith(prefix) or not _KEY.match(uri[len(prefix) :]):
        raise InvalidRequest(
            [f"manifest: {uri!r} is not s3://{settings.data_bucket}/datasets/<name>/<version>/manifest.json"]
        )
    key = uri[len(prefix) :]
    try:
        body = s3.get_object(Bucket=settings.data_bucket, Key=key, Range=f"bytes=0-{MAX_MANIFEST_BYTES}")["Body"].read()
    except ClientError as error:
        raise InvalidRequest([f"manifest: {uri} {s3_error_text(error)}"]) from None
    if len(body) > MAX_MANIFEST_BYTES:
        raise InvalidRequest([f"manifest: {uri} is larger than {MAX_MANIFEST_BYTES} bytes"])
    try:
        manifest = decode_json(body)
    except JsonProblem as error:
        raise InvalidRequest([f"manifest: {uri} is not valid JSON ({error})"]) from None
    run = manifest.get("run") if isinstance(manifest, dict) else None
    if not isinstance(run, dict):
        raise InvalidRequest(
            [
                f'manifest: {uri} has no "run" object (base_model, method, hyperparameters, ...); '
                "add one to start a run on upload, or use `finetune submit`"
            ]
        )
    for reserved in ("dataset", "task"):
        if reserved in run:
            raise InvalidRequest([f"manifest: run.{reserved} is taken from the manifest itself; remove it"])
    return {"dataset": uri.rsplit("/", 1)[0] + "/", "task": manifest.get("task"), **run}
