"""Contract tests: the FineTune state machine's SageMaker calls, rendered with a sample execution, validate
against botocore's own API model for each operation. A wrong field name or type fails here, not in AWS."""

from __future__ import annotations

import json
import re
import uuid

import botocore.session
import pytest
from botocore.validate import ParamValidator

from finetune.metrics import METRIC_DEFINITIONS, format_metric

from . import states
from .states import intrinsic, render, resolve_tokens, validate_request

pytestmark = pytest.mark.synth

STAGE = "search-dev"

VALIDATED_REQUEST = {  # what Validate returns for a LoRA run on a staged SmolLM2
    "job_name_prefix": "search-dev-dolly-v1",
    "hyperparameters": {"task": "causal-lm", "method": "lora", "epochs": "1", "learning_rate": "0.0002"},
    "input_data_config": [
        {
            "ChannelName": "train",
            "DataSource": {
                "S3DataSource": {
                    "S3DataType": "S3Prefix",
                    "S3Uri": "s3://search-dev-data-111111111111-eu-west-1/datasets/dolly/v1/train/",
                    "S3DataDistributionType": "FullyReplicated",
                }
            },
            "ContentType": "application/jsonlines",
        },
        {
            "ChannelName": "model",
            "DataSource": {
                "S3DataSource": {
                    "S3DataType": "S3Prefix",
                    "S3Uri": "s3://search-dev-artifacts-111111111111-eu-west-1/models/base/smollm2-135m-instruct/",
                    "S3DataDistributionType": "FullyReplicated",
                }
            },
        },
    ],
    "instance_type": "ml.g5.2xlarge",
    "instance_count": 2,
    "volume_size_gb": 100,
    "spot": True,
    "stopping_condition": {"MaxRuntimeInSeconds": 86400, "MaxWaitTimeInSeconds": 172800},
    "deploy_to": "assistant",
    "threshold": None,
}
JOB = "search-dev-dolly-v1-1a2b3c4d"
SAMPLE_STATE = {
    "request": VALIDATED_REQUEST,
    "capacity_attempts": 0,
    "run_id": "0f7e6d5c-4b3a-4921-8877-665544332211",
    "job": {
        "name": JOB,
        "model_data_url": f"s3://search-dev-artifacts-111111111111-eu-west-1/training-output/{JOB}/output/model.tar.gz",
        "output_archive_uri": "s3://x/y/output.tar.gz",
        "billable_seconds": 100,
    },
    "gated": {
        "gate": {
            "passed": True,
            "reason": "fine-tuned eval_loss 1.2 vs base 1.9",
            "evaluation_s3_uri": f"s3://search-dev-artifacts-111111111111-eu-west-1/evaluations/{JOB}/evaluation.json",
        }
    },
    "package": {
        "arn": "arn:aws:sagemaker:eu-west-1:111111111111:model-package/search-dev-models/3",
        "approval": "Approved",
    },
    "target": {
        "endpoint_name": "search-dev-assistant",
        "config_name": f"{JOB}-c",
        "serverless": False,
        "instance_type": "ml.g5.xlarge",
        "instance_count": 1,
        "memory_mb": 3072,
        "max_concurrency": 5,
    },
}


@pytest.fixture(scope="module")
def definition(assembly) -> dict:
    stack = assembly.stack(STAGE, "Training")
    (machine,) = stack.resources_of_type("AWS::StepFunctions::StateMachine").values()
    return json.loads(resolve_tokens(machine["Properties"]["DefinitionString"]))


@pytest.fixture(scope="module")
def sagemaker_model():
    return botocore.session.get_session().get_service_model("sagemaker")


def _all_states(definition: dict) -> dict[str, dict]:
    return definition["States"]


