"""Container image URIs of AWS Deep Learning Containers, from the SageMaker Python SDK's offline image_uris."""

from __future__ import annotations

import functools

from stacks.settings import ImageVersions


@functools.cache
def _retrieve(framework: str, region: str, **kwargs: str) -> str:
    from sagemaker.core import image_uris  # offline JSON shipped with the SDK; no AWS call

    uri: str = image_uris.retrieve(framework, region=region, **kwargs)
    return uri


def pytorch_training(region: str, versions: ImageVersions) -> str:
    """The PyTorch training DLC (GPU) the training image is built FROM."""
    return _retrieve(
        "pytorch",
        region,
        version=versions.pytorch_training,
        py_version=versions.pytorch_training_py,
        instance_type="ml.g5.2xlarge",
        image_scope="training",
    )


def lmi_inference(region: str, versions: ImageVersions) -> str:
    """The Large Model Inference container (DJL Serving, vLLM backend) for LLM endpoints."""
    return _retrieve("djl-lmi", region, version=versions.lmi)


def huggingface_inference(region: str, versions: ImageVersions, *, gpu: bool) -> str:
    """The Hugging Face PyTorch inference container for classifier endpoints and batch transform."""
    return _retrieve(
        "huggingface",
        region,
        version=versions.huggingface_transformers,
        base_framework_version=f"pytorch{versions.huggingface_pytorch}",
        py_version=versions.huggingface_py,
        image_scope="inference",
        instance_type="ml.g5.xlarge" if gpu else "ml.m5.xlarge",
    )


def serving_environment(kind: str) -> dict[str, str]:
    """What each serving container needs to serve the artifact the training container writes (a Hugging Face model
    directory, unpacked to /opt/ml/model) for an endpoint kind: on the endpoints' models, on the model packages
    FineTune registers (so a model created from a package serves the same way) and in local mode's containers."""
    if kind == "llm":
        # LMI (DJL Serving) with the vLLM rolling-batch backend, which serves the chat-completions schema.
        return {
            "HF_MODEL_ID": "/opt/ml/model",
            "OPTION_ROLLING_BATCH": "vllm",
            "OPTION_TENSOR_PARALLEL_DEGREE": "max",
            "OPTION_MAX_ROLLING_BATCH_SIZE": "32",
            "OPTION_DTYPE": "fp16",
            "OPTION_TRUST_REMOTE_CODE": "false",
        }
    if kind == "classifier":
        # Hugging Face inference toolkit: a text-classification pipeline over the model directory.
        return {"HF_TASK": "text-classification"}
    raise ValueError(f"no serving container for endpoint kind {kind!r}")


def registry_account(image_uri: str) -> str:
    """The ECR account of a DLC URI (its registry needs a docker login before the image builds)."""
    return image_uri.split(".", 1)[0]
