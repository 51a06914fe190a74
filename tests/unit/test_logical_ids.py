"""Logical ids of stateful resources are pinned: a changed id makes CloudFormation replace the resource,
which for a bucket or key means losing data. Renaming a construct must fail here first."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.synth

STATEFUL_TYPES = ("AWS::S3::Bucket", "AWS::KMS::Key", "AWS::Logs::LogGroup", "AWS::EC2::VPC",
                  "AWS::SNS::Topic", "AWS::SageMaker::ModelPackageGroup")

PINNED = {
    "Data": {
        "TeamKey687C8DD0": "AWS::KMS::Key",
        "BucketsLogsBucket76941C49": "AWS::S3::Bucket",
        "BucketsDataBucket44451DC7": "AWS::S3::Bucket",
        "BucketsArtifactsBucket49D84E1D": "AWS::S3::Bucket",
        "NetworkFlowLogs2BEC3212": "AWS::Logs::LogGroup",
        "NetworkVpc7FB7348F": "AWS::EC2::VPC",
        "TeamTopic98726D49": "AWS::SNS::Topic",
    },
    "Training": {
        "ModelPackageGroup": "AWS::SageMaker::ModelPackageGroup",
    },
}


@pytest.mark.parametrize("stage", ["search-dev", "search-prod", "support-dev"])
@pytest.mark.parametrize("stack_name", sorted(PINNED))
def test_stateful_logical_ids_are_pinned(assembly, stage, stack_name):
    resources = assembly.stack(stage, stack_name).template["Resources"]
    stateful = {logical_id: r["Type"] for logical_id, r in resources.items() if r["Type"] in STATEFUL_TYPES}
    assert stateful == PINNED[stack_name]
