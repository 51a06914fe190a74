"""Template assertions on the Training stack: image, registry, pipeline logging/tracing, roles, events."""

from __future__ import annotations

import json

import pytest
from aws_cdk.assertions import Match

pytestmark = pytest.mark.synth


def test_training_image_is_built_from_the_regions_dlc(assembly):
    stack = assembly.stack("search-dev", "Training")
    image_uri = json.dumps(stack.template["Outputs"]["TrainingImageUri"]["Value"])
    assert "container-assets" in image_uri
    (machine,) = stack.resources_of_type("AWS::StepFunctions::StateMachine").values()
    assert "eu-west-1" in json.dumps(machine["Properties"]["DefinitionString"])


def test_model_package_group_is_retained_and_named_for_the_stage(assembly):
    template = assembly.template("search-prod", "Training")
    template.has_resource(
        "AWS::SageMaker::ModelPackageGroup",
        {"DeletionPolicy": "Retain", "Properties": {"ModelPackageGroupName": "search-prod-models"}},
    )


@pytest.mark.parametrize("stage", ["search-dev", "search-prod", "support-dev"])
def test_state_machine_logs_everything_traces_and_encrypts(assembly, stage):
    template = assembly.template(stage, "Training")
    template.has_resource_properties(
        "AWS::StepFunctions::StateMachine",
        {
            "StateMachineName": f"{stage}-FineTune",
            "TracingConfiguration": {"Enabled": True},
            "LoggingConfiguration": Match.object_like({"Level": "ALL", "IncludeExecutionData": True}),
            "EncryptionConfiguration": Match.object_like({"Type": "CUSTOMER_MANAGED_KMS_KEY"}),
        },
    )


def test_execution_role_has_no_aws_managed_policies_and_scoped_s3(assembly):
    stack = assembly.stack("search-dev", "Training")
    role = next(
        r
        for r in stack.resources_of_type("AWS::IAM::Role").values()
        if r["Properties"].get("RoleName") == "search-dev-sagemaker-execution"
    )
    assert all("arn:aws:iam::aws:policy" not in json.dumps(arn) for arn in role["Properties"]["ManagedPolicyArns"])
    (policy,) = [
        p
        for p in stack.resources_of_type("AWS::IAM::ManagedPolicy").values()
        if "SageMaker jobs and models" in p["Properties"].get("Description", "")
    ]
    s3_resources = [
        r
        for s in policy["Properties"]["PolicyDocument"]["Statement"]
        if any(a.startswith("s3:") for a in ([s["Action"]] if isinstance(s["Action"], str) else s["Action"]))
        for r in ([s["Resource"]] if isinstance(s["Resource"], str) else s["Resource"])
    ]
    assert s3_resources and all(
        r.startswith(
            (
                "arn:aws:s3:::search-dev-data-111111111111-eu-west-1",
                "arn:aws:s3:::search-dev-artifacts-111111111111-eu-west-1",
            )
        )
        for r in s3_resources
    )
    assert "arn:aws:s3:::search-dev-data-111111111111-eu-west-1/datasets/*" in s3_resources


def test_lambdas_run_in_the_vpc_with_reserved_concurrency_and_tracing(assembly):
    template = assembly.template("search-prod", "Training")
    for name in ("search-prod-finetune-validate", "search-prod-finetune-gate"):
        template.has_resource_properties(
            "AWS::Lambda::Function",
            {
                "FunctionName": name,
                "TracingConfig": {"Mode": "Active"},
                "ReservedConcurrentExecutions": 10,
                "VpcConfig": Match.object_like({"SubnetIds": Match.any_value()}),
                "Architectures": ["arm64"],
            },
        )


def test_training_job_state_changes_of_this_stage_go_to_the_team_topic(assembly):
    template = assembly.template("search-dev", "Training")
    template.has_resource_properties(
        "AWS::Events::Rule",
        {
            "EventPattern": {
                "source": ["aws.sagemaker"],
                "detail-type": ["SageMaker Training Job State Change"],
                "detail": {
                    "TrainingJobName": [{"prefix": "search-dev-"}],
                    "TrainingJobStatus": ["Completed", "Failed", "Stopped"],
                },
            },
            "Targets": [Match.object_like({"Arn": Match.any_value()})],
        },
    )


def test_manifest_upload_starts_a_run_only_where_configured(assembly):
    dev = assembly.template("search-dev", "Training")
    dev.has_resource_properties(
        "AWS::Events::Rule",
        {
            "EventPattern": {
                "source": ["aws.s3"],
                "detail-type": ["Object Created"],
                "detail": {
                    "bucket": {"name": ["search-dev-data-111111111111-eu-west-1"]},
                    "object": {"key": [{"wildcard": "datasets/*/*/manifest.json"}]},
                },
            }
        },
    )
    prod = assembly.stack("search-prod", "Training")
    patterns = [r["Properties"]["EventPattern"] for r in prod.resources_of_type("AWS::Events::Rule").values()]
    assert all(p["source"] != ["aws.s3"] for p in patterns)
