"""Contract tests: every SageMaker call the BatchInfer state machine makes, rendered with sample executions,
validates against botocore's own API model."""

from __future__ import annotations

import json

import botocore.session
import pytest

from .states import choose, render, resolve_tokens, validate_request

pytestmark = pytest.mark.synth

STAGE = "search-dev"
JOB = "search-dev-00000000-0000-0000-0000-000000000001"
BASE = {
    "input": "s3://search-dev-data-111111111111-eu-west-1/batch/input/reviews/",
    "output": "s3://search-dev-data-111111111111-eu-west-1/batch/output/reviews/",
    "instance_type": "ml.g5.2xlarge",
    "instance_count": 2,
    "image": "763104351884.dkr.ecr.eu-west-1.amazonaws.com/huggingface-pytorch-inference:2.6.0-gpu",
}
# Holds the fields of every path (a package and an artifact), so each state can be rendered from it.
SAMPLE = {
    **BASE,
    "model_name": "search-dev-assistant-model",
    "model_package_arn": "arn:aws:sagemaker:eu-west-1:111111111111:model-package/search-dev-models/3",
    "model_data_url": "s3://search-dev-artifacts-111111111111-eu-west-1/training-output/x/model.tar.gz",
    "job": {"name": JOB, "model": JOB, "created": True},
}


@pytest.fixture(scope="module")
def states(assembly) -> dict:
    stack = assembly.stack(STAGE, "Inference")
    (machine,) = stack.resources_of_type("AWS::StepFunctions::StateMachine").values()
    return json.loads(resolve_tokens(machine["Properties"]["DefinitionString"]))["States"]


@pytest.fixture(scope="module")
def sagemaker_model():
    return botocore.session.get_session().get_service_model("sagemaker")


def _operation(state: dict) -> str:
    action = state["Resource"].rsplit(":", 1)[-1].removesuffix(".sync")
    return action[0].upper() + action[1:]


def test_every_sagemaker_call_validates_against_botocore(states, sagemaker_model):
    calls = {
        name: state for name, state in states.items() if state["Type"] == "Task" and "sagemaker" in state["Resource"]
    }
    # two ways to create a model, two transform variants (with and without a volume key), two clean-ups, and the
    # tag read that admits a named model
    assert sorted(_operation(s) for s in calls.values()) == [
        "CreateModel",
        "CreateModel",
        "CreateTransformJob",
        "CreateTransformJob",
        "DeleteModel",
        "DeleteModel",
        "ListTags",
    ]
    for state in calls.values():
        validate_request(sagemaker_model, _operation(state), render(state["Parameters"], SAMPLE))


def test_the_deleted_model_is_the_one_the_transform_used(states):
    transform = render(states["TransformJob"]["Parameters"], SAMPLE)
    delete = render(states["DeleteCreatedModelAfterSuccess"]["Parameters"], SAMPLE)
    created = render(states["CreateModelFromPackage"]["Parameters"], SAMPLE)
    assert created["ModelName"] == transform["ModelName"] == delete["ModelName"] == JOB


# --- the stage's limits (search-dev: ml.g5.2xlarge or ml.g5.12xlarge, at most 2 instances) ----------------------

DATA = "s3://search-dev-data-111111111111-eu-west-1"
ARTIFACTS = "s3://search-dev-artifacts-111111111111-eu-west-1"
REQUEST = {
    "input": f"{DATA}/batch/input/reviews/",
    "output": f"{DATA}/batch/output/reviews/",
    "instance_type": "ml.g5.2xlarge",
    "instance_count": 1,
    "model_data_url": f"{ARTIFACTS}/training-output/job/output/model.tar.gz",
}


@pytest.mark.parametrize(
    "change,expected",
    [
        ({}, "SelectImage"),
        ({"instance_type": "ml.g5.12xlarge", "instance_count": 2}, "SelectImage"),
        ({"instance_type": "ml.p4d.24xlarge"}, "InvalidInput"),  # another stage's type (prod)
        ({"instance_type": "ml.m5.xlarge"}, "InvalidInput"),  # matched `ml.*` before
        ({"instance_count": 3}, "InvalidInput"),  # over the stage's maximum
        ({"instance_count": 0}, "InvalidInput"),
        ({"instance_count": "1"}, "InvalidInput"),
        ({"input": f"{DATA}/datasets/private/v1/"}, "InvalidInput"),  # outside batch/input/
        ({"output": f"{ARTIFACTS}/batch/output/x/"}, "InvalidInput"),  # only the data bucket's batch/output/
        ({"output": f"{DATA}/datasets/overwrite/"}, "InvalidInput"),
        ({"model_data_url": f"{ARTIFACTS}/checkpoints/job/model.tar.gz"}, "InvalidInput"),
        ({"model_data_url": None, "model_name": "search-dev-assistant-m"}, "ReadModelTags"),
        ({"model_data_url": None, "model_name": "support-dev-classifier-m"}, "InvalidInput"),  # another stage's model
        ({"model_data_url": None, "model_name": "anything"}, "InvalidInput"),
    ],
    ids=lambda value: json.dumps(value) if isinstance(value, dict) else value,
)
def test_validate_holds_requests_to_the_stage(states, change, expected):
    request = {k: v for k, v in {**REQUEST, **change}.items() if v is not None}
    assert choose(states["Validate"], request) == expected


