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


def registry_account(image_uri: str) -> str:
    """The ECR account of a DLC URI (its registry needs a docker login before the image builds)."""
    return image_uri.split(".", 1)[0]
