"""`finetune local run` executes the stage's synthesized FineTune state machine end to end on this machine."""

from __future__ import annotations

import json
import tarfile

import pytest

from .conftest import CLASSIFICATION_HP, SAMPLES, classification_run_args, run_local, stage_args

pytestmark = [pytest.mark.local, pytest.mark.synth]

SUCCESS_PATH = [
    "Validate",
    "UseValidatedRequest",
    "Train",
    "Gate",
    "PassedGate",
    "RegisterByTask",
    "RegisterClassifier",
    "DeployRequested",
    "PickEndpoint",
    "CreateModel",
    "UpdateEndpoint",
    "DescribeEndpoint",
    "EndpointUpdated",
    "NotifySuccess",
    "Done",
]


def _in_order(visited: list[str], expected: list[str]) -> bool:
    position = 0
    for state in visited:
        if position < len(expected) and state == expected[position]:
            position += 1
    return position == len(expected)


def _s3_file(state, uri: str):
    bucket, _, key = uri[len("s3://") :].partition("/")
    return state / "search-dev" / "s3" / bucket / key


def _journal(state) -> list[dict]:
    return [json.loads(line) for line in (state / "search-dev" / "sagemaker-journal.jsonl").read_text().splitlines()]


def test_classification_visits_every_state_registers_approved_and_deploys(classification_local_run, local_state):
    run = classification_local_run
    assert run.code == 0, run.output[-4000:]
    result = run.result
    assert result["status"] == "SUCCEEDED" and result["error"] is None
    assert result["states"][0] == "Validate" and result["states"][-2:] == ["NotifySuccess", "Done"]
    assert _in_order(result["states"], SUCCESS_PATH), result["states"]
    # search-dev has auto_approve_models: the package is registered Approved, then deployed to `sentiment`
    assert result["model_package_status"] == "Approved"
    assert result["endpoint"] == "search-dev-sentiment"
    gate = result["evaluation"]
    assert gate["passed"] is True and gate["metric"] == "accuracy" and gate["fine_tuned"] > gate["base"]
    # progress was printed per state, with the training job's metrics live
    assert "> Train" in run.output and "< Train" in run.output and "metric train_loss=" in run.output


def test_training_job_result_is_what_describe_training_job_answers(classification_local_run, local_state):
    assert classification_local_run.code == 0
    jobs = [
        entry
        for entry in _journal(local_state)
        if entry["action"] == "trainingJob"
        and entry["TrainingJobName"] == classification_local_run.result["training_job"]
    ]
    assert len(jobs) == 1
    job = jobs[0]
    assert job["TrainingJobStatus"] == "Completed"
    # FinalMetricDataList: the request's metric definitions applied to the job's log (the last value of each)
    metrics = {m["MetricName"]: m["Value"] for m in job["FinalMetricDataList"]}
    assert {"train_loss", "eval_loss", "accuracy", "f1_macro"} <= set(metrics)
    assert metrics["accuracy"] == pytest.approx(classification_local_run.result["evaluation"]["fine_tuned"], abs=1e-5)
    # the model archive is where the request said, and holds the fine-tuned model and its evaluation
    archive = _s3_file(local_state, job["ModelArtifacts"]["S3ModelArtifacts"])
    with tarfile.open(archive) as tar:
        names = set(tar.getnames())
        assert {"config.json", "evaluation.json", "model.safetensors"} <= names
        evaluation = json.load(tar.extractfile("evaluation.json"))
    assert evaluation["fine_tuned"]["accuracy"] == pytest.approx(metrics["accuracy"], abs=1e-5)


def test_deploy_wrote_registry_and_endpoint_in_the_local_store(classification_local_run, local_state):
    assert classification_local_run.code == 0
    actions = [entry["action"] for entry in _journal(local_state)]
    assert actions[-4:] == ["createModelPackage", "createModel", "createEndpointConfig", "updateEndpoint"]
    update = _journal(local_state)[-1]["request"]
    assert update["EndpointName"] == "search-dev-sentiment"
    package = [e for e in _journal(local_state) if e["action"] == "createModelPackage"][-1]["request"]
    assert package["ModelApprovalStatus"] == "Approved"
    model_data = package["InferenceSpecification"]["Containers"][0]["ModelDataUrl"]
    assert _s3_file(local_state, model_data).is_file()


