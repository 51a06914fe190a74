"""The team stage's network: isolated subnets and the VPC endpoints SageMaker training needs."""

from __future__ import annotations

from aws_cdk import Fn, RemovalPolicy
from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_logs as logs
from constructs import Construct

from stacks.settings import ExistingVpc, NewVpc

# What a training job in an isolated subnet talks to: ECR to pull the image, CloudWatch Logs, STS for
# credentials, the SageMaker API and runtime; X-Ray for the traced Lambdas of the stage (pipeline steps and
# the inference proxy). S3 is reached through a gateway endpoint (free, no ENIs).
INTERFACE_ENDPOINTS: dict[str, ec2.InterfaceVpcEndpointAwsService] = {
    "EcrApi": ec2.InterfaceVpcEndpointAwsService.ECR,
    "EcrDocker": ec2.InterfaceVpcEndpointAwsService.ECR_DOCKER,
    "CloudWatchLogs": ec2.InterfaceVpcEndpointAwsService.CLOUDWATCH_LOGS,
    "Sts": ec2.InterfaceVpcEndpointAwsService.STS,
    "SageMakerApi": ec2.InterfaceVpcEndpointAwsService.SAGEMAKER_API,
    "SageMakerRuntime": ec2.InterfaceVpcEndpointAwsService.SAGEMAKER_RUNTIME,
    "XRay": ec2.InterfaceVpcEndpointAwsService.XRAY,
}


class TeamNetwork(Construct):
    """A VPC with isolated subnets only (no internet route) and flow logs, or an existing VPC from config.

    Exposes ``vpc``, ``subnets`` (the isolated subnets to place jobs and endpoints in) and
    ``endpoint_security_group`` (admits HTTPS from inside the VPC to the interface endpoints).
    """

    def __init__(
        self,
        scope: Construct,
        id_: str,
        *,
        settings: NewVpc | ExistingVpc,
        qualified_name: str,
        key: kms.IKey,
        log_retention: logs.RetentionDays,
        removal_policy: RemovalPolicy,
    ) -> None:
        super().__init__(scope, id_)
        if isinstance(settings, ExistingVpc):
            self.vpc = ec2.Vpc.from_vpc_attributes(
                self, "Vpc",
                vpc_id=settings.vpc_id,
                availability_zones=settings.availability_zones,
                isolated_subnet_ids=settings.isolated_subnet_ids,
                vpc_cidr_block=settings.cidr,
            )
            create_endpoints = settings.create_endpoints
        else:
            self.flow_log_group = logs.LogGroup(
                self, "FlowLogs",
                log_group_name=f"/finetune-stack/{qualified_name}/vpc-flow-logs",
                encryption_key=key,
                retention=log_retention,
                removal_policy=removal_policy,
            )
            # A customer-managed policy rather than CDK's inline default policy (NIST/HIPAA IAMNoInlinePolicy).
            flow_log_role = iam.Role(
                self, "FlowLogsRole",
                assumed_by=iam.ServicePrincipal("vpc-flow-logs.amazonaws.com"),
                description=f"{qualified_name}: VPC flow logs delivery to CloudWatch Logs",
            )
            flow_log_role.add_managed_policy(iam.ManagedPolicy(
                self, "FlowLogsPolicy",
                description=f"{qualified_name}: write VPC flow logs to their log group",
                statements=[iam.PolicyStatement(
                    actions=["logs:CreateLogStream", "logs:PutLogEvents", "logs:DescribeLogStreams"],
                    # A log group's Arn attribute already ends in ":*" and so covers its streams.
                    resources=[self.flow_log_group.log_group_arn],
                )],
            ))
            self.vpc = ec2.Vpc(
                self, "Vpc",
                vpc_name=qualified_name,
                ip_addresses=ec2.IpAddresses.cidr(settings.cidr),
                # Zones by position in the account's own list (Fn::GetAZs): no lookup, nothing hard-coded, and
                # stable, because AWS keeps the order of an account's zones.
                availability_zones=[Fn.select(index, Fn.get_azs()) for index in range(settings.zones)],
                nat_gateways=0,
                subnet_configuration=[ec2.SubnetConfiguration(
                    name="Isolated", subnet_type=ec2.SubnetType.PRIVATE_ISOLATED, cidr_mask=20)],
                restrict_default_security_group=True,
                flow_logs={"All": ec2.FlowLogOptions(
                    destination=ec2.FlowLogDestination.to_cloud_watch_logs(
                        self.flow_log_group, flow_log_role.without_policy_updates()),
                    traffic_type=ec2.FlowLogTrafficType.ALL,
                )},
            )
            create_endpoints = True
        self.subnets = ec2.SubnetSelection(subnet_type=ec2.SubnetType.PRIVATE_ISOLATED) \
            if isinstance(settings, NewVpc) else ec2.SubnetSelection(subnets=self.vpc.isolated_subnets)

        self.endpoint_security_group = ec2.SecurityGroup(
            self, "EndpointSecurityGroup",
            vpc=self.vpc,
            description=f"{qualified_name}: HTTPS from inside the VPC to the interface endpoints",
            allow_all_outbound=False,
        )
        self.endpoint_security_group.add_ingress_rule(
            ec2.Peer.ipv4(settings.cidr), ec2.Port.tcp(443), "HTTPS from the VPC")
        if create_endpoints:
            self.vpc.add_gateway_endpoint("S3Endpoint", service=ec2.GatewayVpcEndpointAwsService.S3,
                                          subnets=[self.subnets])
            for name, service in INTERFACE_ENDPOINTS.items():
                self.vpc.add_interface_endpoint(
                    f"{name}Endpoint", service=service, subnets=self.subnets, private_dns_enabled=True,
                    security_groups=[self.endpoint_security_group], open=False)
