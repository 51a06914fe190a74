"""The FineTune pipeline's Validate step against moto S3: good and bad inputs and datasets, ranged GETs only."""

from __future__ import annotations

import hashlib
import importlib
import json
import os
import re
from pathlib import Path
from typing import Any
from unittest import mock

import boto3
import pytest
from moto import mock_aws

from finetune.config import TrainConfig
from lambda_handlers.validate_request.errors import InvalidRequest
from lambda_handlers.validate_request.logic import validate_request
from lambda_handlers.validate_request.request import JOB_NAME_PREFIX_MAX, job_name_prefix
from lambda_handlers.validate_request.settings import (
    AdapterTarget,
    SettingsError,
    ValidateSettings,
    lambda_environment,
    load_settings,
)
from stacks.settings import load_config
from stacks.validate_settings import settings_for_stage, validate_environment

from .events import LambdaContext

ROOT = Path(__file__).resolve().parents[2]
DATA, ARTIFACTS = "acme-dev-data-123456789012-us-east-1", "acme-dev-artifacts-123456789012-us-east-1"
CHAT = f"s3://{DATA}/datasets/chat/v1/"
SST2 = f"s3://{DATA}/datasets/sst2/v1/"
SETTINGS = ValidateSettings(
    team="acme",
    stage="dev",
    data_bucket=DATA,
    artifacts_bucket=ARTIFACTS,
    allowed_instance_types=("ml.g5.2xlarge", "ml.g5.12xlarge"),
    max_instance_count=2,
    max_runtime_hours=24,
    default_spot=True,
    allowed_base_models=("smollm2", "minilm", "HuggingFaceTB/SmolLM2-135M-Instruct", "ghost"),
    endpoints={"assistant": "llm", "sentiment": "classifier"},
)
AWS_ENV = {
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_SESSION_TOKEN": "testing",
}


def good_chat(**overrides: Any) -> dict[str, Any]:
    return {
        "dataset": CHAT,
        "task": "causal-lm",
        "base_model": "smollm2",
        "method": "lora",
        "hyperparameters": {"epochs": 2, "learning_rate": "1e-4", "packing": True},
        "instance_type": "ml.g5.2xlarge",
        "instance_count": 1,
        "spot": True,
        **overrides,
    }


@pytest.fixture
def s3():
    """Moto S3 with the team's buckets, a chat and a classification dataset, and two staged base models.

    Every GetObject's parameters are recorded on ``client.get_calls`` (a botocore event hook)."""
    with mock.patch.dict(os.environ, AWS_ENV), mock_aws():
        client = boto3.client("s3", region_name="us-east-1")
        for bucket in (DATA, ARTIFACTS, "other-team-data"):
            client.create_bucket(Bucket=bucket)
        put = lambda key, body, bucket=DATA: client.put_object(Bucket=bucket, Key=key, Body=body)  # noqa: E731
        put("datasets/chat/v1/train/part-0.jsonl", (ROOT / "samples/dolly/train.jsonl").read_bytes())
        put("datasets/chat/v1/validation/val.jsonl", (ROOT / "samples/dolly/validation.jsonl").read_bytes())
        put("datasets/chat/v1/manifest.json", b"{}")
        put("datasets/chat/v1/train/README.txt", b"not data, ignored like the training container does")
        put("datasets/sst2/v1/train/train.jsonl", (ROOT / "samples/sst2/train.jsonl").read_bytes())
        for name in ("smollm2", "minilm"):
            put(f"models/base/{name}/config.json", b"{}", ARTIFACTS)
            put(f"models/base/{name}/model.safetensors", b"weights", ARTIFACTS)
        client.get_calls = []
        client.meta.events.register(
            "provide-client-params.s3.GetObject", lambda params, **_: client.get_calls.append(dict(params))
        )
        yield client


def rejected(raw: Any, s3, settings: ValidateSettings = SETTINGS) -> list[str]:
    with pytest.raises(InvalidRequest) as caught:
        validate_request(raw, settings, s3)
    assert str(caught.value).startswith("invalid fine-tuning request: ")
    return caught.value.problems