def test_train_parameters_are_a_valid_create_training_job_request(definition, sagemaker_model):
    train = _all_states(definition)["Train"]
    assert train["Resource"] == "arn:aws:states:::sagemaker:createTrainingJob.sync"
    params = render(train["Parameters"], SAMPLE_STATE)
    validate_request(sagemaker_model, "CreateTrainingJob", params)
    assert re.fullmatch(r"[a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}", params["TrainingJobName"])
    assert params["EnableManagedSpotTraining"] is True
    assert params["StoppingCondition"]["MaxWaitTimeInSeconds"] >= params["StoppingCondition"]["MaxRuntimeInSeconds"]
    assert params["CheckpointConfig"]["S3Uri"].startswith(
        "s3://search-dev-artifacts-111111111111-eu-west-1/checkpoints/"
    )
    assert params["EnableInterContainerTrafficEncryption"] is True
    assert params["OutputDataConfig"]["KmsKeyId"] and params["ResourceConfig"]["VolumeKmsKeyId"]
    assert params["VpcConfig"]["Subnets"] and params["VpcConfig"]["SecurityGroupIds"]


def test_job_name_is_new_on_every_attempt_and_fits_63_characters(definition):
    expression = _all_states(definition)["Train"]["Parameters"]["TrainingJobName.$"]
    assert "States.UUID()" in expression  # evaluated on each attempt, so retries never collide
    longest_prefix = {**SAMPLE_STATE, "request": {**VALIDATED_REQUEST, "job_name_prefix": "x" * 54}}
    assert len(intrinsic(expression, longest_prefix)) == 63


def _checkpoint_uri(definition: dict, state: dict) -> str:
    return render(_all_states(definition)["Train"]["Parameters"], state)["CheckpointConfig"]["S3Uri"]


def test_checkpoints_belong_to_one_execution(definition, monkeypatch):
    # Given two executions on the same dataset, version and settings (the same validated request)
    monkeypatch.setattr(states, "next_uuid", uuid.uuid4)
    unwrap = _all_states(definition)["UseValidatedRequest"]["Parameters"]
    validated = {"validated": {"request": VALIDATED_REQUEST}}
    first, second = render(unwrap, validated), render(unwrap, validated)
    # When each renders its Train call
    first_uri, second_uri = _checkpoint_uri(definition, first), _checkpoint_uri(definition, second)
    # Then their checkpoint prefixes differ, and neither is inside the other
    assert first_uri != second_uri
    assert not first_uri.startswith(second_uri) and not second_uri.startswith(first_uri)
    assert first_uri.startswith("s3://search-dev-artifacts-111111111111-eu-west-1/checkpoints/search-dev-dolly-v1/")
    assert first_uri.endswith(f"/{first['run_id']}/")
    # And a retry of the first (capacity wait, then Train again) resumes from the first's own prefix
    retried = render(_all_states(definition)["CountCapacityAttempt"]["Parameters"], first)
    assert retried["capacity_attempts"] == 1
    assert _checkpoint_uri(definition, retried) == first_uri
    # While the job name is new on every attempt
    train = _all_states(definition)["Train"]["Parameters"]
    assert render(train, first)["TrainingJobName"] != render(train, retried)["TrainingJobName"]


def test_longest_checkpoint_uri_is_valid(definition, sagemaker_model):
    longest = {**SAMPLE_STATE, "request": {**VALIDATED_REQUEST, "job_name_prefix": "x" * 54}}
    validate_request(
        sagemaker_model, "CreateTrainingJob", render(_all_states(definition)["Train"]["Parameters"], longest)
    )
    assert len(_checkpoint_uri(definition, longest)) <= 1024  # S3Uri's limit in the API model


def test_only_capacity_errors_are_retried(definition):
    train = _all_states(definition)["Train"]
    assert [r["ErrorEquals"] for r in train["Retry"]] == [
        ["SageMaker.ResourceLimitExceededException", "SageMaker.ThrottlingException"]
    ]
    choice = _all_states(definition)["IsCapacityError"]
    assert choice["Choices"][0]["And"][0] == {"Variable": "$.failure.Cause", "StringMatches": "*CapacityError*"}


