"""Training stack: the training image, the model registry and the FineTune pipeline of one team stage."""

from __future__ import annotations

from typing import Any

from aws_cdk import RemovalPolicy, Stack
from aws_cdk import aws_sagemaker as sagemaker
from constructs import Construct

from stacks import naming
from stacks.components import images
from stacks.components.training_image import TrainingImage
from stacks.data_stack import DataStack
from stacks.settings import StageConfig


class TrainingStack(Stack):
    """Fine-tuning for one team stage. Exposes ``training_image`` and ``model_package_group_name``."""

    def __init__(self, scope: Construct, id_: str, *, stage: StageConfig, data: DataStack, **kwargs: Any) -> None:
        super().__init__(scope, id_, description=f"finetune-stack {stage.qualified_name}: fine-tuning pipeline",
                         **kwargs)
        self.base_image_uri = images.pytorch_training(stage.region, stage.images)
        self.training_image = TrainingImage(self, "TrainingImage", base_image=self.base_image_uri)

        self.model_package_group_name = naming.model_package_group(stage.qualified_name)
        self.model_package_group = sagemaker.CfnModelPackageGroup(
            self, "ModelPackageGroup",
            model_package_group_name=self.model_package_group_name,
            model_package_group_description=f"Fine-tuned models of {stage.qualified_name}",
        )
        # Registered models are the record of what was trained and approved: never deleted with the stack.
        self.model_package_group.apply_removal_policy(RemovalPolicy.RETAIN)
