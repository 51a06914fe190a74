"""Validate's one logic function: the execution input in, the Train step's parameters out."""

from __future__ import annotations

from typing import Any

from .dataset import S3Client, check_dataset
from .manifest import is_manifest_request, request_from_manifest
from .request import SAGEMAKER_MAX_SECONDS, check_request, job_name_prefix, main_metric
from .settings import ValidateSettings


def validate_request(raw: Any, settings: ValidateSettings, s3: S3Client) -> dict[str, Any]:
    """Check an execution input and its dataset; return what the Train, Gate and Deploy steps consume.

    Raises InvalidRequest (every problem, each naming the key or file and what to fix).
    """
    if is_manifest_request(raw):
        raw = request_from_manifest(raw, settings, s3)
    checked = check_request(raw, settings)
    found = check_dataset(s3, settings, checked)
    request = checked.request
    metric, higher_is_better = main_metric(request.task)
    max_runtime_seconds = min(settings.max_runtime_hours * 3600, SAGEMAKER_MAX_SECONDS)
    validation = found["validation"]
    return {
        "team": settings.team,
        "stage": settings.stage,
        "dataset": request.dataset,
        "dataset_name": checked.dataset_name,
        "dataset_version": checked.dataset_version,
        "job_name_prefix": job_name_prefix(
            settings.team, settings.stage, checked.dataset_name, checked.dataset_version
        ),
        "task": request.task,
        "method": checked.config.method,
        "base_model": request.base_model,
        "train_s3_uri": found["train"].uri,
        "validation_s3_uri": validation.uri if validation else None,
        "base_model_s3_uri": checked.base_model_s3_uri,
        "hyperparameters": dict(sorted(checked.hyperparameters.items())),
        "instance_type": checked.instance_type,
        "instance_count": request.instance_count,
        "distributed": request.instance_count > 1,
        "spot": checked.spot,
        "max_runtime_seconds": max_runtime_seconds,
        "max_wait_seconds": min(2 * max_runtime_seconds, SAGEMAKER_MAX_SECONDS) if checked.spot else None,
        "deploy_to": request.deploy_to,
        "threshold": float(request.threshold) if request.threshold is not None else None,
        "main_metric": metric,
        "higher_is_better": higher_is_better,
        "train_files": len(found["train"].files),
        "validation_files": len(validation.files) if validation else 0,
        "formats": sorted(
            set(found["train"].formats.values()) | set(validation.formats.values() if validation else [])
        ),
        "warnings": found["warnings"],
        # Ready-made CreateTrainingJob pieces: Step Functions cannot add optional list items or keys itself.
        "input_data_config": input_data_config(
            found["train"].uri, validation.uri if validation else None, checked.base_model_s3_uri
        ),
        "stopping_condition": {
            "MaxRuntimeInSeconds": max_runtime_seconds,
            **({"MaxWaitTimeInSeconds": min(2 * max_runtime_seconds, SAGEMAKER_MAX_SECONDS)} if checked.spot else {}),
        },
        "volume_size_gb": TRAINING_VOLUME_GB,
    } | _with_distribution(request.instance_count, checked.hyperparameters)


TRAINING_VOLUME_GB = 200


def input_data_config(train_uri: str, validation_uri: str | None, model_uri: str | None) -> list[dict[str, Any]]:
    """The job's channels: train, and validation and model when present (the container's contract)."""
    channels = [
        ("train", train_uri, "application/jsonlines"),
        ("validation", validation_uri, "application/jsonlines"),
        ("model", model_uri, None),
    ]
    return [
        {
            "ChannelName": name,
            "DataSource": {
                "S3DataSource": {"S3DataType": "S3Prefix", "S3Uri": uri, "S3DataDistributionType": "FullyReplicated"}
            },
            **({"ContentType": content_type} if content_type else {}),
        }
        for name, uri, content_type in channels
        if uri
    ]


def _with_distribution(instance_count: int, hyperparameters: dict[str, str]) -> dict[str, Any]:
    """Several instances run under torchrun: the DLC's toolkit reads this SageMaker hyperparameter."""
    if instance_count <= 1:
        return {}
    return {"hyperparameters": dict(sorted({**hyperparameters, "sagemaker_torch_distributed_enabled": "true"}.items()))}
