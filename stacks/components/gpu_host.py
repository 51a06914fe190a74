"""One GPU host: an EC2 instance from a pinned Deep Learning AMI, reached by SSM Session Manager only.

No inbound rules, no key pair, IMDSv2, a gp3 root volume encrypted with the team key, an instance role scoped
to the team's buckets, the training image repository and the host's own log group, the CloudWatch agent with
GPU metrics, an idle alarm that stops the instance, and an optional office-hours start/stop schedule.
"""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import Any

from aws_cdk import Duration, RemovalPolicy, Stack, Tags
from aws_cdk import aws_cloudwatch as cloudwatch
from aws_cdk import aws_cloudwatch_actions as cw_actions
from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_ecr as ecr
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_logs as logs
from aws_cdk import aws_s3 as s3
from aws_cdk import aws_scheduler as scheduler
from aws_cdk import aws_sns as sns
from constructs import Construct

from stacks import naming
from stacks.components.acknowledgements import acknowledge
from stacks.settings import HostSpec

HOSTS_DIR = Path(__file__).resolve().parents[2] / "hosts"
AMI_PINS_FILE = HOSTS_DIR / "dlami.json"

GPU_METRIC = "nvidia_smi_utilization_gpu"
"""The CloudWatch agent's ``nvidia_gpu`` utilisation metric, published per instance (dimension InstanceId)."""
GPU_MEMORY_METRIC = "nvidia_smi_utilization_memory"
ROOT_DEVICE = "/dev/sda1"  # the Ubuntu DLAMI's root device
_HEREDOC_END = "FINETUNE_STACK_EOF"


class AmiNotPinned(ValueError):
    """The DLAMI parameter has no pinned AMI id for the stage's region."""


@cache
def _pins() -> dict[str, dict[str, str]]:
    pins: dict[str, dict[str, str]] = json.loads(AMI_PINS_FILE.read_text(encoding="utf-8"))["pins"]
    return pins


def pinned_ami(parameter: str, region: str) -> str:
    """The AMI id pinned in ``hosts/dlami.json`` for ``parameter`` in ``region``.

    Synthesis stays offline and deterministic: the SSM parameter is read once by a person, never by the app, and a
    new AMI reaches a host only through a reviewed change of that file.
    """
    ami = _pins().get(parameter, {}).get(region)
    if ami is None:
        raise AmiNotPinned(
            f"no Deep Learning AMI pinned for {parameter} in {region}: run `aws ssm get-parameter --name {parameter} "
            f"--region {region} --query Parameter.Value --output text` and add the id to {AMI_PINS_FILE.name} under "
            f"pins[{parameter!r}][{region!r}]"
        )
    return ami


def agent_config(*, log_group_name: str) -> dict[str, Any]:
    """CloudWatch agent configuration: per-instance GPU metrics in the platform namespace, logs to the host's group."""
    return {
        "agent": {"metrics_collection_interval": 60, "omit_hostname": True},
        "metrics": {
            "namespace": naming.METRICS_NAMESPACE,
            "append_dimensions": {"InstanceId": "${aws:InstanceId}"},
            # One series per instance (over all its GPUs) for the idle alarm, besides the per-GPU series.
            "aggregation_dimensions": [["InstanceId"]],
            "metrics_collected": {
                "nvidia_gpu": {
                    "measurement": [
                        "utilization_gpu",
                        "utilization_memory",
                        "memory_used",
                        "memory_total",
                        "temperature_gpu",
                        "power_draw",
                    ]
                },
                "mem": {"measurement": ["mem_used_percent"]},
                "disk": {"measurement": ["used_percent"], "resources": ["/"]},
            },
        },
        "logs": {
            "logs_collected": {
                "files": {
                    "collect_list": [
                        {
                            "file_path": "/var/log/cloud-init-output.log",
                            "log_group_name": log_group_name,
                            "log_stream_name": "{instance_id}/cloud-init-output",
                        },
                        {
                            "file_path": "/var/log/amazon/ssm/amazon-ssm-agent.log",
                            "log_group_name": log_group_name,
                            "log_stream_name": "{instance_id}/ssm-agent",
                        },
                    ]
                }
            }
        },
    }


def _heredoc(path: str, content: str) -> str:
    if _HEREDOC_END in content:
        raise ValueError(f"{path}: content contains the heredoc terminator {_HEREDOC_END}")
    return f"cat > {path} <<'{_HEREDOC_END}'\n{content.rstrip()}\n{_HEREDOC_END}"