def test_bad_dataset_line_ends_in_invalid_request_naming_file_and_line(local_state, tmp_path):
    dataset = tmp_path / "broken"
    (dataset / "train").mkdir(parents=True)
    lines = (SAMPLES / "sst2" / "train.jsonl").read_text().splitlines()[:8]
    lines[4] = '{"text": "an unterminated line", "label": '
    (dataset / "train" / "train.jsonl").write_text("\n".join(lines) + "\n")

    run = run_local(
        local_state,
        "run",
        str(dataset),
        *stage_args(),
        "--task",
        "classification",
        "--base-model",
        "all-minilm-l6-v2",
        "--json",
    )

    assert run.code == 1
    result = run.result
    assert result["status"] == "FAILED" and result["error"] == "InvalidRequest"
    assert result["states"] == ["Validate", "NotifyValidation", "ValidationFailed"]
    message = json.loads(result["cause"])["errorMessage"]
    assert "train/train.jsonl" in message and "line 5" in message, message


def test_unreachable_threshold_ends_in_gate_rejected_with_both_numbers(classification_local_run, local_state, sst2_csv):
    # the deployed run's data and seed with 12 steps instead of 40 (enough to beat the base model, which the gate
    # checks first: 0.75 against 0.45 accuracy here), and a threshold no model reaches
    hyperparameters = [hp for hp in CLASSIFICATION_HP if not hp.startswith("max_steps=")] + ["max_steps=12"]
    run = run_local(
        local_state,
        "run",
        *classification_run_args(sst2_csv, hyperparameters),
        "--validation-fraction",
        "0.2",
        "--threshold",
        "1.0",
        "--deploy-to",
        "sentiment",
        "--json",
    )

    assert run.code == 1, run.output[-3000:]
    result = run.result
    assert result["error"] == "GateRejected" and result["states"][-2:] == ["NotifyGate", "GateFailed"]
    fine_tuned = result["evaluation"]["fine_tuned"]
    assert fine_tuned < 1.0
    assert f"{fine_tuned:.4f}" in result["cause"] and "1.0000" in result["cause"], result["cause"]
    assert result["model_package_status"] is None and result["endpoint"] is None


def test_training_failure_ends_in_training_failed_with_the_failure_file_reason(local_state, tmp_path):
    # A malformed line past the bytes Validate samples: only the training job reads that far.
    dataset = tmp_path / "late-error"
    (dataset / "train").mkdir(parents=True)
    good = (SAMPLES / "sst2" / "train.jsonl").read_text().splitlines()
    lines = (good * 20)[:1200]
    assert sum(len(line) + 1 for line in lines) > 65536  # beyond Validate's default sample_bytes
    lines.append('{"text": "no label here"}')
    (dataset / "train" / "train.jsonl").write_text("\n".join(lines) + "\n")

    run = run_local(
        local_state,
        "run",
        str(dataset),
        *stage_args(),
        "--task",
        "classification",
        "--base-model",
        "all-minilm-l6-v2",
        "--hp",
        "max_steps=1",
        "--json",
    )

    assert run.code == 1, run.output[-3000:]
    result = run.result
    assert result["error"] == "TrainingFailed"
    assert result["states"][-3:] == ["IsCapacityError", "NotifyTraining", "TrainingFailed"]
    described = json.loads(result["cause"])
    failure_files = list(
        (local_state / "search-dev" / "runs").glob(f"{result['execution']}/training-jobs/*/output/failure")
    )
    assert len(failure_files) == 1
    reason = failure_files[0].read_text().strip()
    assert described["TrainingJobStatus"] == "Failed" and described["FailureReason"] == f"AlgorithmError: {reason}"
    assert "line 1201" in reason, reason


def test_models_stage_local_puts_the_model_under_models_base_in_the_local_artifacts_bucket(local_state, tmp_path):
    import io

    from finetune_cli.main import main

    from .conftest import CONFIG

    model = tmp_path / "tiny-model"
    model.mkdir()
    (model / "config.json").write_text('{"model_type": "bert"}')
    (model / ".cache").write_text("not uploaded")
    out = io.StringIO()
    code = main(
        [
            "--config",
            str(CONFIG),
            "models",
            "stage",
            *stage_args(),
            "--name",
            "tiny-model",
            str(model),
            "--local",
            "--state-dir",
            str(local_state),
        ],
        out=out,
        err=out,
    )
    assert code == 0, out.getvalue()
    staged = list((local_state / "search-dev" / "s3").glob("search-dev-artifacts-*/models/base/tiny-model/*"))
    assert [p.name for p in staged] == ["config.json"]
    assert "add tiny-model to training.base_models" in out.getvalue()
