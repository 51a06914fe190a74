"""Monitoring stack (being built; see the issue)."""

from __future__ import annotations

from typing import Any

from aws_cdk import CfnWaitConditionHandle, Stack
from constructs import Construct

from stacks.settings import StageConfig


class MonitoringStack(Stack):
    """Placeholder until the monitoring layer lands."""

    def __init__(self, scope: Construct, id_: str, *, stage: StageConfig, **kwargs: Any) -> None:
        layers = {key: kwargs.pop(key) for key in ("data", "training", "inference", "hosts") if key in kwargs}
        super().__init__(scope, id_, description=f"finetune-stack {stage.qualified_name}: monitoring", **kwargs)
        self.layers = layers
        CfnWaitConditionHandle(self, "Placeholder")  # CloudFormation needs one resource
