"""The training container image: training_code/ built FROM the region's PyTorch training DLC."""

from __future__ import annotations

from pathlib import Path

from aws_cdk import aws_ecr_assets as ecr_assets
from constructs import Construct

TRAINING_CODE = Path(__file__).resolve().parents[2] / "training_code"


class TrainingImage(Construct):
    """A DockerImageAsset of ``training_code/``; the build happens at deploy time, so synthesis needs no Docker.

    ``base_image`` is the DLC URI for the stage's region. Its registry (an AWS account of the DLC team) needs a
    `docker login` before `cdk deploy` builds the image (see the README).
    """

    def __init__(self, scope: Construct, id_: str, *, base_image: str) -> None:
        super().__init__(scope, id_)
        self.asset = ecr_assets.DockerImageAsset(
            self,
            "Asset",
            directory=str(TRAINING_CODE),
            build_args={"BASE_IMAGE": base_image},
            platform=ecr_assets.Platform.LINUX_AMD64,
            exclude=["**/__pycache__", "**/*.pyc", "tests", ".pytest_cache"],
        )
        self.image_uri = self.asset.image_uri
        self.repository = self.asset.repository
