"""Lambda entry of the PackageAdapter step: event in, the adapter artifact out; the logic lives in logic.py."""

from __future__ import annotations

from typing import Any

import boto3

from .logic import AdapterInputError, package_adapter

_S3 = boto3.client("s3")


class AdapterMissing(Exception):
    """Raised to the state machine (error name `AdapterMissing`) when the job saved no loadable adapter."""


def lambda_handler(event: dict[str, Any], context: Any = None) -> dict[str, Any]:
    try:
        packaged = package_adapter(_S3, model_data_url=event["model_data_url"], artifact_url=event["artifact_url"])
    except (AdapterInputError, KeyError, TypeError) as error:
        raise AdapterMissing(str(error)) from None
    return {"artifact_url": packaged.artifact_url, "files": list(packaged.files), "bytes": packaged.bytes}
