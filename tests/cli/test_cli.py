"""The finetune command-line tool against moto (S3, Step Functions, CloudFormation outputs) and local files."""

from __future__ import annotations

import importlib
import io
import json
import os
import time
from datetime import UTC
from pathlib import Path
from unittest import mock

import boto3
import pytest
from moto import mock_aws

from finetune_cli import main

# The module itself, for patching: the package exports its main() function under the same name.
cli_module = importlib.import_module("finetune_cli.main")

ROOT = Path(__file__).resolve().parents[2]
REGION, ACCOUNT = "us-east-1", "123456789012"
DATA, ARTIFACTS = "acme-dev-data", "acme-dev-artifacts"
TEAMS_YAML = f"""
teams:
  - name: acme
    cost_center: CC-1
    email: ml@example.com
    defaults:
      region: {REGION}
      training:
        instance_types: [ml.g5.2xlarge]
        max_instance_count: 2
        base_models: [minilm, smollm2]
    stages:
      dev:
        account: "{ACCOUNT}"
        endpoints:
          - name: sentiment
            kind: classifier
            model_data_url: s3://{ARTIFACTS}/models/sentiment/v1/model.tar.gz
"""


def _outputs_template(outputs: dict[str, str]) -> str:
    return json.dumps(
        {
            "Resources": {"Topic": {"Type": "AWS::SNS::Topic"}},
            "Outputs": {key: {"Value": value} for key, value in outputs.items()},
        }
    )


@pytest.fixture
def aws(tmp_path):
    """Moto with the acme-dev stacks' outputs, buckets, a chat dataset, a staged model and two state machines."""
    environ = {
        "AWS_DEFAULT_REGION": REGION,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_SESSION_TOKEN": "testing",
    }
    with mock.patch.dict(os.environ, environ), mock_aws():
        session = boto3.Session(region_name=REGION)
        s3 = session.client("s3")
        for bucket in (DATA, ARTIFACTS):
            s3.create_bucket(Bucket=bucket)
        s3.put_object(
            Bucket=DATA, Key="datasets/sst2/v1/train/train.jsonl", Body=(ROOT / "samples/sst2/train.jsonl").read_bytes()
        )
        s3.put_object(Bucket=DATA, Key="batch/input/sst2/reviews.jsonl", Body=b'{"inputs": "great"}\n')
        s3.put_object(Bucket=ARTIFACTS, Key="models/base/minilm/config.json", Body=b"{}")
        sfn = session.client("stepfunctions")
        role = f"arn:aws:iam::{ACCOUNT}:role/sfn"
        definition = json.dumps({"StartAt": "Done", "States": {"Done": {"Type": "Succeed"}}})
        fine_tune = sfn.create_state_machine(name="acme-dev-FineTune", definition=definition, roleArn=role)
        batch = sfn.create_state_machine(name="acme-dev-BatchInfer", definition=definition, roleArn=role)
        cfn = session.client("cloudformation")
        cfn.create_stack(
            StackName="acme-dev-data",
            TemplateBody=_outputs_template({"DataBucketName": DATA, "ArtifactsBucketName": ARTIFACTS}),
        )
        cfn.create_stack(
            StackName="acme-dev-training",
            TemplateBody=_outputs_template({"FineTuneStateMachineArn": fine_tune["stateMachineArn"]}),
        )
        cfn.create_stack(
            StackName="acme-dev-inference",
            TemplateBody=_outputs_template({"BatchInferStateMachineArn": batch["stateMachineArn"]}),
        )
        config = tmp_path / "teams.yaml"
        config.write_text(TEAMS_YAML)
        yield {
            "session": session,
            "config": config,
            "fine_tune": fine_tune["stateMachineArn"],
            "batch": batch["stateMachineArn"],
            "sfn": sfn,
            "s3": s3,
        }


def run(args: list[str], aws: dict | None = None) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    prefix = ["--config", str(aws["config"])] if aws else []
    code = main([*prefix, *args], session=aws["session"] if aws else object(), out=out, err=err)
    return code, out.getvalue(), err.getvalue()


