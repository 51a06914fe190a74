"""The proxy's environment contract: what the Inference stack sets, and what cold start refuses."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from lambda_handlers.inference_proxy import (
    ENVIRONMENT_VARIABLES,
    REQUIRED_IAM_ACTIONS,
    SettingsError,
    lambda_environment,
    load_settings,
)

REPO = Path(__file__).resolve().parents[2]
BASE = {"TEAM": "acme", "STAGE": "dev", "ENDPOINTS": '{"chat": {"kind": "llm"}}'}


def test_lambda_environment_round_trips_through_the_cold_start_validation():
    # Given what the Inference stack knows at synthesis
    environ = lambda_environment(
        team="acme", stage="prod", endpoints={"sentiment": "classifier", "chat": "llm"}, read_timeout_seconds=15
    )
    # Then every value is a string, names come from the contract, and the function would accept it
    assert set(environ) <= set(ENVIRONMENT_VARIABLES)
    assert all(isinstance(value, str) for value in environ.values())
    assert json.loads(environ["ENDPOINTS"]) == {
        "chat": {"endpoint_name": "acme-prod-chat", "kind": "llm"},
        "sentiment": {"endpoint_name": "acme-prod-sentiment", "kind": "classifier"},
    }
    settings = load_settings(environ)
    assert (settings.team, settings.stage, settings.read_timeout_seconds) == ("acme", "prod", 15)
    assert settings.endpoints["chat"].endpoint_name == "acme-prod-chat"


def test_defaults_keep_the_model_call_under_api_gateway_limit():
    settings = load_settings(BASE)
    assert settings.endpoints["chat"].endpoint_name == "acme-dev-chat"
    assert settings.connect_timeout_seconds + settings.read_timeout_seconds < 29
    assert settings.max_request_bytes == 1024 * 1024


def test_iam_actions_are_exported_for_the_stack():
    assert REQUIRED_IAM_ACTIONS == (
        "sagemaker:InvokeEndpoint",
        "sagemaker:InvokeEndpointWithResponseStream",
        "sagemaker:DescribeEndpoint",
    )


@pytest.mark.parametrize(
    ("environ", "words"),
    [
        ({"STAGE": "dev", "ENDPOINTS": "{}"}, "TEAM"),
        ({**BASE, "ENDPOINTS": "{not json"}, "not JSON"),
        ({**BASE, "ENDPOINTS": '{"chat": {"kind": "gpt"}}'}, "kind"),
        ({**BASE, "ENDPOINTS": '{"chat": {"endpoint_name": "globex-dev-chat", "kind": "llm"}}'}, "acme-dev-"),
        ({**BASE, "ENDPOINTS": '{"Chat Model": {"kind": "llm"}}'}, "Chat Model"),
        ({**BASE, "ENDPOINTS": '["chat"]'}, "endpoints"),
        ({**BASE, "TEAM": "Acme Corp"}, "team"),
        ({**BASE, "INVOKE_READ_TIMEOUT_SECONDS": "29"}, "read_timeout_seconds"),
        ({**BASE, "INVOKE_READ_TIMEOUT_SECONDS": "27.5"}, "API Gateway"),
        ({**BASE, "MAX_REQUEST_BYTES": "10000000"}, "max_request_bytes"),
        ({**BASE, "MAX_PREDICT_INPUTS": "many"}, "max_predict_inputs"),
    ],
    ids=[
        "missing-team",
        "endpoints-not-json",
        "bad-kind",
        "foreign-endpoint",
        "bad-short-name",
        "endpoints-list",
        "bad-team",
        "read-timeout-at-limit",
        "timeouts-sum-over-limit",
        "request-limit-over-invoke",
        "inputs-not-int",
    ],
)
def test_invalid_environment_fails_cold_start_with_a_clear_message(environ, words):
    with pytest.raises(SettingsError, match="inference proxy") as raised:
        load_settings(environ)
    assert words in str(raised.value)


def test_lambda_environment_refuses_what_the_function_would_refuse():
    with pytest.raises(SettingsError, match="read_timeout_seconds"):
        lambda_environment(team="acme", stage="dev", endpoints={"chat": "llm"}, read_timeout_seconds=60)


def test_the_package_imports_without_boto3_or_powertools():
    # The CDK app imports the contract; it must not pull in the function's runtime dependencies.
    code = (
        "import sys, lambda_handlers.inference_proxy as p; "
        "assert p.lambda_environment; "
        "print(sorted(m for m in ('boto3', 'botocore', 'aws_lambda_powertools') if m in sys.modules))"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"


def test_deployed_layout_imports_as_a_top_level_package():
    # Deployed with lambda_handlers/ as the asset root, the handler is `inference_proxy.handler.lambda_handler`.
    code = "import inference_proxy.handler as h; print(h.SETTINGS.endpoint_prefix, callable(h.lambda_handler))"
    environ = {
        **BASE,
        "PATH": "/usr/bin:/bin",
        # Lambda sets both region variables.
        "AWS_REGION": "us-east-1",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "POWERTOOLS_TRACE_DISABLED": "true",
    }
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO / "lambda_handlers", env=environ, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "acme-dev- True"


def test_import_fails_fast_without_the_environment():
    result = subprocess.run(
        [sys.executable, "-c", "import inference_proxy.handler"],
        cwd=REPO / "lambda_handlers",
        env={"PATH": "/usr/bin:/bin", "AWS_REGION": "us-east-1"},
        capture_output=True,
        text=True,
    )
    assert result.returncode != 0
    assert "SettingsError: inference proxy: missing environment variables TEAM, STAGE, ENDPOINTS" in result.stderr
