"""GET /v1/models: the team stage's endpoints with their kind and DescribeEndpoint status."""

from __future__ import annotations

from datetime import UTC, datetime

from .events import list_models_event, rest_event

CREATED = datetime(2025, 1, 1, tzinfo=UTC)


def describe_response(name: str, status: str) -> dict:
    return {
        "EndpointName": name,
        "EndpointArn": f"arn:aws:sagemaker:us-east-1:123456789012:endpoint/{name}",
        "EndpointConfigName": f"{name}-config",
        "EndpointStatus": status,
        "CreationTime": CREATED,
        "LastModifiedTime": CREATED,
    }


def test_lists_each_endpoint_with_kind_and_status(control_plane_stub, call):
    # Given one endpoint in service and one still being created
    control_plane_stub.add_response(
        "describe_endpoint", describe_response("acme-dev-chat", "InService"), {"EndpointName": "acme-dev-chat"}
    )
    control_plane_stub.add_response(
        "describe_endpoint",
        describe_response("acme-dev-sentiment", "Creating"),
        {"EndpointName": "acme-dev-sentiment"},
    )
    # When the client lists models
    status, body, _ = call(list_models_event())
    # Then it sees both, in the OpenAI model-list shape, with their status
    assert status == 200
    assert body == {
        "object": "list",
        "data": [
            {
                "id": "chat",
                "object": "model",
                "created": 1735689600,
                "owned_by": "acme",
                "endpoint_name": "acme-dev-chat",
                "kind": "llm",
                "status": "InService",
            },
            {
                "id": "sentiment",
                "object": "model",
                "created": 1735689600,
                "owned_by": "acme",
                "endpoint_name": "acme-dev-sentiment",
                "kind": "classifier",
                "status": "Creating",
            },
        ],
    }


def test_missing_and_undescribable_endpoints_get_a_status_not_an_error(control_plane_stub, call):
    control_plane_stub.add_client_error(
        "describe_endpoint",
        service_error_code="ValidationException",
        service_message='Could not find endpoint "arn:aws:sagemaker:us-east-1:123456789012:endpoint/acme-dev-chat".',
        http_status_code=400,
        expected_params={"EndpointName": "acme-dev-chat"},
    )
    control_plane_stub.add_client_error(
        "describe_endpoint",
        service_error_code="ThrottlingException",
        service_message="Rate exceeded",
        http_status_code=400,
        expected_params={"EndpointName": "acme-dev-sentiment"},
    )
    status, body, _ = call(list_models_event())
    assert status == 200
    assert [(model["id"], model["status"]) for model in body["data"]] == [
        ("chat", "NotDeployed"),
        ("sentiment", "Unknown"),
    ]


def retrieve_event(name: str) -> dict:
    return rest_event("GET", f"/v1/models/{name}", resource="/v1/models/{name}", path_parameters={"name": name})


def test_retrieve_one_model_by_short_or_endpoint_name(control_plane_stub, call):
    for _ in range(2):
        control_plane_stub.add_response(
            "describe_endpoint", describe_response("acme-dev-chat", "InService"), {"EndpointName": "acme-dev-chat"}
        )
    for name in ("chat", "acme-dev-chat"):
        status, body, headers = call(retrieve_event(name))
        assert status == 200
        assert body == {
            "id": "chat",
            "object": "model",
            "created": int(CREATED.timestamp()),
            "owned_by": "acme",
            "endpoint_name": "acme-dev-chat",
            "kind": "llm",
            "status": "InService",
        }
        assert headers["x-request-id"]


def test_retrieve_not_deployed_model_has_created_zero(control_plane_stub, call):
    control_plane_stub.add_client_error(
        "describe_endpoint",
        service_error_code="ValidationException",
        service_message=(
            'Could not find endpoint "arn:aws:sagemaker:us-east-1:123456789012:endpoint/acme-dev-sentiment".'
        ),
        http_status_code=400,
        expected_params={"EndpointName": "acme-dev-sentiment"},
    )
    status, body, _ = call(retrieve_event("sentiment"))
    assert (status, body["status"], body["created"]) == (200, "NotDeployed", 0)


def test_retrieve_unknown_or_foreign_model_is_an_openai_error_without_describe_calls(control_plane_stub, call):
    status, body, _ = call(retrieve_event("gpt-4o"))
    assert status == 404
    assert body["error"] | {"message": None} == {
        "type": "invalid_request_error",
        "code": "model_not_found",
        "param": "model",
        "message": None,
    }
    status, body, _ = call(retrieve_event("globex-dev-chat"))
    assert (status, body["error"]["type"], body["error"]["code"]) == (403, "permission_error", "model_not_permitted")
