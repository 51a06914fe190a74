"""Precise assertions on the Data stack of the example config: encryption, TLS, versioning, lifecycle, network."""

from __future__ import annotations

import pytest
from aws_cdk.assertions import Match

pytestmark = pytest.mark.synth

STAGES = ["search-dev", "search-prod", "support-dev"]


def _key_id(stack) -> str:
    (key_id,) = stack.resources_of_type("AWS::KMS::Key")
    return key_id


def _bucket(stack, purpose: str) -> dict:
    matches = [
        r
        for r in stack.resources_of_type("AWS::S3::Bucket").values()
        if r["Properties"]["BucketName"].startswith(f"{stack.stage}-{purpose}-")
    ]
    assert len(matches) == 1, f"expected one {purpose} bucket in {stack.stage}"
    return matches[0]


@pytest.mark.parametrize("stage", STAGES)
def test_team_key_rotates_and_is_named_for_the_stage(assembly, stage):
    template = assembly.template(stage, "Data")
    template.resource_count_is("AWS::KMS::Key", 1)
    template.has_resource_properties("AWS::KMS::Key", {"EnableKeyRotation": True, "RotationPeriodInDays": 365})
    template.has_resource_properties("AWS::KMS::Alias", {"AliasName": f"alias/finetune-stack/{stage}"})


def test_key_policy_lets_cloudwatch_logs_use_the_key_only_for_this_stage(assembly):
    stack = assembly.stack("search-prod", "Data")
    statements = stack.template["Resources"][_key_id(stack)]["Properties"]["KeyPolicy"]["Statement"]
    logs_statement = next(s for s in statements if s.get("Sid") == "AllowCloudWatchLogsForThisStage")
    assert logs_statement["Principal"] == {"Service": "logs.us-east-1.amazonaws.com"}
    condition = logs_statement["Condition"]["ArnLike"]["kms:EncryptionContext:aws:logs:arn"]
    # anchored to the stage's names: `*search-prod*` also matched e.g. xsearch-prod or search-prod-eu
    prefix = "arn:aws:logs:us-east-1:222222222222:log-group:"
    assert condition == [
        f"{prefix}/aws/vendedlogs/states/search-prod-*",
        f"{prefix}/aws/lambda/search-prod-*",
        f"{prefix}/finetune-stack/search-prod/*",
        f"{prefix}aws-waf-logs-search-prod-*",
    ]


@pytest.mark.parametrize("stage", STAGES)
@pytest.mark.parametrize("purpose", ["data", "artifacts"])
def test_data_buckets_use_the_team_key_with_bucket_keys(assembly, stage, purpose):
    stack = assembly.stack(stage, "Data")
    encryption = _bucket(stack, purpose)["Properties"]["BucketEncryption"]["ServerSideEncryptionConfiguration"]
    assert encryption == [
        {
            "BucketKeyEnabled": True,
            "ServerSideEncryptionByDefault": {
                "SSEAlgorithm": "aws:kms",
                "KMSMasterKeyID": {"Fn::GetAtt": [_key_id(stack), "Arn"]},
            },
        }
    ]


@pytest.mark.parametrize("stage", STAGES)
def test_logs_bucket_uses_sse_s3_because_access_logging_requires_it(assembly, stage):
    bucket = _bucket(assembly.stack(stage, "Data"), "logs")
    encryption = bucket["Properties"]["BucketEncryption"]["ServerSideEncryptionConfiguration"]
    assert encryption == [{"ServerSideEncryptionByDefault": {"SSEAlgorithm": "AES256"}}]


@pytest.mark.parametrize("stage", STAGES)
@pytest.mark.parametrize("purpose", ["data", "artifacts", "logs"])
def test_every_bucket_is_versioned_private_and_named_from_the_stage(assembly, stage, purpose):
    stack = assembly.stack(stage, "Data")
    bucket = _bucket(stack, purpose)["Properties"]
    assert bucket["VersioningConfiguration"] == {"Status": "Enabled"}
    assert bucket["PublicAccessBlockConfiguration"] == {
        "BlockPublicAcls": True,
        "BlockPublicPolicy": True,
        "IgnorePublicAcls": True,
        "RestrictPublicBuckets": True,
    }
    assert bucket["OwnershipControls"] == {"Rules": [{"ObjectOwnership": "BucketOwnerEnforced"}]}
    account, region = {
        "search-dev": ("111111111111", "eu-west-1"),
        "search-prod": ("222222222222", "us-east-1"),
        "support-dev": ("333333333333", "eu-west-1"),
    }[stage]
    assert bucket["BucketName"] == f"{stage}-{purpose}-{account}-{region}"
    assert len(bucket["BucketName"]) <= 63


