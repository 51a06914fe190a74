"""Real-time SageMaker endpoints: model, endpoint config, endpoint, autoscaling, and the models' execution role."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from aws_cdk import Duration, Stack, TimeZone
from aws_cdk import aws_applicationautoscaling as appscaling
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_sagemaker as sagemaker
from constructs import Construct, IConstruct

from finetune.contract import ADAPTERS_PREFIX
from stacks.components.acknowledgements import acknowledge
from stacks.components.data_buckets import DATA_CAPTURE_PREFIX
from stacks.components.sagemaker_iam import ecr_login, vpc_network_interfaces
from stacks.settings import EndpointSpec, OfficeHours

VARIANT_NAME = "AllTraffic"
"""The one production variant of every endpoint (the Monitoring stack's `VariantName` dimension)."""


# Instance families with local NVMe instance storage. Their volumes are encrypted by the instance's hardware
# module, and SageMaker rejects an endpoint config that names a KmsKeyId for them (CreateEndpointConfig API).
LOCAL_STORAGE_FAMILIES = frozenset(
    {
        "g4dn",
        "g4ad",
        "g5",
        "g6",
        "g6e",
        "gr6",
        "p3dn",
        "p4d",
        "p4de",
        "p5",
        "p5e",
        "p5en",
        "trn1",
        "trn1n",
    }
)
_LOCAL_STORAGE_SUFFIX = re.compile(r"^[a-z]+[0-9]+[a-z]*d$")  # m5d, c5d, r5d, m6id, c6id, r6id ...


def partition_of(region: str) -> str:
    """The ARN partition of a region, as a literal: acknowledgement ids that quote an ARN must be plain strings."""
    if region.startswith("cn-"):
        return "aws-cn"
    if region.startswith("us-gov-"):
        return "aws-us-gov"
    return "aws"


def autoscaling_service_role(scope: Construct, stack: Stack) -> iam.IRole:
    """Application Auto Scaling acts on SageMaker endpoints and inference components through its service-linked
    role; no role of ours."""
    return iam.Role.from_role_arn(
        scope,
        "AutoScalingServiceRole",
        f"arn:{partition_of(stack.region)}:iam::{stack.account}:role/aws-service-role/"
        "sagemaker.application-autoscaling.amazonaws.com/"
        "AWSServiceRoleForApplicationAutoScaling_SageMakerEndpoint",
    )


def tracked_scalable_target(
    scope: Construct,
    id_: str,
    *,
    resource_id: str,
    scalable_dimension: str,
    min_capacity: int,
    max_capacity: int,
    depends_on: IConstruct,
    policy_id: str,
    metric: appscaling.PredefinedMetric,
    target_value: int,
) -> appscaling.ScalableTarget:
    """A SageMaker scalable target (an endpoint variant or an inference component) tracking `metric` at
    `target_value`, with the cooldowns every endpoint shares: one minute to scale out, five to scale in.

    It is registered after `depends_on`, the resource it scales, which CloudFormation must create first.
    """
    target = appscaling.ScalableTarget(
        scope,
        id_,
        service_namespace=appscaling.ServiceNamespace.SAGEMAKER,
        resource_id=resource_id,
        scalable_dimension=scalable_dimension,
        min_capacity=min_capacity,
        max_capacity=max_capacity,
        role=autoscaling_service_role(scope, Stack.of(scope)),
    )
    target.node.add_dependency(depends_on)
    target.scale_to_track_metric(
        policy_id,
        predefined_metric=metric,
        target_value=target_value,
        scale_in_cooldown=Duration.minutes(5),
        scale_out_cooldown=Duration.minutes(1),
    )
    return target


def has_instance_storage(instance_type: str) -> bool:
    """Whether a SageMaker instance type has local NVMe storage (so its endpoint config takes no KmsKeyId)."""
    family = instance_type.split(".")[1]
    return family in LOCAL_STORAGE_FAMILIES or bool(_LOCAL_STORAGE_SUFFIX.match(family))


def s3_object_arn(partition: str, s3_url: str) -> str:
    """`s3://bucket/key` as the ARN of that object."""
    bucket, _, key = s3_url.removeprefix("s3://").partition("/")
    return f"arn:{partition}:s3:::{bucket}/{key}"


def ecr_repository_arn(partition: str, image_uri: str) -> str:
    """The ECR repository ARN of an image URI `<account>.dkr.ecr.<region>.amazonaws.com/<repo>:<tag>`."""
    registry, _, repository = image_uri.partition("/")
    account, _, rest = registry.partition(".dkr.ecr.")
    region = rest.split(".", 1)[0]
    return f"arn:{partition}:ecr:{region}:{account}:repository/{repository.split(':', 1)[0].split('@', 1)[0]}"


class ModelExecutionRole(Construct):
    """The role SageMaker assumes for a team stage's endpoint models.

    It reads exactly the configured model artifacts (and, for model packages, the artifacts bucket the
    registry points at), decrypts with the team key, pulls the pinned Deep Learning Container images, writes
    the endpoints' own logs and the data capture prefix, and manages the network interfaces of the VPC.
    Statements live in a customer-managed policy (no inline policy).
    """

    def __init__(
        self,
        scope: Construct,
        id_: str,
        *,
        qualified_name: str,
        endpoints: tuple[EndpointSpec, ...],
        image_uris: list[str],
        key: kms.IKey,
        artifacts_bucket_name: str,
        data_capture: bool,
        network_conditions: dict[str, Any],
    ) -> None:
        super().__init__(scope, id_)
        stack = Stack.of(self)
        partition = partition_of(stack.region)
        self.role = iam.Role(
            self,
            "Role",
            assumed_by=iam.ServicePrincipal("sagemaker.amazonaws.com"),
            description=f"{qualified_name}: SageMaker endpoint models (read model artifacts, write data capture)",
        )
        artifact_arns = sorted(
            {s3_object_arn(partition, e.model_data_url) for e in endpoints if e.model_data_url}
            | {
                s3_object_arn(partition, a.artifact_url)
                for e in endpoints
                if e.lora
                for a in e.lora.adapters
                if a.artifact_url
            }
        )
        # Adapter versions the FineTune pipeline deploys: under adapters/<endpoint>/ of the artifacts bucket.
        adapter_prefixes = sorted(
            f"arn:{partition}:s3:::{artifacts_bucket_name}/{ADAPTERS_PREFIX}{e.name}/*" for e in endpoints if e.lora
        )
        package_arns = sorted({e.model_package_arn for e in endpoints if e.model_package_arn})
        artifacts_objects = f"arn:{partition}:s3:::{artifacts_bucket_name}/*"
        capture_objects = f"arn:{partition}:s3:::{artifacts_bucket_name}/{DATA_CAPTURE_PREFIX}/*"
        log_groups = (
            f"arn:{partition}:logs:{stack.region}:{stack.account}:log-group:/aws/sagemaker/Endpoints/{qualified_name}-*"
        )
        # Containers of inference components log to one group per component, named after it ({q}-<endpoint>-...).
        component_logs = (
            f"arn:{partition}:logs:{stack.region}:{stack.account}:log-group:"
            f"/aws/sagemaker/InferenceComponents/{qualified_name}-*"
        )
        statements = [
            iam.PolicyStatement(
                sid="ReadModelArtifacts",
                actions=["s3:GetObject"],
                resources=artifact_arns + adapter_prefixes + ([artifacts_objects] if package_arns else []),
            ),
            iam.PolicyStatement(
                sid="UseTeamKey", actions=["kms:Decrypt", "kms:GenerateDataKey", "kms:Encrypt"], resources=[key.key_arn]
            ),
            iam.PolicyStatement(
                sid="PullInferenceImages",
                actions=["ecr:BatchGetImage", "ecr:GetDownloadUrlForLayer", "ecr:BatchCheckLayerAvailability"],
                resources=sorted({ecr_repository_arn(partition, uri) for uri in image_uris}),
            ),
            ecr_login(),
            iam.PolicyStatement(
                sid="EndpointLogs",
                actions=["logs:CreateLogGroup", "logs:CreateLogStream", "logs:PutLogEvents", "logs:DescribeLogStreams"],
                resources=[log_groups, f"{log_groups}:log-stream:*"]
                + ([component_logs, f"{component_logs}:log-stream:*"] if adapter_prefixes else []),
            ),
            # Same VPC and subnet conditions as the training role: interfaces only in the team VPC.
            vpc_network_interfaces(conditions=network_conditions),
        ]
        capturing = data_capture and any(e.data_capture_percent > 0 and e.serverless is None for e in endpoints)
        if capturing:
            statements.insert(
                1, iam.PolicyStatement(sid="WriteDataCapture", actions=["s3:PutObject"], resources=[capture_objects])
            )
        if package_arns:
            statements.append(
                iam.PolicyStatement(
                    sid="DescribeModelPackages", actions=["sagemaker:DescribeModelPackage"], resources=package_arns
                )
            )
        self.policy = iam.ManagedPolicy(
            self,
            "Policy",
            description=f"{qualified_name}: what SageMaker endpoint models may do",
            statements=statements,
            roles=[self.role],
        )
        ecr_reason = (
            "ecr:GetAuthorizationToken has no resource-level permissions (IAM service authorization "
            "reference); image pulls themselves are limited to the pinned Deep Learning Container "
            "repositories."
        )
        findings = {
            "AwsSolutions-IAM5[Resource::*]": (
                f"{ecr_reason} The EC2 network-interface actions SageMaker needs to place models in the team VPC "
                "support no resource-level scoping for Describe* and are documented with Resource '*'."
            ),
            f"AwsSolutions-IAM5[Resource::{log_groups}]": (
                "SageMaker creates one log group per endpoint, /aws/sagemaker/Endpoints/<endpoint name>; every "
                f"endpoint of this stage is named {qualified_name}-<name>, so the pattern admits only them."
            ),
            f"AwsSolutions-IAM5[Resource::{log_groups}:log-stream:*]": (
                "Log streams are created per instance and container by SageMaker with generated names, inside "
                "this stage's endpoint log groups only."
            ),
        }
        if capturing:
            findings[f"AwsSolutions-IAM5[Resource::{capture_objects}]"] = (
                "Data capture writes one object per sampled request under data-capture/<endpoint>/ with names "
                "SageMaker chooses; the grant is limited to that prefix of the team's artifacts bucket."
            )
        if adapter_prefixes:
            findings[f"AwsSolutions-IAM5[Resource::{component_logs}]"] = (
                "SageMaker creates one log group per inference component, /aws/sagemaker/InferenceComponents/<name>; "
                f"every component of this stage is named {qualified_name}-<endpoint>-<adapter or base>, so the "
                "pattern admits only them."
            )
            findings[f"AwsSolutions-IAM5[Resource::{component_logs}:log-stream:*]"] = (
                "Log streams are created per copy and container by SageMaker with generated names, inside this "
                "stage's inference component log groups only."
            )
        for prefix in adapter_prefixes:
            findings[f"AwsSolutions-IAM5[Resource::{prefix}]"] = (
                "The FineTune pipeline's Deploy step writes each adapter version it deploys to this endpoint "
                "under adapters/<endpoint>/<adapter>/<training job>/adapter.tar.gz, a key chosen at training "
                "time; reads cover that one endpoint's adapters in the team's artifacts bucket."
            )
        if package_arns:
            findings[f"AwsSolutions-IAM5[Resource::{artifacts_objects}]"] = (
                "A model package version points at a model.tar.gz the FineTune pipeline wrote somewhere in the "
                "team's artifacts bucket; the key is chosen at training time, so read access covers that one "
                "bucket, never another team's."
            )
        acknowledge(self.policy, findings)


@dataclass(frozen=True)
class EndpointNetwork:
    """Where instance-based models run: subnet ids and security group ids (tokens from the Data stack)."""

    subnet_ids: list[str]
    security_group_ids: list[str]


VOLUME_KEY_FINDINGS = (
    "NIST.800.53.R5-SageMakerEndpointConfigurationKMSKeyConfigured",
    "HIPAA.Security-SageMakerEndpointConfigurationKMSKeyConfigured",
)
"""The rule-pack findings on an endpoint config that names no KmsKeyId for its instances' storage volumes."""


def local_storage_reason(instance_type: str) -> str:
    """Why an endpoint config on an instance type with local NVMe storage names no volume key."""
    return (
        f"{instance_type} has local NVMe instance storage, which the instance's hardware module encrypts "
        "(XTS-AES-256); SageMaker rejects a KmsKeyId for such instance types."
    )


def endpoint_with_config(
    scope: Construct,
    *,
    endpoint_name: str,
    variant: sagemaker.CfnEndpointConfig.ProductionVariantProperty,
    key: kms.IKey,
    no_volume_key_reason: str | None,
    execution_role_arn: str | None = None,
    network: EndpointNetwork | None = None,
    data_capture_config: sagemaker.CfnEndpointConfig.DataCaptureConfigProperty | None = None,
) -> tuple[sagemaker.CfnEndpointConfig, sagemaker.CfnEndpoint]:
    """`Config` (named by CloudFormation) -> `Endpoint` (named `endpoint_name`) under `scope`, with one variant.

    Only the endpoint carries a fixed name, so a changed config is created anew and the endpoint updated in
    place. The config encrypts its instances' volumes with `key`, unless `no_volume_key_reason` says why it
    cannot; then it names no key and the rule packs' findings are acknowledged with that reason. A role and
    network belong to the config only where no model carries them (inference components): it then runs in the
    network with network isolation.
    """
    endpoint_config = sagemaker.CfnEndpointConfig(
        scope,
        "Config",
        production_variants=[variant],
        kms_key_id=None if no_volume_key_reason else key.key_arn,
        data_capture_config=data_capture_config,
        execution_role_arn=execution_role_arn,
        enable_network_isolation=True if network is not None else None,
        vpc_config=sagemaker.CfnEndpointConfig.VpcConfigProperty(
            subnets=network.subnet_ids, security_group_ids=network.security_group_ids
        )
        if network is not None
        else None,
    )
    if no_volume_key_reason:
        acknowledge(endpoint_config, dict.fromkeys(VOLUME_KEY_FINDINGS, no_volume_key_reason))
    endpoint = sagemaker.CfnEndpoint(
        scope,
        "Endpoint",
        endpoint_name=endpoint_name,
        endpoint_config_name=endpoint_config.attr_endpoint_config_name,
    )
    return endpoint_config, endpoint


class ModelEndpoint(Construct):
    """One configured endpoint: CfnModel -> CfnEndpointConfig (named by CloudFormation) -> CfnEndpoint.

    A model or config change creates a new config and updates the endpoint in place, without downtime, because
    only the endpoint carries a fixed name. Instance-based endpoints run in the team VPC with network
    isolation, autoscale on invocations per instance and may scale down out of hours. Serverless classifiers
    take no VPC, network isolation, volume key or data capture: SageMaker Serverless Inference supports none.
    """

    def __init__(
        self,
        scope: Construct,
        id_: str,
        *,
        spec: EndpointSpec,
        endpoint_name: str,
        image_uri: str,
        environment: dict[str, str],
        role: iam.IRole,
        key: kms.IKey,
        network: EndpointNetwork,
        capture_bucket_name: str,
        data_capture: bool,
        office_hours: OfficeHours,
    ) -> None:
        super().__init__(scope, id_)
        self.spec = spec
        self.endpoint_name = endpoint_name
        serverless = spec.serverless is not None
        container = (
            sagemaker.CfnModel.ContainerDefinitionProperty(
                model_package_name=spec.model_package_arn, environment=environment
            )
            if spec.model_package_arn
            else sagemaker.CfnModel.ContainerDefinitionProperty(
                image=image_uri, model_data_url=spec.model_data_url, mode="SingleModel", environment=environment
            )
        )
        self.model = sagemaker.CfnModel(
            self,
            "Model",
            execution_role_arn=role.role_arn,
            # A model package version brings its own image and artifact and is referenced by ARN; an S3
            # artifact runs in the pinned Deep Learning Container as the primary container.
            containers=[container] if spec.model_package_arn else None,
            primary_container=None if spec.model_package_arn else container,
            enable_network_isolation=None if serverless else True,
            vpc_config=None
            if serverless
            else sagemaker.CfnModel.VpcConfigProperty(
                subnets=network.subnet_ids, security_group_ids=network.security_group_ids
            ),
        )

        variant = sagemaker.CfnEndpointConfig.ProductionVariantProperty(
            variant_name=VARIANT_NAME,
            model_name=self.model.attr_model_name,
            initial_variant_weight=1.0,
            **(
                {
                    "serverless_config": sagemaker.CfnEndpointConfig.ServerlessConfigProperty(
                        memory_size_in_mb=spec.serverless.memory_mb, max_concurrency=spec.serverless.max_concurrency
                    )
                }
                if spec.serverless is not None
                else {"instance_type": spec.instance_type, "initial_instance_count": spec.min_instances}
            ),
        )
        capture = None
        # The stage's switch (data_capture.enabled) turns capture off for every endpoint, whatever its percent.
        if data_capture and spec.data_capture_percent > 0 and not serverless:
            capture = sagemaker.CfnEndpointConfig.DataCaptureConfigProperty(
                enable_capture=True,
                initial_sampling_percentage=spec.data_capture_percent,
                destination_s3_uri=f"s3://{capture_bucket_name}/{DATA_CAPTURE_PREFIX}/{endpoint_name}/",
                kms_key_id=key.key_arn,
                capture_options=[
                    sagemaker.CfnEndpointConfig.CaptureOptionProperty(capture_mode="Input"),
                    sagemaker.CfnEndpointConfig.CaptureOptionProperty(capture_mode="Output"),
                ],
                capture_content_type_header=sagemaker.CfnEndpointConfig.CaptureContentTypeHeaderProperty(
                    json_content_types=["application/json"]
                ),
            )
        no_volume_key_reason = None
        if serverless:
            no_volume_key_reason = (
                "Serverless Inference has no storage volume a customer key can encrypt; SageMaker rejects KmsKeyId "
                "for serverless variants. The model artifact itself stays encrypted with the team key in S3."
            )
        elif has_instance_storage(spec.instance_type):
            no_volume_key_reason = (
                f"{local_storage_reason(spec.instance_type)} Data capture is still encrypted with the team key."
            )
        self.endpoint_config, self.endpoint = endpoint_with_config(
            self,
            endpoint_name=endpoint_name,
            variant=variant,
            key=key,
            no_volume_key_reason=no_volume_key_reason,
            data_capture_config=capture,
        )

        self.scalable_target: appscaling.ScalableTarget | None = None
        if not serverless:
            self.scalable_target = self._autoscaling(spec, office_hours)

    def _autoscaling(self, spec: EndpointSpec, office_hours: OfficeHours) -> appscaling.ScalableTarget:
        target = tracked_scalable_target(
            self,
            "ScalableTarget",
            resource_id=f"endpoint/{self.endpoint_name}/variant/{VARIANT_NAME}",
            scalable_dimension="sagemaker:variant:DesiredInstanceCount",
            min_capacity=spec.min_instances,
            max_capacity=spec.max_instances,
            depends_on=self.endpoint,
            policy_id="InvocationsPerInstance",
            metric=appscaling.PredefinedMetric.SAGEMAKER_VARIANT_INVOCATIONS_PER_INSTANCE,
            target_value=spec.invocations_per_instance,
        )
        if spec.scale_down_out_of_hours:
            time_zone = office_hours.timezone
            # Down at the end of the working day (Fridays' covers the weekend), back at its start.
            target.scale_on_schedule(
                "ScaleDownOutOfHours",
                schedule=appscaling.Schedule.expression(office_hours.stop),
                min_capacity=spec.min_instances,
                max_capacity=spec.min_instances,
                time_zone=_time_zone(time_zone),
            )
            target.scale_on_schedule(
                "ScaleUpInOfficeHours",
                schedule=appscaling.Schedule.expression(office_hours.start),
                min_capacity=spec.min_instances,
                max_capacity=spec.max_instances,
                time_zone=_time_zone(time_zone),
            )
        return target


def _time_zone(name: str) -> TimeZone:
    return TimeZone.of(name)