STAGE = ["--team", "acme", "--stage", "dev"]


def test_submit_validates_and_starts_an_execution(aws):
    code, out, err = run(
        [
            "submit",
            *STAGE,
            "--dataset",
            "sst2/v1",
            "--task",
            "classification",
            "--base-model",
            "minilm",
            "--hp",
            "epochs=2",
            "--hp",
            "learning_rate=3e-5",
        ],
        aws,
    )

    assert (code, err) == (0, "")
    assert "valid: 1 train and 0 validation files (text-label); 1 x ml.g5.2xlarge (spot)" in out
    [execution] = aws["sfn"].list_executions(stateMachineArn=aws["fine_tune"])["executions"]
    assert execution["name"].startswith("sst2-v1-") and len(execution["name"]) <= 80
    started = json.loads(aws["sfn"].describe_execution(executionArn=execution["executionArn"])["input"])
    assert started == {
        "dataset": f"s3://{DATA}/datasets/sst2/v1/",
        "task": "classification",
        "base_model": "minilm",
        "hyperparameters": {"epochs": "2", "learning_rate": "3e-5"},
        "instance_count": 1,
    }


def test_submit_rejects_an_invalid_run_locally_without_starting_it(aws):
    code, _, err = run(
        [
            "submit",
            *STAGE,
            "--dataset",
            "sst2/v1",
            "--task",
            "classification",
            "--base-model",
            "minilm",
            "--method",
            "qlora",
            "--instance-count",
            "5",
        ],
        aws,
    )

    assert code == 2
    assert err == (
        "finetune: the run is not valid:\n"
        "  - method='qlora': qlora is supported for task=causal-lm only; use lora or full for "
        "classification\n"
        "  - instance_count: 5 is outside 1..2 (the team's training.max_instance_count)\n"
    )
    assert aws["sfn"].list_executions(stateMachineArn=aws["fine_tune"])["executions"] == []


def test_submit_dry_run_prints_the_input_and_starts_nothing(aws):
    code, out, _ = run(
        [
            "submit",
            *STAGE,
            "--dataset",
            f"s3://{DATA}/datasets/sst2/v1/",
            "--task",
            "classification",
            "--base-model",
            "minilm",
            "--no-spot",
            "--dry-run",
        ],
        aws,
    )

    assert code == 0 and '"spot": false' in out
    assert aws["sfn"].list_executions(stateMachineArn=aws["fine_tune"])["executions"] == []


def test_status_lists_and_describes_executions(aws):
    run(["submit", *STAGE, "--dataset", "sst2/v1", "--task", "classification", "--base-model", "minilm"], aws)
    name = aws["sfn"].list_executions(stateMachineArn=aws["fine_tune"])["executions"][0]["name"]

    code, listing, _ = run(["status", *STAGE], aws)
    code_one, detail, _ = run(["status", *STAGE, "--execution", name], aws)

    assert code == code_one == 0
    assert listing.startswith(name)
    assert detail.startswith(f"{name}: ")


def test_missing_stack_is_a_runtime_failure(aws):
    aws["session"].client("cloudformation").delete_stack(StackName="acme-dev-data")

    code, _, err = run(["status", *STAGE], aws)

    assert code == 1
    assert (
        err == f"finetune: stack acme-dev-data is not deployed in {REGION} (run cdk deploy for this team stage first)\n"
    )


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["submit"],
            "finetune submit: the following arguments are required: --team, --stage, --dataset, --task, --base-model",
        ),
        (
            ["submit", *STAGE, "--dataset", "d/v1", "--task", "regression", "--base-model", "m"],
            "finetune submit: argument --task: invalid choice: 'regression'",
        ),
        (
            [
                "submit",
                "--team",
                "nope",
                "--stage",
                "dev",
                "--dataset",
                "d/v1",
                "--task",
                "causal-lm",
                "--base-model",
                "m",
            ],
            "--team nope --stage dev: not in",
        ),
        (
            ["submit", *STAGE, "--dataset", "sst2/v1", "--task", "causal-lm", "--base-model", "m", "--hp", "lr"],
            "--hp 'lr': expected NAME=VALUE",
        ),
        (["frobnicate"], "finetune: argument command: invalid choice: 'frobnicate'"),
        (["prepare", "missing.csv", "--task", "classification", "--output", "out"], "missing.csv: no such file"),
    ],
)
def test_bad_arguments_exit_2_with_a_message(aws, args, message):
    code, _, err = run(args, aws)

    assert code == 2
    assert err.startswith("finetune: error: ") and message in err
    assert "Traceback" not in err


