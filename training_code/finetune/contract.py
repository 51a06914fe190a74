"""The names every part of finetune-stack shares, defined once (standard library only).

Imported by the training container (it lives in ``training_code/`` so the image stays buildable from that folder
alone), by the CDK stacks and the CLI (which put ``training_code`` on ``sys.path``), and by the Validate Lambda
(whose asset ships the ``finetune`` package). The Gate and proxy assets do not ship it: tests/contract checks
their copies against this module.
"""

from __future__ import annotations

#: Fine-tuning tasks and methods (the ``task`` / ``method`` hyperparameters, ``--task`` / ``--method``).
TASK_CAUSAL_LM = "causal-lm"
TASK_CLASSIFICATION = "classification"
TASKS: tuple[str, ...] = (TASK_CAUSAL_LM, TASK_CLASSIFICATION)
METHODS: tuple[str, ...] = ("lora", "qlora", "full")

#: The task a kind of endpoint serves (config/teams.yaml ``endpoints[].kind``).
TASK_OF_ENDPOINT_KIND: dict[str, str] = {"llm": TASK_CAUSAL_LM, "classifier": TASK_CLASSIFICATION}

#: The metric the Gate judges each task by, and whether higher is better.
MAIN_METRIC: dict[str, tuple[str, bool]] = {
    TASK_CAUSAL_LM: ("eval_loss", False),
    TASK_CLASSIFICATION: ("accuracy", True),
}

#: S3 prefixes: datasets in the data bucket; base models, job outputs, checkpoints, evaluations in artifacts.
DATASETS_PREFIX = "datasets/"
BASE_MODELS_PREFIX = "models/base/"
TRAINING_OUTPUT_PREFIX = "training-output/"
CHECKPOINTS_PREFIX = "checkpoints/"
EVALUATIONS_PREFIX = "evaluations/"
#: BatchInfer reads only under this prefix of the data bucket and writes only under the next one.
BATCH_INPUT_PREFIX = "batch/input/"
BATCH_OUTPUT_PREFIX = "batch/output/"


def dataset_prefix(name: str, version: str) -> str:
    """``datasets/<name>/<version>/``: where a prepared dataset version lives in the data bucket."""
    return f"{DATASETS_PREFIX}{name}/{version}/"


def base_model_prefix(name: str) -> str:
    """``models/base/<name>/``: where a staged base model lives in the artifacts bucket."""
    return f"{BASE_MODELS_PREFIX}{name}/"


# --- resource names: everything derives from `{team}-{stage}`, nothing from timestamps ------------------------

#: Team, stage and endpoint short names: lowercase letters, digits and single hyphens, starting with a letter.
NAME_PATTERN = r"[a-z][a-z0-9]*(?:-[a-z0-9]+)*"
#: Longest team and stage names: the longest derived name, the bucket `{team}-{stage}-artifacts-{account}-{region}`,
#: stays within S3's 63 characters.
TEAM_NAME_MAX = 16
STAGE_NAME_MAX = 8


def qualified_name(team: str, stage: str) -> str:
    """``{team}-{stage}``: the stage id and the root of every resource name."""
    return f"{team}-{stage}"


def stack_name(qualified: str, layer: str) -> str:
    """``{team}-{stage}-{layer}``: the deployed stack of a layer (``data``, ``training``, ``inference`` ...)."""
    return f"{qualified}-{layer}"


def fine_tune_state_machine(qualified: str) -> str:
    return f"{qualified}-FineTune"


def batch_infer_state_machine(qualified: str) -> str:
    return f"{qualified}-BatchInfer"


def endpoint_name(qualified: str, short_name: str) -> str:
    """The SageMaker endpoint behind an endpoint of config/teams.yaml (and the proxy's ``model``)."""
    return f"{qualified}-{short_name}"


def model_package_group(qualified: str) -> str:
    return f"{qualified}-models"


def team_topic(qualified: str) -> str:
    return f"{qualified}-events"


def inference_proxy_function(qualified: str) -> str:
    return f"{qualified}-inference-proxy"


def inference_api(qualified: str) -> str:
    return f"{qualified}-inference"


def host_name(qualified: str, short_name: str) -> str:
    return f"{qualified}-{short_name}"


def bucket_name(qualified: str, purpose: str, account: str, region: str) -> str:
    """``{team}-{stage}-{purpose}-{account}-{region}``: purpose is data, artifacts or logs."""
    return f"{qualified}-{purpose}-{account}-{region}"


# --- what the stacks publish for the CLI and other tools ---------------------------------------------------------

#: Root of every SSM parameter a stage publishes: ``/finetune-stack/{team}/{stage}/<parameter>``.
SSM_PREFIX = "/finetune-stack"


def ssm_prefix(team: str, stage: str) -> str:
    return f"{SSM_PREFIX}/{team}/{stage}"


#: The outputs the CLI reads by name: the data stack's buckets and the two state machines.
DATA_BUCKET_OUTPUT = "DataBucketName"
ARTIFACTS_BUCKET_OUTPUT = "ArtifactsBucketName"
FINE_TUNE_OUTPUT = "FineTuneStateMachineArn"
BATCH_INFER_OUTPUT = "BatchInferStateMachineArn"

#: Stack outputs that are also published as SSM parameters, by layer: output name -> parameter (under
#: ``ssm_prefix``). Tools without CloudFormation access read the parameters.
PUBLISHED_OUTPUTS: dict[str, dict[str, str]] = {
    "data": {
        DATA_BUCKET_OUTPUT: "data-bucket",
        ARTIFACTS_BUCKET_OUTPUT: "artifacts-bucket",
        "LogsBucketName": "logs-bucket",
        "TeamKeyArn": "kms-key-arn",
        "VpcId": "vpc-id",
        "TeamTopicArn": "topic-arn",
    },
    "training": {
        FINE_TUNE_OUTPUT: "fine-tune-state-machine-arn",
        "ModelPackageGroupName": "model-package-group",
        "TrainingImageUri": "training-image-uri",
        "SageMakerExecutionRoleArn": "sagemaker-execution-role-arn",
    },
}

#: The stack outputs the CLI reads, by layer: stack ``{team}-{stage}-{layer}`` (the Inference stack exists on
#: stages with endpoints only).
STACK_OUTPUTS_READ: dict[str, tuple[str, ...]] = {
    "data": (DATA_BUCKET_OUTPUT, ARTIFACTS_BUCKET_OUTPUT),
    "training": (FINE_TUNE_OUTPUT,),
    "inference": (BATCH_INFER_OUTPUT,),
}


#: LoRA adapters served by inference components, in the artifacts bucket: one prefix per endpoint and adapter,
#: one ``adapter.tar.gz`` (adapter_config.json and weights at its root, what LMI loads) per FineTune job.
ADAPTERS_PREFIX = "adapters/"
ADAPTER_ARCHIVE = "adapter.tar.gz"
#: Where the training container saves the adapter inside its model directory (LoRA and QLoRA runs).
ADAPTER_DIR = "adapter"


def adapter_prefix(endpoint: str, adapter: str) -> str:
    """``adapters/<endpoint>/<adapter>/``: every artifact of one adapter of one endpoint."""
    return f"{ADAPTERS_PREFIX}{endpoint}/{adapter}/"