def test_good_chat_request_gives_the_train_steps_parameters(s3):
    result = validate_request(good_chat(deploy_to="assistant", threshold=2.5), SETTINGS, s3)

    assert result == {
        "team": "acme",
        "stage": "dev",
        "dataset": CHAT,
        "dataset_name": "chat",
        "dataset_version": "v1",
        "job_name_prefix": f"acme-dev-chat-v1-{hashlib.sha256(b'chat/v1').hexdigest()[:6]}",
        "task": "causal-lm",
        "method": "lora",
        "base_model": "smollm2",
        "train_s3_uri": f"{CHAT}train/",
        "validation_s3_uri": f"{CHAT}validation/",
        "base_model_s3_uri": f"s3://{ARTIFACTS}/models/base/smollm2/",
        "hyperparameters": {
            "epochs": "2",
            "learning_rate": "1e-4",
            "method": "lora",
            "packing": "true",
            "task": "causal-lm",
        },
        "instance_type": "ml.g5.2xlarge",
        "instance_count": 1,
        "distributed": False,
        "spot": True,
        "max_runtime_seconds": 86400,
        "max_wait_seconds": 172800,
        "deploy_to": "assistant",
        "threshold": 2.5,
        "main_metric": "eval_loss",
        "higher_is_better": False,
        "train_files": 1,
        "validation_files": 1,
        "formats": ["messages"],
        "warnings": [],
        "input_data_config": [
            {
                "ChannelName": "train",
                "ContentType": "application/jsonlines",
                "DataSource": {
                    "S3DataSource": {
                        "S3DataType": "S3Prefix",
                        "S3Uri": f"{CHAT}train/",
                        "S3DataDistributionType": "FullyReplicated",
                    }
                },
            },
            {
                "ChannelName": "validation",
                "ContentType": "application/jsonlines",
                "DataSource": {
                    "S3DataSource": {
                        "S3DataType": "S3Prefix",
                        "S3Uri": f"{CHAT}validation/",
                        "S3DataDistributionType": "FullyReplicated",
                    }
                },
            },
            {
                "ChannelName": "model",
                "DataSource": {
                    "S3DataSource": {
                        "S3DataType": "S3Prefix",
                        "S3Uri": f"s3://{ARTIFACTS}/models/base/smollm2/",
                        "S3DataDistributionType": "FullyReplicated",
                    }
                },
            },
        ],
        "stopping_condition": {"MaxRuntimeInSeconds": 86400, "MaxWaitTimeInSeconds": 172800},
        "volume_size_gb": 200,
    }
    json.dumps(result)  # the state machine receives it as JSON


def test_several_instances_run_under_torchrun_and_the_output_is_a_valid_training_job(s3):
    """Validate's SageMaker pieces, placed as the Train state places them, pass botocore's own validation."""
    import botocore.session
    from botocore.validate import ParamValidator

    result = validate_request(good_chat(instance_count=2), SETTINGS, s3)
    assert result["hyperparameters"]["sagemaker_torch_distributed_enabled"] == "true"
    request = {
        "TrainingJobName": f"{result['job_name_prefix']}-1a2b3c4d",
        "RoleArn": "arn:aws:iam::111111111111:role/r",
        "AlgorithmSpecification": {
            "TrainingImage": "1.dkr.ecr.eu-west-1.amazonaws.com/i:t",
            "TrainingInputMode": "File",
        },
        "HyperParameters": result["hyperparameters"],
        "InputDataConfig": result["input_data_config"],
        "OutputDataConfig": {"S3OutputPath": "s3://b/o/"},
        "ResourceConfig": {
            "InstanceType": result["instance_type"],
            "InstanceCount": result["instance_count"],
            "VolumeSizeInGB": result["volume_size_gb"],
        },
        "StoppingCondition": result["stopping_condition"],
        "EnableManagedSpotTraining": result["spot"],
    }
    shape = (
        botocore.session.get_session().get_service_model("sagemaker").operation_model("CreateTrainingJob").input_shape
    )
    report = ParamValidator().validate(request, shape)
    assert not report.has_errors(), report.generate_report()


