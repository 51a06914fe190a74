"""One call to a SageMaker endpoint with JSON in and out, and the mapping of its failures to HTTP errors."""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from typing import Any

from botocore.exceptions import (
    ClientError,
    ConnectionClosedError,
    ConnectTimeoutError,
    EndpointConnectionError,
    ReadTimeoutError,
)

from .clients import RuntimeClient
from .errors import ModelFailed, ModelScalingUp, ModelTimeout, ModelUnavailable, ProxyError, Throttled

JSON = "application/json"
logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Invocation:
    """An endpoint's decoded JSON answer and how long the call took."""

    payload: Any
    seconds: float


def invoke_json(
    runtime: RuntimeClient, endpoint_name: str, body: Any, *, inference_component: str | None = None
) -> Invocation:
    """POST `body` as JSON to the endpoint (or one of its inference components) and decode its JSON answer;
    raise a ProxyError on any failure."""
    # ensure_ascii keeps the bytes valid UTF-8 even for lone surrogates that JSON allows in strings.
    encoded = json.dumps(body, separators=(",", ":")).encode()
    started = time.perf_counter()
    try:
        component = {"InferenceComponentName": inference_component} if inference_component else {}
        response = runtime.invoke_endpoint(
            EndpointName=endpoint_name, Body=encoded, ContentType=JSON, Accept=JSON, **component
        )
        raw = response["Body"].read()
    except ClientError as error:
        raise map_client_error(error, endpoint_name) from error
    except ReadTimeoutError as error:
        raise ModelTimeout(f"Model endpoint '{endpoint_name}' did not answer in time.") from error
    except (ConnectTimeoutError, EndpointConnectionError, ConnectionClosedError) as error:
        raise ModelUnavailable("The SageMaker runtime could not be reached; retry shortly.") from error
    seconds = time.perf_counter() - started
    try:
        return Invocation(payload=json.loads(raw), seconds=seconds)
    except (ValueError, UnicodeDecodeError) as error:
        raise ModelFailed(f"Model endpoint '{endpoint_name}' returned a body that is not JSON.") from error


def map_client_error(error: ClientError, endpoint_name: str) -> ProxyError:
    """The HTTP error a SageMaker runtime ClientError means for the caller (details stay in the logs)."""
    code = error.response.get("Error", {}).get("Code", "")
    message = str(error.response.get("Error", {}).get("Message", ""))
    if code in ("ThrottlingException", "Throttling", "TooManyRequestsException"):
        return Throttled(f"Model endpoint '{endpoint_name}' is throttled; retry with backoff.")
    if code == "ModelError":
        original = error.response.get("OriginalStatusCode")
        logger.warning(
            "model error",
            extra={
                "endpoint": endpoint_name,
                "original_status": original,
                "original_message": str(error.response.get("OriginalMessage", ""))[:2000],
                "log_stream": error.response.get("LogStreamArn"),
            },
        )
        status = f" (status {original})" if original else ""
        return ModelFailed(f"Model endpoint '{endpoint_name}' failed to process the request{status}.")
    if code in ("ModelNotReadyException", "ServiceUnavailable", "InternalDependencyException"):
        return ModelUnavailable(f"Model endpoint '{endpoint_name}' is not ready; retry shortly.")
    if code in ("ValidationError", "ValidationException") and "no capacity" in message.lower():
        # An inference component scaled to zero copies: SageMaker's NoCapacityInvocationFailures metric, which
        # the stage's scale-from-zero alarm watches, counts this call and adds a copy.
        return ModelScalingUp(f"Model endpoint '{endpoint_name}' is scaled to zero and starting; retry in a minute.")
    if code in ("ValidationError", "ValidationException") and _means_not_in_service(message):
        return ModelUnavailable(f"Model endpoint '{endpoint_name}' is not in service.")
    logger.error("unexpected SageMaker runtime error", extra={"endpoint": endpoint_name, "code": code})
    return ModelFailed(f"Model endpoint '{endpoint_name}' call failed ({code or 'unknown error'}).")


def _means_not_in_service(message: str) -> bool:
    lowered = message.lower()
    return "not found" in lowered or "in service" in lowered or "inservice" in lowered
