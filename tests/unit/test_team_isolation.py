"""Team isolation: no IAM statement in one team stage grants access to another stage's buckets, keys,
repositories, endpoints or model packages, and none grants data actions on `Resource: *`."""

from __future__ import annotations

import json

import pytest

pytestmark = pytest.mark.synth

STAGES = ("search-dev", "search-prod", "support-dev")
# Actions that touch data or models: never on every resource.
DATA_ACTION_PREFIXES = ("s3:", "kms:Decrypt", "kms:Encrypt", "kms:GenerateDataKey", "kms:ReEncrypt",
                        "sagemaker:InvokeEndpoint", "sagemaker:CreateModelPackage", "sagemaker:UpdateEndpoint",
                        "sagemaker:CreateTrainingJob", "ecr:BatchGetImage", "ecr:GetDownloadUrlForLayer",
                        "states:StartExecution", "sns:Publish", "lambda:InvokeFunction")


def _statements(template: dict) -> list[tuple[str, dict]]:
    found = []
    for logical_id, resource in template["Resources"].items():
        properties = resource.get("Properties", {})
        documents = []
        if resource["Type"] in ("AWS::IAM::Policy", "AWS::IAM::ManagedPolicy"):
            documents.append(properties["PolicyDocument"])
        if resource["Type"] == "AWS::IAM::Role":
            documents += [p["PolicyDocument"] for p in properties.get("Policies", [])]
        for document in documents:
            found += [(logical_id, statement) for statement in document["Statement"]]
    return found


def _listify(value) -> list:
    return value if isinstance(value, list) else [value]


def test_policies_exist_to_be_checked(assembly):
    assert sum(len(_statements(s.template)) for s in assembly.stacks.values()) > 100


@pytest.mark.parametrize("stage", STAGES)
def test_no_statement_names_another_stage(assembly, stage):
    others = [other for other in STAGES if other != stage]
    for (stack_stage, stack_name), stack in assembly.stacks.items():
        if stack_stage != stage:
            continue
        for logical_id, statement in _statements(stack.template):
            text = json.dumps(statement.get("Resource", ""))
            for other in others:
                assert other not in text, f"{stage}/{stack_name} {logical_id} reaches {other}: {text}"


@pytest.mark.parametrize("stage", STAGES)
def test_data_actions_are_never_granted_on_every_resource(assembly, stage):
    checked = 0
    for (stack_stage, stack_name), stack in assembly.stacks.items():
        if stack_stage != stage:
            continue
        for logical_id, statement in _statements(stack.template):
            if statement["Effect"] != "Allow":
                continue
            actions = [a for a in _listify(statement["Action"]) if a.startswith(DATA_ACTION_PREFIXES) or a == "*"]
            if not actions:
                continue
            checked += 1
            assert "*" not in _listify(statement["Resource"]), f"{stage}/{stack_name} {logical_id}: {actions} on *"
    assert checked >= 10


def test_the_check_catches_a_cross_team_grant():
    """The check can fail: a statement naming another stage's bucket is found."""
    template = {"Resources": {"P": {"Type": "AWS::IAM::ManagedPolicy", "Properties": {"PolicyDocument": {
        "Statement": [{"Effect": "Allow", "Action": "s3:GetObject",
                       "Resource": "arn:aws:s3:::support-dev-data-333333333333-eu-west-1/*"}]}}}}}
    (_, statement), = _statements(template)
    assert "support-dev" in json.dumps(statement["Resource"])