def test_metric_definitions_come_from_the_training_code_and_match_its_lines(definition):
    definitions = _all_states(definition)["Train"]["Parameters"]["AlgorithmSpecification"]["MetricDefinitions"]
    assert definitions == METRIC_DEFINITIONS
    for metric in definitions:
        line = format_metric(metric["Name"], 0.125, 7)
        match = re.search(metric["Regex"], line)
        assert match and float(match.group(1)) == 0.125


@pytest.mark.parametrize(
    "state_name,operation",
    [
        ("RegisterLlm", "CreateModelPackage"),
        ("RegisterClassifier", "CreateModelPackage"),
        ("CreateModel", "CreateModel"),
        ("CreateEndpointConfig", "CreateEndpointConfig"),
        ("CreateServerlessEndpointConfig", "CreateEndpointConfig"),
        ("UpdateEndpoint", "UpdateEndpoint"),
        ("DescribeEndpoint", "DescribeEndpoint"),
    ],
)
def test_sagemaker_calls_validate_against_botocore(definition, sagemaker_model, state_name, operation):
    state = _all_states(definition)[state_name]
    action = state["Resource"].rsplit(":", 1)[-1]
    assert action[0].upper() + action[1:] == operation
    validate_request(sagemaker_model, operation, render(state["Parameters"], SAMPLE_STATE))


def test_a_wrong_field_fails_the_contract(sagemaker_model):
    """The check can fail: a misspelt field is reported by botocore's validator."""
    shape = sagemaker_model.operation_model("UpdateEndpoint").input_shape
    report = ParamValidator().validate({"EndpointName": "x", "EndpointConfig": "y"}, shape)
    assert report.has_errors()


def test_every_failure_path_notifies_and_ends_in_a_fail_state(definition):
    states = _all_states(definition)
    fails = {name for name, s in states.items() if s["Type"] == "Fail"}
    assert len(fails) >= 6
    for name, state in states.items():
        for catch in state.get("Catch", []):
            target = catch["Next"]
            # a catch leads (maybe through a Choice/Pass) to a Notify step followed by a Fail
            seen = set()
            while states[target]["Type"] in ("Choice", "Pass") and target not in seen:
                seen.add(target)
                nxt = states[target].get("Default") or states[target].get("Next")
                target = nxt
            assert target.startswith("Notify"), f"{name} catch goes to {target}"
            assert states[states[target]["Next"]]["Type"] == "Fail"
            assert "CausePath" in states[states[target]["Next"]]


def test_deploy_branches_exist_for_each_configured_endpoint(definition):
    pick = _all_states(definition)["PickEndpoint"]
    names = sorted(c["And"][0]["StringEquals"] for c in pick["Choices"])
    assert names == ["assistant", "sentiment"]


def test_a_failed_deploy_call_is_described_from_what_its_catch_provides(definition):
    # Given a deploy call that failed outright: its Catch leaves $.failure, and no $.endpoint exists yet
    states = definition["States"]
    for name in (
        "CreateModel",
        "CreateEndpointConfig",
        "CreateServerlessEndpointConfig",
        "UpdateEndpoint",
        "DescribeEndpoint",
    ):
        (catch,) = states[name]["Catch"]
        assert catch["Next"] == "DescribeDeployError", name
    state = {key: value for key, value in SAMPLE_STATE.items() if key != "endpoint"}
    state["failure"] = {"Error": "SageMaker.ValidationException", "Cause": "Could not find model package"}

    # When the description renders, Then its cause names the endpoint and the call's own error
    described = render(states["DescribeDeployError"]["Parameters"], state)
    assert described == {
        "Error": "DeployFailed",
        "Cause": (
            "deploying to endpoint search-dev-assistant failed; it keeps serving the previous config. "
            "SageMaker.ValidationException: Could not find model package"
        ),
    }
    assert states["DescribeDeployError"]["Next"] == states["DescribeDeployFailure"]["Next"]
