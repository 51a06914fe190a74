"""One team stage on this machine: moto's services seeded from the synthesized templates and the state folder.

Everything a local command does happens inside ``LocalStage.session()``: moto (with its Step Functions engine
executing state machines) stands in for the account; the stage's buckets, topic, model registry and endpoints are
created from the templates; S3 objects and the SageMaker writes of earlier runs (a journal) come back from the
state folder, and go back to it when the session ends, so a later command sees what an earlier one did.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from unittest import mock

from botocore.exceptions import ClientError

from finetune.contract import ARTIFACTS_BUCKET_OUTPUT, BASE_MODELS_PREFIX, DATA_BUCKET_OUTPUT

from ..errors import RuntimeFailure
from ..resources import find_stage
from .assembly import StageAssembly, locate_assembly
from .integrations import LocalServices, install_integrations, update_endpoint

DEFAULT_STATE_DIR = Path(".finetune-local")
STATE_DIR_VARIABLE = "FINETUNE_LOCAL_STATE"

#: Base models on allow-lists that ship as Python packages: staged into the local artifacts bucket on first use.
PACKAGED_BASE_MODELS = {"all-minilm-l6-v2": "minilm", "smollm2-135m-instruct": "smollm2"}

#: CloudFormation types created in moto before a run, with the API call and the property naming the resource.
_SAGEMAKER_RESOURCES = (
    ("AWS::SageMaker::ModelPackageGroup", "create_model_package_group", "ModelPackageGroupName"),
    ("AWS::SageMaker::Model", "create_model", "ModelName"),
    ("AWS::SageMaker::EndpointConfig", "create_endpoint_config", "EndpointConfigName"),
    ("AWS::SageMaker::Endpoint", "create_endpoint", "EndpointName"),
)


def state_dir(explicit: Path | None) -> Path:
    return Path(explicit or os.environ.get(STATE_DIR_VARIABLE) or DEFAULT_STATE_DIR).resolve()


@contextlib.contextmanager
def _variables(values: dict[str, str]) -> Iterator[None]:
    saved = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


@contextlib.contextmanager
def _current_instance_types() -> Iterator[None]:
    """moto's endpoint configs check instance types against a list older than botocore's (no ml.g5 family):
    check them against botocore's model instead, as SageMaker would."""
    import botocore.session
    from moto.sagemaker import models
    from moto.sagemaker.exceptions import ValidationError

    valid = set(
        botocore.session.get_session().get_service_model("sagemaker").shape_for("ProductionVariantInstanceType").enum
    )

    def validate_instance_type(self: models.FakeEndpointConfig, instance_type: str) -> None:
        if instance_type not in valid:
            raise ValidationError(
                message=f"Value '{instance_type}' at 'instanceType' failed to satisfy constraint: "
                "Member must satisfy enum value set of ProductionVariantInstanceType"
            )

    with mock.patch.object(models.FakeEndpointConfig, "validate_instance_type", validate_instance_type):
        yield


