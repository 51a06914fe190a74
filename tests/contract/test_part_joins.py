"""Contract tests joining two real parts: the CLI's reads against the synthesized stacks, and Validate's real
output against the Train state that consumes it (checked by botocore's model of CreateTrainingJob)."""

from __future__ import annotations

import json
import os
from unittest import mock

import boto3
import botocore.session
import pytest
from moto import mock_aws

from finetune_cli.local.assembly import StageAssembly
from finetune_cli.resources import OUTPUTS_READ
from lambda_handlers.validate_request.logic import validate_request
from lambda_handlers.validate_request.settings import load_settings

from .states import render, resolve_tokens
from .states import validate_request as validate_call

pytestmark = pytest.mark.synth

ROOT = __import__("pathlib").Path(__file__).resolve().parents[2]
LAYERS = {"data": "Data", "training": "Training", "inference": "Inference"}


def test_every_stack_output_the_cli_reads_exists_in_every_stage_with_that_layer(assembly):
    stages = {stage for stage, _ in assembly.stacks}
    checked = 0
    for stage in sorted(stages):
        for layer, outputs in OUTPUTS_READ.items():
            if (stage, LAYERS[layer]) not in assembly.stacks:
                continue
            emitted = set(assembly.stack(stage, LAYERS[layer]).template.get("Outputs", {}))
            missing = [name for name in outputs if name not in emitted]
            assert not missing, f"{stage}-{layer} emits no {missing} (finetune_cli/resources.py reads them)"
            checked += 1
    # every stage has data and training; the two with endpoints have inference
    assert checked >= 2 * len(stages) + 2


def test_every_published_output_has_its_ssm_parameter_under_the_stage_prefix(assembly):
    from finetune.contract import PUBLISHED_OUTPUTS, ssm_prefix
    from stacks.settings import load_config
    from tests.conftest import EXAMPLE_CONFIG

    checked = 0
    for stage in load_config(EXAMPLE_CONFIG):
        for layer, published in PUBLISHED_OUTPUTS.items():
            key = (stage.qualified_name, LAYERS[layer])
            if key not in assembly.stacks:
                continue
            template = assembly.stack(*key).template
            parameters = {
                p["Properties"]["Name"]: p["Properties"]["Value"]
                for p in template["Resources"].values()
                if p["Type"] == "AWS::SSM::Parameter"
            }
            for output, parameter in published.items():
                name = f"{ssm_prefix(stage.team, stage.name)}/{parameter}"
                assert name in parameters, f"{stage.qualified_name}-{layer} publishes no SSM parameter {name}"
                assert parameters[name] == template["Outputs"][output]["Value"], name  # the same value both ways
                checked += 1
    assert checked >= 10 * len(load_config(EXAMPLE_CONFIG))


@pytest.fixture(scope="module")
def validate_output(assembly):
    """Validate's real logic, configured by the environment the synthesized template gives the function,
    over a dataset and a staged base model in (moto) S3."""
    stage = StageAssembly.load(assembly.outdir, "search-dev")
    (function,) = [f for key, f in stage.lambda_functions().items() if key == "search-dev-finetune-validate"]
    settings = load_settings(function.environment)
    environ = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": stage.region}
    with mock.patch.dict(os.environ, environ), mock_aws():
        s3 = boto3.client("s3", region_name=stage.region)
        for bucket in (settings.data_bucket, settings.artifacts_bucket):
            s3.create_bucket(Bucket=bucket, CreateBucketConfiguration={"LocationConstraint": stage.region})
        for channel in ("train", "validation"):
            s3.put_object(
                Bucket=settings.data_bucket,
                Key=f"datasets/dolly/v1/{channel}/{channel}.jsonl",
                Body=(ROOT / "samples" / "dolly" / f"{channel}.jsonl").read_bytes(),
            )
        s3.put_object(Bucket=settings.artifacts_bucket, Key="models/base/smollm2-135m-instruct/config.json", Body=b"{}")
        request = {
            "dataset": "s3://" + settings.data_bucket + "/datasets/dolly/v1/",
            "task": "causal-lm",
            "base_model": "smollm2-135m-instruct",
            "hyperparameters": {"max_steps": "8"},
            "instance_count": 2,
            "deploy_to": "assistant",
        }
        return validate_request(request, settings, s3)


def test_validate_output_renders_into_a_valid_create_training_job_request(assembly, validate_output):
    stack = assembly.stack("search-dev", "Training")
    (machine,) = stack.resources_of_type("AWS::StepFunctions::StateMachine").values()
    definition = json.loads(resolve_tokens(machine["Properties"]["DefinitionString"]))
    # UseValidatedRequest hands Validate's payload on as $.request
    unwrapped = render(
        definition["States"]["UseValidatedRequest"]["Parameters"],
        {"validated": {"request": json.loads(json.dumps(validate_output))}},
    )
    params = render(definition["States"]["Train"]["Parameters"], unwrapped)

    validate_call(botocore.session.get_session().get_service_model("sagemaker"), "CreateTrainingJob", params)
    assert params["ResourceConfig"]["VolumeSizeInGB"] == validate_output["volume_size_gb"]
    assert params["ResourceConfig"]["InstanceCount"] == 2
    assert params["HyperParameters"]["sagemaker_torch_distributed_enabled"] == "true"
    assert {c["ChannelName"] for c in params["InputDataConfig"]} == {"train", "validation", "model"}


def test_registered_packages_carry_the_serving_environment_of_the_stage_endpoints(assembly):
    # Deploy and BatchInfer create models from a package alone, so the package must carry what the serving
    # container needs; the endpoints' own models (CfnModel) say what that is for each image.
    stack = assembly.stack("search-dev", "Training")
    (machine,) = stack.resources_of_type("AWS::StepFunctions::StateMachine").values()
    states = json.loads(resolve_tokens(machine["Properties"]["DefinitionString"]))["States"]
    registered = {}
    for name in ("RegisterLlm", "RegisterClassifier"):
        (container,) = states[name]["Parameters"]["InferenceSpecification"]["Containers"]
        registered[container["Image"].split("/", 1)[1].split(":")[0]] = container["Environment"]
    assert registered["huggingface-pytorch-inference"]["HF_TASK"] == "text-classification"
    assert registered["djl-inference"]["HF_MODEL_ID"] == "/opt/ml/model"
    compared = 0
    for stage in sorted({stage for stage, layer in assembly.stacks if layer == "Inference"}):
        for model in assembly.stack(stage, "Inference").resources_of_type("AWS::SageMaker::Model").values():
            container = model["Properties"].get("PrimaryContainer", {})
            image = container.get("Image")
            if not isinstance(image, str):  # a model package endpoint, or an image built in the stage
                continue
            repository = image.split("/", 1)[1].split(":")[0]
            if repository in registered:
                assert container["Environment"] == registered[repository], f"{stage}: {repository}"
                compared += 1
    assert compared >= 2
