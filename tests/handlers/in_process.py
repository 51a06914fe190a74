"""Stand-ins for the SageMaker clients that answer in this process: the seam for end-to-end tests.

`InProcessRuntime` is a `sagemaker-runtime` client whose endpoints are Python callables. Each call is
validated against botocore's own model of InvokeEndpoint, and failures come back as the ClientErrors
SageMaker raises, so the proxy takes exactly the code paths it takes against real endpoints. The
end-to-end test plugs a real fine-tuned model in as the callable.
"""

from __future__ import annotations

import functools
import io
import json
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import botocore.session
from botocore.exceptions import ClientError, ParamValidationError
from botocore.response import StreamingBody
from botocore.validate import ParamValidator

#: An endpoint's behaviour: the decoded JSON request body in, a JSON-serializable answer out.
Model = Callable[[Any], Any]

ACCOUNT_ID = "123456789012"


@functools.cache
def _operation_input_shape(service: str, operation: str):
    return botocore.session.get_session().get_service_model(service).operation_model(operation).input_shape


def validate_call(service: str, operation: str, params: Mapping[str, Any]) -> None:
    """Raise ParamValidationError if `params` do not satisfy botocore's model of the operation."""
    report = ParamValidator().validate(dict(params), _operation_input_shape(service, operation))
    if report.has_errors():
        raise ParamValidationError(report=report.generate_report())


@dataclass(frozen=True)
class RecordedInvocation:
    """One InvokeEndpoint call as the runtime saw it."""

    endpoint_name: str
    request: Any
    inference_component: str | None
    content_type: str
    accept: str
    model_seconds: float


class InProcessRuntime:
    """A `sagemaker-runtime` client answering InvokeEndpoint from local callables, keyed by endpoint name."""

    def __init__(self, models: Mapping[str, Model]) -> None:
        self.models = dict(models)
        self.calls: list[RecordedInvocation] = []

    @property
    def last_model_seconds(self) -> float:
        """Time the last call spent inside the model callable (to separate it from proxy overhead)."""
        return self.calls[-1].model_seconds if self.calls else 0.0

    def invoke_endpoint(self, **params: Any) -> dict[str, Any]:
        validate_call("sagemaker-runtime", "InvokeEndpoint", params)
        name = params["EndpointName"]
        component = params.get("InferenceComponentName")
        content_type = params.get("ContentType", "application/octet-stream")
        accept = params.get("Accept", "*/*")
        # An endpoint served by inference components answers per component: key "endpoint/component".
        model = self.models.get(f"{name}/{component}" if component else name)
        if model is None:
            what = f"Inference component {component}" if component else f"Endpoint {name}"
            raise _client_error("ValidationError", f"{what} of account {ACCOUNT_ID} not found.", 400)
        if content_type != "application/json":
            raise _model_error(415, f"unsupported content type {content_type}")
        body = params["Body"]
        raw = body.read() if hasattr(body, "read") else body
        limit = _operation_input_shape("sagemaker-runtime", "InvokeEndpoint").members["Body"].metadata["max"]
        if len(raw) > limit:  # botocore's validator checks blob types, not sizes; SageMaker does
            raise _client_error("ValidationError", f"Request body exceeds the limit of {limit} bytes.", 400)
        request = json.loads(raw)
        started = time.perf_counter()
        try:
            answer = model(request)
        except Exception as error:  # the container answers 5xx; SageMaker wraps it in ModelError
            seconds = time.perf_counter() - started
            self.calls.append(RecordedInvocation(name, request, component, content_type, accept, seconds))
            raise _model_error(500, f"{type(error).__name__}: {error}") from error
        seconds = time.perf_counter() - started
        self.calls.append(RecordedInvocation(name, request, component, content_type, accept, seconds))
        payload = json.dumps(answer).encode()
        return {
            "Body": StreamingBody(io.BytesIO(payload), len(payload)),
            "ContentType": "application/json",
            "InvokedProductionVariant": "AllTraffic",
            "ResponseMetadata": {"HTTPStatusCode": 200},
        }


class InProcessControlPlane:
    """A `sagemaker` client answering DescribeEndpoint from a name -> status mapping."""

    def __init__(self, statuses: Mapping[str, str]) -> None:
        self.statuses = dict(statuses)

    def describe_endpoint(self, **params: Any) -> dict[str, Any]:
        validate_call("sagemaker", "DescribeEndpoint", params)
        name = params["EndpointName"]
        if name not in self.statuses:
            raise _client_error(
                "ValidationException",
                f'Could not find endpoint "arn:aws:sagemaker:us-east-1:{ACCOUNT_ID}:endpoint/{name}".',
                400,
                "DescribeEndpoint",
            )
        return {"EndpointName": name, "EndpointStatus": self.statuses[name]}


def _client_error(
    code: str, message: str, status: int, operation: str = "InvokeEndpoint", **fields: Any
) -> ClientError:
    response = {"Error": {"Code": code, "Message": message}, "ResponseMetadata": {"HTTPStatusCode": status}}
    return ClientError({**response, **fields}, operation)


def _model_error(original_status: int, original_message: str) -> ClientError:
    return _client_error(
        "ModelError",
        f'Received server error ({original_status}) from primary with message "{original_message}".',
        424,
        OriginalStatusCode=original_status,
        OriginalMessage=original_message,
        LogStreamArn=f"arn:aws:logs:us-east-1:{ACCOUNT_ID}:log-group:/aws/sagemaker/Endpoints/in-process",
    )
