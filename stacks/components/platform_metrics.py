"""CloudWatch metrics of a team stage, built from the deterministic names in ``stacks.naming`` alone.

The Monitoring stack never references the Training or Inference constructs: every metric here is what AWS, or
the platform's own code, publishes for a resource named by ``naming``, so dashboards and alarms can be built
(and reviewed) independently of those stacks.
"""

from __future__ import annotations

import sys
from pathlib import Path

from aws_cdk import ArnFormat, Duration, Stack
from aws_cdk import aws_cloudwatch as cloudwatch

from stacks import naming
from stacks.components.gpu_host import GPU_MEMORY_METRIC, GPU_METRIC

_TRAINING_CODE = Path(__file__).resolve().parents[2] / "training_code"
if str(_TRAINING_CODE) not in sys.path:
    sys.path.insert(0, str(_TRAINING_CODE))
from finetune.metrics import METRIC_DEFINITIONS  # noqa: E402  (stdlib only, as the Training stack imports it)

TRAINING_NAMESPACE = "/aws/sagemaker/TrainingJobs"
"""Where SageMaker puts the values the metric definitions' regexes capture (dimension Host = `<job>/algo-<n>`)."""
TRAINING_METRIC_NAMES: tuple[str, ...] = tuple(definition["Name"] for definition in METRIC_DEFINITIONS)
VARIANT = "AllTraffic"
API_STAGE = "api"
FIVE_MINUTES = Duration.minutes(5)


def state_machine_arn(stack: Stack, qualified_name: str) -> str:
    return stack.format_arn(
        service="states",
        resource="stateMachine",
        resource_name=naming.fine_tune_state_machine(qualified_name),
        arn_format=ArnFormat.COLON_RESOURCE_NAME,
    )


def fine_tune(stack: Stack, qualified_name: str, metric_name: str) -> cloudwatch.Metric:
    """AWS/States execution counts (ExecutionsStarted, ExecutionsSucceeded, ExecutionsFailed, ...) of FineTune."""
    return cloudwatch.Metric(
        namespace="AWS/States",
        metric_name=metric_name,
        dimensions_map={"StateMachineArn": state_machine_arn(stack, qualified_name)},
        statistic=cloudwatch.Stats.SUM,
        period=FIVE_MINUTES,
        label=metric_name.removeprefix("Executions"),
    )


def training_search(metric_name: str) -> cloudwatch.MathExpression:
    """Every training job's series of one metric definition (job names change per run, so a SEARCH)."""
    if metric_name not in TRAINING_METRIC_NAMES:
        raise ValueError(f"{metric_name} is not one of the training metric definitions")
    return cloudwatch.MathExpression(
        expression=f"SEARCH('{{{TRAINING_NAMESPACE},Host}} MetricName=\"{metric_name}\"', 'Average', 60)",
        label=metric_name,
        period=Duration.minutes(1),
        using_metrics={},
    )


def endpoint(
    qualified_name: str,
    short_name: str,
    metric_name: str,
    statistic: str = cloudwatch.Stats.SUM,
    namespace: str = "AWS/SageMaker",
) -> cloudwatch.Metric:
    return cloudwatch.Metric(
        namespace=namespace,
        metric_name=metric_name,
        dimensions_map={"EndpointName": naming.endpoint(qualified_name, short_name), "VariantName": VARIANT},
        statistic=statistic,
        period=FIVE_MINUTES,
        label=f"{short_name} {metric_name}",
    )


def endpoint_instances(qualified_name: str, short_name: str) -> cloudwatch.MathExpression:
    """Instances serving the endpoint, while it has traffic: Invocations / InvocationsPerInstance."""
    return cloudwatch.MathExpression(
        expression="IF(perInstance > 0, invocations / perInstance, 0)",
        using_metrics={
            "invocations": endpoint(qualified_name, short_name, "Invocations"),
            "perInstance": endpoint(qualified_name, short_name, "InvocationsPerInstance"),
        },
        label=f"{short_name} instances (with traffic)",
        period=FIVE_MINUTES,
    )