def test_classification_defaults_from_team_limits_and_hub_id_as_hyperparameter(s3):
    raw = {"dataset": SST2.rstrip("/"), "task": "classification", "base_model": "HuggingFaceTB/SmolLM2-135M-Instruct"}
    settings = SETTINGS.model_copy(update={"default_spot": False})

    result = validate_request(raw, settings, s3)

    assert result["method"] == "full"  # TrainConfig's default for classification
    assert result["hyperparameters"] == {
        "base_model": "HuggingFaceTB/SmolLM2-135M-Instruct",
        "method": "full",
        "task": "classification",
    }
    assert result["base_model_s3_uri"] is None
    assert result["validation_s3_uri"] is None and result["validation_files"] == 0
    assert (result["instance_type"], result["spot"], result["max_wait_seconds"]) == ("ml.g5.2xlarge", False, None)
    assert (result["main_metric"], result["higher_is_better"], result["formats"]) == ("accuracy", True, ["text-label"])


def test_only_ranged_gets_of_the_first_64_kib_are_made(s3):
    validate_request(good_chat(), SETTINGS, s3)

    assert [(c["Key"], c.get("Range")) for c in s3.get_calls] == [
        ("datasets/chat/v1/train/part-0.jsonl", "bytes=0-65535"),
        ("datasets/chat/v1/validation/val.jsonl", "bytes=0-65535"),
    ]


def test_partial_last_line_of_the_range_is_dropped_not_reported(s3):
    # Given a file far larger than the sample, whose 64 KiB cut falls inside a line
    line = json.dumps({"text": "x" * 1000}) + "\n"
    s3.put_object(Bucket=DATA, Key="datasets/big/v1/train/big.jsonl", Body=(line * 200).encode())
    raw = good_chat(dataset=f"s3://{DATA}/datasets/big/v1/")

    result = validate_request(raw, SETTINGS, s3)

    assert result["formats"] == ["text"]
    assert s3.get_calls[0]["Range"] == "bytes=0-65535"


def test_first_line_longer_than_the_sample_is_a_warning(s3):
    s3.put_object(
        Bucket=DATA, Key="datasets/long/v1/train/a.jsonl", Body=(json.dumps({"text": "y" * 70000}) + "\n").encode() * 2
    )

    result = validate_request(good_chat(dataset=f"s3://{DATA}/datasets/long/v1/"), SETTINGS, s3)

    assert result["warnings"] == [
        f"s3://{DATA}/datasets/long/v1/train/a.jsonl: first line is longer than 65536 "
        "bytes; not checked here (the training job checks every line)"
    ]


