"""Lambda entry point of the FineTune pipeline's Validate step.

Handler: ``lambda_handlers.validate_request.handler.lambda_handler``. The asset holds ``lambda_handlers/`` and the
training code's ``finetune/`` package at its root, so ``finetune`` imports as a top-level package, as in the image.
"""

from __future__ import annotations

import logging
import os
from typing import Any

import boto3
from aws_lambda_powertools import Logger
from aws_lambda_powertools.utilities.typing import LambdaContext
from botocore.config import Config

from .errors import InvalidRequest
from .logic import validate_request
from .settings import load_settings

logger = Logger(service=os.environ.get("POWERTOOLS_SERVICE_NAME", "validate-request"))
# The logic modules log with the standard library; route them through the same structured handler.
_package_logger = logging.getLogger(__package__)
_package_logger.handlers = [logger.registered_handler]
_package_logger.setLevel(logger.log_level)
_package_logger.propagate = False

SETTINGS = load_settings(os.environ)
s3_client = boto3.client(
    "s3", config=Config(retries={"mode": "standard", "max_attempts": 3}, connect_timeout=5, read_timeout=30)
)


@logger.inject_lambda_context(log_event=True)
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    """Validate the execution input (the event); return the Train step's parameters or raise InvalidRequest."""
    logger.append_keys(team=SETTINGS.team, stage=SETTINGS.stage)
    try:
        result = validate_request(event, SETTINGS, s3_client)
    except InvalidRequest as error:
        logger.warning("request rejected", extra={"problems": error.problems})
        raise
    logger.info("request valid", extra={"train_files": result["train_files"], "instance_type": result["instance_type"]})
    return result
