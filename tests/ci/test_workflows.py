"""The GitHub Actions workflows: actionlint clean, actions pinned to full commit SHAs, least privilege."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
WORKFLOWS = sorted((ROOT / ".github" / "workflows").glob("*.yml"))


def _actionlint() -> str:
    # The venv's own (requirements-dev.txt pins the wheel that ships it) before any other on PATH.
    candidate = Path(sys.executable).parent / "actionlint"
    found = str(candidate) if candidate.exists() else shutil.which("actionlint")
    if not found:
        pytest.fail("actionlint is not installed: `make deps` installs it from requirements-dev.txt")
    return found


def _workflow(path: Path) -> dict:
    data = yaml.safe_load(path.read_text())
    # YAML 1.1 reads the bare key `on` as True.
    data["on"] = data.pop(True, data.get("on"))
    return data


def test_there_are_workflows_for_pull_requests_and_main():
    triggers = {path.name: _workflow(path)["on"] for path in WORKFLOWS}
    assert "pull_request" in triggers["pull-request.yml"]
    assert triggers["main.yml"]["push"]["branches"] == ["main"]


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.name)
def test_actionlint_passes(path):
    result = subprocess.run([_actionlint(), "-no-color", str(path)], capture_output=True, text=True, cwd=ROOT)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.name)
def test_actions_are_pinned_to_a_commit_with_the_version_in_a_comment(path):
    uses = re.findall(r"uses:\s*(\S+)(.*)", path.read_text())
    assert uses
    for action, rest in uses:
        assert re.fullmatch(r"[\w.-]+/[\w./-]+@[0-9a-f]{40}", action), f"{path.name}: {action} is not pinned to a SHA"
        assert re.search(r"#\s*v\d+\.\d+\.\d+", rest), f"{path.name}: {action} has no version comment"


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.name)
def test_permissions_are_least_privilege_and_there_are_no_aws_keys(path):
    workflow = _workflow(path)
    assert workflow["permissions"] == {}, "the workflow default grants nothing; each job asks for what it needs"
    for name, job in workflow["jobs"].items():
        granted = job["permissions"]
        assert set(granted.values()) <= {"read", "write"} and "id-token" not in granted, name
        writes = {scope for scope, level in granted.items() if level == "write"}
        # Only the comment job writes, and only to pull requests; it checks out and runs none of the PR's code.
        if writes:
            assert writes == {"pull-requests"}, name
            assert not any(
                "checkout" in step.get("uses", "") or "make" in step.get("run", "") for step in job["steps"]
            ), name
    text = path.read_text()
    assert "AWS_ACCESS_KEY_ID" not in text and "AWS_SECRET_ACCESS_KEY" not in text


def test_the_pull_request_workflow_runs_lint_synth_fast_tests_and_review_and_comments_once():
    workflow = _workflow(ROOT / ".github" / "workflows" / "pull-request.yml")
    runs = [step.get("run", "") for step in workflow["jobs"]["check"]["steps"]]
    assert [r.split()[1] for r in runs if r.startswith("make ")] == ["lint", "synth", "test-fast", "review"]
    comment = "\n".join(step.get("run", "") for step in workflow["jobs"]["comment"]["steps"])
    from scripts.review import REVIEW_MARKER

    assert REVIEW_MARKER in comment and "PATCH" in comment and "POST" in comment


def test_make_targets_the_workflows_call_exist():
    makefile = (ROOT / "Makefile").read_text()
    for target in ("lint", "synth", "test-fast", "review", "test"):
        assert re.search(rf"^{target}:", makefile, re.M), target
