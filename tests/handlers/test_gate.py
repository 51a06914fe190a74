"""The Gate step against moto S3: reads evaluation.json from the job's output archive and decides."""

from __future__ import annotations

import io
import json
import tarfile

import boto3
import pytest
from moto import mock_aws

from lambda_handlers.gate.logic import GateInputError, decide, run_gate

BUCKET = "search-dev-artifacts-111111111111-eu-west-1"


def _archive(files: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


@pytest.fixture
def s3():
    with mock_aws():
        client = boto3.client("s3", region_name="eu-west-1")
        client.create_bucket(Bucket=BUCKET, CreateBucketConfiguration={"LocationConstraint": "eu-west-1"})
        yield client


def _put_evaluation(s3, evaluation: dict, name: str = "evaluation.json") -> str:
    key = "training-output/job-1/output/output.tar.gz"
    s3.put_object(Bucket=BUCKET, Key=key, Body=_archive({name: json.dumps(evaluation).encode()}))
    return f"s3://{BUCKET}/{key}"


CLASSIFICATION = {
    "task": "classification",
    "validation_rows": 600,
    "base": {"accuracy": 0.51, "f1_macro": 0.4},
    "fine_tuned": {"accuracy": 0.86, "f1_macro": 0.86},
}
CAUSAL = {"task": "causal-lm", "validation_rows": 200, "base": {"eval_loss": 2.1}, "fine_tuned": {"eval_loss": 1.7}}


def test_passing_classifier_is_copied_for_the_model_package(s3):
    uri = _put_evaluation(s3, CLASSIFICATION)
    result = run_gate(
        s3, output_archive_uri=uri, evaluation_s3_uri=f"s3://{BUCKET}/evaluations/job-1/evaluation.json", threshold=0.8
    )
    assert result.passed and result.metric == "accuracy" and result.base == 0.51
    assert result.reason == "fine-tuned accuracy 0.8600 vs base 0.5100, threshold at least 0.8000"
    copied = json.loads(s3.get_object(Bucket=BUCKET, Key="evaluations/job-1/evaluation.json")["Body"].read())
    assert copied == CLASSIFICATION


@pytest.mark.parametrize(
    "evaluation,threshold,passed,reason",
    [
        (CAUSAL, None, True, "fine-tuned eval_loss 1.7000 vs base 2.1000"),
        (CAUSAL, 1.5, False, "fine-tuned eval_loss 1.7000 misses the threshold (at most 1.5000)"),
        (
            {**CAUSAL, "fine_tuned": {"eval_loss": 2.3}},
            None,
            False,
            "fine-tuned eval_loss 2.3000 does not improve on the base model's 2.1000",
        ),
        (CLASSIFICATION, 0.9, False, "fine-tuned accuracy 0.8600 misses the threshold (at least 0.9000)"),
        (
            {**CLASSIFICATION, "fine_tuned": {"accuracy": 0.5}},
            None,
            False,
            "fine-tuned accuracy 0.5000 does not improve on the base model's 0.5100",
        ),
    ],
)
def test_decision_table(evaluation, threshold, passed, reason):
    verdict = decide(evaluation, threshold=threshold)
    assert (verdict[0], verdict[-1]) == (passed, reason)


@pytest.mark.parametrize(
    "evaluation,message",
    [
        ({"task": "summarisation"}, "evaluation.json has task 'summarisation'"),
        ({"task": "classification", "fine_tuned": {}}, "evaluation.json has no fine_tuned.accuracy"),
    ],
)
def test_unjudgeable_evaluations_raise(evaluation, message):
    with pytest.raises(GateInputError, match=message):
        decide(evaluation, threshold=None)


def test_missing_evaluation_in_archive_is_a_clear_error(s3):
    uri = _put_evaluation(s3, CLASSIFICATION, name="something-else.json")
    with pytest.raises(GateInputError, match=r"has no evaluation\.json"):
        run_gate(s3, output_archive_uri=uri, evaluation_s3_uri=f"s3://{BUCKET}/e.json", threshold=None)