BAD_INPUTS = [
    pytest.param("not an object", ["(input): must be a JSON object, got str"], id="not-object"),
    pytest.param({"task": "causal-lm"}, ["dataset: is required", "base_model: is required"], id="missing-keys"),
    pytest.param(
        good_chat(epochs=3),
        [
            "epochs: unknown key (allowed: dataset, task, base_model, method, "
            "hyperparameters, instance_type, instance_count, spot, deploy_to, threshold)"
        ],
        id="unknown-key",
    ),
    pytest.param(
        good_chat(task="summarization"),
        ["task: 'summarization' is not one of 'causal-lm' or 'classification'"],
        id="bad-task",
    ),
    pytest.param(
        good_chat(method="prefix"), ["method: 'prefix' is not one of 'lora', 'qlora' or 'full'"], id="bad-method"
    ),
    pytest.param(good_chat(instance_count="2"), ["instance_count: must be an integer, got '2'"], id="count-type"),
    pytest.param(good_chat(spot="yes"), ["spot: must be true or false, got 'yes'"], id="spot-type"),
    pytest.param(
        good_chat(hyperparameters={"lora_r": [8]}),
        ["hyperparameters.lora_r: [8] must be a string, number or boolean"],
        id="hp-type",
    ),
    pytest.param(
        good_chat(hyperparameters={"learning_rate": 3}),
        ["hyperparameters.learning_rate=3.0: must be > 0 and < 1"],
        id="hp-range",
    ),
    pytest.param(
        good_chat(hyperparameters={"epochs": "two"}),
        ["hyperparameters.epochs='two': must be a number"],
        id="hp-unparsable",
    ),
    pytest.param(
        good_chat(hyperparameters={"lora_rank": 8}),
        # the known names are the training container's own (TrainConfig), in its order
        [
            "hyperparameters.lora_rank='8': unknown hyperparameter "
            f"(known: {', '.join(TrainConfig.hyperparameter_names())})"
        ],
        id="hp-unknown",
    ),
    pytest.param(
        good_chat(hyperparameters={"task": "classification"}),
        ['hyperparameters.task: give task as the top-level "task" key, not as a hyperparameter'],
        id="hp-task",
    ),
    pytest.param(
        good_chat(hyperparameters={"sagemaker_program": "x.py"}),
        ["hyperparameters.sagemaker_program: names starting with sagemaker_ are reserved for SageMaker"],
        id="hp-reserved",
    ),
    pytest.param(
        {"dataset": SST2, "task": "classification", "base_model": "minilm", "method": "qlora"},
        ["method='qlora': qlora is supported for task=causal-lm only; use lora or full for classification"],
        id="qlora-classification",
    ),
    pytest.param(
        good_chat(instance_type="ml.p4d.24xlarge"),
        ["instance_type: 'ml.p4d.24xlarge' is not allowed for acme-dev; allowed: ml.g5.2xlarge, ml.g5.12xlarge"],
        id="instance-type",
    ),
    pytest.param(
        good_chat(instance_count=3),
        ["instance_count: 3 is outside 1..2 (the team's training.max_instance_count)"],
        id="too-many",
    ),
    pytest.param(
        good_chat(instance_count=0),
        ["instance_count: 0 is outside 1..2 (the team's training.max_instance_count)"],
        id="zero",
    ),
    pytest.param(
        good_chat(base_model="meta-llama/Llama-3.1-70B"),
        [
            "base_model: 'meta-llama/Llama-3.1-70B' is not allowed for acme-dev; allowed: smollm2, minilm, "
            "HuggingFaceTB/SmolLM2-135M-Instruct, ghost"
        ],
        id="base-model",
    ),
    pytest.param(
        good_chat(dataset="s3://other-team-data/datasets/chat/v1/"),
        [
            f"dataset: bucket 'other-team-data' is not this team stage's data bucket; datasets must be "
            f"under s3://{DATA}/datasets/<name>/<version>/"
        ],
        id="other-bucket",
    ),
    pytest.param(
        good_chat(dataset=f"s3://{DATA}/chat/"),
        [
            f"dataset: 's3://{DATA}/chat/' is not a dataset version prefix; expected "
            f"s3://{DATA}/datasets/<name>/<version>/"
        ],
        id="not-versioned",
    ),
    pytest.param(
        good_chat(dataset="/home/me/chat.jsonl"),
        [f"dataset: '/home/me/chat.jsonl' is not an S3 URI; expected s3://{DATA}/datasets/<name>/<version>/"],
        id="local-path",
    ),
    pytest.param(
        good_chat(deploy_to="sentiment"),
        ["deploy_to: endpoint 'sentiment' serves classifier models; task=causal-lm needs a llm endpoint"],
        id="deploy-kind",
    ),
    pytest.param(
        good_chat(deploy_to="nope"),
        ["deploy_to: 'nope' is not an endpoint of acme-dev (endpoints: assistant, sentiment)"],
        id="deploy-unknown",
    ),
    pytest.param(
        {"dataset": SST2, "task": "classification", "base_model": "minilm", "threshold": 1.5},
        ["threshold: 1.5 must be an accuracy between 0 and 1"],
        id="threshold",
    ),
    pytest.param(
        good_chat(base_model="ghost"),
        [
            f"base_model: nothing is staged under s3://{ARTIFACTS}/models/base/ghost/; stage it with "
            "`finetune models stage --name ghost DIR`"
        ],
        id="not-staged",
    ),
    pytest.param(
        good_chat(dataset=f"s3://{DATA}/datasets/missing/v1/"),
        [f"dataset: no .jsonl files under s3://{DATA}/datasets/missing/v1/train/ (the train channel is required)"],
        id="no-train",
    ),
    pytest.param(
        {"dataset": CHAT, "task": "classification", "base_model": "minilm"},
        [
            f"{CHAT}train/part-0.jsonl, line 1: unrecognised fields (dolly_index, messages) for "
            'task=classification; expected {"text", "label"}',
            f"{CHAT}validation/val.jsonl, line 1: unrecognised fields (dolly_index, messages) for "
            'task=classification; expected {"text", "label"}',
        ],
        id="wrong-format",
    ),
]


