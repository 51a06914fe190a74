"""app.py as the CDK CLI runs it: bad config stops with exit status 2 and clear lines; context selects stages."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from app import select_stages
from stacks.settings import ConfigError, load_config
from tests.conftest import EXAMPLE_CONFIG, ROOT

BAD = """\
teams:
  - name: search
    cost_center: CC-1
    email: search@example.com
    stages:
      dev: {account: "111111111111", region: eu-west-1}
  - name: support
    cost_center: CC-2
    email: support@example
    stages:
      prod: {account: "12345", region: eu-west-1, budget_usd_monthly: lots}
"""


def _run_app(tmp_path, context: dict, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "CDK_CONTEXT_JSON": json.dumps(context), "CDK_OUTDIR": str(tmp_path / "out")}
    return subprocess.run(
        [sys.executable, str(ROOT / "app.py"), *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300
    )


def test_bad_config_stops_synthesis_with_status_2_and_every_problem(tmp_path):
    config = tmp_path / "teams.yaml"
    config.write_text(BAD)
    result = _run_app(tmp_path, {"config": str(config)})
    assert result.returncode == 2
    assert result.stderr.splitlines() == [
        "finetune-stack: the configuration has 3 problem(s):",
        f"{config}: teams[1].email: 'support@example' is not an email address",
        f"{config}: teams[1].stages.prod.account: '12345' is not a 12-digit AWS account id",
        f"{config}: teams[1].stages.prod.budget_usd_monthly: 'lots' must be a valid number, unable to parse "
        "string as a number",
    ]
    assert "Traceback" not in result.stderr + result.stdout
    assert not (tmp_path / "out" / "manifest.json").exists()


def test_check_mode_validates_without_synthesizing(tmp_path):
    config = tmp_path / "teams.yaml"
    config.write_text(BAD)
    assert _run_app(tmp_path, {}, "--check", str(config)).returncode == 2
    good = _run_app(tmp_path, {}, "--check", str(EXAMPLE_CONFIG))
    assert good.returncode == 0
    assert "3 team stages: search-dev, search-prod, support-dev" in good.stdout


@pytest.mark.synth
def test_team_context_synthesizes_only_that_team(tmp_path):
    result = _run_app(tmp_path, {"team": "support"})
    assert result.returncode == 0, result.stderr
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    stages = sorted(name for name, a in manifest["artifacts"].items() if a["type"] == "cdk:cloud-assembly")
    assert stages == ["assembly-support-dev"]
    assert "end-of-life" not in result.stderr  # jsii ran on the project's Node


def test_selection_by_team_and_stage():
    stages = load_config(EXAMPLE_CONFIG)
    assert [s.qualified_name for s in select_stages(stages, "search", None)] == ["search-dev", "search-prod"]
    assert [s.qualified_name for s in select_stages(stages, None, "dev")] == ["search-dev", "support-dev"]
    assert [s.qualified_name for s in select_stages(stages, "search, support", "prod")] == ["search-prod"]


def test_unknown_team_in_context_is_an_error_not_an_empty_app():
    with pytest.raises(ConfigError) as raised:
        select_stages(load_config(EXAMPLE_CONFIG), "serch", "qa")
    assert raised.value.problems == ["-c team: no team named serch", "-c stage: no stage named qa"]
