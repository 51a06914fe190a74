"""Data stack: the team key, buckets, network and topic every other stack of the stage builds on."""

from __future__ import annotations

from typing import Any

from aws_cdk import CfnOutput, Fn, RemovalPolicy, Stack
from aws_cdk import aws_ssm as ssm
from constructs import Construct

from finetune.contract import PUBLISHED_OUTPUTS
from stacks import naming
from stacks.components import images
from stacks.components.data_buckets import DataBuckets
from stacks.components.network import TeamNetwork
from stacks.components.retention import log_retention
from stacks.components.team_key import TeamKey
from stacks.components.team_topic import TeamTopic
from stacks.settings import ExistingVpc, StageConfig


class DataStack(Stack):
    """Stateful layer of one team stage. Its resources keep their data on non-ephemeral stages (RETAIN)."""

    def __init__(self, scope: Construct, id_: str, *, stage: StageConfig, **kwargs: Any) -> None:
        self._zones = (
            stage.vpc.availability_zones
            if isinstance(stage.vpc, ExistingVpc)
            else [Fn.select(index, Fn.get_azs()) for index in range(stage.vpc.zones)]
        )
        super().__init__(
            scope, id_, description=f"finetune-stack {stage.qualified_name}: key, buckets, network", **kwargs
        )
        removal_policy = RemovalPolicy.DESTROY if stage.ephemeral else RemovalPolicy.RETAIN

        self.team_key = TeamKey(self, "TeamKey", qualified_name=stage.qualified_name, removal_policy=removal_policy).key
        buckets = DataBuckets(
            self,
            "Buckets",
            qualified_name=stage.qualified_name,
            account=stage.account,
            region=stage.region,
            key=self.team_key,
            removal_policy=removal_policy,
            noncurrent_version_days=stage.noncurrent_version_days,
            data_capture_expire_days=stage.data_capture.expire_days,
            log_retention_days=stage.log_retention_days,
        )
        self.data_bucket = buckets.data_bucket
        self.artifacts_bucket = buckets.artifacts_bucket
        self.logs_bucket = buckets.logs_bucket
        self.network = TeamNetwork(
            self,
            "Network",
            settings=stage.vpc,
            qualified_name=stage.qualified_name,
            key=self.team_key,
            log_retention=log_retention(stage.log_retention_days),
            removal_policy=removal_policy,
            image_accounts=[
                images.registry_account(uri)
                for uri in (
                    images.pytorch_training(stage.region, stage.images),
                    images.lmi_inference(stage.region, stage.images),
                    images.huggingface_inference(stage.region, stage.images, gpu=True),
                )
            ],
        )

        self.topic = TeamTopic(
            self,
            "TeamTopic",
            topic_name=naming.team_topic(stage.qualified_name),
            qualified_name=stage.qualified_name,
            key=self.team_key,
            email=stage.email,
        ).topic

        published = {
            "DataBucketName": (self.data_bucket.bucket_name, "Datasets: s3://<this>/datasets/"),
            "ArtifactsBucketName": (self.artifacts_bucket.bucket_name, "Base models, job outputs and checkpoints"),
            "LogsBucketName": (self.logs_bucket.bucket_name, "S3 server access logs"),
            "TeamKeyArn": (self.team_key.key_arn, "KMS key of this team stage"),
            "VpcId": (self.network.vpc.vpc_id, "VPC for training jobs and endpoints"),
            "TeamTopicArn": (self.topic.topic_arn, "SNS topic for pipeline events and alarms"),
        }
        parameters = PUBLISHED_OUTPUTS["data"]  # output name -> SSM parameter, shared with the CLI
        for output_id, (value, description) in published.items():
            CfnOutput(self, output_id, value=value, description=description)
            ssm.StringParameter(
                self,
                f"{output_id}Parameter",
                parameter_name=f"{stage.ssm_prefix}/{parameters[output_id]}",
                string_value=value,
                description=f"finetune-stack {stage.qualified_name}: {description}",
            )

    @property
    def availability_zones(self) -> list[str]:
        """The stage's zones without a context lookup: the configured subnets' zones, or the account's first N by
        position (Fn::GetAZs). ec2.Vpc reads this to check its zones; the default would register an AWS lookup,
        which the CLI then attempts (and fails offline) whenever the delivery pipeline embeds the stage."""
        return self._zones