@pytest.mark.parametrize(("raw", "expected"), BAD_INPUTS)
def test_bad_inputs_name_the_key_and_the_fix(s3, raw, expected):
    assert rejected(raw, s3) == expected


def test_every_problem_is_reported_at_once(s3):
    problems = rejected(good_chat(instance_count=9, instance_type="ml.t3.medium", hyperparameters={"lora_r": 0}), s3)

    assert problems == [
        "hyperparameters.lora_r=0: must be >= 1",
        "instance_type: 'ml.t3.medium' is not allowed for acme-dev; allowed: ml.g5.2xlarge, ml.g5.12xlarge",
        "instance_count: 9 is outside 1..2 (the team's training.max_instance_count)",
    ]


BAD_FILES = [
    pytest.param(b'{"text": "ok", "label": 1}\n{"text": "broken", \n', "line 2: malformed JSON", id="json"),
    pytest.param(
        b'{"text": "ok", "label": 1}\n{"text": "ok", "label": 1.5}\n',
        'line 2: "label" must be an integer or a non-empty string, got 1.5',
        id="label",
    ),
    pytest.param(
        b'{"text": "caf\xe9", "label": 1}\n',
        "line 1: not UTF-8 text (invalid continuation byte at byte 13 of the line)",
        id="latin-1",
    ),
    pytest.param(b"", "file is empty: no JSON lines", id="empty"),
    pytest.param(b"\n\n", "file is empty: no JSON lines", id="blank-lines"),
]


@pytest.mark.parametrize(("body", "problem"), BAD_FILES)
def test_bad_dataset_lines_name_the_file_and_line(s3, body, problem):
    s3.put_object(Bucket=DATA, Key="datasets/bad/v1/train/a.jsonl", Body=body)
    raw = {"dataset": f"s3://{DATA}/datasets/bad/v1/", "task": "classification", "base_model": "minilm"}

    problems = rejected(raw, s3)

    assert len(problems) == 1
    uri = f"s3://{DATA}/datasets/bad/v1/train/a.jsonl"
    assert problems[0].startswith(f"{uri}{',' if problem.startswith('line') else ':'} {problem}")


def test_staged_directory_without_config_json_is_rejected(s3):
    s3.put_object(Bucket=ARTIFACTS, Key="models/base/ghost/weights.bin", Body=b"x")

    assert rejected(good_chat(base_model="ghost"), s3) == [
        f"base_model: s3://{ARTIFACTS}/models/base/ghost/ has no config.json (nor a .gguf file): not a Hugging "
        "Face model directory"
    ]


def test_no_allowed_base_models_says_where_to_configure_them(s3):
    settings = SETTINGS.model_copy(update={"allowed_base_models": ()})

    assert rejected(good_chat(), s3, settings) == [
        "base_model: 'smollm2' is not allowed: acme-dev lists no base models (training.base_models in "
        "config/teams.yaml)"
    ]


