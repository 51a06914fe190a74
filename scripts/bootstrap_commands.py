#!/usr/bin/env python3
"""Print the `cdk bootstrap` commands the delivery pipeline needs, from the config (`make bootstrap-commands`).

The tooling account is bootstrapped in its own region and in every other region a stage deploys to (CodePipeline
keeps a replication bucket there); every stage account and region trusts the tooling account, so the pipeline
deploys with that account's CDK bootstrap roles and holds no credentials of its own.
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from stacks.settings import ConfigError, Delivery, StageConfig, load_settings  # noqa: E402

# What CloudFormation deploys a stage with in its account: the stacks create IAM roles, KMS keys, VPCs,
# SageMaker resources and more. Replace it with your organization's deployment policy if it has one.
EXECUTION_POLICY = "arn:aws:iam::aws:policy/AdministratorAccess"


def bootstrap_commands(delivery: Delivery, stages: list[StageConfig]) -> list[str]:
    """One `cdk bootstrap` per tooling region, then one per stage account and region with the trust flags."""
    tooling_regions = [delivery.region, *sorted({s.region for s in stages} - {delivery.region})]
    commands = [f"cdk bootstrap aws://{delivery.account}/{region}" for region in tooling_regions]
    for account, region in sorted({(s.account, s.region) for s in stages}):
        if account == delivery.account:
            continue  # the tooling account needs no trust in itself
        commands.append(
            f"cdk bootstrap aws://{account}/{region} --trust {delivery.account} "
            f"--trust-for-lookup {delivery.account} --cloudformation-execution-policies {EXECUTION_POLICY}"
        )
    return commands


def main(config_path: str) -> int:
    try:
        stages, delivery = load_settings(config_path)
    except ConfigError as error:
        print(error, file=sys.stderr)
        return 2
    if delivery is None:
        print(f"{config_path}: no `delivery` section: the delivery pipeline is not configured", file=sys.stderr)
        return 2
    for command in bootstrap_commands(delivery, stages):
        print(command)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1] if len(sys.argv) > 1 else str(ROOT / "config" / "teams.yaml")))
