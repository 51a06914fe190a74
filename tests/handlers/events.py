"""API Gateway REST API (v1, Lambda proxy integration) events and a Lambda context, as AWS sends them."""

from __future__ import annotations

import base64
import json
import uuid
from dataclasses import dataclass
from typing import Any

ACCOUNT_ID = "123456789012"
API_ID = "a1b2c3d4e5"
API_STAGE = "v1"


def rest_event(
    method: str,
    path: str,
    *,
    body: Any = None,
    resource: str | None = None,
    path_parameters: dict[str, str] | None = None,
    headers: dict[str, str] | None = None,
    base64_body: bool = False,
) -> dict[str, Any]:
    """A REST API proxy-integration event for a SigV4 (IAM) authenticated caller.

    `body` is sent as is when it is a str or bytes, else as JSON; `base64_body` encodes it the way API
    Gateway does for binary media types.
    """
    if body is None or isinstance(body, str):
        text = body
    elif isinstance(body, bytes):
        text = body.decode("utf-8", "surrogateescape")
    else:
        text = json.dumps(body)
    if base64_body and text is not None:
        raw = body if isinstance(body, bytes) else text.encode("utf-8", "surrogatepass")
        text = base64.b64encode(raw).decode()
    request_id = str(uuid.uuid4())
    all_headers = {
        "Accept": "application/json",
        "Content-Type": "application/json",
        "Host": f"{API_ID}.execute-api.us-east-1.amazonaws.com",
        "User-Agent": "OpenAI/Python 1.99.0",
        "X-Amz-Date": "20250101T000000Z",
        "X-Amz-Security-Token": "IQoJb3JpZ2luX2VjEXAMPLE",
        "X-Amzn-Trace-Id": "Root=1-67891233-abcdef012345678912345678",
        "X-Forwarded-For": "203.0.113.7",
        "X-Forwarded-Port": "443",
        "X-Forwarded-Proto": "https",
        **(headers or {}),
    }
    resource = resource or path
    return {
        "resource": resource,
        "path": path,
        "httpMethod": method,
        "headers": all_headers,
        "multiValueHeaders": {name: [value] for name, value in all_headers.items()},
        "queryStringParameters": None,
        "multiValueQueryStringParameters": None,
        "pathParameters": path_parameters,
        "stageVariables": None,
        "requestContext": {
            "resourceId": "k2p9z1",
            "resourcePath": resource,
            "httpMethod": method,
            "extendedRequestId": "Jq1cKGXyIAMFk3w=",
            "requestTime": "01/Jan/2025:00:00:00 +0000",
            "path": f"/{API_STAGE}{path}",
            "accountId": ACCOUNT_ID,
            "protocol": "HTTP/1.1",
            "stage": API_STAGE,
            "domainPrefix": API_ID,
            "requestTimeEpoch": 1735689600000,
            "requestId": request_id,
            "identity": {
                "cognitoIdentityPoolId": None,
                "accountId": ACCOUNT_ID,
                "cognitoIdentityId": None,
                "caller": "AROAEXAMPLEROLEID:app-session",
                "sourceIp": "203.0.113.7",
                "principalOrgId": None,
                "accessKey": "ASIAEXAMPLEKEYID",
                "cognitoAuthenticationType": None,
                "cognitoAuthenticationProvider": None,
                "userArn": f"arn:aws:sts::{ACCOUNT_ID}:assumed-role/acme-app/app-session",
                "userAgent": all_headers["User-Agent"],
                "user": "AROAEXAMPLEROLEID:app-session",
            },
            "domainName": all_headers["Host"],
            "deploymentId": "d7x9q2",
            "apiId": API_ID,
        },
        "body": text,
        "isBase64Encoded": bool(base64_body and text is not None),
    }


def chat_event(body: Any, **kwargs: Any) -> dict[str, Any]:
    """POST /v1/chat/completions."""
    return rest_event("POST", "/v1/chat/completions", body=body, **kwargs)


def predict_event(name: str, body: Any, **kwargs: Any) -> dict[str, Any]:
    """POST /v1/models/{name}/predict."""
    return rest_event(
        "POST",
        f"/v1/models/{name}/predict",
        body=body,
        resource="/v1/models/{name}/predict",
        path_parameters={"name": name},
        **kwargs,
    )


def list_models_event() -> dict[str, Any]:
    """GET /v1/models."""
    return rest_event("GET", "/v1/models")


@dataclass
class LambdaContext:
    """The attributes of the Lambda context object that Powertools reads."""

    function_name: str = "acme-dev-inference-proxy"
    function_version: str = "$LATEST"
    invoked_function_arn: str = f"arn:aws:lambda:us-east-1:{ACCOUNT_ID}:function:acme-dev-inference-proxy"
    memory_limit_in_mb: int = 512
    aws_request_id: str = "6f1d3c3e-0000-4000-8000-000000000000"
    log_group_name: str = "/aws/lambda/acme-dev-inference-proxy"
    log_stream_name: str = "2025/01/01/[$LATEST]0123456789abcdef"

    def get_remaining_time_in_millis(self) -> int:
        return 29_000


def decode(response: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    """Status code and JSON body of a proxy-integration response."""
    return response["statusCode"], json.loads(response["body"])
