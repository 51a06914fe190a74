"""BatchInfer: a SageMaker batch transform over a JSONL prefix, as a Step Functions state machine."""

from __future__ import annotations

from typing import Any

from aws_cdk import Duration, RemovalPolicy, Stack
from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_logs as logs
from aws_cdk import aws_sns as sns
from aws_cdk import aws_stepfunctions as sfn
from aws_cdk import aws_stepfunctions_tasks as tasks
from constructs import Construct

from finetune.contract import BATCH_INPUT_PREFIX, BATCH_OUTPUT_PREFIX, TRAINING_OUTPUT_PREFIX
from stacks import naming
from stacks.components.acknowledgements import acknowledge
from stacks.components.cfn import cfn_resource
from stacks.components.endpoints import LOCAL_STORAGE_FAMILIES, ecr_repository_arn, partition_of
from stacks.components.inference_api import ignore_redundant_role_dependency
from stacks.components.sagemaker_iam import ecr_login, vpc_network_interfaces

# Instance families whose local NVMe storage is hardware-encrypted: SageMaker rejects a VolumeKmsKeyId for them.
_LOCAL_STORAGE_PATTERNS = sorted(
    {f"ml.{family}.*" for family in LOCAL_STORAGE_FAMILIES}
    | {"ml.m5d.*", "ml.c5d.*", "ml.r5d.*", "ml.m6id.*", "ml.c6id.*", "ml.r6id.*"}
)
_GPU_PATTERNS = ("ml.g*", "ml.p*")
# Tag on the models BatchInfer creates; its role may delete only models carrying it.
_CREATED_BY_TAG = "finetune-stack:created-by"

MODEL_PREFIXES = ("models/", TRAINING_OUTPUT_PREFIX)
"""Where `model_data_url` may point in the artifacts bucket: staged models and FineTune's job outputs."""
BATCH_CONTENT_TYPE = "application/json"
"""Each input line's content type, and each answer's, as the serving containers decode and encode them."""