@pytest.mark.parametrize("stage", STAGES)
def test_every_bucket_policy_denies_plain_http_and_old_tls(assembly, stage):
    policies = assembly.stack(stage, "Data").resources_of_type("AWS::S3::BucketPolicy")
    assert len(policies) == 3
    for policy in policies.values():
        statements = policy["Properties"]["PolicyDocument"]["Statement"]
        denies = [s for s in statements if s["Effect"] == "Deny" and s["Action"] == "s3:*"]
        conditions = [s["Condition"] for s in denies]
        assert {"Bool": {"aws:SecureTransport": "false"}} in conditions
        assert {"NumericLessThan": {"s3:TlsVersion": 1.2}} in conditions


@pytest.mark.parametrize("stage", STAGES)
@pytest.mark.parametrize("purpose", ["data", "artifacts"])
def test_data_buckets_log_access_to_the_logs_bucket(assembly, stage, purpose):
    stack = assembly.stack(stage, "Data")
    logs_bucket_id = next(
        logical_id
        for logical_id, r in stack.resources_of_type("AWS::S3::Bucket").items()
        if r["Properties"]["BucketName"].startswith(f"{stage}-logs-")
    )
    assert _bucket(stack, purpose)["Properties"]["LoggingConfiguration"] == {
        "DestinationBucketName": {"Ref": logs_bucket_id},
        "LogFilePrefix": f"{purpose}/",
    }


def test_lifecycle_expires_noncurrent_versions_and_abandoned_uploads(assembly):
    dev = _bucket(assembly.stack("search-dev", "Data"), "data")["Properties"]["LifecycleConfiguration"]["Rules"]
    prod = _bucket(assembly.stack("search-prod", "Data"), "artifacts")["Properties"]["LifecycleConfiguration"]["Rules"]
    assert {
        "Id": "AbortIncompleteUploads",
        "Status": "Enabled",
        "AbortIncompleteMultipartUpload": {"DaysAfterInitiation": 7},
    } in dev
    # search dev overrides the 90-day default with 14 days; prod keeps the default.
    assert {
        "Id": "ExpireNoncurrentVersions",
        "Status": "Enabled",
        "NoncurrentVersionExpiration": {"NoncurrentDays": 14},
    } in dev
    assert {
        "Id": "ExpireNoncurrentVersions",
        "Status": "Enabled",
        "NoncurrentVersionExpiration": {"NoncurrentDays": 90},
    } in prod
    assert {"Id": "ExpireCheckpoints", "Status": "Enabled", "Prefix": "checkpoints/", "ExpirationInDays": 30} in prod


def test_prod_retains_stateful_resources_and_has_no_auto_delete(assembly):
    stack = assembly.stack("search-prod", "Data")
    stateful = {
        **stack.resources_of_type("AWS::S3::Bucket"),
        **stack.resources_of_type("AWS::KMS::Key"),
        **stack.resources_of_type("AWS::Logs::LogGroup"),
    }
    assert len(stateful) == 6  # key, three buckets, flow logs, S3 prefix-list lookup logs
    for logical_id, resource in stateful.items():
        assert resource["DeletionPolicy"] == "Retain", logical_id
        assert resource["UpdateReplacePolicy"] == "Retain", logical_id
    assert not stack.resources_of_type("Custom::S3AutoDeleteObjects")


def test_ephemeral_dev_stage_destroys_buckets_and_empties_them_first(assembly):
    stack = assembly.stack("search-dev", "Data")
    for logical_id, resource in stack.resources_of_type("AWS::S3::Bucket").items():
        assert resource["DeletionPolicy"] == "Delete", logical_id
    assert len(stack.resources_of_type("Custom::S3AutoDeleteObjects")) == 3