COMPONENT_INVOCATION_METRICS = (
    "Invocations",
    "Invocation4XXErrors",
    "Invocation5XXErrors",
    "InvocationsPerCopy",
    "ModelLatency",
    "OverheadLatency",
)
"""What SageMaker publishes per inference component in AWS/SageMaker (latencies in microseconds)."""
COMPONENT_UTILISATION_NAMESPACE = "/aws/sagemaker/InferenceComponents"
COMPONENT_UTILISATION_METRICS = (
    "GPUUtilizationNormalized",
    "GPUMemoryUtilizationNormalized",
    "CPUUtilizationNormalized",
    "MemoryUtilizationNormalized",
)
"""What each copy of an inference component reports in COMPONENT_UTILISATION_NAMESPACE (0-100 % of its reservation)."""


def component(
    qualified_name: str,
    endpoint_name: str,
    adapter: str | None,
    metric_name: str,
    statistic: str = cloudwatch.Stats.SUM,
) -> cloudwatch.Metric:
    """A metric of the inference component serving `endpoint_name`'s base model (`adapter` None) or one adapter.

    SageMaker publishes these by `InferenceComponentName` alone (no endpoint or variant dimension): invocations in
    AWS/SageMaker, the copies' utilisation in /aws/sagemaker/InferenceComponents.
    """
    if metric_name in COMPONENT_INVOCATION_METRICS:
        namespace = "AWS/SageMaker"
    elif metric_name in COMPONENT_UTILISATION_METRICS:
        namespace = COMPONENT_UTILISATION_NAMESPACE
    else:
        raise ValueError(f"{metric_name} is not a metric SageMaker publishes per inference component")
    return cloudwatch.Metric(
        namespace=namespace,
        metric_name=metric_name,
        dimensions_map={"InferenceComponentName": naming.inference_component(qualified_name, endpoint_name, adapter)},
        statistic=statistic,
        period=FIVE_MINUTES,
        label=f"{adapter or endpoint_name} {metric_name}",
    )


def component_copies(qualified_name: str, endpoint_name: str) -> cloudwatch.MathExpression:
    """Copies of the base component, while it has traffic: Invocations / InvocationsPerCopy (adapters run inside
    these copies and have none of their own)."""
    return cloudwatch.MathExpression(
        expression="IF(perCopy > 0, invocations / perCopy, 0)",
        using_metrics={
            "invocations": component(qualified_name, endpoint_name, None, "Invocations"),
            "perCopy": component(qualified_name, endpoint_name, None, "InvocationsPerCopy"),
        },
        label=f"{endpoint_name} copies (with traffic)",
        period=FIVE_MINUTES,
    )


def proxy(qualified_name: str, metric_name: str, statistic: str = cloudwatch.Stats.SUM) -> cloudwatch.Metric:
    return cloudwatch.Metric(
        namespace="AWS/Lambda",
        metric_name=metric_name,
        dimensions_map={"FunctionName": naming.inference_proxy_function(qualified_name)},
        statistic=statistic,
        period=FIVE_MINUTES,
        label=f"proxy {metric_name}",
    )


def api(qualified_name: str, metric_name: str, statistic: str = cloudwatch.Stats.SUM) -> cloudwatch.Metric:
    return cloudwatch.Metric(
        namespace="AWS/ApiGateway",
        metric_name=metric_name,
        dimensions_map={"ApiName": naming.inference_api(qualified_name), "Stage": API_STAGE},
        statistic=statistic,
        period=FIVE_MINUTES,
        label=f"API {metric_name}",
    )


def host_gpu(instance_id: str, host_name: str, metric_name: str = GPU_METRIC) -> cloudwatch.Metric:
    if metric_name not in (GPU_METRIC, GPU_MEMORY_METRIC):
        raise ValueError(f"{metric_name} is not a GPU metric the hosts' CloudWatch agent publishes")
    return cloudwatch.Metric(
        namespace=naming.METRICS_NAMESPACE,
        metric_name=metric_name,
        dimensions_map={"InstanceId": instance_id},
        statistic=cloudwatch.Stats.MAXIMUM,
        period=Duration.minutes(1),
        label=f"{host_name} {metric_name}",
    )
