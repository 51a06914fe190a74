"""The local training job's contract pieces that need no training: the request check and the metric parsing."""

from __future__ import annotations

import datetime

import pytest

from finetune.metrics import METRIC_DEFINITIONS, format_metric
from finetune_cli.local.training_job import LocalTrainingJob, RequestInvalid, check_shape, final_metrics

pytestmark = pytest.mark.local


def test_final_metric_data_list_takes_the_last_value_of_each_definition():
    log = "\n".join(
        [
            format_metric("train_loss", 0.9, 1),
            "noise",
            format_metric("accuracy", 0.5, 0),
            format_metric("train_loss", 0.4, 2),
            format_metric("accuracy", 0.75, 2),
        ]
    )
    when = datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC)
    found = {m["MetricName"]: m["Value"] for m in final_metrics(log, METRIC_DEFINITIONS, when)}
    assert found == {"train_loss": pytest.approx(0.4), "accuracy": pytest.approx(0.75)}


def test_a_request_botocore_rejects_never_starts_a_job(tmp_path):
    request = {
        "TrainingJobName": "x",
        "AlgorithmSpecification": {"TrainingInputMode": "File"},
        "OutputDataConfig": {"S3OutputPath": "s3://b/o/"},
        "ResourceConfig": {"InstanceType": "ml.g5.2xlarge", "InstanceCount": "1", "VolumeSizeInGB": 200},
        "StoppingCondition": {"MaxRuntimeInSeconds": 60},
    }
    with pytest.raises(RequestInvalid) as raised:
        LocalTrainingJob(
            request, code_dir=tmp_path, work_dir=tmp_path, s3=None, account="1", region="eu-west-1", out=None
        )
    message = str(raised.value)
    assert "RoleArn" in message and "InstanceCount" in message  # missing, and a string where an integer goes


def test_describe_output_is_checked_against_botocore_too():
    with pytest.raises(RequestInvalid):
        check_shape("DescribeTrainingJob", {"TrainingJobName": "x", "TrainingJobStatus": 3}, output=True)
