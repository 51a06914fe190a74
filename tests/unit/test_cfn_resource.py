"""cfn_resource: the typed lookup of the L1 resource behind an L2 construct."""

from __future__ import annotations

import pytest
from aws_cdk import App, Stack
from aws_cdk import aws_s3 as s3
from aws_cdk import aws_sns as sns

from stacks.components.cfn import cfn_resource


def test_returns_the_default_child_of_the_asked_kind():
    stack = Stack(App(), "S")
    bucket = s3.Bucket(stack, "Bucket", bucket_name="literal-name")
    resource = cfn_resource(bucket, s3.CfnBucket)
    assert resource.node.path == "S/Bucket/Resource"  # jsii hands out a new proxy per access: compare paths
    assert resource.bucket_name == "literal-name"


def test_a_different_kind_is_an_error_naming_the_construct():
    stack = Stack(App(), "S")
    bucket = s3.Bucket(stack, "Bucket")
    with pytest.raises(TypeError, match=r"S/Bucket: its default child is CfnBucket, not CfnTopic"):
        cfn_resource(bucket, sns.CfnTopic)
