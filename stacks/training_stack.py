"""Training stack: the training image, the model registry and the FineTune pipeline of one team stage."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from aws_cdk import ArnFormat, CfnOutput, Duration, RemovalPolicy, Stack
from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_events as events
from aws_cdk import aws_events_targets as targets
from aws_cdk import aws_iam as iam
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_logs as logs
from aws_cdk import aws_sagemaker as sagemaker
from aws_cdk import aws_ssm as ssm
from aws_cdk import aws_stepfunctions as sfn
from constructs import Construct

from finetune.contract import (
    ADAPTERS_PREFIX,
    BASE_MODELS_PREFIX,
    CHECKPOINTS_PREFIX,
    DATASETS_PREFIX,
    EVALUATIONS_PREFIX,
    PUBLISHED_OUTPUTS,
    TRAINING_OUTPUT_PREFIX,
)
from stacks import naming
from stacks.components import images
from stacks.components.acknowledgements import acknowledge
from stacks.components.cfn import cfn_resource
from stacks.components.fine_tune_pipeline import FineTunePipeline
from stacks.components.inference_api import PROXY_RUNTIME, ignore_redundant_role_dependency, powertools_layer_arn
from stacks.components.lambda_code import assembled_code
from stacks.components.retention import log_retention
from stacks.components.sagemaker_iam import ecr_login, vpc_conditions, vpc_network_interfaces
from stacks.components.team_topic import TeamTopicTarget
from stacks.components.training_image import TrainingImage
from stacks.data_stack import DataStack
from stacks.settings import StageConfig
from stacks.validate_settings import validate_environment

# The training container's own checks, reused by Validate instead of being restated.
VALIDATE_LAYOUT = {
    "lambda_handlers/__init__.py": "lambda_handlers/__init__.py",
    "lambda_handlers/validate_request": "lambda_handlers/validate_request",
    "finetune/__init__.py": "training_code/finetune/__init__.py",
    "finetune/config.py": "training_code/finetune/config.py",
    "finetune/formats.py": "training_code/finetune/formats.py",
    "finetune/errors.py": "training_code/finetune/errors.py",
    "finetune/metrics.py": "training_code/finetune/metrics.py",
    "finetune/contract.py": "training_code/finetune/contract.py",
}
GATE_LAYOUT = {
    "gate": "lambda_handlers/gate",
    "finetune/__init__.py": "training_code/finetune/__init__.py",
    "finetune/contract.py": "training_code/finetune/contract.py",
}
PACKAGE_ADAPTER_LAYOUT = {
    "package_adapter": "lambda_handlers/package_adapter",
    "finetune/__init__.py": "training_code/finetune/__init__.py",
    "finetune/contract.py": "training_code/finetune/contract.py",
}


class ScopedAccess:
    """IAM statements on literal ARNs of this stage's buckets and key, with the acknowledgement of each wildcard.

    Bucket names are deterministic (``naming.bucket``), so the ARNs are literal: a reviewer reads exactly which
    prefixes a role reaches, and each `prefix/*` wildcard is acknowledged by name.
    """

    def __init__(self, stack: Stack, stage: StageConfig, key_arn: str) -> None:
        self._stack, self._stage, self._key_arn = stack, stage, key_arn
        self.partition = stack.resolve(stack.partition)  # literal ("aws") in an environment-specific stack

    def bucket_arn(self, purpose: str) -> str:
        bucket = naming.bucket(self._stage.qualified_name, purpose, self._stage.account, self._stage.region)
        return f"arn:{self._stack.partition}:s3:::{bucket}"

    def _nag_arn(self, purpose: str, prefix: str) -> str:
        bucket = naming.bucket(self._stage.qualified_name, purpose, self._stage.account, self._stage.region)
        return f"AwsSolutions-IAM5[Resource::arn:{self.partition}:s3:::{bucket}/{prefix}*]"

    def grant(
        self,
        policy: iam.ManagedPolicy,
        *,
        read: Sequence[tuple[str, str]] = (),
        write: Sequence[tuple[str, str]] = (),
        delete: Sequence[tuple[str, str]] = (),
    ) -> dict[str, str]:
        """Object read/write/delete on (bucket purpose, prefix) pairs, listing of those prefixes, and the team
        key for SSE-KMS. Returns the acknowledgements the statements need."""
        acks: dict[str, str] = {}
        for actions, pairs in (
            (["s3:GetObject", "s3:GetObjectVersion"], read),
            (["s3:PutObject", "s3:AbortMultipartUpload"], write),
            (["s3:DeleteObject"], delete),
        ):
            if not pairs:
                continue
            policy.add_statements(
                iam.PolicyStatement(actions=actions, resources=[f"{self.bucket_arn(b)}/{p}*" for b, p in pairs])
            )
            for b, p in pairs:
                acks[self._nag_arn(b, p)] = (
                    f"Objects under the {p or '(whole)'} prefix of this stage's own {b} "
                    "bucket: object keys are chosen by users and jobs at run time."
                )
        for purpose in sorted({b for b, _ in [*read, *write, *delete]}):
            prefixes = sorted({f"{p}*" for b, p in [*read, *write, *delete] if b == purpose})
            policy.add_statements(
                iam.PolicyStatement(
                    actions=["s3:ListBucket"],
                    resources=[self.bucket_arn(purpose)],
                    conditions={"StringLike": {"s3:prefix": prefixes}},
                )
            )
        policy.add_statements(
            iam.PolicyStatement(
                actions=["kms:Decrypt", "kms:Encrypt", "kms:GenerateDataKey", "kms:DescribeKey"],
                resources=[self._key_arn],
            )
        )
        return acks


class TrainingStack(Stack):
    """Fine-tuning for one team stage. Exposes ``training_image``, ``execution_role``, ``state_machine`` and
    ``model_package_group_name``."""

    def __init__(self, scope: Construct, id_: str, *, stage: StageConfig, data: DataStack, **kwargs: Any) -> None:
        super().__init__(
            scope, id_, description=f"finetune-stack {stage.qualified_name}: fine-tuning pipeline", **kwargs
        )
        q = stage.qualified_name
        removal_policy = RemovalPolicy.DESTROY if stage.ephemeral else RemovalPolicy.RETAIN
        retention = log_retention(stage.log_retention_days)

        self.base_image_uri = images.pytorch_training(stage.region, stage.images)
        self.training_image = TrainingImage(self, "TrainingImage", base_image=self.base_image_uri)

        self.model_package_group_name = naming.model_package_group(q)
        self.model_package_group = sagemaker.CfnModelPackageGroup(
            self,
            "ModelPackageGroup",
            model_package_group_name=self.model_package_group_name,
            model_package_group_description=f"Fine-tuned models of {q}",
        )
        # Registered models are the record of what was trained and approved: never deleted with the stack.
        self.model_package_group.apply_removal_policy(RemovalPolicy.RETAIN)

        self.access = ScopedAccess(self, stage, data.team_key.key_arn)
        self.execution_role = self._execution_role(stage, data)
        self.job_security_group = self._job_security_group(stage, data)

        validate, validate_policy = self._function(
            "ValidateRequest",
            f"{q}-finetune-validate",
            assembled_code(VALIDATE_LAYOUT),
            "lambda_handlers.validate_request.handler.lambda_handler",
            validate_environment(stage, data.data_bucket.bucket_name, data.artifacts_bucket.bucket_name),
            data,
            retention,
            removal_policy,
            "Checks a FineTune request and the first lines of its dataset",
        )
        acknowledge(
            cfn_resource(validate_policy, iam.CfnManagedPolicy),
            {
                **self.access.grant(
                    validate_policy, read=[("data", DATASETS_PREFIX), ("artifacts", BASE_MODELS_PREFIX)]
                ),
                **_lambda_acks(f"{q}-finetune-validate"),
            },
        )
        gate, gate_policy = self._function(
            "Gate",
            f"{q}-finetune-gate",
            assembled_code(GATE_LAYOUT),
            "gate.handler.lambda_handler",
            {},
            data,
            retention,
            removal_policy,
            "Compares a training job's evaluation with its base model and threshold",
        )
        acknowledge(
            cfn_resource(gate_policy, iam.CfnManagedPolicy),
            {
                **self.access.grant(
                    gate_policy, read=[("artifacts", TRAINING_OUTPUT_PREFIX)], write=[("artifacts", EVALUATIONS_PREFIX)]
                ),
                **_lambda_acks(f"{q}-finetune-gate"),
            },
        )

        package_adapter: lambda_.Function | None = None
        if any(endpoint.lora for endpoint in stage.endpoints):
            # Only stages with an inference-component endpoint deploy adapters.
            package_adapter, package_adapter_policy = self._function(
                "PackageAdapter",
                f"{q}-finetune-package-adapter",
                assembled_code(PACKAGE_ADAPTER_LAYOUT),
                "package_adapter.handler.lambda_handler",
                {},
                data,
                retention,
                removal_policy,
                "Copies a LoRA job's adapter out of its model archive as an adapter component's artifact",
                timeout=Duration.minutes(15),
                memory_size=1024,
            )
            acknowledge(
                cfn_resource(package_adapter_policy, iam.CfnManagedPolicy),
                {
                    **self.access.grant(
                        package_adapter_policy,
                        read=[("artifacts", TRAINING_OUTPUT_PREFIX)],
                        write=[("artifacts", ADAPTERS_PREFIX)],
                    ),
                    **_lambda_acks(f"{q}-finetune-package-adapter"),
                },
            )

        self.pipeline = FineTunePipeline(
            self,
            "FineTune",
            state_machine_name=naming.fine_tune_state_machine(q),
            qualified_name=q,
            execution_role=self.execution_role,
            training_image_uri=self.training_image.image_uri,
            llm_image_uri=images.lmi_inference(stage.region, stage.images),
            classifier_image_uri=images.huggingface_inference(stage.region, stage.images, gpu=True),
            artifacts_bucket_name=naming.bucket(q, "artifacts", stage.account, stage.region),
            key=data.team_key,
            topic=data.topic,
            vpc_subnet_ids=data.network.vpc.select_subnets(subnet_type=ec2.SubnetType.PRIVATE_ISOLATED).subnet_ids,
            security_group=self.job_security_group,
            model_package_group_name=self.model_package_group_name,
            auto_approve=stage.auto_approve_models,
            network_isolation=stage.training.network_isolation,
            endpoints=stage.endpoints,
            validate_function=validate,
            gate_function=gate,
            package_adapter_function=package_adapter,
            log_retention=retention,
            removal_policy=removal_policy,
        )
        self.state_machine = self.pipeline.state_machine
        ignore_redundant_role_dependency(cfn_resource(self.state_machine, sfn.CfnStateMachine))
        self.state_machine.add_to_role_policy(
            iam.PolicyStatement(
                sid="UseTheTeamKey",  # encrypted execution data, logs and topic
                actions=["kms:Decrypt", "kms:Encrypt", "kms:GenerateDataKey", "kms:DescribeKey"],
                resources=[data.team_key.key_arn],
            )
        )
        self.state_machine.node.add_dependency(self.model_package_group)
        self._acknowledge_pipeline_wildcards(q)

        # Training job state changes of this stage's jobs go to the team topic.
        job_events = events.Rule(
            self,
            "TrainingJobStateChanges",
            rule_name=f"{q}-training-job-state",
            description=f"SageMaker training job state changes of {q} to the team topic",
            event_pattern=events.EventPattern(
                source=["aws.sagemaker"],
                detail_type=["SageMaker Training Job State Change"],
                detail={
                    "TrainingJobName": [{"prefix": f"{q}-"}],
                    "TrainingJobStatus": ["Completed", "Failed", "Stopped"],
                },
            ),
        )
        job_events.add_target(
            TeamTopicTarget(
                data.topic,
                message=events.RuleTargetInput.from_text(
                    f"[{q}] training job {events.EventField.from_path('$.detail.TrainingJobName')} is "
                    f"{events.EventField.from_path('$.detail.TrainingJobStatus')}: "
                    f"{events.EventField.from_path('$.detail.FailureReason')}"
                ),
            )
        )

        if stage.training.start_on_manifest:
            data_bucket = naming.bucket(q, "data", stage.account, stage.region)
            events.Rule(
                self,
                "StartOnManifestUpload",
                rule_name=f"{q}-finetune-on-manifest",
                description=f"Start {q}'s FineTune when a dataset manifest.json is uploaded",
                event_pattern=events.EventPattern(
                    source=["aws.s3"],
                    detail_type=["Object Created"],
                    detail={
                        "bucket": {"name": [data_bucket]},
                        "object": {"key": [{"wildcard": "datasets/*/*/manifest.json"}]},
                    },
                ),
                targets=[
                    targets.SfnStateMachine(
                        self.state_machine,
                        input=events.RuleTargetInput.from_object(
                            {"manifest": f"s3://{data_bucket}/{events.EventField.from_path('$.detail.object.key')}"}
                        ),
                    )
                ],
            )

        parameters = PUBLISHED_OUTPUTS["training"]  # output name -> SSM parameter, shared with the CLI
        for output_id, value, description in (
            (
                "FineTuneStateMachineArn",
                self.state_machine.state_machine_arn,
                "Start a fine-tuning run here (finetune submit)",
            ),
            ("ModelPackageGroupName", self.model_package_group_name, "Model registry of this stage"),
            ("TrainingImageUri", self.training_image.image_uri, "The training image (also run on GPU hosts)"),
            ("SageMakerExecutionRoleArn", self.execution_role.role_arn, "Role of training jobs and models"),
        ):
            CfnOutput(self, output_id, value=value, description=description)
            ssm.StringParameter(
                self,
                f"{output_id}Parameter",
                parameter_name=f"{stage.ssm_prefix}/{parameters[output_id]}",
                string_value=value,
                description=f"finetune-stack {q}: {description}",
            )

    def _execution_role(self, stage: StageConfig, data: DataStack) -> iam.Role:
        """The role SageMaker training jobs and models assume: this stage's buckets, key, image and logs."""
        q = stage.qualified_name
        role = iam.Role(
            self,
            "SageMakerExecutionRole",
            role_name=f"{q}-sagemaker-execution",
            assumed_by=iam.ServicePrincipal("sagemaker.amazonaws.com"),
            description=f"{q}: SageMaker training jobs and models",
            max_session_duration=Duration.hours(12),
        )
        # One customer-managed policy (NIST/HIPAA: no inline policies), every statement listed here.
        policy = iam.ManagedPolicy(self, "SageMakerExecutionPolicy", description=f"{q}: SageMaker jobs and models")
        role.add_managed_policy(policy)
        acks = self.access.grant(
            policy,
            read=[
                ("data", DATASETS_PREFIX),
                ("artifacts", "models/"),
                ("artifacts", TRAINING_OUTPUT_PREFIX),
                ("artifacts", CHECKPOINTS_PREFIX),
            ],
            write=[
                ("artifacts", TRAINING_OUTPUT_PREFIX),
                ("artifacts", CHECKPOINTS_PREFIX),
                ("artifacts", "data-capture/"),
            ],
            delete=[("artifacts", CHECKPOINTS_PREFIX)],
        )
        policy.add_statements(
            iam.PolicyStatement(
                sid="PullTheTrainingImage",
                actions=["ecr:BatchCheckLayerAvailability", "ecr:GetDownloadUrlForLayer", "ecr:BatchGetImage"],
                resources=[self.training_image.repository.repository_arn],
            )
        )
        policy.add_statements(
            iam.PolicyStatement(
                sid="PullDeepLearningContainers",  # the AWS DLC registry of this region (LMI and HF serving images)
                actions=["ecr:BatchCheckLayerAvailability", "ecr:GetDownloadUrlForLayer", "ecr:BatchGetImage"],
                resources=[
                    f"arn:{self.partition}:ecr:{self.region}:"
                    f"{images.registry_account(images.lmi_inference(stage.region, stage.images))}:repository/*"
                ],
            )
        )
        # SageMaker names the log groups: one shared /aws/sagemaker/TrainingJobs group with a stream per job
        # (named after the job), and /aws/sagemaker/Endpoints/<endpoint> per endpoint. Both are held to this
        # stage's job and endpoint names.
        training_logs = self.format_arn(
            service="logs",
            resource="log-group",
            arn_format=ArnFormat.COLON_RESOURCE_NAME,
            resource_name="/aws/sagemaker/TrainingJobs",
        )
        endpoint_logs = self.format_arn(
            service="logs",
            resource="log-group",
            arn_format=ArnFormat.COLON_RESOURCE_NAME,
            resource_name=f"/aws/sagemaker/Endpoints/{q}-*",
        )
        policy.add_statements(
            iam.PolicyStatement(
                sid="WriteJobAndEndpointLogs",
                actions=["logs:CreateLogGroup", "logs:CreateLogStream", "logs:PutLogEvents", "logs:DescribeLogStreams"],
                resources=[training_logs, f"{training_logs}:log-stream:{q}-*", endpoint_logs],
            )
        )
        # cloudwatch:PutMetricData has no resource-level permissions; the namespace condition is the only scope,
        # and SageMaker's training metrics namespace is AWS's, shared by every job of the account.
        policy.add_statements(
            iam.PolicyStatement(
                sid="PublishTrainingMetrics",
                actions=["cloudwatch:PutMetricData"],
                resources=["*"],
                conditions={"StringEquals": {"cloudwatch:namespace": ["/aws/sagemaker/TrainingJobs"]}},
            )
        )
        policy.add_statements(
            vpc_network_interfaces(
                conditions=vpc_conditions(
                    self,
                    vpc_id=data.network.vpc.vpc_id,
                    subnet_ids=data.network.vpc.select_subnets(subnet_type=ec2.SubnetType.PRIVATE_ISOLATED).subnet_ids,
                )
            )
        )
        policy.add_statements(ecr_login())
        partition = self.resolve(self.partition)
        acknowledge(
            cfn_resource(policy, iam.CfnManagedPolicy),
            {
                "AwsSolutions-IAM5[Resource::*]": (
                    "Three actions only, each without resource-level permissions: ecr:GetAuthorizationToken, "
                    "cloudwatch:PutMetricData (limited to the /aws/sagemaker/TrainingJobs namespace by condition) and "
                    "the EC2 network-interface actions SageMaker needs to join the VPC (limited to this stage's VPC "
                    "and subnets by condition)."
                ),
                **acks,
                f"AwsSolutions-IAM5[Resource::arn:{partition}:ecr:{stage.region}:"
                f"{images.registry_account(images.lmi_inference(stage.region, stage.images))}:repository/*]": (
                    "Read-only pulls from AWS's Deep Learning Container registry of this region, whose repository "
                    "names (djl-inference, huggingface-pytorch-inference) follow the pinned image versions."
                ),
                f"AwsSolutions-IAM5[Resource::arn:{partition}:logs:{stage.region}:{stage.account}"
                f":log-group:/aws/sagemaker/TrainingJobs:log-stream:{q}-*]": (
                    "SageMaker writes one stream per training job instance into the account's TrainingJobs log group, "
                    f"named after the job; this stage's jobs are all named {q}-..."
                ),
                f"AwsSolutions-IAM5[Resource::arn:{partition}:logs:{stage.region}:{stage.account}"
                f":log-group:/aws/sagemaker/Endpoints/{q}-*]": (
                    "SageMaker creates one log group per endpoint, named after it; this stage's endpoints and the "
                    f"models Deploy creates are all named {q}-..."
                ),
            },
        )
        return role

    def _job_security_group(self, stage: StageConfig, data: DataStack) -> ec2.SecurityGroup:
        group = ec2.SecurityGroup(
            self,
            "TrainingJobSecurityGroup",
            vpc=data.network.vpc,
            allow_all_outbound=False,
            description=f"{stage.qualified_name}: training jobs (their own traffic and the VPC endpoints only)",
        )
        group.add_ingress_rule(group, ec2.Port.all_tcp(), "Distributed training between the job's instances")
        group.add_egress_rule(group, ec2.Port.all_tcp(), "Distributed training between the job's instances")
        # Out only to the interface endpoints (their security group) and to S3 through the gateway endpoint (the
        # region's S3 prefix list): SageMaker moves channels, checkpoints and output over these ENIs.
        group.add_egress_rule(
            ec2.Peer.security_group_id(data.network.endpoint_security_group.security_group_id),
            ec2.Port.tcp(443),
            "HTTPS to the VPC interface endpoints",
        )
        group.add_egress_rule(
            ec2.Peer.prefix_list(data.network.s3_prefix_list_id),
            ec2.Port.tcp(443),
            "HTTPS to S3 through the gateway endpoint",
        )
        return group

    def _function(
        self,
        construct_id: str,
        function_name: str,
        code: lambda_.Code,
        handler: str,
        environment: dict[str, str],
        data: DataStack,
        retention: logs.RetentionDays,
        removal_policy: RemovalPolicy,
        description: str,
        *,
        timeout: Duration | None = None,
        memory_size: int = 512,
    ) -> tuple[lambda_.Function, iam.ManagedPolicy]:
        log_group = logs.LogGroup(
            self,
            f"{construct_id}Logs",
            log_group_name=f"/aws/lambda/{function_name}",
            retention=retention,
            encryption_key=data.team_key,
            removal_policy=removal_policy,
        )
        # Its own role with one customer-managed policy (no inline or AWS managed policies): logs to its own
        # group, X-Ray, the VPC network interfaces, and what the caller adds to the policy returned with it.
        policy = iam.ManagedPolicy(self, f"{construct_id}Policy", description=f"{function_name}: {description}")
        role = iam.Role(
            self,
            f"{construct_id}Role",
            assumed_by=iam.ServicePrincipal("lambda.amazonaws.com"),
            description=f"{function_name}: {description}",
            managed_policies=[policy],
        )
        policy.add_statements(
            iam.PolicyStatement(
                actions=["logs:CreateLogStream", "logs:PutLogEvents"], resources=[log_group.log_group_arn]
            ),
            iam.PolicyStatement(actions=["xray:PutTraceSegments", "xray:PutTelemetryRecords"], resources=["*"]),
            iam.PolicyStatement(
                actions=[
                    "ec2:CreateNetworkInterface",
                    "ec2:DescribeNetworkInterfaces",
                    "ec2:DeleteNetworkInterface",
                    "ec2:AssignPrivateIpAddresses",
                    "ec2:UnassignPrivateIpAddresses",
                ],
                resources=["*"],
            ),
        )
        security_group = ec2.SecurityGroup(
            self,
            f"{construct_id}SecurityGroup",
            vpc=data.network.vpc,
            allow_all_outbound=False,
            description=f"{function_name}: HTTPS to the VPC endpoints only",
        )
        security_group.add_egress_rule(
            ec2.Peer.security_group_id(data.network.endpoint_security_group.security_group_id),
            ec2.Port.tcp(443),
            "HTTPS to the VPC interface endpoints",
        )
        security_group.add_egress_rule(
            ec2.Peer.prefix_list(data.network.s3_prefix_list_id),
            ec2.Port.tcp(443),
            "HTTPS to S3 through the gateway endpoint",
        )
        function = lambda_.Function(
            self,
            construct_id,
            role=role.without_policy_updates(),  # everything it may do is in `policy`
            function_name=function_name,
            description=description,
            runtime=PROXY_RUNTIME,  # the runtime the Powertools layer is built for
            architecture=lambda_.Architecture.ARM_64,
            code=code,
            handler=handler,
            environment=environment,
            timeout=timeout or Duration.seconds(60),
            memory_size=memory_size,
            log_group=log_group,
            tracing=lambda_.Tracing.ACTIVE,
            layers=[
                lambda_.LayerVersion.from_layer_version_arn(
                    self, f"{construct_id}Powertools", powertools_layer_arn(self.partition, self.region)
                )
            ],
            vpc=data.network.vpc,
            vpc_subnets=ec2.SubnetSelection(subnet_type=ec2.SubnetType.PRIVATE_ISOLATED),
            security_groups=[security_group],
            reserved_concurrent_executions=10,
        )
        ignore_redundant_role_dependency(cfn_resource(function, lambda_.CfnFunction))
        acknowledge(
            cfn_resource(function, lambda_.CfnFunction),
            {"NIST.800.53.R5-LambdaDLQ": _NO_DLQ, "HIPAA.Security-LambdaDLQ": _NO_DLQ},
        )
        return function, policy

    def _acknowledge_pipeline_wildcards(self, q: str) -> None:
        policy = cfn_resource(self.state_machine.role.node.find_child("DefaultPolicy"), iam.CfnPolicy)
        p = self.resolve(self.partition)
        validate_request = self.get_logical_id(
            cfn_resource(self.node.find_child("ValidateRequest"), lambda_.CfnFunction)
        )
        gate = self.get_logical_id(cfn_resource(self.node.find_child("Gate"), lambda_.CfnFunction))
        package_adapter = self.node.try_find_child("PackageAdapter")
        acknowledge(
            policy,
            {
                "NIST.800.53.R5-IAMNoInlinePolicy": _SFN_INLINE,
                "HIPAA.Security-IAMNoInlinePolicy": _SFN_INLINE,
                f"AwsSolutions-IAM5[Resource::arn:{p}:sagemaker:{self.region}:{self.account}:training-job/{q}-*]": (
                    "Training job names are generated per attempt (stage prefix + execution + random suffix) so a "
                    "retry never collides; the grant covers this stage's job names only, to create, describe and stop "
                    "them."
                ),
                f"AwsSolutions-IAM5[Resource::arn:{p}:sagemaker:{self.region}:{self.account}:model/{q}-*]": (
                    "Deploy creates one model per training job, named after the job ({team}-{stage}-...); the name is "
                    "not known at deploy."
                ),
                f"AwsSolutions-IAM5[Resource::arn:{p}:sagemaker:{self.region}:{self.account}:endpoint-config/{q}-*]": (
                    "Deploy creates one endpoint config per training job, named after the job "
                    "({team}-{stage}-...); the name is not known when the stack is deployed."
                ),
                f"AwsSolutions-IAM5[Resource::arn:{p}:sagemaker:{self.region}:{self.account}:endpoint/{q}-*]": (
                    "Only this stage's endpoints, which are all named {team}-{stage}-{name}; Deploy updates "
                    "and describes the one the request names."
                ),
                f"AwsSolutions-IAM5[Resource::arn:{p}:sagemaker:{self.region}:{self.account}"
                f":model-package/{naming.model_package_group(q)}/*]": (
                    "Versions of this stage's own model package group; version numbers are assigned by SageMaker."
                ),
                f"AwsSolutions-IAM5[Resource::<{validate_request}.Arn>:*]": _LAMBDA_VERSIONS,
                f"AwsSolutions-IAM5[Resource::<{gate}.Arn>:*]": _LAMBDA_VERSIONS,
                **(
                    {
                        f"AwsSolutions-IAM5[Resource::<{self.get_logical_id(cfn_resource(package_adapter, lambda_.CfnFunction))}.Arn>:*]": _LAMBDA_VERSIONS  # noqa: E501
                    }
                    if package_adapter is not None
                    else {}
                ),
                f"AwsSolutions-IAM5[Resource::arn:{p}:sagemaker:{self.region}:{self.account}"
                f":inference-component/{q}-*]": (
                    "Deploy adds or updates the adapter component a LoRA run names, "
                    "{team}-{stage}-{endpoint}-{adapter}; the grant covers this stage's components only (created and "
                    "described, never deleted)."
                ),
                "AwsSolutions-IAM5[Resource::*]": (
                    "X-Ray trace segments and CloudWatch Logs log delivery, which have no resource-level permissions "
                    "(added by CDK for tracing and logging of the state machine)."
                ),
            },
        )


def _lambda_acks(function_name: str) -> dict[str, str]:
    return {
        "AwsSolutions-IAM5[Resource::*]": (
            "X-Ray PutTraceSegments/PutTelemetryRecords and the EC2 network-interface actions a VPC-attached Lambda "
            f"needs, none of which has resource-level permissions; everything else {function_name} may do is scoped "
            "to this stage's buckets, key and log group."
        )
    }


_SFN_INLINE = (
    "The state machine's role is created by CDK, which writes the statements each task needs (Lambda "
    "invoke, SNS publish, SageMaker calls on this stage's resources) into its default inline policy."
)
_NO_DLQ = (
    "Invoked synchronously by the FineTune state machine, which catches every error and notifies the team "
    "topic; a dead-letter queue only receives failed asynchronous invocations, which never happen here."
)


_LAMBDA_VERSIONS = (
    "Invoking any version or alias of this stage's own Validate, Gate or PackageAdapter function (CDK adds the :* "
    "qualifier to the function ARN)."
)