MESSY_CSV = (
    b"review,sentiment,extra\n"
    b"great film,positive,x\n"
    b",negative,x\n"  # empty text
    b"great film,positive,y\n"  # duplicate after mapping
    b"\n"  # empty row
    b"caf\xe9 au lait was bad,negative,x\n"  # Latin-1 byte: dropped and reported
    b'"multi\nline",negative,x\n'
    b"awful,negative,x\n"
    b"fine,positive,x\n"
)


def test_prepare_cleans_a_messy_csv(tmp_path):
    source = tmp_path / "reviews.csv"
    source.write_bytes(MESSY_CSV)

    code, out, err = run(
        [
            "prepare",
            str(source),
            "--task",
            "classification",
            "--output",
            str(tmp_path / "out"),
            "--map",
            "text=review",
            "--map",
            "label=sentiment",
            "--validation-fraction",
            "0.25",
        ]
    )

    assert (code, err) == (0, "")
    manifest = json.loads((tmp_path / "out/manifest.json").read_text())
    assert manifest["rows"] == {
        "read": 8,
        "train": 3,
        "validation": 1,
        "dropped_empty": 2,
        "dropped_duplicate": 1,
        "dropped_non_utf8": 1,
        "dropped_malformed": 0,
        "dropped_invalid": 0,
    }
    assert manifest["non_utf8_lines"] == [6]
    assert "non-UTF-8 bytes on lines 6 (those rows were dropped" in out
    lines = [
        json.loads(line)
        for name in ("train/train.jsonl", "validation/validation.jsonl")
        for line in (tmp_path / "out" / name).read_text().splitlines()
    ]
    assert sorted(r["text"] for r in lines) == ["awful", "fine", "great film", "multi\nline"]
    assert manifest["format"] == "text-label" and manifest["token_lengths"] is None


def test_prepare_split_is_seeded(tmp_path):
    source = tmp_path / "d.jsonl"
    source.write_text("".join(json.dumps({"text": f"t{i}", "label": i % 2}) + "\n" for i in range(50)))

    for out in ("a", "b"):
        assert (
            run(["prepare", str(source), "--task", "classification", "--output", str(tmp_path / out), "--seed", "7"])[0]
            == 0
        )

    assert (tmp_path / "a/validation/validation.jsonl").read_bytes() == (
        tmp_path / "b/validation/validation.jsonl"
    ).read_bytes()
    assert len((tmp_path / "a/validation/validation.jsonl").read_text().splitlines()) == 5


def test_prepare_names_wrong_columns(tmp_path):
    source = tmp_path / "reviews.csv"
    source.write_bytes(MESSY_CSV)

    code, _, err = run(
        ["prepare", str(source), "--task", "classification", "--output", str(tmp_path / "o"), "--map", "text=body"]
    )
    code_unmapped, _, err_unmapped = run(
        ["prepare", str(source), "--task", "classification", "--output", str(tmp_path / "o")]
    )

    assert code == code_unmapped == 2
    assert f"--map text=body: column 'body' is not in {source} (columns: review, sentiment, extra)" in err
    assert (
        f"{source}: no columns for task=classification (needs text+label; columns: review, sentiment, extra); "
        "map them with --map FIELD=COLUMN"
    ) in err_unmapped


