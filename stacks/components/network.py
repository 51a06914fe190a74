"""The team stage's network: isolated subnets and the VPC endpoints SageMaker training needs."""

from __future__ import annotations

from typing import Any

from aws_cdk import CfnResource, Fn, RemovalPolicy, Stack
from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_logs as logs
from aws_cdk import custom_resources as cr
from constructs import Construct

from stacks.components.acknowledgements import acknowledge
from stacks.components.cfn import cfn_resource
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


# Construct id of the one Lambda function behind every AwsCustomResource of a stack (fixed by aws-cdk-lib).
AWS_CUSTOM_RESOURCE_SINGLETON = "AWS679f53fac002430cb0da5b7982bd2287"


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
        image_accounts: list[str],
    ) -> None:
        super().__init__(scope, id_)
        stack = Stack.of(self)
        if isinstance(settings, ExistingVpc):
            self.vpc = ec2.Vpc.from_vpc_attributes(
                self,
                "Vpc",
                vpc_id=settings.vpc_id,
                availability_zones=settings.availability_zones,
                isolated_subnet_ids=settings.isolated_subnet_ids,
                vpc_cidr_block=settings.cidr,
            )
            create_endpoints = settings.create_endpoints
        else:
            self.flow_log_group = logs.LogGroup(
                self,
                "FlowLogs",
                log_group_name=f"/finetune-stack/{qualified_name}/vpc-flow-logs",
                encryption_key=key,
                retention=log_retention,
                removal_policy=removal_policy,
            )
            # A customer-managed policy rather than CDK's inline default policy (NIST/HIPAA IAMNoInlinePolicy).
            flow_log_role = iam.Role(
                self,
                "FlowLogsRole",
                assumed_by=iam.ServicePrincipal("vpc-flow-logs.amazonaws.com"),
                description=f"{qualified_name}: VPC flow logs delivery to CloudWatch Logs",
            )
            flow_log_role.add_managed_policy(
                iam.ManagedPolicy(
                    self,
                    "FlowLogsPolicy",
                    description=f"{qualified_name}: write VPC flow logs to their log group",
                    statements=[
                        iam.PolicyStatement(
                            actions=["logs:CreateLogStream", "logs:PutLogEvents", "logs:DescribeLogStreams"],
                            # A log group's Arn attribute already ends in ":*" and so covers its streams.
                            resources=[self.flow_log_group.log_group_arn],
                        )
                    ],
                )
            )
            self.vpc = ec2.Vpc(
                self,
                "Vpc",
                vpc_name=qualified_name,
                ip_addresses=ec2.IpAddresses.cidr(settings.cidr),
                # Zones by position in the account's own list (Fn::GetAZs): no lookup, nothing hard-coded, and
                # stable, because AWS keeps the order of an account's zones.
                availability_zones=[Fn.select(index, Fn.get_azs()) for index in range(settings.zones)],
                nat_gateways=0,
                subnet_configuration=[
                    ec2.SubnetConfiguration(name="Isolated", subnet_type=ec2.SubnetType.PRIVATE_ISOLATED, cidr_mask=20)
                ],
                restrict_default_security_group=True,
                flow_logs={
                    "All": ec2.FlowLogOptions(
                        destination=ec2.FlowLogDestination.to_cloud_watch_logs(
                            self.flow_log_group, flow_log_role.without_policy_updates()
                        ),
                        traffic_type=ec2.FlowLogTrafficType.ALL,
                    )
                },
            )
            create_endpoints = True
        self.subnets = (
            ec2.SubnetSelection(subnet_type=ec2.SubnetType.PRIVATE_ISOLATED)
            if isinstance(settings, NewVpc)
            else ec2.SubnetSelection(subnets=self.vpc.isolated_subnets)
        )

        self.endpoint_security_group = ec2.SecurityGroup(
            self,
            "EndpointSecurityGroup",
            vpc=self.vpc,
            description=f"{qualified_name}: HTTPS from inside the VPC to the interface endpoints",
            allow_all_outbound=False,
        )
        self.endpoint_security_group.add_ingress_rule(
            ec2.Peer.ipv4(settings.cidr), ec2.Port.tcp(443), "HTTPS from the VPC"
        )
        if create_endpoints:
            s3_endpoint = self.vpc.add_gateway_endpoint(
                "S3Endpoint", service=ec2.GatewayVpcEndpointAwsService.S3, subnets=[self.subnets]
            )
            for statement in s3_endpoint_statements(
                partition=stack.partition, region=stack.region, account=stack.account
            ):
                s3_endpoint.add_to_policy(statement)
            for name, service in INTERFACE_ENDPOINTS.items():
                endpoint = self.vpc.add_interface_endpoint(
                    f"{name}Endpoint",
                    service=service,
                    subnets=self.subnets,
                    private_dns_enabled=True,
                    security_groups=[self.endpoint_security_group],
                    open=False,
                )
                # ECR serves the AWS Deep Learning Containers from AWS's registry accounts as well as ours.
                resource_accounts = (
                    [stack.account, *sorted(set(image_accounts))] if name.startswith("Ecr") else [stack.account]
                )
                endpoint.add_to_policy(
                    interface_endpoint_statement(account=stack.account, resource_accounts=resource_accounts)
                )

        # The id of the region's S3 prefix list (the S3 gateway endpoint's destinations), so security groups can
        # allow HTTPS to S3 without 0.0.0.0/0. AWS-managed prefix-list ids differ per region and CloudFormation
        # exposes none, so it is read at deploy time (ec2:DescribeManagedPrefixLists, read-only).
        prefix_list_name = f"com.amazonaws.{stack.region}.s3"
        lookup_call = cr.AwsSdkCall(
            service="EC2",
            action="describeManagedPrefixLists",
            parameters={"Filters": [{"Name": "prefix-list-name", "Values": [prefix_list_name]}]},
            physical_resource_id=cr.PhysicalResourceId.of(prefix_list_name),
            output_paths=["PrefixLists.0.PrefixListId"],
        )
        # The lookup's handler gets its own role with one customer-managed policy (no AWS managed or inline
        # policy) and logs to an encrypted log group of the stage.
        lookup_logs = logs.LogGroup(
            self,
            "S3PrefixListLookupLogs",
            log_group_name=f"/finetune-stack/{qualified_name}/s3-prefix-list-lookup",
            encryption_key=key,
            retention=log_retention,
            removal_policy=removal_policy,
        )
        lookup_policy = iam.ManagedPolicy(
            self,
            "S3PrefixListLookupPolicy",
            description=f"{qualified_name}: read the region's S3 prefix-list id at deploy time",
            statements=[
                iam.PolicyStatement(actions=["ec2:DescribeManagedPrefixLists"], resources=["*"]),
                iam.PolicyStatement(
                    actions=["logs:CreateLogStream", "logs:PutLogEvents"], resources=[lookup_logs.log_group_arn]
                ),
            ],
        )
        lookup_role = iam.Role(
            self,
            "S3PrefixListLookupRole",
            assumed_by=iam.ServicePrincipal("lambda.amazonaws.com"),
            description=f"{qualified_name}: deploy-time lookup of the S3 prefix-list id",
            managed_policies=[lookup_policy],
        )
        acknowledge(
            lookup_policy,
            {
                "AwsSolutions-IAM5[Resource::*]": (
                    "ec2:DescribeManagedPrefixLists has no resource-level permissions (IAM service authorization "
                    "reference); it is read-only and the only action on '*'."
                )
            },
        )
        self.s3_prefix_list_lookup = cr.AwsCustomResource(
            self,
            "S3PrefixList",
            on_create=lookup_call,
            on_update=lookup_call,
            install_latest_aws_sdk=False,
            role=lookup_role.without_policy_updates(),
            log_group=lookup_logs,
            # The construct requires a policy and writes it as an inline iam.Policy on the role; lookup_policy
            # already holds the action, so that inline copy is removed below (no inline policies in this stage).
            policy=cr.AwsCustomResourcePolicy.from_statements(
                [iam.PolicyStatement(actions=["ec2:DescribeManagedPrefixLists"], resources=["*"])]
            ),
        )
        assert self.s3_prefix_list_lookup.node.try_remove_child("CustomResourcePolicy")
        # ...and so is the custom resource's DependsOn on it. The handler's GetAtt of the role, whose managed policy
        # holds the action, already orders the lookup after its permissions.
        cfn_resource(self.s3_prefix_list_lookup.node.find_child("Resource"), CfnResource).add_deletion_override(
            "DependsOn"
        )
        self.s3_prefix_list_id = self.s3_prefix_list_lookup.get_response_field("PrefixLists.0.PrefixListId")
        handler = cfn_resource(stack.node.find_child(AWS_CUSTOM_RESOURCE_SINGLETON), CfnResource)
        # The CDK's singleton handler carries a DependsOn on its role that its GetAtt of the role already implies
        # (cfn-lint W3005): harmless and not ours to change, so cfn-lint is told so on exactly that function.
        handler.add_metadata("cfn-lint", {"config": {"ignore_checks": ["W3005"]}})
        acknowledge(
            handler,
            {
                f"{pack}-{rule}": reason
                for pack in ("NIST.800.53.R5", "HIPAA.Security")
                for rule, reason in (
                    (
                        "LambdaInsideVPC",
                        "The CDK's deploy-time lookup handler calls the EC2 API once per deployment "
                        "to read a public AWS-managed prefix-list id; placing it in the isolated VPC "
                        "would need an EC2 interface endpoint for that one read-only call.",
                    ),
                    (
                        "LambdaDLQ",
                        "Invoked synchronously by CloudFormation, which reports a failure as a failed "
                        "deployment; a dead-letter queue only receives failed asynchronous invocations.",
                    ),
                    (
                        "LambdaConcurrency",
                        "Runs once per deployment of the stack, invoked by CloudFormation alone; "
                        "there is no traffic to cap.",
                    ),
                )
            },
        )


