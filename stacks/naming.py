"""Names of the resources other stacks, the CLI and dashboards refer to, derived from `{team}-{stage}` alone.

Deterministic names let the Monitoring stack, the command-line tool and the inference proxy find resources
from the config, without cross-stack lookups or timestamps. The rules live in the shared contract
(training_code/finetune/contract.py), which the CLI and the Lambda handlers import too.
"""

from __future__ import annotations

from finetune import contract
from lambda_handlers.inference_proxy.settings import qualified_component_name

METRICS_NAMESPACE = "FineTuneStack"
"""CloudWatch namespace of the platform's own metrics (inference proxy, hosts)."""

fine_tune_state_machine = contract.fine_tune_state_machine
batch_infer_state_machine = contract.batch_infer_state_machine
endpoint = contract.endpoint_name
inference_proxy_function = contract.inference_proxy_function
inference_api = contract.inference_api
model_package_group = contract.model_package_group
team_topic = contract.team_topic
host = contract.host_name
bucket = contract.bucket_name
inference_component = qualified_component_name
"""`{team}-{stage}-{endpoint}-{adapter or 'base'}`: the one definition the Inference stack, the FineTune
pipeline and the proxy use (lambda_handlers/inference_proxy/settings.py), so alarms watch the components they make."""
