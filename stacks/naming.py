"""Names of the resources other stacks, the CLI and dashboards refer to, derived from `{team}-{stage}` alone.

Deterministic names let the Monitoring stack, the command-line tool and the inference proxy find resources
from the config, without cross-stack lookups or timestamps.
"""

from __future__ import annotations

METRICS_NAMESPACE = "FineTuneStack"
"""CloudWatch namespace of the platform's own metrics (inference proxy, hosts)."""


def fine_tune_state_machine(qualified_name: str) -> str:
    return f"{qualified_name}-FineTune"


def batch_infer_state_machine(qualified_name: str) -> str:
    return f"{qualified_name}-BatchInfer"


def endpoint(qualified_name: str, short_name: str) -> str:
    return f"{qualified_name}-{short_name}"


def inference_proxy_function(qualified_name: str) -> str:
    return f"{qualified_name}-inference-proxy"


def inference_api(qualified_name: str) -> str:
    return f"{qualified_name}-inference"


def model_package_group(qualified_name: str) -> str:
    return f"{qualified_name}-models"


def team_topic(qualified_name: str) -> str:
    return f"{qualified_name}-events"


def host(qualified_name: str, short_name: str) -> str:
    return f"{qualified_name}-{short_name}"


def bucket(qualified_name: str, purpose: str, account: str, region: str) -> str:
    """`{team}-{stage}-{purpose}-{account}-{region}`: purpose is data, artifacts or logs."""
    return f"{qualified_name}-{purpose}-{account}-{region}"