class BatchInference(Construct):
    """The `{team}-{stage}-BatchInfer` state machine.

    Input: one of `model_name` (a model of this team stage: named `{team}-{stage}-...` and tagged with the
    stage's `team` and `stage`), `model_package_arn` (a version in this stage's model package group) or
    `model_data_url` (a model.tar.gz under models/ or training-output/ of the artifacts bucket, served by the
    Hugging Face inference container); `input` (`s3://<data bucket>/batch/input/.../`, JSONL), `output`
    (`s3://<data bucket>/batch/output/.../`), `instance_type` (one of the stage's training instance types) and
    `instance_count` (1 to the stage's maximum). The same limits hold in IAM: the machine may start transform
    jobs only on the stage's instance types and models. A model created here runs in the team VPC with network
    isolation under a role that reads only the batch input and model prefixes and writes only the batch output
    prefix; the transform job splits the input by line and encrypts its volume (where the instance type allows)
    and output with the team key. The state machine's data is encrypted with the team key. Success and failure
    are published to the team topic; every failure ends in a Fail state carrying the cause.
    """

    def __init__(
        self,
        scope: Construct,
        id_: str,
        *,
        qualified_name: str,
        key: kms.IKey,
        topic: sns.ITopic,
        data_bucket_name: str,
        artifacts_bucket_name: str,
        model_package_group_name: str,
        subnet_ids: list[str],
        security_group_ids: list[str],
        gpu_image_uri: str,
        cpu_image_uri: str,
        team: str,
        stage_name: str,
        instance_types: list[str],
        max_instance_count: int,
        network_conditions: dict[str, Any],
        log_retention: logs.RetentionDays,
        removal_policy: RemovalPolicy,
    ) -> None:
        super().__init__(scope, id_)
        stack = Stack.of(self)
        region, account = stack.region, stack.account
        partition = partition_of(region)
        self.state_machine_name = naming.batch_infer_state_machine(qualified_name)
        input_objects = f"arn:{partition}:s3:::{data_bucket_name}/{BATCH_INPUT_PREFIX}*"
        output_objects = f"arn:{partition}:s3:::{data_bucket_name}/{BATCH_OUTPUT_PREFIX}*"
        model_objects = [f"arn:{partition}:s3:::{artifacts_bucket_name}/{prefix}*" for prefix in MODEL_PREFIXES]
        stage_tags = [{"Key": "team", "Value": team}, {"Key": "stage", "Value": stage_name}]
        package_versions = f"arn:{partition}:sagemaker:{region}:{account}:model-package/{model_package_group_name}/*"
        models = f"arn:{partition}:sagemaker:{region}:{account}:model/{qualified_name}-*"
        transform_jobs = f"arn:{partition}:sagemaker:{region}:{account}:transform-job/{qualified_name}-*"
        transform_logs = f"arn:{partition}:logs:{region}:{account}:log-group:/aws/sagemaker/TransformJobs"

        # The role of the models this machine creates; SageMaker uses it to read input and write output.
        self.model_role = iam.Role(
            self,
            "ModelRole",
            assumed_by=iam.ServicePrincipal("sagemaker.amazonaws.com"),
            description=f"{qualified_name}: batch transform models (read batch input and models, write results)",
        )
        self.model_policy = iam.ManagedPolicy(
            self,
            "ModelPolicy",
            roles=[self.model_role],
            description=f"{qualified_name}: what batch transform models may do",
            statements=[
                # Only the batch input and the model prefixes are read, only the batch output prefix written: a
                # transform job cannot touch datasets, checkpoints or captured traffic.
                iam.PolicyStatement(
                    sid="ReadInputAndModels", actions=["s3:GetObject"], resources=[input_objects, *model_objects]
                ),
                iam.PolicyStatement(
                    sid="WriteResults", actions=["s3:PutObject", "s3:AbortMultipartUpload"], resources=[output_objects]
                ),
                iam.PolicyStatement(
                    sid="ListInputPrefixes",
                    actions=["s3:ListBucket"],
                    resources=[f"arn:{partition}:s3:::{data_bucket_name}"],
                    conditions={"StringLike": {"s3:prefix": [f"{BATCH_INPUT_PREFIX}*"]}},
                ),
                iam.PolicyStatement(
                    sid="UseTeamKey",
                    actions=["kms:Decrypt", "kms:GenerateDataKey", "kms:Encrypt"],
                    resources=[key.key_arn],
                ),
                iam.PolicyStatement(
                    sid="PullInferenceImages",
                    actions=["ecr:BatchGetImage", "ecr:GetDownloadUrlForLayer", "ecr:BatchCheckLayerAvailability"],
                    resources=sorted({ecr_repository_arn(partition, uri) for uri in (gpu_image_uri, cpu_image_uri)}),
                ),
                ecr_login(),
                iam.PolicyStatement(
                    sid="TransformJobLogs",
                    actions=[
                        "logs:CreateLogGroup",
                        "logs:CreateLogStream",
                        "logs:PutLogEvents",
                        "logs:DescribeLogStreams",
                    ],
                    resources=[transform_logs, f"{transform_logs}:log-stream:{qualified_name}-*"],
                ),
                # Same VPC and subnet conditions as the training role: interfaces only in the team VPC.
                vpc_network_interfaces(conditions=network_conditions),
            ],
        )
        acknowledge(
            self.model_policy,
            {
                "AwsSolutions-IAM5[Resource::*]": (
                    "ecr:GetAuthorizationToken and the EC2 Describe*/network-interface actions SageMaker needs to run "
                    "a transform job in the team VPC have no resource-level permissions; image pulls are limited to "
                    "the pinned Deep Learning Container repositories."
                ),
                f"AwsSolutions-IAM5[Resource::{input_objects}]": (
                    f"A batch job reads the JSONL files under the {BATCH_INPUT_PREFIX} prefix the caller names in "
                    "this stage's data bucket; the state machine checks the input lies there before it starts the job."
                ),
                f"AwsSolutions-IAM5[Resource::{output_objects}]": (
                    f"A batch job writes one result object per input file under the {BATCH_OUTPUT_PREFIX} prefix the "
                    "caller names in this stage's data bucket, with names SageMaker derives from the input."
                ),
                **{
                    f"AwsSolutions-IAM5[Resource::{arn}]": (
                        "Model artifacts (model.tar.gz) staged under models/ or written by FineTune under "
                        "training-output/ of this stage's artifacts bucket; their keys are chosen at training time."
                    )
                    for arn in model_objects
                },
                f"AwsSolutions-IAM5[Resource::{transform_logs}:log-stream:{qualified_name}-*]": (
                    "SageMaker writes one log stream per transform job instance, named after the job; jobs started "
                    f"by this machine are named {qualified_name}-<uuid>."
                ),
            },
        )

        # --- states -------------------------------------------------------------------------------------------
        name_job = sfn.Pass(
            self,
            "NameJob",
            result_path="$.job",
            parameters={"name.$": f"States.Format('{qualified_name}-{{}}', States.UUID())"},
        )

        invalid = sfn.Pass(
            self,
            "InvalidInput",
            result_path="$.error",
            parameters={
                "Error": "InvalidInput",
                "Cause": (
                    f"Give model_name (a model of {qualified_name}: named {qualified_name}-... and tagged "
                    f"team={team}, stage={stage_name}), model_package_arn (a version in {model_package_group_name})"
                    f" or model_data_url (s3://{artifacts_bucket_name}/models/ or training-output/...tar.gz); "
                    f"input under s3://{data_bucket_name}/{BATCH_INPUT_PREFIX}; output under "
                    f"s3://{data_bucket_name}/{BATCH_OUTPUT_PREFIX}; instance_type one of "
                    f"{', '.join(instance_types)}; instance_count from 1 to {max_instance_count}."
                ),
            },
        )
        notify_failure = tasks.SnsPublish(
            self,
            "NotifyFailure",
            topic=topic,
            subject=f"{self.state_machine_name} failed",
            message=sfn.TaskInput.from_object(
                {
                    "state_machine": self.state_machine_name,
                    "execution": sfn.JsonPath.execution_id,
                    "status": "FAILED",
                    "error": sfn.JsonPath.string_at("$.error.Error"),
                    "cause": sfn.JsonPath.string_at("$.error.Cause"),
                }
            ),
            result_path=sfn.JsonPath.DISCARD,
        )
        failed = sfn.Fail(self, "Failed", error_path="$.error.Error", cause_path="$.error.Cause")
        invalid.next(notify_failure)
        notify_failure.next(failed)

        vpc_config = {"Subnets": subnet_ids, "SecurityGroupIds": security_group_ids}
        create_from_package = tasks.CallAwsService(
            self,
            "CreateModelFromPackage",
            service="sagemaker",
            action="createModel",
            iam_resources=[models],
            iam_action="sagemaker:CreateModel",
            parameters={
                "ModelName": sfn.JsonPath.string_at("$.job.name"),
                "ExecutionRoleArn": self.model_role.role_arn,
                "Containers": [{"ModelPackageName": sfn.JsonPath.string_at("$.model_package_arn")}],
                "EnableNetworkIsolation": True,
                "VpcConfig": vpc_config,
                "Tags": [{"Key": _CREATED_BY_TAG, "Value": self.state_machine_name}, *stage_tags],
            },
            result_path=sfn.JsonPath.DISCARD,
        )
        select_image = sfn.Choice(self, "SelectImage")
        create_from_artifact = tasks.CallAwsService(
            self,
            "CreateModelFromArtifact",
            service="sagemaker",
            action="createModel",
            iam_resources=[models],
            iam_action="sagemaker:CreateModel",
            parameters={
                "ModelName": sfn.JsonPath.string_at("$.job.name"),
                "ExecutionRoleArn": self.model_role.role_arn,
                "PrimaryContainer": {
                    "Image": sfn.JsonPath.string_at("$.image"),
                    "ModelDataUrl": sfn.JsonPath.string_at("$.model_data_url"),
                },
                "EnableNetworkIsolation": True,
                "VpcConfig": vpc_config,
                "Tags": [{"Key": _CREATED_BY_TAG, "Value": self.state_machine_name}, *stage_tags],
            },
            result_path=sfn.JsonPath.DISCARD,
        )
        select_image.when(
            sfn.Condition.or_(*(sfn.Condition.string_matches("$.instance_type", p) for p in _GPU_PATTERNS)),
            sfn.Pass(self, "GpuImage", result=sfn.Result.from_string(gpu_image_uri), result_path="$.image").next(
                create_from_artifact
            ),
        ).otherwise(
            sfn.Pass(self, "CpuImage", result=sfn.Result.from_string(cpu_image_uri), result_path="$.image").next(
                create_from_artifact
            )
        )

        # "created" marks a model this execution made for its one job, deleted again when the job ends.
        use_created = sfn.Pass(
            self,
            "UseCreatedModel",
            result_path="$.job",
            parameters={"name.$": "$.job.name", "model.$": "$.job.name", "created": True},
        )
        use_existing = sfn.Pass(
            self,
            "UseExistingModel",
            result_path="$.job",
            parameters={"name.$": "$.job.name", "model.$": "$.model_name", "created": False},
        )
        # A named model must be this stage's: its name has the stage prefix (checked in Validate) and it carries
        # the stage's team and stage tags (read here). The transform then runs under that model's role, which
        # for a model of this stage is one of the stage's own SageMaker roles.
        read_model_tags = tasks.CallAwsService(
            self,
            "ReadModelTags",
            service="sagemaker",
            action="listTags",
            iam_resources=[models],
            iam_action="sagemaker:ListTags",
            parameters={
                "ResourceArn": sfn.JsonPath.format(
                    f"arn:{partition}:sagemaker:{region}:{account}:model/{{}}", sfn.JsonPath.string_at("$.model_name")
                )
            },
            result_selector={
                "team.$": "$.Tags[?(@.Key == 'team')].Value",
                "stage.$": "$.Tags[?(@.Key == 'stage')].Value",
            },
            result_path="$.model_tags",
        )
        check_model_tags = sfn.Pass(
            self,
            "CheckModelTags",
            result_path="$.model_tags",
            parameters={
                "team.$": f"States.ArrayContains($.model_tags.team, '{team}')",
                "stage.$": f"States.ArrayContains($.model_tags.stage, '{stage_name}')",
            },
        )
        not_this_stage = sfn.Pass(
            self,
            "ModelOfAnotherStage",
            result_path="$.error",
            parameters={
                "Error": "InvalidInput",
                "Cause.$": f"States.Format('model {{}} is not a model of {qualified_name}: it lacks the tags "
                f"team={team} and stage={stage_name}', $.model_name)",
            },
        )
        not_this_stage.next(notify_failure)
        read_model_tags.add_catch(notify_failure, result_path="$.error")
        read_model_tags.next(check_model_tags).next(
            sfn.Choice(self, "ModelOfThisStage")
            .when(
                sfn.Condition.and_(
                    sfn.Condition.boolean_equals("$.model_tags.team", True),
                    sfn.Condition.boolean_equals("$.model_tags.stage", True),
                ),
                use_existing,
            )
            .otherwise(not_this_stage)
        )
        create_from_package.next(use_created)
        create_from_artifact.next(use_created)

        def transform(construct_id: str, volume_key: kms.IKey | None) -> tasks.SageMakerCreateTransformJob:
            return tasks.SageMakerCreateTransformJob(
                self,
                construct_id,
                integration_pattern=sfn.IntegrationPattern.RUN_JOB,
                transform_job_name=sfn.JsonPath.string_at("$.job.name"),
                model_name=sfn.JsonPath.string_at("$.job.model"),
                role=self.model_role,
                # One JSONL line is one request: the serving containers (the Hugging Face inference toolkit,
                # LMI) decode application/json bodies only, and a MultiRecord batch of lines is no JSON document.
                # Each answer is one line of the .out file (AssembleWith Line).
                batch_strategy=tasks.BatchStrategy.SINGLE_RECORD,
                transform_input=tasks.TransformInput(
                    transform_data_source=tasks.TransformDataSource(
                        s3_data_source=tasks.TransformS3DataSource(
                            s3_uri=sfn.JsonPath.string_at("$.input"), s3_data_type=tasks.S3DataType.S3_PREFIX
                        )
                    ),
                    content_type=BATCH_CONTENT_TYPE,
                    split_type=tasks.SplitType.LINE,
                ),
                transform_output=tasks.TransformOutput(
                    s3_output_path=sfn.JsonPath.string_at("$.output"),
                    encryption_key=key,
                    accept=BATCH_CONTENT_TYPE,
                    assemble_with=tasks.AssembleWith.LINE,
                ),
                transform_resources=tasks.TransformResources(
                    instance_count=sfn.JsonPath.number_at("$.instance_count"),
                    instance_type=ec2.InstanceType(sfn.JsonPath.string_at("$.instance_type")),
                    volume_encryption_key=volume_key,
                ),
                tags={"team": team, "stage": stage_name},
                result_path="$.transform",
            )

        transform_with_volume_key = transform("TransformJob", key)
        transform_on_instance_storage = transform("TransformJobOnInstanceStorage", None)
        choose_transform = (
            sfn.Choice(self, "VolumeEncryption")
            .when(
                sfn.Condition.or_(
                    *(sfn.Condition.string_matches("$.instance_type", p) for p in _LOCAL_STORAGE_PATTERNS)
                ),
                transform_on_instance_storage,
            )
            .otherwise(transform_with_volume_key)
        )
        use_created.next(choose_transform)
        use_existing.next(choose_transform)

        notify_success = tasks.SnsPublish(
            self,
            "NotifySuccess",
            topic=topic,
            subject=f"{self.state_machine_name} succeeded",
            message=sfn.TaskInput.from_object(
                {
                    "state_machine": self.state_machine_name,
                    "execution": sfn.JsonPath.execution_id,
                    "status": "SUCCEEDED",
                    "transform_job": sfn.JsonPath.string_at("$.job.name"),
                    "output": sfn.JsonPath.string_at("$.output"),
                }
            ),
            result_path=sfn.JsonPath.DISCARD,
        )
        notify_success.next(sfn.Succeed(self, "Succeeded"))

        def clean_up(construct_id: str, then: sfn.IChainable) -> sfn.Choice:
            """Delete the model this execution created (a failed delete is recorded, never masks the outcome)."""
            delete = tasks.CallAwsService(
                self,
                f"Delete{construct_id}",
                service="sagemaker",
                action="deleteModel",
                iam_resources=[models],
                iam_action="sagemaker:DeleteModel",
                parameters={"ModelName": sfn.JsonPath.string_at("$.job.model")},
                result_path=sfn.JsonPath.DISCARD,
            )
            delete.add_catch(then, result_path="$.cleanup_error")
            delete.next(then)
            return (
                sfn.Choice(self, construct_id)
                .when(sfn.Condition.boolean_equals("$.job.created", True), delete)
                .otherwise(then)
            )

        clean_up_after_success = clean_up("CreatedModelAfterSuccess", notify_success)
        clean_up_after_failure = clean_up("CreatedModelAfterFailure", notify_failure)
        for task in (create_from_package, create_from_artifact):
            task.add_catch(notify_failure, result_path="$.error")
        for transform_task in (transform_with_volume_key, transform_on_instance_storage):
            transform_task.add_catch(clean_up_after_failure, result_path="$.error")
            transform_task.next(clean_up_after_success)

        def in_prefix(path: str, url: str) -> sfn.Condition:
            return sfn.Condition.string_matches(path, f"{url}*")

        valid_io = sfn.Condition.and_(
            sfn.Condition.is_string("$.input"),
            in_prefix("$.input", f"s3://{data_bucket_name}/{BATCH_INPUT_PREFIX}"),
            sfn.Condition.is_string("$.output"),
            in_prefix("$.output", f"s3://{data_bucket_name}/{BATCH_OUTPUT_PREFIX}"),
            sfn.Condition.is_string("$.instance_type"),
            sfn.Condition.or_(*(sfn.Condition.string_equals("$.instance_type", t) for t in instance_types)),
            sfn.Condition.is_numeric("$.instance_count"),
            sfn.Condition.number_greater_than_equals("$.instance_count", 1),
            sfn.Condition.number_less_than_equals("$.instance_count", max_instance_count),
        )
        validate = (
            sfn.Choice(self, "Validate")
            .when(sfn.Condition.not_(valid_io), invalid)
            .when(
                sfn.Condition.and_(
                    sfn.Condition.is_string("$.model_name"),
                    sfn.Condition.string_matches("$.model_name", f"{qualified_name}-*"),
                ),
                read_model_tags,
            )
            .when(
                sfn.Condition.and_(
                    sfn.Condition.is_string("$.model_package_arn"),
                    sfn.Condition.string_matches("$.model_package_arn", package_versions),
                ),
                create_from_package,
            )
            .when(
                sfn.Condition.and_(
                    sfn.Condition.is_string("$.model_data_url"),
                    sfn.Condition.or_(
                        *(
                            in_prefix("$.model_data_url", f"s3://{artifacts_bucket_name}/{prefix}")
                            for prefix in MODEL_PREFIXES
                        )
                    ),
                ),
                select_image,
            )
            .otherwise(invalid)
        )

        # Is* conditions on absent fields fail the comparison, so a missing field is an invalid input too.
        definition = name_job.next(validate)

        self.log_group = logs.LogGroup(
            self,
            "LogGroup",
            log_group_name=f"/aws/vendedlogs/states/{self.state_machine_name}",
            encryption_key=key,
            retention=log_retention,
            removal_policy=removal_policy,
        )
        self.role = iam.Role(
            self,
            "Role",
            assumed_by=iam.ServicePrincipal("states.amazonaws.com"),
            description=f"{qualified_name}: BatchInfer state machine",
        )
        self.policy = iam.ManagedPolicy(
            self,
            "Policy",
            roles=[self.role],
            description=f"{qualified_name}: what BatchInfer may do",
            statements=[
                iam.PolicyStatement(
                    sid="CreateModels", actions=["sagemaker:CreateModel", "sagemaker:AddTags"], resources=[models]
                ),
                # Only the models BatchInfer made itself: never an endpoint's or one a user named.
                iam.PolicyStatement(
                    sid="DeleteOwnModels",
                    actions=["sagemaker:DeleteModel"],
                    resources=[models],
                    conditions={"StringEquals": {f"aws:ResourceTag/{_CREATED_BY_TAG}": self.state_machine_name}},
                ),
                iam.PolicyStatement(
                    sid="ReadModelPackages", actions=["sagemaker:DescribeModelPackage"], resources=[package_versions]
                ),
                iam.PolicyStatement(sid="ReadModelTags", actions=["sagemaker:ListTags"], resources=[models]),
                # The stage's limits in IAM too, not only in the definition: instance types from config, and only
                # models of this stage.
                iam.PolicyStatement(
                    sid="StartTransformJobsWithinLimits",
                    actions=["sagemaker:CreateTransformJob"],
                    resources=[transform_jobs],
                    conditions={
                        "ForAllValues:StringEquals": {"sagemaker:InstanceTypes": instance_types},
                        "ArnLike": {"sagemaker:ModelArn": models},
                    },
                ),
                # Jobs carry the stage's tags from creation; describing (the .sync wait) and stopping are held to
                # them as well as to the name, so a same-prefixed job of another stage is out of reach.
                iam.PolicyStatement(
                    sid="WatchOwnTransformJobs",
                    actions=["sagemaker:DescribeTransformJob", "sagemaker:StopTransformJob"],
                    resources=[transform_jobs],
                    conditions={"StringEquals": {"aws:ResourceTag/team": team, "aws:ResourceTag/stage": stage_name}},
                ),
                iam.PolicyStatement(
                    sid="TagTransformJobs",
                    actions=["sagemaker:AddTags", "sagemaker:ListTags"],
                    resources=[transform_jobs],
                ),
                iam.PolicyStatement(
                    sid="PassModelRole",
                    actions=["iam:PassRole"],
                    resources=[self.model_role.role_arn],
                    conditions={"StringEquals": {"iam:PassedToService": "sagemaker.amazonaws.com"}},
                ),
                iam.PolicyStatement(
                    sid="WaitForTransformJobs",
                    actions=["events:PutTargets", "events:PutRule", "events:DescribeRule"],
                    resources=[
                        f"arn:{partition}:events:{region}:{account}:rule/"
                        "StepFunctionsGetEventsForSageMakerTransformJobsRule"
                    ],
                ),
                iam.PolicyStatement(sid="NotifyTeam", actions=["sns:Publish"], resources=[topic.topic_arn]),
                # The team topic and the state machine's own execution data are encrypted with the team key.
                iam.PolicyStatement(
                    sid="UseTheTeamKey",
                    actions=["kms:GenerateDataKey", "kms:Decrypt", "kms:Encrypt", "kms:DescribeKey"],
                    resources=[key.key_arn],
                ),
                iam.PolicyStatement(
                    sid="DeliverExecutionLogs",
                    actions=[
                        "logs:CreateLogDelivery",
                        "logs:GetLogDelivery",
                        "logs:UpdateLogDelivery",
                        "logs:DeleteLogDelivery",
                        "logs:ListLogDeliveries",
                        "logs:PutResourcePolicy",
                        "logs:DescribeResourcePolicies",
                        "logs:DescribeLogGroups",
                    ],
                    resources=["*"],
                ),
                iam.PolicyStatement(
                    sid="XRayTraces",
                    actions=[
                        "xray:PutTraceSegments",
                        "xray:PutTelemetryRecords",
                        "xray:GetSamplingRules",
                        "xray:GetSamplingTargets",
                    ],
                    resources=["*"],
                ),
            ],
        )
        acknowledge(
            self.policy,
            {
                "AwsSolutions-IAM5[Resource::*]": (
                    "CloudWatch Logs vended-log delivery (CreateLogDelivery and related) and X-Ray trace submission "
                    "have no resource-level permissions; Step Functions documents these statements with Resource '*'."
                ),
                f"AwsSolutions-IAM5[Resource::{models}]": (
                    f"Each execution creates one model named {qualified_name}-<uuid> and deletes it when its job ends; "
                    "the prefix confines the grant to this team stage's models, and deleting needs the tag BatchInfer "
                    "puts on the models it creates."
                ),
                f"AwsSolutions-IAM5[Resource::{package_versions}]": (
                    "Model package versions are numbered as they are registered; the grant covers the versions of this "
                    "team stage's own model package group only."
                ),
                f"AwsSolutions-IAM5[Resource::{transform_jobs}]": (
                    f"Each execution runs one transform job named {qualified_name}-<uuid>; the prefix confines the "
                    "grant to this team stage's jobs."
                ),
            },
        )
        self.state_machine = sfn.StateMachine(
            self,
            "StateMachine",
            state_machine_name=self.state_machine_name,
            definition_body=sfn.DefinitionBody.from_chainable(definition),
            role=self.role.without_policy_updates(),
            tracing_enabled=True,
            logs=sfn.LogOptions(destination=self.log_group, level=sfn.LogLevel.ALL, include_execution_data=False),
            timeout=Duration.hours(24),
            encryption_configuration=sfn.CustomerManagedEncryptionConfiguration(key),
        )
        self.state_machine.node.add_dependency(self.policy)
        ignore_redundant_role_dependency(cfn_resource(self.state_machine, sfn.CfnStateMachine))
