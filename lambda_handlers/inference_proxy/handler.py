"""Lambda entry point of the inference proxy: routes API Gateway (REST, proxy) events to the logic."""

from __future__ import annotations

import base64
import binascii
import functools
import os
from dataclasses import dataclass
from typing import Any

from aws_lambda_powertools.event_handler import APIGatewayRestResolver, Response, content_types
from aws_lambda_powertools.event_handler.exceptions import NotFoundError
from aws_lambda_powertools.logging import correlation_paths
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.typing import LambdaContext

from .catalog import list_models
from .chat import complete_chat
from .classify import classify
from .clients import ControlPlaneClient, RuntimeClient, create_control_plane_client, create_runtime_client
from .errors import InternalError, InvalidRequest, PayloadTooLarge, ProxyError, RouteNotFound
from .observability import logger, metrics, tracer
from .schemas import ChatCompletionRequest, PredictRequest, parse_request
from .settings import ProxySettings, load_settings


@dataclass(frozen=True)
class Dependencies:
    """What the routes need: settings and the two SageMaker clients (replaceable for tests and local runs).

    `control_plane` None means "create it on first use": loading the `sagemaker` service model costs
    about 300 ms, which only GET /v1/models needs, so the cold start of every chat call does not pay it.
    """

    settings: ProxySettings
    runtime: RuntimeClient
    control_plane: ControlPlaneClient | None = None


SETTINGS = load_settings(os.environ)
_dependencies = Dependencies(settings=SETTINGS, runtime=create_runtime_client(SETTINGS))
metrics.set_default_dimensions(team=SETTINGS.team, stage=SETTINGS.stage)


def use_dependencies(dependencies: Dependencies) -> Dependencies:
    """Replace the settings and clients the routes use; returns the previous ones (to restore them)."""
    global _dependencies
    previous, _dependencies = _dependencies, dependencies
    return previous


app = APIGatewayRestResolver()


@app.post("/v1/chat/completions")
def chat_completions() -> Response[dict[str, Any]]:
    """OpenAI chat completion from one of this team stage's LLM endpoints."""
    request = parse_request(ChatCompletionRequest, _body(_dependencies.settings.max_request_bytes))
    model, completion = complete_chat(request, settings=_dependencies.settings, runtime=_dependencies.runtime)
    _record_model_call(model.short_name)
    return _json(200, completion)


@app.post("/v1/models/<name>/predict")
def predict(name: str) -> Response[dict[str, Any]]:
    """Labels and scores for each input text from a classifier endpoint."""
    request = parse_request(PredictRequest, _body(_dependencies.settings.max_request_bytes))
    model, predictions = classify(name, request, settings=_dependencies.settings, runtime=_dependencies.runtime)
    _record_model_call(model.short_name)
    return _json(200, predictions)


@app.get("/v1/models")
def models() -> Response[dict[str, Any]]:
    """This team stage's endpoints with kind and status (OpenAI model-list shape)."""
    control_plane = _dependencies.control_plane or _default_control_plane()
    return _json(200, list_models(_dependencies.settings, control_plane))


@app.exception_handler(ProxyError)  # type: ignore[untyped-decorator]  # Powertools leaves it unannotated
def proxy_error(error: ProxyError) -> Response[dict[str, Any]]:
    """Every failure leaves as `{"error": {"type", "message"}}` with its status."""
    if error.status >= 500:
        # The cause (botocore's error, the model's output) goes to the log, never to the caller.
        logger.warning("request failed", extra={"status": error.status, "error_type": error.error_type}, exc_info=error)
    else:
        logger.info("request rejected", extra={"status": error.status, "error_type": error.error_type})
    metrics.add_metric(name=f"Status{error.status // 100}xx", unit=MetricUnit.Count, value=1)
    headers = {"Retry-After": str(error.retry_after)} if error.retry_after else None
    return _json(error.status, error.body(), headers)


@app.not_found
def route_not_found(_: NotFoundError) -> Response[dict[str, Any]]:
    event = app.current_event
    response: Response[dict[str, Any]] = proxy_error(
        RouteNotFound(f"No route for {event.http_method} {_printable(event.path)}."))
    return response


@app.exception_handler(Exception)  # type: ignore[untyped-decorator]  # Powertools leaves it unannotated
def unexpected_error(error: Exception) -> Response[dict[str, Any]]:
    logger.exception("unhandled error in the inference proxy")
    response: Response[dict[str, Any]] = proxy_error(
        InternalError("Internal error in the inference proxy; see its logs for the request id."))
    return response


@logger.inject_lambda_context(correlation_id_path=correlation_paths.API_GATEWAY_REST, clear_state=True)
@tracer.capture_lambda_handler(capture_response=False)
@metrics.log_metrics(capture_cold_start_metric=True)
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    """Handle one API Gateway REST (proxy integration) request."""
    metrics.add_metric(name="Requests", unit=MetricUnit.Count, value=1)
    return app.resolve(event, context)


def _body(limit: int) -> bytes:
    """The raw request body, checked against the size limit before anything parses it."""
    event = app.current_event
    body = event.body or ""
    if len(body) > 2 * limit:  # cheap early refusal before encoding or decoding a huge body
        raise PayloadTooLarge(f"The request body is over the limit of {limit} bytes.")
    if event.is_base64_encoded:
        try:
            raw = base64.b64decode(body, validate=True)
        except (binascii.Error, ValueError):
            raise InvalidRequest("The request body is not valid base64.") from None
    else:
        raw = body.encode("utf-8", "surrogatepass")
    if len(raw) > limit:
        raise PayloadTooLarge(f"The request body is {len(raw)} bytes, over the limit of {limit} bytes.")
    return raw


@functools.cache
def _default_control_plane() -> ControlPlaneClient:
    return create_control_plane_client(SETTINGS)


def _record_model_call(short_name: str) -> None:
    metrics.add_metric(name="Status2xx", unit=MetricUnit.Count, value=1)
    logger.append_keys(model=short_name)
    tracer.put_annotation(key="model", value=short_name)


def _json(status: int, body: dict[str, Any], headers: dict[str, str] | None = None) -> Response[dict[str, Any]]:
    return Response(status_code=status, content_type=content_types.APPLICATION_JSON, body=body, headers=headers)


def _printable(text: str) -> str:
    return "".join(character if character.isprintable() else "?" for character in text[:200])