def s3_endpoint_statements(*, partition: str, region: str, account: str) -> list[iam.PolicyStatement]:
    """The S3 gateway endpoint's policy: this account's principals on this account's buckets, and the AWS-owned
    buckets the stage's workloads read. Anything else (another account's bucket) is refused inside the VPC."""
    principal_is_ours = {"aws:PrincipalAccount": account}
    return [
        iam.PolicyStatement(
            sid="ThisAccountsPrincipalsOnThisAccountsBuckets",
            principals=[iam.AnyPrincipal()],
            actions=["s3:*"],
            resources=["*"],
            conditions={"StringEquals": {**principal_is_ours, "aws:ResourceAccount": account}},
        ),
        # ECR keeps image layers in this AWS-owned bucket: every image pull (training image, Deep Learning
        # Containers for endpoints and batch transform, the GPU hosts' docker pull) downloads from it.
        iam.PolicyStatement(
            sid="EcrImageLayers",
            principals=[iam.AnyPrincipal()],
            actions=["s3:GetObject"],
            resources=[f"arn:{partition}:s3:::prod-{region}-starport-layer-bucket/*"],
            conditions={"StringEquals": principal_is_ours},
        ),
        # The GPU hosts install the CloudWatch agent package from AWS's regional distribution bucket.
        iam.PolicyStatement(
            sid="CloudWatchAgentPackage",
            principals=[iam.AnyPrincipal()],
            actions=["s3:GetObject"],
            resources=[f"arn:{partition}:s3:::amazoncloudwatch-agent-{region}/*"],
            conditions={"StringEquals": principal_is_ours},
        ),
    ]


def interface_endpoint_statement(*, account: str, resource_accounts: list[str] | None) -> iam.PolicyStatement:
    """An interface endpoint's policy: only this account's principals, only on resources of ``resource_accounts``
    (``None``: a service whose AWS-owned resources, such as SSM's public documents, have no account to name).

    ``IfExists`` on aws:ResourceAccount because actions without a resource (ecr:GetAuthorizationToken,
    xray:PutTraceSegments, sts:GetCallerIdentity) carry no resource account; they are still held to this
    account's principals.
    """
    conditions: dict[str, Any] = {"StringEquals": {"aws:PrincipalAccount": account}}
    if resource_accounts is not None:
        conditions["StringEqualsIfExists"] = {"aws:ResourceAccount": resource_accounts}
    return iam.PolicyStatement(
        sid="ThisAccountsPrincipalsOnTheirResources",
        principals=[iam.AnyPrincipal()],
        actions=["*"],
        resources=["*"],
        conditions=conditions,
    )