def test_prepare_parquet_prompt_completion_with_token_stats(tmp_path):
    pd = pytest.importorskip("pandas")
    try:
        from finetune.local_models import ModelNotInstalled, minilm

        tokenizer = minilm()
    except ModelNotInstalled as error:
        pytest.skip(f"token statistics need the packaged MiniLM tokenizer: {error}")
    source = tmp_path / "qa.parquet"
    pd.DataFrame(
        {"q": ["What is 2+2?", "Name a colour.", None, "What is 2+2?"], "a": ["4", "Blue " * 100, "x", "4"]}
    ).to_parquet(source)

    code, out, err = run(
        [
            "prepare",
            str(source),
            "--task",
            "causal-lm",
            "--output",
            str(tmp_path / "o"),
            "--map",
            "prompt=q",
            "--map",
            "completion=a",
            "--tokenizer",
            str(tokenizer),
            "--max-seq-length",
            "64",
            "--validation-fraction",
            "0",
        ]
    )

    assert (code, err) == (0, "")
    manifest = json.loads((tmp_path / "o/manifest.json").read_text())
    assert manifest["format"] == "prompt-completion"
    assert (manifest["rows"]["train"], manifest["rows"]["dropped_empty"], manifest["rows"]["dropped_duplicate"]) == (
        2,
        1,
        1,
    )
    assert manifest["token_lengths"]["over_max_seq_length"] == 1
    assert "1 rows exceed max_seq_length=64" in out


def test_prepare_upload_puts_the_dataset_and_refuses_to_overwrite(aws, tmp_path):
    source = tmp_path / "d.jsonl"
    source.write_text("".join(json.dumps({"text": f"t{i}", "label": i % 2}) + "\n" for i in range(20)))
    args = [
        "prepare",
        str(source),
        "--task",
        "classification",
        "--output",
        str(tmp_path / "o"),
        "--name",
        "reviews",
        "--upload",
        *STAGE,
    ]

    first, second = run(args, aws), run(args, aws)

    keys = [o["Key"] for o in aws["s3"].list_objects_v2(Bucket=DATA, Prefix="datasets/reviews/")["Contents"]]
    assert first[0] == 0 and sorted(keys) == [
        "datasets/reviews/v1/manifest.json",
        "datasets/reviews/v1/train/train.jsonl",
        "datasets/reviews/v1/validation/validation.jsonl",
    ]
    assert second[0] == 2 and f"s3://{DATA}/datasets/reviews/v1/ already exists; choose a new --version" in second[2]


def test_models_stage_uploads_a_model_directory(aws, tmp_path):
    model = tmp_path / "model"
    (model / ".cache").mkdir(parents=True)
    (model / "config.json").write_text("{}")
    (model / "tokenizer.json").write_text("{}")
    (model / ".cache" / "junk").write_text("x")

    code, out, _ = run(["models", "stage", *STAGE, "--name", "tiny", str(model)], aws)

    keys = [o["Key"] for o in aws["s3"].list_objects_v2(Bucket=ARTIFACTS, Prefix="models/base/tiny/")["Contents"]]
    assert code == 0 and sorted(keys) == ["models/base/tiny/config.json", "models/base/tiny/tokenizer.json"]
    assert "note: add tiny to training.base_models" in out


def test_models_stage_rejects_a_directory_without_config(aws, tmp_path):
    code, _, err = run(["models", "stage", *STAGE, "--name", "tiny", str(tmp_path)], aws)

    assert code == 2 and f"{tmp_path}: not a Hugging Face model directory (no config.json or .gguf file)" in err


