"""cfn-lint on every synthesized template: zero errors and zero warnings."""

from __future__ import annotations

import json

import pytest

pytestmark = pytest.mark.synth


def lint(template: dict, region: str) -> list[str]:
    """cfn-lint's findings for one template (errors, warnings and informational)."""
    from cfnlint.api import ManualArgs
    from cfnlint.api import lint as cfn_lint

    matches = cfn_lint(json.dumps(template), config=ManualArgs(regions=[region]))
    return [f"{m.rule.id} {m.message} (line {m.linenumber})" for m in matches]


def test_every_template_is_clean(assembly):
    regions = {"search-dev": "eu-west-1", "search-prod": "us-east-1", "support-dev": "eu-west-1"}
    findings = {
        f"{stage}/{name}": lint(stack.template, regions[stage]) for (stage, name), stack in assembly.stacks.items()
    }
    assert {key.split("/")[0] for key in findings} == set(regions)
    assert findings == {key: [] for key in findings}


def test_lint_reports_a_broken_template():
    """The check can fail: a bucket with a misspelt property is an error."""
    broken = {"Resources": {"Bucket": {"Type": "AWS::S3::Bucket", "Properties": {"BucketNme": "x"}}}}
    assert any(finding.startswith("E3002") for finding in lint(broken, "eu-west-1"))
