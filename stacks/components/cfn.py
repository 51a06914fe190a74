"""The CloudFormation resource behind an L2 construct, typed: ``node.default_child`` is only an ``IConstruct``."""

from __future__ import annotations

from typing import TypeVar

from aws_cdk import CfnResource
from constructs import IConstruct

ResourceT = TypeVar("ResourceT", bound=CfnResource)


def cfn_resource(construct: IConstruct, kind: type[ResourceT]) -> ResourceT:
    """The L1 resource ``construct`` wraps, checked to be a ``kind`` (e.g. ``s3.CfnBucket``)."""
    child = construct.node.default_child
    if not isinstance(child, kind):
        raise TypeError(f"{construct.node.path}: its default child is {type(child).__name__}, not {kind.__name__}")
    return child
