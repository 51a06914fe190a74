"""Lambda entry point of the inference proxy: routes API Gateway (REST, proxy) events to the logic."""

from __future__ import annotations

import base64
import binascii
import contextvars
import functools
import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from aws_lambda_powertools.event_handler import APIGatewayRestResolver, Response, content_types
from aws_lambda_powertools.event_handler.exceptions import NotFoundError
from aws_lambda_powertools.logging import correlation_paths
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.typing import LambdaContext

from .catalog import list_models, retrieve_model
from .chat import complete_chat
from .classify import classify
from .clients import ControlPlaneClient, RuntimeClient, create_control_plane_client, create_runtime_client
from .errors import InternalError, InvalidRequest, PayloadTooLarge, ProxyError, RouteNotFound
from .observability import logger, metrics, tracer
from .schemas import ChatCompletionRequest, PredictRequest, parse_request
from .settings import ProxySettings, load_settings
from .streaming import EVENT_STREAM, ChatStream, open_chat_stream


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
# The stream a `stream: true` route opened, for the handler to send after the status line (one per request).
_open_stream: contextvars.ContextVar[ChatStream | None] = contextvars.ContextVar("open_stream", default=None)
#: What separates the streamed response's metadata (status, headers) from its body, for API Gateway's
#: STREAM transfer mode and Lambda function URLs alike.
PRELUDE_DELIMITER = b"\0" * 8


@app.post("/v1/chat/completions")
def chat_completions() -> Response[dict[str, Any]] | Response[str]:
    """OpenAI chat completion from one of this team stage's LLM endpoints."""
    request = parse_request(ChatCompletionRequest, _body(_dependencies.settings.max_request_bytes))
    if request.stream:
        stream = open_chat_stream(request, settings=_dependencies.settings, runtime=_dependencies.runtime)
        _record_model_call(stream.model.short_name)
        _open_stream.set(stream)
        return Response(
            status_code=200,
            content_type=EVENT_STREAM,
            body="",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )
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


@app.get("/v1/models/<name>")
def model(name: str) -> Response[dict[str, Any]]:
    """One of this team stage's models (OpenAI `models.retrieve`); 404 `model_not_found` for any other name."""
    control_plane = _dependencies.control_plane or _default_control_plane()
    return _json(200, retrieve_model(name, _dependencies.settings, control_plane))


@app.exception_handler(ProxyError)  # type: ignore[untyped-decorator]  # Powertools leaves it unannotated
def proxy_error(error: ProxyError) -> Response[dict[str, Any]]:
    """Every failure leaves as OpenAI's `{"error": {"message", "type", "param", "code"}}` with its status."""
    if error.status >= 500:
        # The cause (botocore's error, the model's output) goes to the log, never to the caller.
        logger.warning("request failed", extra={"status": error.status, "error_code": error.code}, exc_info=error)
    else:
        logger.info("request rejected", extra={"status": error.status, "error_code": error.code, "param": error.param})
    metrics.add_metric(name=f"Status{error.status // 100}xx", unit=MetricUnit.Count, value=1)
    headers = {"Retry-After": str(error.retry_after)} if error.retry_after else None
    return _json(error.status, error.body(), headers)


@app.not_found
def route_not_found(_: NotFoundError) -> Response[dict[str, Any]]:
    event = app.current_event
    response: Response[dict[str, Any]] = proxy_error(
        RouteNotFound(f"No route for {event.http_method} {_printable(event.path)}.")
    )
    return response


@app.exception_handler(Exception)  # type: ignore[untyped-decorator]  # Powertools leaves it unannotated
def unexpected_error(error: Exception) -> Response[dict[str, Any]]:
    logger.exception("unhandled error in the inference proxy")
    response: Response[dict[str, Any]] = proxy_error(
        InternalError("Internal error in the inference proxy; see its logs for the request id.")
    )
    return response


@logger.inject_lambda_context(correlation_id_path=correlation_paths.API_GATEWAY_REST, clear_state=True)
@tracer.capture_lambda_handler(capture_response=False)
@metrics.log_metrics(capture_cold_start_metric=True)
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    """Handle one API Gateway REST (proxy integration) request with a buffered response.

    A `stream: true` request still works here: its events are collected into one text/event-stream body.
    """
    metrics.add_metric(name="Requests", unit=MetricUnit.Count, value=1)
    _open_stream.set(None)
    response = with_request_id(app.resolve(event, context), event, context)
    stream = _open_stream.get()
    if stream is not None:
        response["body"] = b"".join(stream).decode()
        _record_stream(stream)
    return response


@logger.inject_lambda_context(correlation_id_path=correlation_paths.API_GATEWAY_REST, clear_state=True)
@tracer.capture_lambda_handler(capture_response=False)
@metrics.log_metrics(capture_cold_start_metric=True)
def stream_handler(event: dict[str, Any], context: LambdaContext, *, send: Callable[[bytes], None]) -> None:
    """Handle one request for a streaming integration (API Gateway STREAM transfer mode).

    `send` writes to the response stream: first the metadata (status code and headers as JSON) and
    eight NUL bytes, then the body, in as many writes as it comes in. The whole stream happens inside the
    Powertools decorators, so the log keys, the trace segment and the metrics cover it to the last chunk.
    """
    metrics.add_metric(name="Requests", unit=MetricUnit.Count, value=1)
    _open_stream.set(None)
    response = with_request_id(app.resolve(event, context), event, context)
    stream = _open_stream.get()
    headers = dict(response.get("headers") or {})
    headers.update({name: ",".join(values) for name, values in (response.get("multiValueHeaders") or {}).items()})
    send(json.dumps({"statusCode": response["statusCode"], "headers": headers}).encode() + PRELUDE_DELIMITER)
    if stream is None:
        body = response.get("body") or ""
        send(base64.b64decode(body) if response.get("isBase64Encoded") else body.encode())
        return
    for piece in stream:
        send(piece)
    _record_stream(stream)


def _record_stream(stream: ChatStream) -> None:
    metrics.add_metric(name="StreamChunks", unit=MetricUnit.Count, value=stream.chunks_sent)
    if not stream.completed:
        metrics.add_metric(name="StreamErrors", unit=MetricUnit.Count, value=1)


def with_request_id(response: dict[str, Any], event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    """Add `x-request-id` to a proxy-integration response: API Gateway's request id (the one its access
    log and the function's log lines carry), so a caller can quote it when reporting a problem."""
    request_id = (event.get("requestContext") or {}).get("requestId") or context.aws_request_id
    response.setdefault("multiValueHeaders", {})["x-request-id"] = [str(request_id)]
    return response


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