def test_batch_starts_the_batch_infer_pipeline(aws):
    code, _, _ = run(
        [
            "batch",
            *STAGE,
            "--model-name",
            "acme-dev-sentiment",
            "--instance-type",
            "ml.m5.xlarge",
            "--input",
            f"s3://{DATA}/batch/input/sst2",
            "--output",
            f"s3://{DATA}/batch/output/sst2/",
        ],
        aws,
    )

    assert code == 0
    [execution] = aws["sfn"].list_executions(stateMachineArn=aws["batch"])["executions"]
    started = json.loads(aws["sfn"].describe_execution(executionArn=execution["executionArn"])["input"])
    assert started == {
        "model_name": "acme-dev-sentiment",
        "input": f"s3://{DATA}/batch/input/sst2/",
        "output": f"s3://{DATA}/batch/output/sst2/",
        "instance_type": "ml.m5.xlarge",
        "instance_count": 1,
    }


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["--model-name", "m", "--input", "s3://elsewhere/x/", "--output", f"s3://{DATA}/batch/output/p/"],
            f"--input 's3://elsewhere/x/': must be a prefix under s3://{DATA}/batch/input/",
        ),
        # a prefix of the data bucket that BatchInfer's Validate state would refuse
        (
            [
                "--model-name",
                "m",
                "--input",
                f"s3://{DATA}/datasets/sst2/v1/train/",
                "--output",
                f"s3://{DATA}/batch/output/p/",
            ],
            f"--input 's3://{DATA}/datasets/sst2/v1/train/': must be a prefix under s3://{DATA}/batch/input/",
        ),
        (
            ["--model-name", "m", "--input", f"s3://{DATA}/batch/input/sst2/", "--output", f"s3://{DATA}/predictions/"],
            f"--output 's3://{DATA}/predictions/': must be a prefix under s3://{DATA}/batch/output/",
        ),
        (
            [
                "--model-data-url",
                "s3://elsewhere/m.tar.gz",
                "--input",
                f"s3://{DATA}/batch/input/sst2/",
                "--output",
                f"s3://{DATA}/batch/output/p/",
            ],
            f"--model-data-url 's3://elsewhere/m.tar.gz': must be in s3://{ARTIFACTS}/",
        ),
        (
            [
                "--model-name",
                "m",
                "--input",
                f"s3://{DATA}/batch/input/empty/",
                "--output",
                f"s3://{DATA}/batch/output/p/",
            ],
            f"--input s3://{DATA}/batch/input/empty/: holds no .jsonl files",
        ),
    ],
)
def test_batch_bad_arguments(aws, args, message):
    code, _, err = run(["batch", *STAGE, "--instance-type", "ml.m5.xlarge", *args], aws)

    assert code == 2 and message in err


# --- submit --wait and logs: Step Functions answers from botocore's Stubber (moto does not run state machines) --


def _stub_stepfunctions(aws):
    from botocore.stub import Stubber

    client = aws["session"].client("stepfunctions", region_name=REGION)
    return client, Stubber(client)


def _using(aws, stepfunctions):
    """Patch the CLI so Step Functions is the stubbed client and every other service is moto's."""

    def client(self, service, resources):
        return stepfunctions if service == "stepfunctions" else aws["session"].client(service, region_name=REGION)

    return mock.patch.object(cli_module.Cli, "client", client)


def _event(event_id, seconds, event_type, **details):
    from datetime import datetime

    return {
        "id": event_id,
        "timestamp": datetime(2026, 11, 27, 9, 0, seconds, tzinfo=UTC),
        "type": event_type,
        **details,
    }


def _entered(event_id, seconds, state):
    return _event(event_id, seconds, "TaskStateEntered", stateEnteredEventDetails={"name": state})


