"""The FineTune state machine: Validate -> Train -> Gate -> Register -> (Deploy) -> Notify.

Every failure path publishes to the team topic and ends in a Fail state that carries the cause.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from aws_cdk import Duration, RemovalPolicy, Stack
from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_logs as logs
from aws_cdk import aws_sns as sns
from aws_cdk import aws_stepfunctions as sfn
from aws_cdk import aws_stepfunctions_tasks as tasks
from constructs import Construct

from lambda_handlers.inference_proxy.settings import qualified_component_name
from stacks import naming
from stacks.components.images import serving_environment
from stacks.settings import EndpointSpec

_TRAINING_CODE = Path(__file__).resolve().parents[2] / "training_code"
if str(_TRAINING_CODE) not in sys.path:
    sys.path.insert(0, str(_TRAINING_CODE))
from finetune.contract import (  # noqa: E402  (stdlib only; adapters/<endpoint>/<adapter>/<job>/adapter.tar.gz)
    ADAPTER_ARCHIVE,
    CHECKPOINTS_PREFIX,
    EVALUATIONS_PREFIX,
    TRAINING_OUTPUT_PREFIX,
    adapter_prefix,
)
from finetune.contract import TASK_OF_ENDPOINT_KIND as TASK_OF_KIND  # noqa: E402  (stdlib only)
from finetune.metrics import METRIC_DEFINITIONS  # noqa: E402  (stdlib only: no torch needed to synthesize)


def _pascal(name: str) -> str:
    return "".join(part.capitalize() for part in name.split("-"))


CAPACITY_RETRIES = 3


def _job_name() -> str:
    """`{prefix}-{8 hex}`: the prefix comes from Validate (the stage name and the execution), the suffix is new
    on every attempt, so a retried Train never collides with the job it replaces."""
    return (
        "States.Format('{}-{}', $.request.job_name_prefix, "
        "States.ArrayGetItem(States.StringSplit(States.UUID(), '-'), 0))"
    )


class FineTunePipeline(Construct):
    """The ``FineTune`` Step Functions state machine of one team stage and its Lambda steps."""

    def __init__(
        self,
        scope: Construct,
        id_: str,
        *,
        state_machine_name: str,
        qualified_name: str,
        execution_role: iam.IRole,
        training_image_uri: str,
        llm_image_uri: str,
        classifier_image_uri: str,
        artifacts_bucket_name: str,
        key: kms.IKey,
        topic: sns.ITopic,
        vpc_subnet_ids: list[str],
        security_group: ec2.ISecurityGroup,
        model_package_group_name: str,
        auto_approve: bool,
        network_isolation: bool,
        endpoints: tuple[EndpointSpec, ...],
        validate_function: lambda_.IFunction,
        gate_function: lambda_.IFunction,
        log_retention: logs.RetentionDays,
        package_adapter_function: lambda_.IFunction | None = None,
        removal_policy: RemovalPolicy,
    ) -> None:
        super().__init__(scope, id_)
        stack = Stack.of(self)
        artifacts = f"s3://{artifacts_bucket_name}"
        vpc_config = {"SecurityGroupIds": [security_group.security_group_id], "Subnets": vpc_subnet_ids}

        def notify_and_fail(name: str, error: str, cause_path: str) -> sfn.IChainable:
            publish = tasks.SnsPublish(
                self,
                f"Notify{name}",
                topic=topic,
                subject=sfn.JsonPath.format(f"[{qualified_name}] FineTune {{}}: {name}", sfn.JsonPath.execution_name),
                message=sfn.TaskInput.from_object(
                    {
                        "pipeline": state_machine_name,
                        "execution": sfn.JsonPath.execution_id,
                        "result": name,
                        "error": sfn.JsonPath.string_at(f"{cause_path}.Error"),
                        "cause": sfn.JsonPath.string_at(f"{cause_path}.Cause"),
                    }
                ),
                result_path=sfn.JsonPath.DISCARD,
            )
            return publish.next(sfn.Fail(self, f"{name}Failed", error=error, cause_path=f"{cause_path}.Cause"))

        # Validate: the request, the team's limits and the dataset's first lines.
        validate = tasks.LambdaInvoke(
            self,
            "Validate",
            lambda_function=validate_function,
            payload=sfn.TaskInput.from_json_path_at("$"),  # the execution input as the user gave it
            result_selector={"request.$": "$.Payload"},
            result_path="$.validated",
            retry_on_service_exceptions=True,
        )
        validate.add_catch(
            notify_and_fail("Validation", "InvalidRequest", "$.failure"), errors=["States.ALL"], result_path="$.failure"
        )
        # run_id: drawn once per execution, after Validate, and carried through every Train attempt. The
        # checkpoint prefix holds it, so a spot restart or a Train retry of this execution resumes its own
        # checkpoints while another execution (any dataset, version or settings) never sees them.
        unwrap = sfn.Pass(
            self,
            "UseValidatedRequest",
            parameters={"request.$": "$.validated.request", "capacity_attempts": 0, "run_id.$": "States.UUID()"},
        )

        # Train: a SageMaker training job, waited on (.sync). CDK's task construct lacks spot, checkpoints and
        # inter-container encryption, so the state is written out and its IAM added below.
        train = sfn.CustomState(
            self,
            "Train",
            state_json={
                "Type": "Task",
                "Resource": f"arn:{stack.partition}:states:::sagemaker:createTrainingJob.sync",
                "Parameters": {
                    "TrainingJobName.$": _job_name(),
                    "RoleArn": execution_role.role_arn,
                    "AlgorithmSpecification": {
                        "TrainingImage": training_image_uri,
                        "TrainingInputMode": "File",
                        "MetricDefinitions": METRIC_DEFINITIONS,
                        "EnableSageMakerMetricsTimeSeries": True,
                    },
                    "HyperParameters.$": "$.request.hyperparameters",
                    "InputDataConfig.$": "$.request.input_data_config",
                    "OutputDataConfig": {
                        "S3OutputPath": f"{artifacts}/{TRAINING_OUTPUT_PREFIX}",
                        "KmsKeyId": key.key_arn,
                    },
                    "CheckpointConfig": {
                        "S3Uri.$": f"States.Format('{artifacts}/{CHECKPOINTS_PREFIX}{{}}/{{}}/', "
                        "$.request.job_name_prefix, $.run_id)",
                        "LocalPath": "/opt/ml/checkpoints",
                    },
                    "ResourceConfig": {
                        "InstanceType.$": "$.request.instance_type",
                        "InstanceCount.$": "$.request.instance_count",
                        "VolumeSizeInGB.$": "$.request.volume_size_gb",
                        "VolumeKmsKeyId": key.key_arn,
                    },
                    "StoppingCondition.$": "$.request.stopping_condition",
                    "EnableManagedSpotTraining.$": "$.request.spot",
                    "VpcConfig": vpc_config,
                    "EnableInterContainerTrafficEncryption": True,
                    # Isolated: the container reaches no network (SageMaker alone moves the channels, checkpoints and
                    # output), so a base model must come from the `model` channel, not a hub download.
                    "EnableNetworkIsolation": network_isolation,
                    "Environment": {
                        "HF_HUB_OFFLINE": "1" if network_isolation else "0",
                        "TOKENIZERS_PARALLELISM": "false",
                    },
                    "Tags": [
                        {"Key": "finetune-stack:stage", "Value": qualified_name},
                        {"Key": "finetune-stack:execution", "Value.$": "$$.Execution.Name"},
                    ],
                },
                "ResultSelector": {
                    "name.$": "$.TrainingJobName",
                    "model_data_url.$": "$.ModelArtifacts.S3ModelArtifacts",
                    "output_archive_uri.$": "States.Format('{}{}/output/output.tar.gz', "
                    "$.OutputDataConfig.S3OutputPath, $.TrainingJobName)",
                    "billable_seconds.$": "$.BillableTimeInSeconds",
                },
                "ResultPath": "$.job",
            },
        )
        # Only capacity shortfalls are worth another try; a failed job is the user's to fix.
        train.add_retry(
            errors=["SageMaker.ResourceLimitExceededException", "SageMaker.ThrottlingException"],
            interval=Duration.minutes(2),
            max_attempts=CAPACITY_RETRIES,
            backoff_rate=2,
        )
        capacity_wait = sfn.Wait(self, "WaitForCapacity", time=sfn.WaitTime.duration(Duration.minutes(5)))
        count_attempt = sfn.Pass(
            self,
            "CountCapacityAttempt",
            parameters={
                "request.$": "$.request",
                "run_id.$": "$.run_id",  # the same execution resumes its own checkpoints
                "capacity_attempts.$": "States.MathAdd($.capacity_attempts, 1)",
            },
        )
        is_capacity = sfn.Choice(self, "IsCapacityError")
        train_failed = notify_and_fail("Training", "TrainingFailed", "$.failure")
        is_capacity.when(
            sfn.Condition.and_(
                sfn.Condition.string_matches("$.failure.Cause", "*CapacityError*"),
                sfn.Condition.number_less_than("$.capacity_attempts", CAPACITY_RETRIES),
            ),
            capacity_wait.next(count_attempt).next(train),
        )
        is_capacity.otherwise(train_failed)
        train.add_catch(is_capacity, errors=["States.ALL"], result_path="$.failure")

        # Gate: the task's main metric against the base model and the threshold.
        gate = tasks.LambdaInvoke(
            self,
            "Gate",
            lambda_function=gate_function,
            payload=sfn.TaskInput.from_object(
                {
                    "output_archive_uri": sfn.JsonPath.string_at("$.job.output_archive_uri"),
                    "evaluation_s3_uri": sfn.JsonPath.format(
                        f"{artifacts}/{EVALUATIONS_PREFIX}{{}}/evaluation.json", sfn.JsonPath.string_at("$.job.name")
                    ),
                    "threshold": sfn.JsonPath.string_at("$.request.threshold"),
                }
            ),
            result_selector={"gate.$": "$.Payload"},
            result_path="$.gated",
            retry_on_service_exceptions=True,
        )
        gate.add_catch(
            notify_and_fail("Evaluation", "EvaluationUnreadable", "$.failure"),
            errors=["States.ALL"],
            result_path="$.failure",
        )
        passed = sfn.Choice(self, "PassedGate")
        gate_rejected = sfn.Pass(
            self,
            "DescribeGateRejection",
            parameters={"Error": "GateRejected", "Cause.$": "$.gated.gate.reason"},
            result_path="$.failure",
        )
        gate_rejected.next(notify_and_fail("Gate", "GateRejected", "$.failure"))

        # Register: a model package in the team's group, with the evaluation as model-quality statistics.
        approval = "Approved" if auto_approve else "PendingManualApproval"

        def register(name: str, image: str, kind: str) -> tasks.CallAwsService:
            step = tasks.CallAwsService(
                self,
                name,
                service="sagemaker",
                action="createModelPackage",
                parameters={
                    "ModelPackageGroupName": model_package_group_name,
                    "ModelPackageDescription.$": "States.Format('{} from execution {}', $.job.name, $$.Execution.Name)",
                    "ModelApprovalStatus": approval,
                    "InferenceSpecification": {
                        # The serving container's settings travel with the package: a model created from it
                        # (Deploy, BatchInfer) serves the artifact the way the stage's endpoints do.
                        "Containers": [
                            {
                                "Image": image,
                                "ModelDataUrl.$": "$.job.model_data_url",
                                "Environment": serving_environment(kind),
                            }
                        ],
                        "SupportedContentTypes": ["application/json"],
                        "SupportedResponseMIMETypes": ["application/json"],
                    },
                    "ModelMetrics": {
                        "ModelQuality": {
                            "Statistics": {
                                "ContentType": "application/json",
                                "S3Uri.$": "$.gated.gate.evaluation_s3_uri",
                            }
                        }
                    },
                    "CustomerMetadataProperties": {
                        "task.$": "$.request.hyperparameters.task",
                        "training_job.$": "$.job.name",
                        "gate.$": "$.gated.gate.reason",
                    },
                },
                iam_resources=[
                    stack.format_arn(
                        service="sagemaker", resource="model-package", resource_name=f"{model_package_group_name}/*"
                    ),
                    stack.format_arn(
                        service="sagemaker", resource="model-package-group", resource_name=model_package_group_name
                    ),
                ],
                result_selector={"arn.$": "$.ModelPackageArn", "approval": approval},
                result_path="$.package",
            )
            step.add_catch(
                notify_and_fail(f"{name}Step", "RegistrationFailed", "$.failure"),
                errors=["States.ALL"],
                result_path="$.failure",
            )
            return step

        register_llm = register("RegisterLlm", llm_image_uri, "llm")
        register_classifier = register("RegisterClassifier", classifier_image_uri, "classifier")
        by_task = sfn.Choice(self, "RegisterByTask")
        by_task.when(sfn.Condition.string_equals("$.request.hyperparameters.task", "causal-lm"), register_llm)
        by_task.otherwise(register_classifier)

        succeed = sfn.Succeed(self, "Done")
        notify_success = tasks.SnsPublish(
            self,
            "NotifySuccess",
            topic=topic,
            subject=sfn.JsonPath.format(f"[{qualified_name}] FineTune {{}}: succeeded", sfn.JsonPath.execution_name),
            message=sfn.TaskInput.from_object(
                {
                    "pipeline": state_machine_name,
                    "execution": sfn.JsonPath.execution_id,
                    "result": "Succeeded",
                    "training_job": sfn.JsonPath.string_at("$.job.name"),
                    "model_package": sfn.JsonPath.string_at("$.package.arn"),
                    "approval": sfn.JsonPath.string_at("$.package.approval"),
                    "gate": sfn.JsonPath.string_at("$.gated.gate.reason"),
                }
            ),
            result_path=sfn.JsonPath.DISCARD,
        ).next(succeed)

        after_register: sfn.IChainable = notify_success
        if endpoints:
            # A stage without endpoints has no Deploy branch at all (Validate already refuses its deploy_to).
            deploy_chain = self._deploy(
                endpoints=endpoints,
                qualified_name=qualified_name,
                execution_role=execution_role,
                key=key,
                vpc_config=vpc_config,
                notify_and_fail=notify_and_fail,
                done=notify_success,
                artifacts_bucket_name=artifacts_bucket_name,
                package_adapter_function=package_adapter_function,
            )
            wants_deploy = sfn.Choice(self, "DeployRequested")
            wants_deploy.when(
                sfn.Condition.and_(
                    sfn.Condition.is_present("$.request.deploy_to"),
                    sfn.Condition.is_not_null("$.request.deploy_to"),
                    sfn.Condition.string_equals("$.package.approval", "Approved"),
                ),
                deploy_chain,
            )
            wants_deploy.otherwise(notify_success)
            after_register = wants_deploy
        register_llm.next(after_register)
        register_classifier.next(after_register)

        passed.when(sfn.Condition.boolean_equals("$.gated.gate.passed", True), by_task)
        passed.otherwise(gate_rejected)

        definition = validate.next(unwrap).next(train).next(gate).next(passed)

        self.log_group = logs.LogGroup(
            self,
            "Logs",
            log_group_name=f"/aws/vendedlogs/states/{state_machine_name}",
            retention=log_retention,
            encryption_key=key,
            removal_policy=removal_policy,
        )
        self.state_machine = sfn.StateMachine(
            self,
            "StateMachine",
            state_machine_name=state_machine_name,
            definition_body=sfn.DefinitionBody.from_chainable(definition),
            tracing_enabled=True,
            logs=sfn.LogOptions(destination=self.log_group, level=sfn.LogLevel.ALL, include_execution_data=True),
            timeout=Duration.days(8),
            encryption_configuration=sfn.CustomerManagedEncryptionConfiguration(key),
        )
        self._grant_training(stack, execution_role, model_package_group_name, qualified_name)

    def _grant_training(self, stack: Stack, execution_role: iam.IRole, group: str, qualified_name: str) -> None:
        """What the Train and Deploy states need and CustomState cannot infer."""
        role = self.state_machine.role
        # Every job is named {team}-{stage}-...: the grant reaches this stage's jobs only (the config check
        # rejects another stage of the account whose name extends this one with '-').
        training_jobs = stack.format_arn(
            service="sagemaker", resource="training-job", resource_name=f"{qualified_name}-*"
        )
        role.add_to_principal_policy(
            iam.PolicyStatement(
                sid="RunTrainingJobs",
                actions=[
                    "sagemaker:CreateTrainingJob",
                    "sagemaker:DescribeTrainingJob",
                    "sagemaker:StopTrainingJob",
                    "sagemaker:AddTags",
                ],
                resources=[training_jobs],
            )
        )
        role.add_to_principal_policy(
            iam.PolicyStatement(
                sid="PassExecutionRoleToSageMaker",
                actions=["iam:PassRole"],
                resources=[execution_role.role_arn],
                conditions={"StringEquals": {"iam:PassedToService": "sagemaker.amazonaws.com"}},
            )
        )
        role.add_to_principal_policy(
            iam.PolicyStatement(
                sid="SyncTrainingJobEvents",
                actions=["events:PutTargets", "events:PutRule", "events:DescribeRule"],
                resources=[
                    stack.format_arn(
                        service="events",
                        resource="rule",
                        resource_name="StepFunctionsGetEventsForSageMakerTrainingJobsRule",
                    )
                ],
            )
        )
        self.training_job_arn_pattern = training_jobs

    def _deploy(
        self,
        *,
        endpoints: tuple[EndpointSpec, ...],
        qualified_name: str,
        execution_role: iam.IRole,
        key: kms.IKey,
        vpc_config: dict[str, Any],
        notify_and_fail: Callable[[str, str, str], sfn.IChainable],
        done: sfn.IChainable,
        artifacts_bucket_name: str,
        package_adapter_function: lambda_.IFunction | None,
    ) -> sfn.IChainable:
        """Model -> endpoint config -> UpdateEndpoint -> poll until InService; one branch per configured endpoint
        whose kind matches the task (at least one endpoint). A failed update leaves SageMaker serving the previous
        config."""
        stack = Stack.of(self)
        unknown = sfn.Pass(
            self,
            "DescribeUnknownEndpoint",
            parameters={
                "Error": "UnknownEndpoint",
                "Cause.$": "States.Format('deploy_to {} names no endpoint of this stage for task {}', "
                "$.request.deploy_to, $.request.hyperparameters.task)",
            },
            result_path="$.failure",
        )
        unknown.next(notify_and_fail("Deploy", "DeployFailed", "$.failure"))
        pick = sfn.Choice(self, "PickEndpoint")
        model_name = "States.Format('{}-m', $.job.name)"
        create_model = tasks.CallAwsService(
            self,
            "CreateModel",
            service="sagemaker",
            action="createModel",
            parameters={
                "ModelName.$": model_name,
                "ExecutionRoleArn": execution_role.role_arn,
                "PrimaryContainer": {"ModelPackageName.$": "$.package.arn"},
                "VpcConfig": vpc_config,
                "EnableNetworkIsolation": True,
            },
            # Named {job}-m, and every job name starts with {team}-{stage}-.
            iam_resources=[
                stack.format_arn(service="sagemaker", resource="model", resource_name=f"{qualified_name}-*")
            ],
            additional_iam_statements=[
                iam.PolicyStatement(
                    actions=["iam:PassRole"],
                    resources=[execution_role.role_arn],
                    conditions={"StringEquals": {"iam:PassedToService": "sagemaker.amazonaws.com"}},
                )
            ],
            result_path=sfn.JsonPath.DISCARD,
        )
        config_arns = [
            stack.format_arn(service="sagemaker", resource="endpoint-config", resource_name=f"{qualified_name}-*")
        ]

        def endpoint_config(name: str, variant: dict[str, Any], kms_key: bool) -> tasks.CallAwsService:
            parameters: dict[str, Any] = {
                "EndpointConfigName.$": "States.Format('{}-c', $.job.name)",
                "ProductionVariants": [{"VariantName": "AllTraffic", "ModelName.$": model_name, **variant}],
            }
            if kms_key:
                parameters["KmsKeyId"] = key.key_arn
            return tasks.CallAwsService(
                self,
                name,
                service="sagemaker",
                action="createEndpointConfig",
                parameters=parameters,
                iam_resources=config_arns,
                result_path=sfn.JsonPath.DISCARD,
            )

        update = tasks.CallAwsService(
            self,
            "UpdateEndpoint",
            service="sagemaker",
            action="updateEndpoint",
            parameters={
                "EndpointName.$": "$.target.endpoint_name",
                "EndpointConfigName.$": "States.Format('{}-c', $.job.name)",
                "RetainAllVariantProperties": False,
            },
            iam_resources=[
                stack.format_arn(service="sagemaker", resource="endpoint", resource_name=f"{qualified_name}-*"),
                *config_arns,
            ],
            result_path=sfn.JsonPath.DISCARD,
        )
        wait = sfn.Wait(self, "WaitForEndpoint", time=sfn.WaitTime.duration(Duration.minutes(1)))
        describe = tasks.CallAwsService(
            self,
            "DescribeEndpoint",
            service="sagemaker",
            action="describeEndpoint",
            parameters={"EndpointName.$": "$.target.endpoint_name"},
            iam_resources=[
                stack.format_arn(service="sagemaker", resource="endpoint", resource_name=f"{qualified_name}-*")
            ],
            result_selector={
                "status.$": "$.EndpointStatus",
                "config.$": "$.EndpointConfigName",
                "reason.$": "States.JsonToString($)",
            },
            result_path="$.endpoint",
        )
        deployed = sfn.Choice(self, "EndpointUpdated")
        rollback = sfn.Pass(
            self,
            "DescribeDeployFailure",
            parameters={
                "Error": "DeployFailed",
                # One literal template: intrinsic arguments have no string concatenation.
                "Cause.$": "States.Format('endpoint {} did not take the new config; it keeps serving the previous one. "
                "Describe: {}', $.target.endpoint_name, $.endpoint.reason)",
            },
            result_path="$.failure",
        )
        deploy_failed = notify_and_fail("DeployStep", "DeployFailed", "$.failure")
        rollback.next(deploy_failed)
        # A call that failed outright (CreateModel, CreateEndpointConfig, UpdateEndpoint, DescribeEndpoint) leaves
        # no $.endpoint to describe: its Catch result is the cause, so it gets its own description.
        call_failed = sfn.Pass(
            self,
            "DescribeDeployError",
            parameters={
                "Error": "DeployFailed",
                "Cause.$": "States.Format('deploying to endpoint {} failed; it keeps serving the previous config. "
                "{}: {}', $.target.endpoint_name, $.failure.Error, $.failure.Cause)",
            },
            result_path="$.failure",
        )
        call_failed.next(deploy_failed)
        deployed.when(
            sfn.Condition.and_(
                sfn.Condition.string_equals("$.endpoint.status", "InService"),
                sfn.Condition.string_equals_json_path("$.endpoint.config", "$.target.config_name"),
            ),
            done,
        )
        deployed.when(
            sfn.Condition.or_(
                sfn.Condition.string_equals("$.endpoint.status", "Updating"),
                sfn.Condition.string_equals("$.endpoint.status", "SystemUpdating"),
                sfn.Condition.string_equals("$.endpoint.status", "Creating"),
            ),
            wait,
        )
        deployed.otherwise(rollback)
        wait.next(describe).next(deployed)
        update.next(wait)
        for step in (create_model, update, describe):
            step.add_catch(call_failed, errors=["States.ALL"], result_path="$.failure")

        instance_config = endpoint_config(
            "CreateEndpointConfig",
            {"InstanceType.$": "$.target.instance_type", "InitialInstanceCount.$": "$.target.instance_count"},
            kms_key=True,
        )
        serverless_config = endpoint_config(
            "CreateServerlessEndpointConfig",
            {
                "ServerlessConfig": {
                    "MemorySizeInMB.$": "$.target.memory_mb",
                    "MaxConcurrency.$": "$.target.max_concurrency",
                }
            },
            kms_key=False,
        )  # serverless endpoints take no volume key
        config_kind = sfn.Choice(self, "EndpointConfigKind")
        config_kind.when(sfn.Condition.boolean_equals("$.target.serverless", True), serverless_config)
        config_kind.otherwise(instance_config)
        for step in (instance_config, serverless_config):
            step.add_catch(call_failed, errors=["States.ALL"], result_path="$.failure")
            step.next(update)
        create_model.next(config_kind)

        for spec in endpoints:
            if spec.lora is not None:
                continue  # an endpoint of inference components takes adapters, never a new endpoint config
            target: dict[str, Any] = {
                "endpoint_name": naming.endpoint(qualified_name, spec.name),
                "config_name.$": "States.Format('{}-c', $.job.name)",
                "serverless": spec.serverless is not None,
            }
            if spec.serverless is not None:
                target.update(memory_mb=spec.serverless.memory_mb, max_concurrency=spec.serverless.max_concurrency)
            else:
                target.update(instance_type=spec.instance_type, instance_count=spec.min_instances)
            pick.when(
                sfn.Condition.and_(
                    sfn.Condition.string_equals("$.request.deploy_to", spec.name),
                    sfn.Condition.string_equals("$.request.hyperparameters.task", TASK_OF_KIND[spec.kind]),
                ),
                sfn.Pass(
                    self, f"Target{spec.name.title().replace('-', '')}", parameters=target, result_path="$.target"
                ).next(create_model),
            )
        lora_endpoints = [(spec, spec.lora) for spec in endpoints if spec.lora is not None and spec.lora.adapters]
        if lora_endpoints and package_adapter_function is not None:
            deploy_adapter = self._deploy_adapter(
                qualified_name=qualified_name,
                package_adapter_function=package_adapter_function,
                notify_and_fail=notify_and_fail,
                done=done,
            )
            for spec, lora in lora_endpoints:
                for adapter in lora.adapters:
                    # A LoRA or QLoRA run naming this adapter; Validate has checked its base model is the endpoint's.
                    pick.when(
                        sfn.Condition.and_(
                            sfn.Condition.string_equals("$.request.deploy_to", adapter.name),
                            sfn.Condition.string_equals("$.request.hyperparameters.task", TASK_OF_KIND["llm"]),
                            sfn.Condition.or_(
                                sfn.Condition.string_equals("$.request.hyperparameters.method", "lora"),
                                sfn.Condition.string_equals("$.request.hyperparameters.method", "qlora"),
                            ),
                        ),
                        sfn.Pass(
                            self,
                            f"TargetAdapter{_pascal(spec.name)}{_pascal(adapter.name)}",
                            parameters={
                                "endpoint_name": f"{qualified_name}-{spec.name}",
                                "component_name": qualified_component_name(qualified_name, spec.name, adapter.name),
                                "base_component_name": qualified_component_name(qualified_name, spec.name),
                                "artifact_url.$": f"States.Format('s3://{artifacts_bucket_name}/"
                                f"{adapter_prefix(spec.name, adapter.name)}{{}}/{ADAPTER_ARCHIVE}', "
                                "$.job.name)",
                            },
                            result_path="$.target",
                        ).next(deploy_adapter),
                    )
        pick.otherwise(unknown)
        return pick

    def _deploy_adapter(
        self,
        *,
        qualified_name: str,
        package_adapter_function: lambda_.IFunction,
        notify_and_fail: Callable[[str, str, str], sfn.IChainable],
        done: sfn.IChainable,
    ) -> sfn.IChainable:
        """PackageAdapter -> DescribeInferenceComponent -> Create- or UpdateInferenceComponent -> poll until the
        component serves the new artifact. The base component and every other adapter keep serving throughout;
        a failed update leaves SageMaker serving the adapter's previous artifact."""
        stack = Stack.of(self)
        components = [
            stack.format_arn(service="sagemaker", resource="inference-component", resource_name=f"{qualified_name}-*")
        ]
        endpoints = [stack.format_arn(service="sagemaker", resource="endpoint", resource_name=f"{qualified_name}-*")]
        package = tasks.LambdaInvoke(
            self,
            "PackageAdapter",
            lambda_function=package_adapter_function,
            payload=sfn.TaskInput.from_object(
                {
                    "model_data_url": sfn.JsonPath.string_at("$.job.model_data_url"),
                    "artifact_url": sfn.JsonPath.string_at("$.target.artifact_url"),
                }
            ),
            result_selector={"files.$": "$.Payload.files", "bytes.$": "$.Payload.bytes"},
            result_path="$.adapter",
            retry_on_service_exceptions=True,
        )
        # Whether the component exists: created by the Inference stack (an adapter declared with an artifact) or
        # by an earlier run, it is updated; an adapter declared without one gets its component now. SageMaker
        # answers an unknown name with a ValidationException, which the SDK integration reports as a task failure.
        exists = tasks.CallAwsService(
            self,
            "DescribeAdapterComponent",
            service="sagemaker",
            action="describeInferenceComponent",
            parameters={"InferenceComponentName.$": "$.target.component_name"},
            iam_resources=components,
            result_selector={"status.$": "$.InferenceComponentStatus"},
            result_path="$.component",
        )
        specification = {
            "BaseInferenceComponentName.$": "$.target.base_component_name",
            "Container": {"ArtifactUrl.$": "$.target.artifact_url"},
        }
        create = tasks.CallAwsService(
            self,
            "CreateAdapterComponent",
            service="sagemaker",
            action="createInferenceComponent",
            parameters={
                "InferenceComponentName.$": "$.target.component_name",
                "EndpointName.$": "$.target.endpoint_name",
                "Specification": specification,
            },
            iam_resources=[*components, *endpoints],
            result_path=sfn.JsonPath.DISCARD,
        )
        update = tasks.CallAwsService(
            self,
            "UpdateAdapterComponent",
            service="sagemaker",
            action="updateInferenceComponent",
            parameters={"InferenceComponentName.$": "$.target.component_name", "Specification": specification},
            iam_resources=[*components, *endpoints],
            result_path=sfn.JsonPath.DISCARD,
        )
        wait = sfn.Wait(self, "WaitForAdapter", time=sfn.WaitTime.duration(Duration.seconds(30)))
        describe = tasks.CallAwsService(
            self,
            "DescribeAdapterDeployment",
            service="sagemaker",
            action="describeInferenceComponent",
            parameters={"InferenceComponentName.$": "$.target.component_name"},
            iam_resources=components,
            result_selector={
                "status.$": "$.InferenceComponentStatus",
                "artifact_url.$": "$.Specification.Container.ArtifactUrl",
                "reason.$": "States.JsonToString($)",
            },
            result_path="$.component",
        )
        served = sfn.Choice(self, "AdapterDeployed")
        failed = sfn.Pass(
            self,
            "DescribeAdapterFailure",
            parameters={
                "Error": "DeployFailed",
                "Cause.$": "States.Format('adapter component {} did not take {}; it keeps serving its previous "
                "artifact, if any. Describe: {}', $.target.component_name, $.target.artifact_url, $.component.reason)",
            },
            result_path="$.failure",
        )
        call_failed = sfn.Pass(
            self,
            "DescribeAdapterDeployError",
            parameters={
                "Error": "DeployFailed",
                "Cause.$": "States.Format('deploying adapter component {} failed; the endpoint keeps serving its base "
                "model and other adapters. {}: {}', $.target.component_name, $.failure.Error, "
                "$.failure.Cause)",
            },
            result_path="$.failure",
        )
        deploy_failed = notify_and_fail("AdapterDeploy", "DeployFailed", "$.failure")
        failed.next(deploy_failed)
        call_failed.next(deploy_failed)
        served.when(
            sfn.Condition.and_(
                sfn.Condition.string_equals("$.component.status", "InService"),
                sfn.Condition.string_equals_json_path("$.component.artifact_url", "$.target.artifact_url"),
            ),
            done,
        )
        served.when(
            sfn.Condition.or_(
                sfn.Condition.string_equals("$.component.status", "Creating"),
                sfn.Condition.string_equals("$.component.status", "Updating"),
                sfn.Condition.string_equals("$.component.status", "InService"),
            ),
            wait,
        )
        served.otherwise(failed)
        for step in (package, create, update, describe):
            step.add_catch(call_failed, errors=["States.ALL"], result_path="$.failure")
        exists.add_catch(create, errors=["States.TaskFailed"], result_path=sfn.JsonPath.DISCARD)
        exists.add_catch(call_failed, errors=["States.ALL"], result_path="$.failure")
        create.next(wait)
        update.next(wait)
        wait.next(describe).next(served)
        return package.next(exists).next(update)
