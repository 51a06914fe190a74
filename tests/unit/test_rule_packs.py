"""Security rule packs: zero unacknowledged findings on the example config, and every acknowledgement on review."""

from __future__ import annotations

import pytest
from syrupy.extensions.json import JSONSnapshotExtension

from scripts.cloud_assembly import acknowledgements
from tests.conftest import EXAMPLE_CONFIG

pytestmark = pytest.mark.synth


def _packs_of(stage):
    from cdk_nag import AwsSolutionsChecks

    from stacks.rule_packs import PACKS_BY_COMPLIANCE_NAME

    return [AwsSolutionsChecks()] + [PACKS_BY_COMPLIANCE_NAME[name]() for name in stage.config.compliance]


def test_every_pack_a_stage_names_reports_nothing_unacknowledged():
    from app import build_app
    from stacks.team_stage import TeamStage

    app = build_app(EXAMPLE_CONFIG)
    stages = [child for child in app.node.children if isinstance(child, TeamStage)]
    assert [s.stage_name for s in stages] == ["search-dev", "search-prod", "support-dev"]
    ran = {}
    for stage in stages:
        for pack in _packs_of(stage):
            report = pack.validate_scope(stage)
            violations = [(v.rule_name, [r.construct_path for r in v.violating_resources]) for v in report.violations]
            assert violations == [], f"{stage.stage_name} {pack.name}"
            assert report.success
            ran.setdefault(stage.stage_name, []).append(pack.name)
    assert ran == {
        "search-dev": ["AwsSolutions"],
        "support-dev": ["AwsSolutions"],
        "search-prod": ["AwsSolutions", "NIST.800.53.R5", "HIPAA.Security"],
    }


def test_an_unacknowledged_finding_fails_synthesis(tmp_path):
    """The check can fail: a bucket without TLS enforcement or access logs in a stage stops synthesis."""
    from aws_cdk import RemovalPolicy
    from aws_cdk import aws_s3 as s3

    from app import build_app

    app = build_app(EXAMPLE_CONFIG, teams="support", outdir=str(tmp_path))
    data_stack = app.node.find_child("support-dev").node.find_child("Data")
    s3.Bucket(data_stack, "CarelessBucket", removal_policy=RemovalPolicy.DESTROY)
    with pytest.raises(RuntimeError, match="ValidationFailed"):
        app.synth()
    report = (tmp_path / "validation-report.json").read_text()
    assert "AwsSolutions-S1" in report and "AwsSolutions-S10" in report
    assert "support-dev/Data/CarelessBucket/Resource" in report


def test_hipaa_and_nist_run_only_where_a_stage_lists_them(tmp_path):
    """A finding only NIST and HIPAA report (no bucket replication) does not fail a stage without them."""
    from aws_cdk import RemovalPolicy
    from aws_cdk import aws_s3 as s3

    from app import build_app

    app = build_app(EXAMPLE_CONFIG, stage_names="dev", outdir=str(tmp_path))
    for stage_name in ("search-dev", "support-dev"):
        data_stack = app.node.find_child(stage_name).node.find_child("Data")
        bucket = s3.Bucket(
            data_stack,
            "UnreplicatedBucket",
            enforce_ssl=True,
            versioned=True,
            server_access_logs_bucket=data_stack.logs_bucket,
            removal_policy=RemovalPolicy.DESTROY,
        )
        assert bucket.node.path.endswith("UnreplicatedBucket")
    app.synth()  # AwsSolutions passes; NIST/HIPAA would flag replication and SSE-KMS but do not run on dev


def test_every_acknowledgement_is_listed_for_review(assembly, snapshot):
    """A new acknowledgement changes this snapshot, so it shows up in the pull request for a security reviewer."""
    rows = acknowledgements(assembly)
    ours = [row for row in rows if not row["rule"].startswith("CloudFormation-Validate::")]  # CDK's own
    assert len(ours) >= 10
    for row in ours:
        assert len(row["reason"]) >= 80, f"reason too thin for a reviewer: {row}"
        # "/stage/Stack/Construct/Resource": one resource, never a whole stack or stage.
        assert row["path"].count("/") >= 4, f"acknowledged on a whole stack or stage: {row}"
    assert rows == snapshot(extension_class=JSONSnapshotExtension)
