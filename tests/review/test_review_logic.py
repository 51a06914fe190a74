"""make review's pieces that need no synthesis: the CDK diff engine on small templates, policies, config words."""

from __future__ import annotations

import pytest

from scripts.review import (
    Review,
    ReviewError,
    classify_stack,
    config_changes,
    diff_templates,
    parse_policies,
    render_markdown,
)


def _bucket(**properties) -> dict:
    return {"Type": "AWS::S3::Bucket", "Properties": properties, "Metadata": {"aws:cdk:path": "s/Data/Bucket/Resource"}}


def _template(**resources) -> dict:
    return {"Resources": resources}


def _review(old: dict, new: dict) -> Review:
    review = Review(base="0" * 40, head="the working tree")
    review.stacks = [
        classify_stack(r) for r in diff_templates([{"stage": "s", "stack": "Data", "old": old, "new": new}])
    ]
    return review


def test_the_cdk_engine_knows_a_bucket_name_change_replaces_the_bucket():
    review = _review(_template(Bucket=_bucket(BucketName="a")), _template(Bucket=_bucket(BucketName="b")))
    [row] = review.rows()
    assert row["change"] == "replaced" and row["replacingProperties"] == [
        {"property": "BucketName", "impact": "WILL_REPLACE"}
    ]
    assert review.violations(["stateful-replacement"]) == ["stateful-replacement: s/Data Bucket (AWS::S3::Bucket)"]


def test_a_tag_change_updates_in_place_and_violates_nothing():
    review = _review(
        _template(Bucket=_bucket(Tags=[{"Key": "a", "Value": "1"}])),
        _template(Bucket=_bucket(Tags=[{"Key": "a", "Value": "2"}])),
    )
    [row] = review.rows()
    assert row["change"] == "changed"
    assert review.violations(["stateful-replacement", "replacement", "iam-widening"]) == []


def test_a_new_wildcard_statement_is_iam_widening_and_listed():
    policy = {
        "Type": "AWS::IAM::Policy",
        "Properties": {
            "PolicyName": "p",
            "Roles": ["r"],
            "PolicyDocument": {
                "Version": "2012-10-17",
                "Statement": [{"Effect": "Allow", "Action": "s3:GetObject", "Resource": "*"}],
            },
        },
    }
    review = _review(_template(), _template(Policy=policy))
    [stack] = review.stacks
    assert [(s["effect"], s["action"], s["resource"]) for s in stack["iam"]["statementsAdded"]] == [
        ("Allow", "s3:GetObject", "*")
    ]
    assert review.violations(["iam-widening"]) == ["iam-widening: s/Data"]
    assert "| + | s/Data | Allow |" in render_markdown(review)


def test_an_ingress_rule_is_a_security_group_change():
    group = {
        "Type": "AWS::EC2::SecurityGroup",
        "Properties": {
            "GroupDescription": "g",
            "SecurityGroupIngress": [{"IpProtocol": "tcp", "FromPort": 443, "ToPort": 443, "CidrIp": "0.0.0.0/0"}],
        },
    }
    review = _review(_template(), _template(Group=group))
    [stack] = review.stacks
    assert stack["securityGroups"]["rulesAdded"][0]["peer"] == "Everyone (IPv4)"
    assert review.violations(["security-group-widening"]) == ["security-group-widening: s/Data"]


def test_unknown_fail_on_policies_are_named():
    with pytest.raises(ReviewError, match=r"unknown policy stateful-replacment \(known: stateful-replacement"):
        parse_policies("stateful-replacment")
    assert parse_policies(" stateful-replacement , iam-widening ") == ["stateful-replacement", "iam-widening"]


def test_config_changes_in_words():
    stage = {
        "team": "search",
        "name": "dev",
        "account": "111111111111",
        "region": "eu-west-1",
        "training": {"instance_types": ["ml.g5.2xlarge"]},
        "endpoints": [],
        "hosts": [],
    }
    changed = {
        **stage,
        "training": {"instance_types": ["ml.g5.2xlarge", "ml.p4d.24xlarge"]},
        "endpoints": [{"name": "assistant", "kind": "llm", "instance_type": "ml.g5.xlarge"}],
        "hosts": [{"name": "research", "instance_type": "g5.2xlarge"}],
    }
    other_team = {**stage, "team": "support", "account": "333333333333"}
    assert config_changes([stage], [changed, other_team]) == [
        "team `support` added (stages dev)",
        "endpoint `assistant` added to `search-dev` (kind llm, instance_type ml.g5.xlarge)",
        "host `research` added to `search-dev` (instance_type g5.2xlarge)",
        "`search-dev`: training.instance_types + [ml.p4d.24xlarge]",
    ]
    assert config_changes([changed], [stage])[:2] == [
        "endpoint `assistant` removed from `search-dev`",
        "host `research` removed from `search-dev`",
    ]


def test_a_base_that_is_not_a_commit_is_named():
    from scripts.review import resolve_base

    with pytest.raises(ReviewError, match="--base no-such-ref: not a commit in this repository"):
        resolve_base("no-such-ref")


def test_a_config_the_tree_rejects_is_reported_with_its_problems(tmp_path):
    from scripts.review import ROOT, synthesize

    (tmp_path / "teams.yaml").write_text("teams: []\n")
    with pytest.raises(ReviewError) as error:
        synthesize(ROOT, tmp_path / "cdk.out", config=str(tmp_path / "teams.yaml"), teams=None, stages=None)
    assert "reading" in str(error.value) and "teams: must have at least 1 entry" in str(error.value)
    assert "Traceback" not in str(error.value)
