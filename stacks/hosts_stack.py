"""Hosts stack: the team stage's GPU hosts from the Deep Learning AMI, reached by SSM Session Manager only."""

from __future__ import annotations

from typing import Any

from aws_cdk import CfnOutput, RemovalPolicy, Stack
from aws_cdk import aws_ec2 as ec2
from constructs import Construct

from stacks import naming
from stacks.components.gpu_host import GpuHost, pinned_ami
from stacks.components.network import interface_endpoint_statement
from stacks.components.retention import log_retention
from stacks.data_stack import DataStack
from stacks.settings import ExistingVpc, StageConfig
from stacks.training_stack import TrainingStack

# What a host in an isolated subnet needs besides the endpoints training already has (S3, ECR, Logs, STS):
# Session Manager (ssm, ssmmessages, ec2messages) and CloudWatch metrics for the agent.
HOST_ENDPOINTS: dict[str, ec2.InterfaceVpcEndpointAwsService] = {
    "Ssm": ec2.InterfaceVpcEndpointAwsService.SSM,
    "SsmMessages": ec2.InterfaceVpcEndpointAwsService.SSM_MESSAGES,
    "Ec2Messages": ec2.InterfaceVpcEndpointAwsService.EC2_MESSAGES,
    "CloudWatchMonitoring": ec2.InterfaceVpcEndpointAwsService.CLOUDWATCH_MONITORING,
}


class HostsStack(Stack):
    """One :class:`GpuHost` per host in the stage's config. Exposes ``hosts`` (config name -> GpuHost)."""

    def __init__(
        self, scope: Construct, id_: str, *, stage: StageConfig, data: DataStack, training: TrainingStack, **kwargs: Any
    ) -> None:
        super().__init__(scope, id_, description=f"finetune-stack {stage.qualified_name}: GPU hosts", **kwargs)
        network = data.network
        if not (isinstance(stage.vpc, ExistingVpc) and not stage.vpc.create_endpoints):
            for name, service in HOST_ENDPOINTS.items():
                endpoint = ec2.InterfaceVpcEndpoint(
                    self,
                    f"{name}Endpoint",
                    vpc=network.vpc,
                    service=service,
                    subnets=network.subnets,
                    private_dns_enabled=True,
                    security_groups=[network.endpoint_security_group],
                    open=False,
                )
                # The host's agents act on this account's resources; SSM also serves AWS-owned documents, so only
                # the principal is held to this account there.
                endpoint.add_to_policy(
                    interface_endpoint_statement(
                        account=self.account,
                        resource_accounts=None if name.startswith(("Ssm", "Ec2")) else [self.account],
                    )
                )

        ami_id = pinned_ami(stage.images.dlami_ssm_parameter, stage.region)
        self.hosts: dict[str, GpuHost] = {}
        for spec in stage.hosts:
            host = GpuHost(
                self,
                f"Host-{spec.name}",
                spec=spec,
                qualified_name=stage.qualified_name,
                ami_id=ami_id,
                vpc=network.vpc,
                subnets=network.subnets,
                key=data.team_key,
                data_bucket_name=naming.bucket(stage.qualified_name, "data", stage.account, stage.region),
                artifacts_bucket_name=naming.bucket(stage.qualified_name, "artifacts", stage.account, stage.region),
                image_repository=training.training_image.repository,
                image_uri=training.training_image.image_uri,
                topic=data.topic,
                log_retention=log_retention(stage.log_retention_days),
                removal_policy=RemovalPolicy.DESTROY if stage.ephemeral else RemovalPolicy.RETAIN,
                termination_protection=stage.is_prod,
            )
            self.hosts[spec.name] = host
            CfnOutput(
                self,
                f"{spec.name}InstanceId",
                value=host.instance.instance_id,
                description=f"{host.host_name}: aws ssm start-session --target <this>",
            )