def test_files_beyond_the_sampling_limit_are_counted_not_read(s3):
    for i in range(3):
        s3.put_object(Bucket=DATA, Key=f"datasets/many/v1/train/{i}.jsonl", Body=b'{"text": "a"}\n')
    settings = SETTINGS.model_copy(update={"max_files_checked": 2})

    result = validate_request(good_chat(dataset=f"s3://{DATA}/datasets/many/v1/"), settings, s3)

    assert result["train_files"] == 3 and len(s3.get_calls) == 2
    assert result["warnings"] == [
        f"s3://{DATA}/datasets/many/v1/train/: 1 more files not sampled (the training job checks every line)"
    ]


# --- environment contract -----------------------------------------------------------------------------------


def test_lambda_environment_defaults_base_models_from_config():
    stage = next(s for s in load_config(ROOT / "config" / "teams.yaml") if s.qualified_name == "search-dev")

    settings = load_settings(validate_environment(stage, "search-dev-data-1", "search-dev-artifacts-1"))

    assert settings.allowed_base_models == tuple(stage.training.base_models)


def test_lambda_environment_round_trips_through_load_settings():
    stage = next(s for s in load_config(ROOT / "config" / "teams.yaml") if s.qualified_name == "search-dev")

    environ = validate_environment(
        stage,
        "search-dev-data-1",
        "search-dev-artifacts-1",
        allowed_base_models=["smollm2", "HuggingFaceTB/SmolLM2-135M-Instruct"],
    )
    settings = load_settings(environ)

    assert all(isinstance(v, str) for v in environ.values())
    assert settings.allowed_instance_types == tuple(stage.training.instance_types)
    assert (settings.team, settings.stage, settings.data_bucket) == ("search", "dev", "search-dev-data-1")
    assert settings.max_instance_count == stage.training.max_instance_count
    # The LoRA endpoint `chat` takes no whole model: its adapters are the deploy targets there.
    assert settings.endpoints == {"assistant": "llm", "sentiment": "classifier"}
    assert {name: (t.endpoint, t.base_model) for name, t in settings.adapters.items()} == {
        "support-tone": ("chat", "smollm2-135m-instruct"),
        "sql-helper": ("chat", "smollm2-135m-instruct"),
    }
    assert settings.allowed_base_models == ("smollm2", "HuggingFaceTB/SmolLM2-135M-Instruct")


def test_the_functions_settings_take_plain_values_and_agree_with_the_stage_mapping():
    # The Lambda's module takes names, numbers and mappings (its asset ships without stacks/) ...
    environ = lambda_environment(
        team="acme",
        stage="dev",
        data_bucket=DATA,
        artifacts_bucket=ARTIFACTS,
        allowed_instance_types=["ml.g5.2xlarge"],
        max_instance_count=2,
        max_runtime_hours=4,
        default_spot=False,
        allowed_base_models=["smollm2"],
        endpoints={"chat": "llm"},
        adapters={"legal": AdapterTarget(endpoint="lora", base_model="smollm2", max_lora_rank=8)},
    )
    settings = load_settings(environ)
    assert (settings.max_instance_count, settings.default_spot, settings.endpoints) == (2, False, {"chat": "llm"})
    assert settings.adapters["legal"].max_lora_rank == 8
    # ... and a stage's config maps onto the same settings the CLI checks requests with
    stage = next(s for s in load_config(ROOT / "config" / "teams.yaml") if s.qualified_name == "search-dev")
    assert load_settings(validate_environment(stage, DATA, ARTIFACTS)) == settings_for_stage(stage, DATA, ARTIFACTS)


