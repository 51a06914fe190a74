"""IAM statements every SageMaker role of a stage needs (training jobs, endpoints, transform jobs), in one place."""

from __future__ import annotations

from typing import Any

from aws_cdk import aws_iam as iam

# What SageMaker does with the role's credentials to attach a job or endpoint to the team VPC. None of these
# actions has resource-level permissions, so they are granted on "*" and acknowledged where used.
VPC_NETWORK_INTERFACE_ACTIONS = [
    "ec2:CreateNetworkInterface", "ec2:CreateNetworkInterfacePermission",
    "ec2:DeleteNetworkInterface", "ec2:DeleteNetworkInterfacePermission",
    "ec2:DescribeNetworkInterfaces", "ec2:DescribeVpcs", "ec2:DescribeDhcpOptions",
    "ec2:DescribeSubnets", "ec2:DescribeSecurityGroups",
]


def vpc_network_interfaces(*, conditions: dict[str, Any] | None = None) -> iam.PolicyStatement:
    return iam.PolicyStatement(sid="VpcNetworkInterfaces", actions=VPC_NETWORK_INTERFACE_ACTIONS, resources=["*"],
                               conditions=conditions)


def ecr_login() -> iam.PolicyStatement:
    """ecr:GetAuthorizationToken has no resource-level permissions."""
    return iam.PolicyStatement(sid="EcrLogin", actions=["ecr:GetAuthorizationToken"], resources=["*"])
