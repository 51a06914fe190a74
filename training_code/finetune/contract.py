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
MAIN_METRIC: dict[str, tuple[str, bool]] = {TASK_CAUSAL_LM: ("eval_loss", False),
                                            TASK_CLASSIFICATION: ("accuracy", True)}

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


#: The stack outputs the CLI reads, by layer: stack ``{team}-{stage}-{layer}``.
STACK_OUTPUTS_READ: dict[str, tuple[str, ...]] = {
    "data": ("DataBucketName", "ArtifactsBucketName"),
    "training": ("FineTuneStateMachineArn",),
    "inference": ("BatchInferStateMachineArn",),
}