def test_lambda_environment_accepts_cdk_tokens_for_bucket_names():
    stage = load_config(ROOT / "config" / "teams.yaml")[0]

    environ = validate_environment(stage, "${Token[TOKEN.101]}", "${Token[TOKEN.102]}", allowed_base_models=[])

    assert environ["DATA_BUCKET"] == "${Token[TOKEN.101]}" and environ["ALLOWED_BASE_MODELS"] == "[]"


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"DATA_BUCKET": ""}, "validate-request: missing environment variables DATA_BUCKET"),
        ({"ALLOWED_INSTANCE_TYPES": "ml.g5.2xlarge"}, "validate-request: ALLOWED_INSTANCE_TYPES is not JSON"),
        (
            {"MAX_INSTANCE_COUNT": "0"},
            "validate-request: invalid environment: MAX_INSTANCE_COUNT: Input should be greater than or equal to 1",
        ),
        (
            {"ALLOWED_BASE_MODELS": '["../etc"]'},
            "validate-request: invalid environment: ALLOWED_BASE_MODELS: Value "
            "error, '../etc' is neither a staged model name nor a hub id",
        ),
    ],
)
def test_bad_environment_fails_at_cold_start_naming_the_variable(change, message):
    environ = {**validate_environment(load_config(ROOT / "config" / "teams.yaml")[0], DATA, ARTIFACTS), **change}

    with pytest.raises(SettingsError) as caught:
        load_settings(environ)

    assert str(caught.value).startswith(message)


# --- the Lambda handler ---------------------------------------------------------------------------------------


@pytest.fixture
def handler(s3):
    environ = {
        **AWS_ENV,
        "POWERTOOLS_SERVICE_NAME": "validate-request",
        "TEAM": "acme",
        "STAGE": "dev",
        "DATA_BUCKET": DATA,
        "ARTIFACTS_BUCKET": ARTIFACTS,
        "ALLOWED_INSTANCE_TYPES": '["ml.g5.2xlarge"]',
        "MAX_INSTANCE_COUNT": "2",
        "MAX_RUNTIME_HOURS": "12",
        "ALLOWED_BASE_MODELS": '["smollm2"]',
        "ENDPOINTS": '{"assistant":"llm"}',
    }
    with mock.patch.dict(os.environ, environ):
        module = importlib.import_module("lambda_handlers.validate_request.handler")
        module = importlib.reload(module)  # settings are read at import, as on a cold start
    return module


def test_handler_returns_the_parameters(handler):
    result = handler.lambda_handler(good_chat(), LambdaContext())

    assert result["max_runtime_seconds"] == 12 * 3600
    assert result["train_s3_uri"] == f"{CHAT}train/"


def test_handler_raises_invalid_request_for_the_state_machine_to_catch(handler):
    with pytest.raises(InvalidRequest) as caught:
        handler.lambda_handler(good_chat(instance_type="ml.g5.12xlarge"), LambdaContext())

    assert type(caught.value).__name__ == "InvalidRequest"  # Lambda's errorType, matched by the Catch
    assert caught.value.problems == [
        "instance_type: 'ml.g5.12xlarge' is not allowed for acme-dev; allowed: ml.g5.2xlarge"
    ]


def test_manifest_upload_expands_to_the_run_it_describes(s3):
    """What the stage's EventBridge rule sends on a manifest upload becomes the request in its `run` object."""
    manifest = {
        "name": "chat",
        "version": "v1",
        "task": "causal-lm",
        "run": {"base_model": "smollm2", "method": "lora", "hyperparameters": {"epochs": 1}},
    }
    s3.put_object(Bucket=DATA, Key="datasets/chat/v1/manifest.json", Body=json.dumps(manifest).encode())
    result = validate_request({"manifest": f"{CHAT}manifest.json"}, SETTINGS, s3)
    assert (result["dataset"], result["task"], result["method"]) == (CHAT, "causal-lm", "lora")
    assert result["hyperparameters"]["epochs"] == "1"


@pytest.mark.parametrize(
    "body,uri,message",
    [
        (b'{"task": "causal-lm"}', f"{CHAT}manifest.json", 'has no "run" object'),
        (b"{not json", f"{CHAT}manifest.json", "is not valid JSON"),
        (
            b'{"task": "causal-lm", "run": {"task": "classification"}}',
            f"{CHAT}manifest.json",
            "run.task is taken from the manifest itself",
        ),
        (b"{}", "s3://elsewhere/datasets/chat/v1/manifest.json", "is not s3://"),
    ],
)
def test_bad_manifests_are_rejected_with_what_to_fix(s3, body, uri, message):
    s3.put_object(Bucket=DATA, Key="datasets/chat/v1/manifest.json", Body=body)
    with pytest.raises(InvalidRequest, match=re.escape(message)):
        validate_request({"manifest": uri}, SETTINGS, s3)