class GpuHost(Construct):
    """A GPU host of a team stage. Exposes ``instance``, ``role``, ``log_group``, ``idle_alarm``, ``host_name``."""

    def __init__(
        self,
        scope: Construct,
        id_: str,
        *,
        spec: HostSpec,
        qualified_name: str,
        ami_id: str,
        vpc: ec2.IVpc,
        subnets: ec2.SubnetSelection,
        key: kms.IKey,
        data_bucket_name: str,
        artifacts_bucket_name: str,
        image_repository: ecr.IRepository,
        image_uri: str,
        topic: sns.ITopic,
        log_retention: logs.RetentionDays,
        removal_policy: RemovalPolicy,
        termination_protection: bool,
    ) -> None:
        super().__init__(scope, id_)
        stack = Stack.of(self)
        self.host_name = naming.host(qualified_name, spec.name)
        # The buckets by their deterministic names: the policy then shows reviewers literal ARNs, not references.
        data_bucket = s3.Bucket.from_bucket_name(self, "DataBucket", data_bucket_name)
        artifacts_bucket = s3.Bucket.from_bucket_name(self, "ArtifactsBucket", artifacts_bucket_name)

        self.log_group = logs.LogGroup(
            self,
            "Logs",
            log_group_name=f"/finetune-stack/{qualified_name}/hosts/{spec.name}",
            encryption_key=key,
            retention=log_retention,
            removal_policy=removal_policy,
        )

        self.security_group = ec2.SecurityGroup(
            self,
            "SecurityGroup",
            vpc=vpc,
            allow_all_outbound=False,
            description=f"{self.host_name}: no inbound; HTTPS out to the VPC endpoints",
        )
        # The subnets are isolated (no internet route): HTTPS reaches only the VPC's interface endpoints and the
        # S3 gateway endpoint, whose addresses are the regional S3 prefix list (not known without a lookup).
        self.security_group.add_egress_rule(
            ec2.Peer.any_ipv4(), ec2.Port.tcp(443), "HTTPS to VPC endpoints (isolated subnet: no internet route)"
        )

        self.role = iam.Role(
            self,
            "Role",
            assumed_by=iam.ServicePrincipal("ec2.amazonaws.com"),
            description=f"{self.host_name}: team data (read), artifacts (write under hosts/), training image pull",
            managed_policies=[iam.ManagedPolicy.from_aws_managed_policy_name("AmazonSSMManagedInstanceCore")],
        )
        acknowledge(
            self.role,
            {
                "AwsSolutions-IAM4[Policy::arn:<AWS::Partition>:iam::aws:policy/AmazonSSMManagedInstanceCore]": (
                    "AmazonSSMManagedInstanceCore is the AWS-maintained minimum for the SSM agent and Session Manager, "
                    "the only way into this host (no key pair, no inbound rules); AWS updates it with the agent, and "
                    "it grants no access to data."
                ),
            },
        )
        self.policy = iam.ManagedPolicy(
            self,
            "Policy",
            description=f"{self.host_name}: the team's data and artifacts, the training image, logs and metrics",
            roles=[self.role],
            statements=self._statements(stack, spec, key, data_bucket, artifacts_bucket, image_repository),
        )
        acknowledge(
            self.policy,
            {
                f"AwsSolutions-IAM5[Resource::{data_bucket.bucket_arn}/*]": (
                    "Read access to every object of the team's own data bucket: finetune-host downloads any dataset "
                    "of the team (s3://<data bucket>/datasets/...), as the pipeline's training jobs do."
                ),
                f"AwsSolutions-IAM5[Resource::{artifacts_bucket.bucket_arn}/*]": (
                    "Read access to the objects of the team's own artifacts bucket: base models to fine-tune from live "
                    "under any prefix the team chose; writes are limited to this host's own prefix."
                ),
                f"AwsSolutions-IAM5[Resource::{artifacts_bucket.bucket_arn}/hosts/{spec.name}/*]": (
                    "Writes only under this host's own prefix of the team's artifacts bucket (one folder per run); "
                    "the run names are chosen on the host, so they cannot be listed in the policy."
                ),
                "AwsSolutions-IAM5[Resource::*]": (
                    "Two actions AWS defines on '*' only: ecr:GetAuthorizationToken (an ECR login; pulling is limited "
                    "to the training image repository) and cloudwatch:PutMetricData, limited by condition to the "
                    "platform's own metrics namespace."
                ),
            },
        )

        self.instance = ec2.Instance(
            self,
            "Instance",
            instance_name=self.host_name,
            vpc=vpc,
            vpc_subnets=subnets,
            instance_type=ec2.InstanceType(spec.instance_type),
            machine_image=ec2.MachineImage.generic_linux({stack.region: ami_id}),
            security_group=self.security_group,
            role=self.role,
            user_data=self._user_data(stack, image_uri, data_bucket, artifacts_bucket),
            require_imdsv2=True,
            detailed_monitoring=True,
            ebs_optimized=True,
            associate_public_ip_address=False,
            disable_api_termination=termination_protection,
            block_devices=[
                ec2.BlockDevice(
                    device_name=ROOT_DEVICE,
                    volume=ec2.BlockDeviceVolume.ebs(
                        spec.volume_gb,
                        encrypted=True,
                        kms_key=key,
                        volume_type=ec2.EbsDeviceVolumeType.GP3,
                        delete_on_termination=True,
                    ),
                )
            ],
        )
        if spec.owner:
            Tags.of(self.instance).add("owner", spec.owner)
        # The AMI id is pinned on purpose (hosts/dlami.json): a parameter or a moving lookup would let a new AMI
        # replace the host, and its root volume, on any deploy.
        self.instance.instance.add_metadata("cfn-lint", {"config": {"ignore_checks": ["W9010"]}})
        acknowledge(
            self.instance.instance,
            {
                "CloudFormation-Validate::W9010": (
                    "The Deep Learning AMI id is pinned on purpose in hosts/dlami.json, so that a new AMI release "
                    "never replaces the host silently; moving to a newer AMI is a reviewed change of that file."
                )
            },
        )
        if not termination_protection:
            acknowledge(
                self.instance,
                {
                    "AwsSolutions-EC29": (
                        "Ephemeral stage: the host is deleted with the stage by design. Its root volume holds only "
                        "scratch copies; datasets, models and evaluations live in the team's S3 buckets."
                    ),
                },
            )

        self.idle_alarm = cloudwatch.Alarm(
            self,
            "IdleAlarm",
            alarm_name=f"{self.host_name}-idle",
            alarm_description=(
                f"{self.host_name}: every GPU below {spec.idle_gpu_percent:g}% for "
                f"{spec.idle_minutes} minutes; the instance is stopped (its volume is kept)."
            ),
            metric=cloudwatch.Metric(
                namespace=naming.METRICS_NAMESPACE,
                metric_name=GPU_METRIC,
                dimensions_map={"InstanceId": self.instance.instance_id},
                statistic=cloudwatch.Stats.MAXIMUM,
                period=Duration.minutes(1),
            ),
            threshold=spec.idle_gpu_percent,
            comparison_operator=cloudwatch.ComparisonOperator.LESS_THAN_THRESHOLD,
            evaluation_periods=spec.idle_minutes,
            datapoints_to_alarm=spec.idle_minutes,
            # A stopped host reports nothing: that must not count as idle, or the alarm would stay in ALARM and
            # never stop the host again after its next start.
            treat_missing_data=cloudwatch.TreatMissingData.NOT_BREACHING,
        )
        self.idle_alarm.add_alarm_action(cw_actions.Ec2Action(cw_actions.Ec2InstanceAction.STOP))
        self.idle_alarm.add_alarm_action(cw_actions.SnsAction(topic))

        if spec.schedule is not None:
            self._schedule(stack, spec, key)

    def _statements(
        self,
        stack: Stack,
        spec: HostSpec,
        key: kms.IKey,
        data_bucket: s3.IBucket,
        artifacts_bucket: s3.IBucket,
        repository: ecr.IRepository,
    ) -> list[iam.PolicyStatement]:
        prefix = f"hosts/{spec.name}/"
        return [
            iam.PolicyStatement(
                sid="ReadTeamData",
                actions=["s3:GetObject", "s3:ListBucket", "s3:GetBucketLocation"],
                resources=[data_bucket.bucket_arn, data_bucket.arn_for_objects("*")],
            ),
            iam.PolicyStatement(
                sid="ReadArtifactsForBaseModels",
                actions=["s3:GetObject", "s3:ListBucket", "s3:GetBucketLocation"],
                resources=[artifacts_bucket.bucket_arn, artifacts_bucket.arn_for_objects("*")],
            ),
            iam.PolicyStatement(
                sid="WriteThisHostsResults",
                actions=["s3:PutObject", "s3:AbortMultipartUpload"],
                resources=[artifacts_bucket.arn_for_objects(f"{prefix}*")],
            ),
            iam.PolicyStatement(
                sid="UseTheTeamKeyThroughS3",
                actions=["kms:Decrypt", "kms:GenerateDataKey"],
                resources=[key.key_arn],
                conditions={"StringEquals": {"kms:ViaService": f"s3.{stack.region}.amazonaws.com"}},
            ),
            iam.PolicyStatement(
                sid="PullTheTrainingImage",
                actions=["ecr:BatchGetImage", "ecr:GetDownloadUrlForLayer", "ecr:BatchCheckLayerAvailability"],
                resources=[repository.repository_arn],
            ),
            iam.PolicyStatement(sid="EcrLogin", actions=["ecr:GetAuthorizationToken"], resources=["*"]),
            iam.PolicyStatement(
                sid="WriteOwnLogs",
                actions=["logs:CreateLogStream", "logs:PutLogEvents", "logs:DescribeLogStreams"],
                # A log group's Arn attribute already ends in ":*" and so covers its streams.
                resources=[self.log_group.log_group_arn],
            ),
            iam.PolicyStatement(
                sid="PublishHostMetrics",
                actions=["cloudwatch:PutMetricData"],
                resources=["*"],
                conditions={"StringEquals": {"cloudwatch:namespace": naming.METRICS_NAMESPACE}},
            ),
            iam.PolicyStatement(
                sid="DownloadTheCloudWatchAgent",
                actions=["s3:GetObject"],
                resources=[
                    f"arn:{stack.partition}:s3:::amazoncloudwatch-agent-{stack.region}/ubuntu/amd64/latest/"
                    "amazon-cloudwatch-agent.deb"
                ],
            ),
        ]

    def _user_data(
        self, stack: Stack, image_uri: str, data_bucket: s3.IBucket, artifacts_bucket: s3.IBucket
    ) -> ec2.UserData:
        settings = {
            "FINETUNE_REGION": stack.region,
            "FINETUNE_DATA_BUCKET": data_bucket.bucket_name,
            "FINETUNE_ARTIFACTS_BUCKET": artifacts_bucket.bucket_name,
            "FINETUNE_IMAGE_URI": image_uri,
            "FINETUNE_HOST_NAME": self.host_name,
            "FINETUNE_LOG_GROUP": self.log_group.log_group_name,
        }
        user_data = ec2.UserData.for_linux()
        user_data.add_commands(
            "set -euo pipefail",
            "install -d -m 0755 /etc/finetune-stack /opt/finetune-stack",
            _heredoc("/etc/finetune-stack/host.env", "\n".join(f"{k}={v}" for k, v in settings.items())),
            _heredoc("/opt/finetune-stack/finetune-host", (HOSTS_DIR / "finetune-host").read_text(encoding="utf-8")),
            _heredoc(
                "/opt/finetune-stack/cloudwatch-agent.json",
                json.dumps(agent_config(log_group_name=self.log_group.log_group_name), indent=1),
            ),
            (HOSTS_DIR / "user-data.sh").read_text(encoding="utf-8"),
        )
        return user_data

    def _schedule(self, stack: Stack, spec: HostSpec, key: kms.IKey) -> None:
        assert spec.schedule is not None
        role = iam.Role(
            self,
            "ScheduleRole",
            assumed_by=iam.ServicePrincipal(
                "scheduler.amazonaws.com", conditions={"StringEquals": {"aws:SourceAccount": stack.account}}
            ),
            description=f"{self.host_name}: start and stop the host in office hours",
        )
        instance_arn = stack.format_arn(service="ec2", resource="instance", resource_name=self.instance.instance_id)
        iam.ManagedPolicy(
            self,
            "SchedulePolicy",
            description=f"{self.host_name}: start and stop this one instance",
            roles=[role],
            statements=[
                iam.PolicyStatement(actions=["ec2:StartInstances", "ec2:StopInstances"], resources=[instance_arn]),
                # Starting an instance whose volume is encrypted with a customer key lets EC2 create a grant.
                iam.PolicyStatement(
                    actions=["kms:CreateGrant"],
                    resources=[key.key_arn],
                    conditions={"Bool": {"kms:GrantIsForAWSResource": "true"}},
                ),
            ],
        )
        for action, expression in (("start", spec.schedule.start), ("stop", spec.schedule.stop)):
            scheduler.CfnSchedule(
                self,
                f"{action.title()}Schedule",
                name=f"{self.host_name}-{action}",
                description=f"{action.title()} {self.host_name} ({expression} {spec.schedule.timezone})",
                schedule_expression=expression,
                schedule_expression_timezone=spec.schedule.timezone,
                flexible_time_window=scheduler.CfnSchedule.FlexibleTimeWindowProperty(mode="OFF"),
                target=scheduler.CfnSchedule.TargetProperty(
                    arn=f"arn:{stack.partition}:scheduler:::aws-sdk:ec2:{action}Instances",
                    role_arn=role.role_arn,
                    input=stack.to_json_string({"InstanceIds": [self.instance.instance_id]}),
                ),
            )
