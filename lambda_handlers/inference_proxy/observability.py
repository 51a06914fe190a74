"""The proxy's one Logger, Tracer and Metrics (Powertools), shared by the handler and the logic's loggers."""

from __future__ import annotations

import logging
import os

from aws_lambda_powertools import Logger, Metrics, Tracer

SERVICE = os.environ.get("POWERTOOLS_SERVICE_NAME", "inference-proxy")
NAMESPACE = os.environ.get("POWERTOOLS_METRICS_NAMESPACE", "FineTuneStack")

logger = Logger(service=SERVICE)
# Only botocore is patched: the SageMaker calls are the only I/O worth a trace subsegment, and patching
# fewer modules keeps the cold start short.
tracer = Tracer(service=SERVICE, patch_modules=("botocore",))
metrics = Metrics(service=SERVICE, namespace=NAMESPACE)

# The logic modules log with the standard library (no Powertools import there); route those records
# through the Powertools handler so every line is the same structured JSON with the request's keys.
_package_logger = logging.getLogger(__package__)
_package_logger.handlers = [logger.registered_handler]
_package_logger.setLevel(logger.log_level)
_package_logger.propagate = False
