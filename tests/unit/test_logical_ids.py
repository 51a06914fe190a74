"""Logical ids of stateful resources are pinned: a changed id makes CloudFormation replace the resource,
which for a bucket or key means losing data. Renaming a construct must fail here first."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.synth

STATEFUL_TYPES = (
    "AWS::S3::Bucket",
    "AWS::KMS::Key",
    "AWS::Logs::LogGroup",
    "AWS::EC2::VPC",
    "AWS::SNS::Topic",
    "AWS::SageMaker::ModelPackageGroup",
    "AWS::EC2::Instance",
    "AWS::EC2::Volume",
    "AWS::CloudWatch::Dashboard",
    "AWS::Budgets::Budget",
)

PINNED = {
    "Data": {
        "TeamKey687C8DD0": "AWS::KMS::Key",
        "BucketsLogsBucket76941C49": "AWS::S3::Bucket",
        "BucketsDataBucket44451DC7": "AWS::S3::Bucket",
        "BucketsArtifactsBucket49D84E1D": "AWS::S3::Bucket",
        "NetworkFlowLogs2BEC3212": "AWS::Logs::LogGroup",
        "NetworkS3PrefixListLookupLogs1DC7304E": "AWS::Logs::LogGroup",
        "NetworkVpc7FB7348F": "AWS::EC2::VPC",
        "TeamTopic98726D49": "AWS::SNS::Topic",
    },
    "Inference": {
        "ProxyLogGroup29A2C131": "AWS::Logs::LogGroup",
        "ApiAccessLogs50B185DB": "AWS::Logs::LogGroup",
        "ApiWafLogsBA46EA93": "AWS::Logs::LogGroup",
        "BatchInferLogGroup71BE3CE4": "AWS::Logs::LogGroup",
    },
    "Training": {
        "ModelPackageGroup": "AWS::SageMaker::ModelPackageGroup",
        "FineTuneLogs053C9320": "AWS::Logs::LogGroup",
        "GateLogs29416032": "AWS::Logs::LogGroup",
        "ValidateRequestLogs5C28D7E1": "AWS::Logs::LogGroup",
    },
    # The host's root volume is in the instance's BlockDeviceMappings: pinning the instance pins it.
    "Hosts": {
        "HostresearchLogs8420A4CB": "AWS::Logs::LogGroup",
        "HostresearchInstance531B0F3C": "AWS::EC2::Instance",
    },
    "Monitoring": {
        "Dashboard9E4231ED": "AWS::CloudWatch::Dashboard",
        "Budget": "AWS::Budgets::Budget",
    },
}


@pytest.mark.parametrize("stage", ["search-dev", "search-prod", "support-dev"])
@pytest.mark.parametrize("stack_name", sorted(PINNED))
def test_stateful_logical_ids_are_pinned(assembly, stage, stack_name):
    if (stage, stack_name) not in assembly.stacks:
        pytest.skip(f"{stage} has no {stack_name} stack")  # Inference and Hosts exist only where configured
    resources = assembly.stack(stage, stack_name).template["Resources"]
    stateful = {logical_id: r["Type"] for logical_id, r in resources.items() if r["Type"] in STATEFUL_TYPES}
    assert stateful == PINNED[stack_name]
