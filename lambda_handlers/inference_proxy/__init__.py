"""The inference proxy: an OpenAI-compatible API over a team stage's SageMaker endpoints.

Deployed with `lambda_handlers/` as the code asset and `inference_proxy.handler.lambda_handler` as the
handler. Importing this package (for its environment contract) loads only pydantic, never boto3 or
Powertools, so the CDK app can use it.
"""

from .settings import (
    ENVIRONMENT_VARIABLES,
    REQUIRED_IAM_ACTIONS,
    Endpoint,
    ProxySettings,
    SettingsError,
    lambda_environment,
    load_settings,
)

__all__ = [
    "ENVIRONMENT_VARIABLES",
    "REQUIRED_IAM_ACTIONS",
    "Endpoint",
    "ProxySettings",
    "SettingsError",
    "lambda_environment",
    "load_settings",
]
