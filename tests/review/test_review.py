"""`make review` (scripts/review.py) on fixtures made from real commits.

A throwaway git repository holds this checkout's files and a one-stage config; each scenario is a real commit on
its own branch off `main`, reviewed the way CI reviews a pull request. The base commit is synthesized once (the
review's own cache) and each scenario's head once, so the module costs five one-stage syntheses.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

FIXTURE_CONFIG = "config/review-fixture.yaml"
ONE_STAGE = """\
teams:
  - name: review
    cost_center: CC-0001
    email: ml-review@example.com
    stages:
      dev:
        account: "444444444444"
        region: eu-west-1
        ephemeral: true
        new_vpc: {cidr: 10.60.0.0/16}
"""
ENDPOINT = """\
        endpoints:
          - name: sentiment
            kind: classifier
            model_data_url: s3://review-dev-artifacts-444444444444-eu-west-1/models/sentiment/v1/model.tar.gz
            instance_type: ml.g5.xlarge
"""
FIXTURE_REASON = "Review fixture: the data bucket is acknowledged for a rule it does not trip, to show the row."


def _git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=repo, check=True, capture_output=True, text=True).stdout.strip()


def _edit(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text, f"fixture anchor {old!r} is gone from {path}: update the review fixture"
    path.write_text(text.replace(old, new, 1))


def _commit_scenario(repo: Path, name: str, change) -> None:
    _git(repo, "checkout", "-q", "-B", name, "main")
    change(repo)
    _git(repo, "commit", "-q", "-am", name)


def _review(repo: Path, out: Path, *args: str) -> tuple[int, dict, str]:
    result = subprocess.run(
        [sys.executable, "scripts/review.py", "--config", FIXTURE_CONFIG, "--out", str(out), *args],
        cwd=repo,
        capture_output=True,
        text=True,
    )
    assert result.returncode in (0, 1), result.stderr
    return (result.returncode, json.loads((out / "review.json").read_text()), (out / "review.md").read_text())


@pytest.fixture(scope="module")
def reviews(tmp_path_factory) -> dict[str, tuple[int, dict, str]]:
    """Each scenario committed on its own branch and reviewed against main (the first with the default base)."""
    repo = tmp_path_factory.mktemp("review") / "repo"
    repo.mkdir()
    for relative in _git(ROOT, "ls-files", "--cached", "--others", "--exclude-standard").splitlines():
        source = ROOT / relative
        if source.is_file() and not source.is_symlink():
            (repo / relative).parent.mkdir(parents=True, exist_ok=True)
            (repo / relative).write_bytes(source.read_bytes())
    for shared in (".venv", "node_modules"):
        (repo / shared).symlink_to((ROOT / shared).resolve())
    (repo / FIXTURE_CONFIG).write_text(ONE_STAGE)
    _git(repo, "init", "-q", "-b", "main")
    _git(repo, "config", "user.email", "review@example.com")
    _git(repo, "config", "user.name", "review fixture")
    _git(repo, "add", "-A")
    _git(repo, "commit", "-q", "-m", "base")

    scenarios = {
        "add-endpoint": lambda r: (r / FIXTURE_CONFIG).write_text(ONE_STAGE + ENDPOINT),
        "rename-bucket": lambda r: _edit(
            r / "stacks/components/data_buckets.py",
            'kms_bucket("DataBucket", "data", [])',
            'kms_bucket("DatasetBucket", "data", [])',
        ),
        "training-code": lambda r: _edit(r / "training_code/train.py", "\n", "\n# a one-line training-code edit\n"),
        "acknowledgement": lambda r: _edit(
            r / "stacks/components/data_buckets.py",
            'self.data_bucket = kms_bucket("DataBucket", "data", [])\n',
            'self.data_bucket = kms_bucket("DataBucket", "data", [])\n'
            f'        acknowledge(self.data_bucket, {{"AwsSolutions-S10": "{FIXTURE_REASON}"}})\n',
        ),
    }
    out = repo.parent / "out"
    results = {}
    for name, change in scenarios.items():
        _commit_scenario(repo, name, change)
        args = [] if name == "add-endpoint" else ["--base", "main"]
        if name in ("rename-bucket", "training-code"):
            args += ["--fail-on", "stateful-replacement,iam-widening"]
        results[name] = _review(repo, out, *args)
        (out / f"{name}.md").write_text(results[name][2])
    return results


pytestmark = pytest.mark.review


def test_adding_an_endpoint_lists_the_new_resources_and_iam_statements(reviews):
    status, summary, markdown = reviews["add-endpoint"]
    stage = summary["stages"]["review-dev"]
    assert status == 0
    assert "Inference" in stage["stacks_added"]
    assert stage["resources_added"] > 10 and stage["resources_removed"] == 0
    added_types = {r["type"] for s in summary["stacks"] for r in s["resources"] if r["change"] == "added"}
    assert {"AWS::SageMaker::Endpoint", "AWS::SageMaker::Model", "AWS::ApiGateway::RestApi"} <= added_types
    assert stage["iam_statements_added"] > 0 and stage["iam_broadened"]
    assert any(
        "sagemaker:InvokeEndpoint" in s["action"]
        for stack in summary["stacks"]
        for s in stack["iam"]["statementsAdded"]
    )
    assert "endpoint `sentiment` added to `review-dev` (kind classifier, instance_type ml.g5.xlarge" in "\n".join(
        summary["config"]
    )
    assert "### IAM" in markdown and "sagemaker:InvokeEndpoint" in markdown
    assert not summary["stateful_replacements"]
    # The first review synthesized the base; the others reuse it.
    assert summary["base_cached"] is False


def test_a_bucket_logical_id_rename_is_a_stateful_replacement_and_fails_the_policy(reviews):
    status, summary, markdown = reviews["rename-bucket"]
    assert status == 1
    [replacement] = summary["stateful_replacements"]
    assert replacement["type"] == "AWS::S3::Bucket"
    assert replacement["renamed_from"].startswith("BucketsDataBucket")
    assert replacement["logicalId"].startswith("BucketsDatasetBucket")
    # The renamed bucket's policy is a new resource too, so its statements are new grants: the engine says so.
    assert (
        summary["violations"][0]
        == f"stateful-replacement: review-dev/Data {replacement['logicalId']} (AWS::S3::Bucket)"
    )
    # Bold, above everything else in the comment.
    first_lines = markdown.split("| stage |")[0]
    assert f"**replaced (logical id renamed): review-dev/Data `{replacement['logicalId']}`" in first_lines
    assert summary["base_cached"] is True


def test_a_training_code_edit_is_one_line_about_the_training_image(reviews):
    status, summary, markdown = reviews["training-code"]
    assert status == 0 and summary["violations"] == []
    assert summary["assets"] == [
        {"asset": "the training image (training_code/)", "change": "changes", "stages": ["review-dev"]}
    ]
    assert all(not s["resources"] for s in summary["stacks"]), "an asset hash leaked into a resource diff"
    assert "- the training image (training_code/) changes (review-dev)" in markdown


def test_a_new_acknowledgement_is_listed_with_its_reason(reviews):
    status, summary, markdown = reviews["acknowledgement"]
    assert status == 0
    assert summary["acknowledgements_added"] == [
        {
            "stage": "review-dev",
            "path": "/review-dev/Data/Buckets/DataBucket",
            "rule": "AwsSolutions-S10",
            "reason": FIXTURE_REASON,
        }
    ]
    assert summary["acknowledgements_removed"] == []
    assert FIXTURE_REASON in markdown
