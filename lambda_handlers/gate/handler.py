"""Lambda entry of the Gate step: event in, decision out; the logic lives in logic.py."""

from __future__ import annotations

from typing import Any

import boto3

from .logic import GateInputError, as_dict, run_gate

_S3 = boto3.client("s3")


class GateInputInvalid(Exception):
    """Raised to the state machine (error name `GateInputInvalid`) when the job output cannot be judged."""


def lambda_handler(event: dict[str, Any], context: Any = None) -> dict[str, Any]:
    threshold = event.get("threshold")
    try:
        result = run_gate(
            _S3,
            output_archive_uri=event["output_archive_uri"],
            evaluation_s3_uri=event["evaluation_s3_uri"],
            threshold=float(threshold) if threshold is not None else None,
        )
    except (GateInputError, KeyError, TypeError, ValueError) as error:
        raise GateInputInvalid(str(error)) from None
    return as_dict(result)