@pytest.mark.parametrize(
    "tags,expected",
    [
        ({"team": ["search"], "stage": ["dev"]}, "UseExistingModel"),
        ({"team": ["search"], "stage": ["dev-eu"]}, "ModelOfAnotherStage"),  # a name-alike stage's model
        ({"team": ["search"], "stage": []}, "ModelOfAnotherStage"),  # untagged
        ({"team": [], "stage": ["dev"]}, "ModelOfAnotherStage"),
    ],
)
def test_a_named_model_needs_the_stage_tags(states, tags, expected):
    # What ReadModelTags' ResultSelector makes of ListTags: the values of the `team` and `stage` tags.
    checked = render(states["CheckModelTags"]["Parameters"], {**REQUEST, "model_tags": tags})
    assert choose(states["ModelOfThisStage"], {"model_tags": checked}) == expected


def test_read_model_tags_asks_for_the_named_model(states, sagemaker_model):
    params = render(states["ReadModelTags"]["Parameters"], SAMPLE)
    assert params == {"ResourceArn": "arn:aws:sagemaker:eu-west-1:111111111111:model/search-dev-assistant-model"}
    assert states["ReadModelTags"]["ResultSelector"] == {
        "team.$": "$.Tags[?(@.Key == 'team')].Value",
        "stage.$": "$.Tags[?(@.Key == 'stage')].Value",
    }


def test_transform_jobs_and_created_models_carry_the_stage_tags(states):
    for name in ("TransformJob", "TransformJobOnInstanceStorage"):
        tags = render(states[name]["Parameters"], SAMPLE)["Tags"]
        assert {"Key": "team", "Value": "search"} in tags and {"Key": "stage", "Value": "dev"} in tags
    for name in ("CreateModelFromPackage", "CreateModelFromArtifact"):
        tags = render(states[name]["Parameters"], SAMPLE)["Tags"]
        assert {"Key": "team", "Value": "search"} in tags and {"Key": "stage", "Value": "dev"} in tags


def test_iam_holds_transform_jobs_to_the_stage(assembly):
    """The limits hold in IAM as well: a definition edited by hand still cannot start a job on another type or
    another stage's model, nor watch or stop another stage's job."""
    stack = assembly.stack(STAGE, "Inference")
    statements = {
        st.get("Sid"): st
        for policy in stack.resources_of_type("AWS::IAM::ManagedPolicy").values()
        for st in policy["Properties"]["PolicyDocument"]["Statement"]
    }
    start = statements["StartTransformJobsWithinLimits"]
    assert start["Action"] == "sagemaker:CreateTransformJob"
    assert start["Condition"] == {
        "ForAllValues:StringEquals": {"sagemaker:InstanceTypes": ["ml.g5.2xlarge", "ml.g5.12xlarge"]},
        "ArnLike": {"sagemaker:ModelArn": "arn:aws:sagemaker:eu-west-1:111111111111:model/search-dev-*"},
    }
    assert statements["WatchOwnTransformJobs"]["Condition"] == {
        "StringEquals": {"aws:ResourceTag/team": "search", "aws:ResourceTag/stage": "dev"}
    }
    assert not any(
        "CreateTransformJob" in json.dumps(st["Action"])
        for sid, st in statements.items()
        if sid != "StartTransformJobsWithinLimits"
    )


def test_the_model_role_reads_only_batch_input_and_models_and_writes_only_batch_output(assembly):
    stack = assembly.stack(STAGE, "Inference")
    (policy,) = [
        p
        for logical_id, p in stack.resources_of_type("AWS::IAM::ManagedPolicy").items()
        if logical_id.startswith("BatchInferModelPolicy")
    ]
    statements = {st["Sid"]: st for st in policy["Properties"]["PolicyDocument"]["Statement"]}
    data = "arn:aws:s3:::search-dev-data-111111111111-eu-west-1"
    artifacts = "arn:aws:s3:::search-dev-artifacts-111111111111-eu-west-1"
    assert sorted(statements["ReadInputAndModels"]["Resource"]) == [
        f"{artifacts}/models/*",
        f"{artifacts}/training-output/*",
        f"{data}/batch/input/*",
    ]
    assert statements["WriteResults"]["Resource"] == f"{data}/batch/output/*"
    assert statements["ListInputPrefixes"]["Condition"] == {"StringLike": {"s3:prefix": ["batch/input/*"]}}


def test_the_state_machine_is_encrypted_with_the_team_key(assembly):
    stack = assembly.stack(STAGE, "Inference")
    (machine,) = stack.resources_of_type("AWS::StepFunctions::StateMachine").values()
    encryption = machine["Properties"]["EncryptionConfiguration"]
    assert encryption["Type"] == "CUSTOMER_MANAGED_KMS_KEY"
    assert "TeamKey" in json.dumps(encryption["KmsKeyId"])


def test_the_transform_sends_and_asks_for_what_the_hugging_face_container_decodes_and_encodes(states):
    # BatchInfer's models run the Hugging Face inference image (an artifact) or a registered package's image; the
    # toolkit answers 415 to any content type missing from its maps, which would fail every record of a job.
    decoder_encoder = pytest.importorskip("sagemaker_huggingface_inference_toolkit.decoder_encoder")
    for name in ("TransformJob", "TransformJobOnInstanceStorage"):
        params = render(states[name]["Parameters"], SAMPLE)
        assert params["TransformInput"]["ContentType"] in decoder_encoder._decoder_map
        assert params["TransformOutput"]["Accept"] in decoder_encoder._encoder_map
        # each request is one line: the toolkit decodes one JSON document per body, not a batch of lines
        assert params["BatchStrategy"] == "SingleRecord" and params["TransformInput"]["SplitType"] == "Line"
