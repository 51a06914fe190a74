"""IAM statements every SageMaker role of a stage needs (training jobs, endpoints, transform jobs), in one place."""

from __future__ import annotations

from typing import Any

from aws_cdk import Stack
from aws_cdk import aws_iam as iam

# What SageMaker does with the role's credentials to attach a job or endpoint to the team VPC. None of these
# actions has resource-level permissions that name the VPC, so they are granted on "*" and held to the team VPC
# and its subnets by condition (acknowledged where used).
VPC_NETWORK_INTERFACE_ACTIONS = [
    "ec2:CreateNetworkInterface",
    "ec2:CreateNetworkInterfacePermission",
    "ec2:DeleteNetworkInterface",
    "ec2:DeleteNetworkInterfacePermission",
    "ec2:DescribeNetworkInterfaces",
    "ec2:DescribeVpcs",
    "ec2:DescribeDhcpOptions",
    "ec2:DescribeSubnets",
    "ec2:DescribeSecurityGroups",
]


def vpc_conditions(stack: Stack, *, vpc_id: str, subnet_ids: list[str]) -> dict[str, Any]:
    """The conditions that hold network-interface actions to one VPC and its subnets.

    ``ec2:Vpc`` and ``ec2:Subnet`` are present on the actions that create or attach an interface (the
    ``IfExists`` form leaves the Describe* actions, which carry neither key, working); ``ec2:AuthorizedService``
    limits interface permissions to SageMaker.
    """
    return {
        "ArnEqualsIfExists": {
            "ec2:Vpc": stack.format_arn(service="ec2", resource="vpc", resource_name=vpc_id),
            "ec2:Subnet": [
                stack.format_arn(service="ec2", resource="subnet", resource_name=subnet) for subnet in subnet_ids
            ],
        },
        "StringEqualsIfExists": {"ec2:AuthorizedService": "sagemaker.amazonaws.com"},
    }


def vpc_network_interfaces(*, conditions: dict[str, Any]) -> iam.PolicyStatement:
    """The VPC network-interface actions on "*", limited by :func:`vpc_conditions`."""
    return iam.PolicyStatement(
        sid="VpcNetworkInterfaces", actions=VPC_NETWORK_INTERFACE_ACTIONS, resources=["*"], conditions=conditions
    )


def ecr_login() -> iam.PolicyStatement:
    """ecr:GetAuthorizationToken has no resource-level permissions."""
    return iam.PolicyStatement(sid="EcrLogin", actions=["ecr:GetAuthorizationToken"], resources=["*"])