def test_submit_wait_prints_each_state_once_and_fails_with_the_cause(aws):
    from botocore.stub import ANY

    client, stubber = _stub_stepfunctions(aws)
    arn = f"arn:aws:states:{REGION}:{ACCOUNT}:execution:acme-dev-FineTune:run-1"
    described = {"executionArn": arn, "stateMachineArn": aws["fine_tune"], "startDate": _event(0, 0, "x")["timestamp"]}
    first = [_event(1, 0, "ExecutionStarted"), _entered(2, 1, "Validate")]
    second = [*first, _entered(3, 4, "Train"), _entered(4, 9, "Gate")]
    stubber.add_response(
        "start_execution",
        {"executionArn": arn, "startDate": described["startDate"]},
        {"stateMachineArn": aws["fine_tune"], "name": ANY, "input": ANY},
    )
    stubber.add_response("get_execution_history", {"events": first}, {"executionArn": arn, "maxResults": 1000})
    stubber.add_response("describe_execution", {**described, "status": "RUNNING"}, {"executionArn": arn})
    stubber.add_response("get_execution_history", {"events": second}, {"executionArn": arn, "maxResults": 1000})
    stubber.add_response(
        "describe_execution",
        {
            **described,
            "status": "FAILED",
            "error": "GateRejected",
            "cause": "fine-tuned accuracy 0.61 is below the threshold 0.8",
        },
        {"executionArn": arn},
    )

    with stubber, _using(aws, client):
        code, out, err = run(
            [
                "submit",
                *STAGE,
                "--dataset",
                "sst2/v1",
                "--task",
                "classification",
                "--base-model",
                "minilm",
                "--wait",
                "--poll-seconds",
                "0",
            ],
            aws,
        )

    stubber.assert_no_pending_responses()
    assert (code, err) == (1, "")
    assert out.count("Validate") == 1  # the second poll's history repeats the first's events
    assert out.splitlines()[-5:] == [
        "  09:00:01 Validate",
        "  09:00:04 Train",
        "  09:00:09 Gate",
        "FAILED",
        "  GateRejected: fine-tuned accuracy 0.61 is below the threshold 0.8",
    ]


def test_logs_prints_every_stream_of_the_executions_training_job(aws):
    logs = aws["session"].client("logs", region_name=REGION)
    logs.create_log_group(logGroupName=cli_module.TRAINING_LOG_GROUP)
    streams = {
        "sst2-v1-1a2b/algo-1-1764234000": ["metric train_loss=0.69 step=1", "metric train_loss=0.52 step=2"],
        "sst2-v1-1a2b/algo-2-1764234000": ["rank 1 ready"],
        "other-job/algo-1-1764234000": ["not this job"],
    }
    now_ms = int(time.time() * 1000)
    for stream, messages in streams.items():
        logs.create_log_stream(logGroupName=cli_module.TRAINING_LOG_GROUP, logStreamName=stream)
        logs.put_log_events(
            logGroupName=cli_module.TRAINING_LOG_GROUP,
            logStreamName=stream,
            logEvents=[{"timestamp": now_ms + i, "message": m} for i, m in enumerate(messages)],
        )  # CloudWatch drops old events
    client, stubber = _stub_stepfunctions(aws)
    arn = aws["fine_tune"].replace(":stateMachine:", ":execution:") + ":run-1"
    train = json.dumps({"TrainingJobName": "sst2-v1-1a2b", "RoleArn": "arn:aws:iam::123456789012:role/x"})
    stubber.add_response(
        "get_execution_history",
        {
            "events": [
                _event(1, 0, "ExecutionStarted"),
                _entered(2, 1, "Train"),
                _event(
                    3,
                    2,
                    "TaskScheduled",
                    taskScheduledEventDetails={
                        "resourceType": "sagemaker",
                        "resource": "createTrainingJob.sync",
                        "region": REGION,
                        "parameters": train,
                    },
                ),
            ]
        },
        {"executionArn": arn, "maxResults": 1000},
    )

    with stubber, _using(aws, client):
        code, out, err = run(["logs", *STAGE, "--execution", "run-1"], aws)

    assert (code, err) == (0, "")
    assert out.splitlines() == [
        "== sst2-v1-1a2b/algo-1-1764234000",
        "metric train_loss=0.69 step=1",
        "metric train_loss=0.52 step=2",
        "== sst2-v1-1a2b/algo-2-1764234000",
        "rank 1 ready",
    ]


def test_logs_before_the_training_job_started_is_a_clear_failure(aws):
    client, stubber = _stub_stepfunctions(aws)
    arn = aws["fine_tune"].replace(":stateMachine:", ":execution:") + ":run-1"
    stubber.add_response(
        "get_execution_history",
        {"events": [_event(1, 0, "ExecutionStarted"), _entered(2, 1, "Validate")]},
        {"executionArn": arn, "maxResults": 1000},
    )

    with stubber, _using(aws, client):
        code, out, err = run(["logs", *STAGE, "--execution", "run-1"], aws)

    assert code == 1 and out == ""
    assert err == f"finetune: execution {arn} has not started a training job (yet)\n"
