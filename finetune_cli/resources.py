"""A team stage's resources: region and limits from config/teams.yaml, names from CloudFormation outputs."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from botocore.exceptions import ClientError

from finetune.contract import (
    ARTIFACTS_BUCKET_OUTPUT,
    BATCH_INFER_OUTPUT,
    DATA_BUCKET_OUTPUT,
    FINE_TUNE_OUTPUT,
    STACK_OUTPUTS_READ,
    stack_name,
)
from stacks.settings import ConfigError, StageConfig, load_config

from .errors import RuntimeFailure, UsageError

DEFAULT_CONFIG = Path(__file__).resolve().parents[1] / "config" / "teams.yaml"

#: The stack outputs the CLI reads, by layer (``{team}-{stage}-{layer}``). A contract test checks that every
#: stage's synthesized stack of that layer emits each of them.
OUTPUTS_READ = STACK_OUTPUTS_READ


def find_stage(config_path: Path, team: str, stage: str) -> StageConfig:
    """The resolved config of one team stage, or UsageError listing the known ones."""
    try:
        stages = load_config(config_path)
    except ConfigError as error:
        raise UsageError(str(error)) from None
    for candidate in stages:
        if candidate.team == team and candidate.name == stage:
            return candidate
    known = ", ".join(f"--team {s.team} --stage {s.name}" for s in stages)
    raise UsageError(f"--team {team} --stage {stage}: not in {config_path} (known: {known})")


@dataclass(frozen=True)
class StageResources:
    """What the CLI needs of a deployed team stage."""

    config: StageConfig
    data_bucket: str
    artifacts_bucket: str
    fine_tune_state_machine_arn: str | None
    batch_infer_state_machine_arn: str | None


def stack_outputs(cloudformation: Any, stack_name: str, *, required: bool) -> dict[str, str]:
    """A stack's outputs by key; {} for a missing optional stack, RuntimeFailure for a missing required one."""
    try:
        stacks = cloudformation.describe_stacks(StackName=stack_name)["Stacks"]
    except ClientError as error:
        if "does not exist" in str(error) and not required:
            return {}
        if "does not exist" in str(error):
            raise RuntimeFailure(
                f"stack {stack_name} is not deployed in {cloudformation.meta.region_name} "
                "(run cdk deploy for this team stage first)"
            ) from None
        raise
    return {o["OutputKey"]: o["OutputValue"] for o in stacks[0].get("Outputs", [])}


def resolve(session: Any, stage: StageConfig) -> StageResources:
    """Read the Data, Training and Inference stacks' outputs."""
    cloudformation = session.client("cloudformation", region_name=stage.region)
    prefix = stage.qualified_name
    data = stack_outputs(cloudformation, stack_name(prefix, "data"), required=True)
    training = stack_outputs(cloudformation, stack_name(prefix, "training"), required=False)
    inference = stack_outputs(cloudformation, stack_name(prefix, "inference"), required=False)
    missing = [key for key in OUTPUTS_READ["data"] if key not in data]
    if missing:
        raise RuntimeFailure(f"stack {stack_name(prefix, 'data')} has no output {', '.join(missing)}")
    return StageResources(
        config=stage,
        data_bucket=data[DATA_BUCKET_OUTPUT],
        artifacts_bucket=data[ARTIFACTS_BUCKET_OUTPUT],
        fine_tune_state_machine_arn=training.get(FINE_TUNE_OUTPUT),
        batch_infer_state_machine_arn=inference.get(BATCH_INFER_OUTPUT),
    )
