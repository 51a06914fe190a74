"""An LLM endpoint served by SageMaker inference components: one base model (LMI with LoRA enabled) and one
component per LoRA adapter, all sharing the base component's GPUs."""

from __future__ import annotations

from aws_cdk import Duration
from aws_cdk import aws_applicationautoscaling as appscaling
from aws_cdk import aws_cloudwatch as cloudwatch
from aws_cdk import aws_cloudwatch_actions as cloudwatch_actions
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_sagemaker as sagemaker
from constructs import Construct

from finetune.contract import ADAPTER_ARCHIVE, adapter_prefix
from lambda_handlers.inference_proxy.settings import inference_component_name
from stacks.components.endpoints import (
    VARIANT_NAME,
    EndpointNetwork,
    endpoint_with_config,
    has_instance_storage,
    local_storage_reason,
    tracked_scalable_target,
)
from stacks.settings import EndpointSpec, LoraServing

COPY_COUNT_DIMENSION = "sagemaker:inference-component:DesiredCopyCount"
"""Application Auto Scaling's dimension for the copies of an inference component."""
NO_CAPACITY_METRIC = "NoCapacityInvocationFailures"
"""SageMaker's count of invocations that found a component with zero copies (the scale-from-zero signal)."""


def lora_environment(base: dict[str, str], lora: LoraServing) -> dict[str, str]:
    """The LMI container's settings for the base component: vLLM with LoRA adapters enabled.

    LMI (DJL Serving) reads `OPTION_<NAME>` variables as its `option.<name>` properties; with LoRA enabled,
    each adapter component's artifact is loaded next to the base weights and addressed per request.
    """
    return {
        **base,
        "OPTION_ENABLE_LORA": "true",
        "OPTION_MAX_LORAS": str(lora.max_loras),
        "OPTION_MAX_LORA_RANK": str(lora.max_lora_rank),
        "OPTION_MAX_CPU_LORAS": str(max(lora.max_cpu_loras, lora.max_loras)),
    }


def adapter_artifact_url(artifacts_bucket_name: str, endpoint: str, adapter: str, version: str) -> str:
    """`s3://<artifacts>/adapters/<endpoint>/<adapter>/<version>/adapter.tar.gz`: the artifacts layout of one
    adapter version (the FineTune pipeline's Deploy step names the version after the training job)."""
    return f"s3://{artifacts_bucket_name}/{adapter_prefix(endpoint, adapter)}{version}/{ADAPTER_ARCHIVE}"


