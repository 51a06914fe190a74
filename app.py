#!/usr/bin/env python3
"""The finetune-stack CDK app: one cdk.Stage per team x stage from config/teams.yaml.

The only place that reads the environment and the config file. Context values:
  -c config=PATH     another teams file (default config/teams.yaml)
  -c team=NAME       synthesize only this team's stages (comma-separated list allowed)
  -c stage=NAME      synthesize only stages with this name (comma-separated list allowed)
With `delivery.enabled` in the config, the app also holds the delivery pipeline stack (CDK Pipelines) that deploys
every stage; a -c team/stage selection synthesizes those stages alone, without the pipeline.
A config with problems stops synthesis with exit status 2 and one line per problem.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING

ROOT = Path(__file__).resolve().parent
# jsii runs on Node: prefer the supported Node the project installs (make node) over an end-of-life system one.
_PROJECT_NODE = ROOT / "node_modules" / ".bin" / "node"
if "JSII_NODE" not in os.environ and _PROJECT_NODE.exists():
    os.environ["JSII_NODE"] = str(_PROJECT_NODE)

from stacks.settings import ConfigError, StageConfig, load_config, load_settings  # noqa: E402

if TYPE_CHECKING:  # the CDK (and Node) only load when an app is built, not for --check
    from aws_cdk import App


def select_stages(stages: list[StageConfig], teams: str | None, stage_names: str | None) -> list[StageConfig]:
    """Filter by comma-separated team and stage names; unknown names are an error, not an empty app."""

    def wanted(value: str | None) -> set[str] | None:
        return {name.strip() for name in value.split(",") if name.strip()} if value else None

    team_filter, stage_filter = wanted(teams), wanted(stage_names)
    problems = []
    if team_filter and (unknown := team_filter - {s.team for s in stages}):
        problems.append(f"-c team: no team named {', '.join(sorted(unknown))}")
    if stage_filter and (unknown := stage_filter - {s.name for s in stages}):
        problems.append(f"-c stage: no stage named {', '.join(sorted(unknown))}")
    if problems:
        raise ConfigError("context", problems)
    return [
        s
        for s in stages
        if (team_filter is None or s.team in team_filter) and (stage_filter is None or s.name in stage_filter)
    ]


def feature_flags() -> dict[str, object]:
    """The feature flags in cdk.json, so `python app.py` and tests synthesize exactly what `cdk synth` does."""
    flags: dict[str, object] = json.loads((ROOT / "cdk.json").read_text(encoding="utf-8"))["context"]
    return flags


def build_app(
    config_path: str | Path, *, teams: str | None = None, stage_names: str | None = None, outdir: str | None = None
) -> App:
    """Create the App with one TeamStage per selected team stage (raises ConfigError on a bad config), and the
    delivery pipeline stack when the config enables it and no selection narrows the app."""
    from aws_cdk import App

    from stacks.team_stage import TeamStage

    stages, delivery = load_settings(config_path)
    selected = select_stages(stages, teams, stage_names)
    app = App(context=feature_flags(), outdir=outdir or None)
    team_stages = [(stage, TeamStage(app, stage=stage)) for stage in selected]
    if delivery is not None and delivery.enabled and not (teams or stage_names):
        # Imported only when enabled: synthesis without the pipeline loads no CDK Pipelines modules.
        from stacks.delivery_stack import DeliveryPipelineStack
        from stacks.rule_packs import register_stack_rule_pack

        pipeline = DeliveryPipelineStack(
            app, "Delivery", delivery=delivery, stages=team_stages, stack_name="finetune-stack-delivery"
        )
        register_stack_rule_pack(app, pipeline)
        # CodePipeline's replication buckets for stages in other regions live in support stacks of their own.
        for support in pipeline.pipeline.pipeline.cross_region_support.values():
            register_stack_rule_pack(app, support.stack)
    return app


def report_config_error(error: ConfigError) -> int:
    """Every problem on stderr, one line each, no traceback; exit status 2."""
    print(f"finetune-stack: the configuration has {len(error.problems)} problem(s):", file=sys.stderr)
    print(error, file=sys.stderr)
    return 2


def check_config(config_path: str | Path) -> int:
    """`python app.py --check [PATH]`: validate the config without synthesizing (exit 0, or 2 with the problems)."""
    try:
        stages = load_config(config_path)
    except ConfigError as error:
        return report_config_error(error)
    print(f"{config_path}: {len(stages)} team stages: {', '.join(s.qualified_name for s in stages)}")
    return 0


def main() -> int:
    if sys.argv[1:2] == ["--check"]:
        return check_config(sys.argv[2] if len(sys.argv) > 2 else ROOT / "config" / "teams.yaml")
    from aws_cdk import App

    # Context arrives from the CLI in CDK_CONTEXT_JSON; read it through a bare App before building ours.
    context = App().node
    config_path = context.try_get_context("config") or str(ROOT / "config" / "teams.yaml")
    try:
        app = build_app(
            config_path, teams=context.try_get_context("team"), stage_names=context.try_get_context("stage")
        )
    except ConfigError as error:
        return report_config_error(error)
    app.synth()
    return 0


if __name__ == "__main__":
    sys.exit(main())