def test_vpc_has_only_isolated_subnets_in_two_zones_and_no_internet_route(assembly):
    template = assembly.template("search-prod", "Data")
    template.resource_count_is("AWS::EC2::Subnet", 2)
    template.resource_count_is("AWS::EC2::InternetGateway", 0)
    template.resource_count_is("AWS::EC2::NatGateway", 0)
    template.resource_count_is("AWS::EC2::Route", 0)
    template.has_resource_properties("AWS::EC2::VPC", {"CidrBlock": "10.41.0.0/16"})
    template.has_resource_properties(
        "AWS::EC2::Subnet", {"AvailabilityZone": {"Fn::Select": [1, {"Fn::GetAZs": ""}]}, "MapPublicIpOnLaunch": False}
    )


def test_vpc_has_the_endpoints_training_and_traced_lambdas_need(assembly):
    stack = assembly.stack("search-prod", "Data")
    endpoints = list(stack.resources_of_type("AWS::EC2::VPCEndpoint").values())
    interface = {
        e["Properties"]["ServiceName"]
        for e in endpoints
        if e["Properties"]["VpcEndpointType"] == "Interface" and e["Properties"]["PrivateDnsEnabled"]
    }
    gateway = [e["Properties"]["ServiceName"] for e in endpoints if e["Properties"]["VpcEndpointType"] == "Gateway"]
    assert interface == {
        "com.amazonaws.us-east-1.ecr.api",
        "com.amazonaws.us-east-1.ecr.dkr",
        "com.amazonaws.us-east-1.logs",
        "com.amazonaws.us-east-1.sts",
        "com.amazonaws.us-east-1.sagemaker.api",
        "com.amazonaws.us-east-1.sagemaker.runtime",
        "com.amazonaws.us-east-1.xray",
    }
    assert gateway == [{"Fn::Join": ["", ["com.amazonaws.", {"Ref": "AWS::Region"}, ".s3"]]}]


def test_endpoint_security_group_admits_https_from_the_vpc_only(assembly):
    template = assembly.template("search-prod", "Data")
    template.has_resource_properties(
        "AWS::EC2::SecurityGroup",
        {
            "SecurityGroupIngress": [
                {
                    "CidrIp": "10.41.0.0/16",
                    "FromPort": 443,
                    "ToPort": 443,
                    "IpProtocol": "tcp",
                    "Description": "HTTPS from the VPC",
                }
            ],
            "SecurityGroupEgress": Match.array_with([Match.object_like({"CidrIp": "255.255.255.255/32"})]),
        },
    )


def test_flow_logs_go_to_an_encrypted_log_group_with_configured_retention(assembly):
    stack = assembly.stack("search-dev", "Data")
    template = assembly.template("search-dev", "Data")
    template.has_resource_properties(
        "AWS::Logs::LogGroup",
        {
            "LogGroupName": "/finetune-stack/search-dev/vpc-flow-logs",
            "RetentionInDays": 30,
            "KmsKeyId": {"Fn::GetAtt": [_key_id(stack), "Arn"]},
        },
    )
    template.has_resource_properties("AWS::EC2::FlowLog", {"TrafficType": "ALL", "ResourceType": "VPC"})


@pytest.mark.parametrize("stage", STAGES)
def test_stage_publishes_outputs_and_ssm_parameters(assembly, stage):
    team, name = stage.split("-")
    stack = assembly.stack(stage, "Data")
    parameters = {r["Properties"]["Name"] for r in stack.resources_of_type("AWS::SSM::Parameter").values()}
    assert parameters == {
        f"/finetune-stack/{team}/{name}/{p}"
        for p in ("data-bucket", "artifacts-bucket", "logs-bucket", "kms-key-arn", "vpc-id", "topic-arn")
    }
    assert set(stack.template["Outputs"]) >= {
        "DataBucketName",
        "ArtifactsBucketName",
        "LogsBucketName",
        "TeamKeyArn",
        "VpcId",
    }


def test_data_bucket_sends_object_events_to_eventbridge_without_a_custom_resource(assembly):
    stack = assembly.stack("search-dev", "Data")
    assert _bucket(stack, "data")["Properties"]["NotificationConfiguration"] == {
        "EventBridgeConfiguration": {"EventBridgeEnabled": True}
    }
    assert not stack.resources_of_type("Custom::S3BucketNotifications")