class InferenceComponentEndpoint(Construct):
    """Endpoint config for inference components (execution role, VPC, one instance-based variant with managed
    instance scaling, no model) -> endpoint -> base component -> one component per adapter with an artifact.

    The base component's copies autoscale on invocations per copy; with `min_copies: 0` they scale to zero, and
    an alarm on NoCapacityInvocationFailures adds a copy when a request finds none (that request gets 503 and
    Retry-After from the proxy). Adapters declared without an artifact get no component here: the FineTune
    pipeline's Deploy step creates it on the adapter's first deployment.
    """

    def __init__(
        self,
        scope: Construct,
        id_: str,
        *,
        spec: EndpointSpec,
        lora: LoraServing,
        team: str,
        stage_name: str,
        endpoint_name: str,
        image_uri: str,
        environment: dict[str, str],
        role: iam.IRole,
        key: kms.IKey,
        network: EndpointNetwork,
    ) -> None:
        super().__init__(scope, id_)
        self.spec = spec
        self.endpoint_name = endpoint_name
        self.base_component_name = inference_component_name(team, stage_name, spec.name)
        scale_to_zero = lora.min_copies == 0
        variant = sagemaker.CfnEndpointConfig.ProductionVariantProperty(
            variant_name=VARIANT_NAME,
            instance_type=spec.instance_type,
            initial_instance_count=spec.min_instances,
            # SageMaker adds and removes instances as the components' copies need them, down to none when every
            # copy has scaled to zero.
            managed_instance_scaling=sagemaker.CfnEndpointConfig.ManagedInstanceScalingProperty(
                status="ENABLED",
                min_instance_count=0 if scale_to_zero else spec.min_instances,
                max_instance_count=spec.max_instances,
            ),
            routing_config=sagemaker.CfnEndpointConfig.RoutingConfigProperty(
                routing_strategy="LEAST_OUTSTANDING_REQUESTS"
            ),
        )
        no_volume_key_reason = (
            local_storage_reason(spec.instance_type) if has_instance_storage(spec.instance_type) else None
        )
        self.endpoint_config, self.endpoint = endpoint_with_config(
            self,
            endpoint_name=endpoint_name,
            variant=variant,
            key=key,
            no_volume_key_reason=no_volume_key_reason,
            # With inference components the role, VPC and isolation belong to the endpoint config, not a model.
            execution_role_arn=role.role_arn,
            network=network,
        )

        self.base_component = sagemaker.CfnInferenceComponent(
            self,
            "BaseComponent",
            inference_component_name=self.base_component_name,
            endpoint_name=self.endpoint.attr_endpoint_name,
            variant_name=VARIANT_NAME,
            specification=sagemaker.CfnInferenceComponent.InferenceComponentSpecificationProperty(
                container=sagemaker.CfnInferenceComponent.InferenceComponentContainerSpecificationProperty(
                    image=image_uri, artifact_url=spec.model_data_url, environment=lora_environment(environment, lora)
                ),
                compute_resource_requirements=(
                    sagemaker.CfnInferenceComponent.InferenceComponentComputeResourceRequirementsProperty(
                        number_of_accelerator_devices_required=lora.accelerators_per_copy,
                        min_memory_required_in_mb=lora.memory_mb_per_copy,
                    )
                ),
            ),
            # Created with one copy even when it may scale to zero: CloudFormation waits for a healthy copy,
            # so a broken image or artifact fails the deployment instead of the first request.
            runtime_config=sagemaker.CfnInferenceComponent.InferenceComponentRuntimeConfigProperty(
                copy_count=max(lora.min_copies, 1)
            ),
        )
        self.adapter_components: dict[str, sagemaker.CfnInferenceComponent] = {}
        for adapter in lora.adapters:
            if adapter.artifact_url is None:
                continue
            component = sagemaker.CfnInferenceComponent(
                self,
                f"Adapter{_pascal(adapter.name)}",
                inference_component_name=inference_component_name(team, stage_name, spec.name, adapter.name),
                endpoint_name=self.endpoint.attr_endpoint_name,
                # An adapter runs inside the base component's copies: no variant, compute or copy count of its own.
                specification=sagemaker.CfnInferenceComponent.InferenceComponentSpecificationProperty(
                    base_inference_component_name=self.base_component_name,
                    container=sagemaker.CfnInferenceComponent.InferenceComponentContainerSpecificationProperty(
                        artifact_url=adapter.artifact_url
                    ),
                ),
            )
            component.node.add_dependency(self.base_component)  # named by literal, so no implicit dependency
            self.adapter_components[adapter.name] = component
        self.scalable_target = self._copy_scaling(spec, lora)

    def _copy_scaling(self, spec: EndpointSpec, lora: LoraServing) -> appscaling.ScalableTarget:
        target = tracked_scalable_target(
            self,
            "CopyScaling",
            resource_id=f"inference-component/{self.base_component_name}",
            scalable_dimension=COPY_COUNT_DIMENSION,
            min_capacity=lora.min_copies,
            max_capacity=lora.max_copies,
            depends_on=self.base_component,
            policy_id="InvocationsPerCopy",
            metric=appscaling.PredefinedMetric.SAGEMAKER_INFERENCE_COMPONENT_INVOCATIONS_PER_COPY,
            target_value=spec.invocations_per_instance,
        )
        if lora.min_copies == 0:
            # Target tracking never leaves zero copies (no copy, no invocations per copy): a request that found
            # no copy is counted in NoCapacityInvocationFailures, and this step adds the first copy.
            scale_from_zero = appscaling.StepScalingAction(
                self,
                "ScaleFromZero",
                scaling_target=target,
                adjustment_type=appscaling.AdjustmentType.CHANGE_IN_CAPACITY,
                cooldown=Duration.minutes(1),
            )
            scale_from_zero.add_adjustment(adjustment=1, lower_bound=0)
            self.no_capacity_alarm = cloudwatch.Alarm(
                self,
                "NoCapacityAlarm",
                alarm_description=f"{self.base_component_name} has no copy and was invoked: add one",
                metric=cloudwatch.Metric(
                    namespace="AWS/SageMaker",
                    metric_name=NO_CAPACITY_METRIC,
                    dimensions_map={"InferenceComponentName": self.base_component_name},
                    statistic=cloudwatch.Stats.MAXIMUM,
                    period=Duration.minutes(1),
                ),
                threshold=1,
                evaluation_periods=1,
                comparison_operator=cloudwatch.ComparisonOperator.GREATER_THAN_OR_EQUAL_TO_THRESHOLD,
                treat_missing_data=cloudwatch.TreatMissingData.NOT_BREACHING,
            )
            self.no_capacity_alarm.add_alarm_action(cloudwatch_actions.ApplicationScalingAction(scale_from_zero))
        return target


def _pascal(name: str) -> str:
    return "".join(part.capitalize() for part in name.split("-"))