JOB_NAME = re.compile(r"[a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}")


@pytest.mark.parametrize(
    ("first", "second"),
    [
        (("my.data", "v1"), ("my_data", "v1")),  # the same after sanitising
        (("a" * 40 + "x", "v1"), ("a" * 40 + "y", "v1")),  # the same in the first 40 characters
        (("customer-support-transcripts-2026", "v1"), ("customer-support-transcripts-2026", "v1.1")),
        (("chat", "v1"), ("chat", "v1-")),
        (("x" * 128, "v" * 128), ("x" * 128, "v" * 127 + "w")),  # both cut to the limit
    ],
)
@pytest.mark.parametrize(("team", "stage"), [("acme", "dev"), ("t" * 16, "s" * 8)])
def test_job_name_prefixes_of_different_datasets_never_collide(team, stage, first, second):
    # Given two datasets whose readable parts collapse to the same text
    # When their job name prefixes are derived
    prefixes = [job_name_prefix(team, stage, *first), job_name_prefix(team, stage, *second)]
    # Then they differ, keep the stage's head for IAM and EventBridge, and fit a SageMaker job name with the suffix
    assert prefixes[0] != prefixes[1]
    for prefix in prefixes:
        assert prefix.startswith(f"{team}-{stage}-") and len(prefix) <= JOB_NAME_PREFIX_MAX
        assert JOB_NAME.fullmatch(f"{prefix}-1a2b3c4d")


def test_job_name_prefix_stays_readable_and_stable():
    prefix = job_name_prefix("acme", "dev", "Customer.Support", "2026-01")
    assert prefix == job_name_prefix("acme", "dev", "Customer.Support", "2026-01")  # deterministic
    assert prefix.startswith("acme-dev-Customer-Support-2026-01-")


ADAPTER_SETTINGS = SETTINGS.model_copy(
    update={"adapters": {"legal": AdapterTarget(endpoint="chat", base_model="smollm2")}}
)


def test_a_lora_run_of_the_endpoints_base_model_may_deploy_to_its_adapter(s3):
    result = validate_request(good_chat(deploy_to="legal"), ADAPTER_SETTINGS, s3)
    assert result["deploy_to"] == "legal" and result["hyperparameters"]["method"] == "lora"
    assert validate_request(good_chat(deploy_to="legal", method="qlora"), ADAPTER_SETTINGS, s3)["deploy_to"] == "legal"


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        (
            {"method": "full"},
            [
                "deploy_to: 'legal' is a LoRA adapter of endpoint 'chat'; only a causal-lm run with method "
                "lora or qlora deploys there (got task=causal-lm, method=full)"
            ],
        ),
        (
            {"hyperparameters": {"epochs": 1, "lora_r": 32}},
            [
                "hyperparameters.lora_r: 32 exceeds the max_lora_rank 16 endpoint 'chat' loads; lower it or raise the "
                "endpoint's lora.max_lora_rank"
            ],
        ),
        (
            {"base_model": "HuggingFaceTB/SmolLM2-135M-Instruct"},
            [
                "deploy_to: adapter 'legal' runs on base model 'smollm2'; this run fine-tunes "
                "'HuggingFaceTB/SmolLM2-135M-Instruct'"
            ],
        ),
    ],
)
def test_an_adapter_takes_only_lora_runs_of_its_base_model(s3, overrides, expected):
    assert rejected(good_chat(deploy_to="legal", **overrides), s3, ADAPTER_SETTINGS) == expected


def test_an_unknown_deploy_target_lists_adapters_too(s3):
    assert rejected(good_chat(deploy_to="nope"), s3, ADAPTER_SETTINGS) == [
        "deploy_to: 'nope' is not an endpoint of acme-dev (endpoints: assistant, legal, sentiment)"
    ]
