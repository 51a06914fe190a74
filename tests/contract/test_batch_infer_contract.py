"""Contract tests: every SageMaker call the BatchInfer state machine makes, rendered with sample executions,
validates against botocore's own API model."""

from __future__ import annotations

import json

import botocore.session
import pytest

from .states import render, resolve_tokens, validate_request

pytestmark = pytest.mark.synth

STAGE = "search-dev"
JOB = "search-dev-00000000-0000-0000-0000-000000000001"
BASE = {
    "input": "s3://search-dev-data-111111111111-eu-west-1/batch/in/",
    "output": "s3://search-dev-data-111111111111-eu-west-1/batch/out/",
    "instance_type": "ml.g5.xlarge", "instance_count": 2,
    "image": "763104351884.dkr.ecr.eu-west-1.amazonaws.com/huggingface-pytorch-inference:2.6.0-gpu",
}
# Holds the fields of every path (a package and an artifact), so each state can be rendered from it.
SAMPLE = {**BASE, "model_package_arn": "arn:aws:sagemaker:eu-west-1:111111111111:model-package/search-dev-models/3",
          "model_data_url": "s3://search-dev-artifacts-111111111111-eu-west-1/training-output/x/model.tar.gz",
          "job": {"name": JOB, "model": JOB, "created": True}}

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
    calls = {name: state for name, state in states.items()
             if state["Type"] == "Task" and "sagemaker" in state["Resource"]}
    # two ways to create a model, two transform variants (with and without a volume key), two clean-ups
    assert sorted(_operation(s) for s in calls.values()) == [
        "CreateModel", "CreateModel", "CreateTransformJob", "CreateTransformJob", "DeleteModel", "DeleteModel"]
    for state in calls.values():
        validate_request(sagemaker_model, _operation(state), render(state["Parameters"], SAMPLE))


def test_the_deleted_model_is_the_one_the_transform_used(states):
    transform = render(states["TransformJob"]["Parameters"], SAMPLE)
    delete = render(states["DeleteCreatedModelAfterSuccess"]["Parameters"], SAMPLE)
    created = render(states["CreateModelFromPackage"]["Parameters"], SAMPLE)
    assert created["ModelName"] == transform["ModelName"] == delete["ModelName"] == JOB