class LocalStage:
    """A team stage's synthesized assembly and its local state folder."""

    def __init__(self, *, config_path: Path, team: str, stage: str, state: Path, out: Any) -> None:
        self.config = find_stage(config_path, team, stage)
        self.out = out
        self.state = state
        root = locate_assembly(config_path=config_path, team=team, stage=stage, cache=state / "cdk.out", out=out)
        self.assembly = StageAssembly.load(root, self.config.qualified_name)
        self.folder = state / self.config.qualified_name
        self.s3_folder = self.folder / "s3"
        self.journal_path = self.folder / "sagemaker-journal.jsonl"
        self._clients: dict[str, Any] = {}
        self._lock = threading.Lock()

    # --- names the CLI needs ---------------------------------------------------------------------------------
    @property
    def data_bucket(self) -> str:
        return self.assembly.outputs("data")[DATA_BUCKET_OUTPUT]

    @property
    def artifacts_bucket(self) -> str:
        return self.assembly.outputs("data")[ARTIFACTS_BUCKET_OUTPUT]

    def client(self, service: str) -> Any:
        if service not in self._clients:
            import boto3

            self._clients[service] = boto3.client(service, region_name=self.assembly.region)
        return self._clients[service]

    # --- the session ------------------------------------------------------------------------------------------
    @contextlib.contextmanager
    def session(self, run_dir: Path) -> Iterator[LocalServices]:
        """moto with the stage deployed and the state folder loaded, the local integrations plugged in."""
        from moto import mock_aws

        variables = {
            "AWS_ACCESS_KEY_ID": "local",
            "AWS_SECRET_ACCESS_KEY": "local",
            "AWS_SESSION_TOKEN": "local",
            "AWS_DEFAULT_REGION": self.assembly.region,
            "MOTO_ACCOUNT_ID": self.assembly.account,
        }
        # The engine logs each caught task failure with a traceback; the run prints failures itself.
        logging.getLogger("moto.stepfunctions").setLevel(logging.CRITICAL)
        with (
            _variables(variables),
            mock_aws(config={"stepfunctions": {"execute_state_machine": True}}),
            _current_instance_types(),
        ):
            self._clients.clear()
            self._deploy()
            self._load_s3()
            self._replay_journal()
            services = LocalServices(
                functions=self.assembly.lambda_functions(),
                training_code=self.assembly.training_code_dir,
                work_dir=run_dir,
                account=self.assembly.account,
                region=self.assembly.region,
                out=self.out,
                client=self.client,
                journal=self._record,
            )
            try:
                with install_integrations(services):
                    yield services
            finally:
                self._save_s3()
                self._clients.clear()

    def _deploy(self) -> None:
        """The stage's stateful resources as CloudFormation would create them."""
        assembly = self.assembly
        s3, sns, sagemaker = self.client("s3"), self.client("sns"), self.client("sagemaker")
        for stack in assembly.stacks.values():
            for logical_id in assembly.of_type(stack, "AWS::S3::Bucket"):
                bucket = assembly.physical_name(stack, logical_id)
                location = (
                    {}
                    if assembly.region == "us-east-1"
                    else {"CreateBucketConfiguration": {"LocationConstraint": assembly.region}}
                )
                s3.create_bucket(Bucket=bucket, **location)
            for logical_id in assembly.of_type(stack, "AWS::SNS::Topic"):
                sns.create_topic(Name=assembly.physical_name(stack, logical_id).rsplit(":", 1)[-1])
        model = sagemaker.meta.service_model
        # moto has no inference components: an endpoint config that hosts them names no model, which moto
        # refuses, so such endpoints (LoRA endpoints) are left out of a local run, their configs with them.
        component_configs: set[str] = set()
        for stack in assembly.stacks.values():
            for kind, operation, name_key in _SAGEMAKER_RESOURCES:
                members = model.operation_model(sagemaker.meta.method_to_api_mapping[operation]).input_shape.members
                for logical_id, resource in assembly.of_type(stack, kind).items():
                    props = assembly.resolve(resource.get("Properties", {}), stack)
                    params = {k: v for k, v in props.items() if k in members and k != "Tags"}
                    params[name_key] = assembly.physical_name(stack, logical_id)
                    if kind == "AWS::SageMaker::EndpointConfig" and not all(
                        "ModelName" in variant for variant in props.get("ProductionVariants", [])
                    ):
                        component_configs.add(params[name_key])
                        continue
                    if kind == "AWS::SageMaker::Endpoint" and params.get("EndpointConfigName") in component_configs:
                        continue
                    getattr(sagemaker, operation)(**params)

    # --- S3 in the state folder -------------------------------------------------------------------------------
    def _load_s3(self) -> None:
        s3 = self.client("s3")
        if not self.s3_folder.is_dir():
            return
        for bucket_dir in sorted(p for p in self.s3_folder.iterdir() if p.is_dir()):
            for path in sorted(p for p in bucket_dir.rglob("*") if p.is_file()):
                s3.upload_file(str(path), bucket_dir.name, path.relative_to(bucket_dir).as_posix())

    def _save_s3(self) -> None:
        s3 = self.client("s3")
        for bucket in s3.list_buckets()["Buckets"]:
            for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket["Name"]):
                for item in page.get("Contents", []):
                    path = self.s3_folder / bucket["Name"] / item["Key"]
                    if path.is_file() and path.stat().st_size == item["Size"] and not item["Key"].endswith(".json"):
                        continue  # written by an earlier session (objects here are written once)
                    path.parent.mkdir(parents=True, exist_ok=True)
                    s3.download_file(bucket["Name"], item["Key"], str(path))

    # --- the SageMaker journal --------------------------------------------------------------------------------
    def _record(self, action: str, entry: dict[str, Any]) -> None:
        with self._lock:
            self.journal_path.parent.mkdir(parents=True, exist_ok=True)
            with self.journal_path.open("a") as journal:
                journal.write(json.dumps({"action": action, **entry}, default=str) + "\n")

    def journal(self) -> list[dict[str, Any]]:
        if not self.journal_path.is_file():
            return []
        return [json.loads(line) for line in self.journal_path.read_text().splitlines() if line.strip()]

    def _replay_journal(self) -> None:
        """Redo earlier runs' registry and endpoint writes in moto, in order (same ARNs, same versions)."""
        sagemaker = self.client("sagemaker")
        for entry in self.journal():
            action = entry["action"]
            if action in ("trainingJob", "transformJob"):
                continue
            try:
                if action == "updateEndpoint":
                    update_endpoint(sagemaker, entry["request"])
                else:
                    snake = "".join(f"_{c.lower()}" if c.isupper() else c for c in action)
                    getattr(sagemaker, snake)(**entry["request"])
            except ClientError as error:
                raise RuntimeFailure(
                    f"{self.journal_path}: cannot replay {action} ({error}); remove the state folder to start afresh"
                ) from None

    # --- base models --------------------------------------------------------------------------------------------
    def base_model_folder(self, name: str) -> Path:
        return self.s3_folder / self.artifacts_bucket / BASE_MODELS_PREFIX / name

    def stage_packaged_model(self, name: str) -> bool:
        """Copy a packaged base model into the local artifacts bucket the first time a run names it."""
        target = self.base_model_folder(name)
        if name not in PACKAGED_BASE_MODELS or (target / "config.json").is_file():
            return False
        from finetune import local_models

        try:
            source = getattr(local_models, PACKAGED_BASE_MODELS[name])()
        except local_models.ModelNotInstalled as error:
            raise RuntimeFailure(f"base model {name}: {error}") from None
        print(
            f"staging packaged base model {name} from {source} into "
            f"s3://{self.artifacts_bucket}/{BASE_MODELS_PREFIX}{name}/",
            file=self.out,
            flush=True,
        )
        self.copy_model(source, target)
        return True

    @staticmethod
    def copy_model(source: Path, target: Path) -> int:
        """Replace ``target`` with a copy of a model directory (hidden files left out); returns the file count."""
        staging = target.with_name(target.name + ".staging")
        shutil.rmtree(staging, ignore_errors=True)
        shutil.copytree(source, staging, ignore=shutil.ignore_patterns(".*", "__pycache__"))
        shutil.rmtree(target, ignore_errors=True)
        staging.rename(target)
        return sum(1 for p in target.rglob("*") if p.is_file())
