"""The PackageAdapter step against moto S3: the adapter of a LoRA job's model archive, as its own archive."""

from __future__ import annotations

import io
import json
import tarfile

import boto3
import pytest
from moto import mock_aws

from lambda_handlers.package_adapter import handler
from lambda_handlers.package_adapter.logic import AdapterInputError, package_adapter

BUCKET = "search-dev-artifacts-111111111111-eu-west-1"
MODEL_KEY = "training-output/search-dev-dolly-v1-1a2b3c4d/output/model.tar.gz"
ARTIFACT = f"s3://{BUCKET}/adapters/chat/sql-helper/search-dev-dolly-v1-1a2b3c4d/adapter.tar.gz"
ADAPTER = {
    "adapter_config.json": json.dumps({"peft_type": "LORA", "r": 8}).encode(),
    "adapter_model.safetensors": b"\x00" * 4096,
    "README.md": b"# adapter",
}


def _model_archive(members: list[tuple[str, bytes | None]], *, truncate_after: int | None = None) -> bytes:
    """A model.tar.gz as SageMaker writes /opt/ml/model (`./`-prefixed names, directories as members)."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        for name, data in members:
            info = tarfile.TarInfo(name)
            if data is None:
                info.type = tarfile.DIRTYPE
                archive.addfile(info)
            else:
                info.size = len(data)
                archive.addfile(info, io.BytesIO(data))
    data = buffer.getvalue()
    return data[:truncate_after] if truncate_after else data


def _lora_job(weights: int = 64 * 1024) -> list[tuple[str, bytes | None]]:
    return [
        ("./config.json", b"{}"),
        ("./adapter", None),
        *[(f"./adapter/{name}", data) for name, data in ADAPTER.items()],
        ("./model.safetensors", bytes(range(256)) * (weights // 256)),
        ("./tokenizer.json", b"{}"),
    ]


@pytest.fixture
def s3():
    with mock_aws():
        client = boto3.client("s3", region_name="eu-west-1")
        client.create_bucket(Bucket=BUCKET, CreateBucketConfiguration={"LocationConstraint": "eu-west-1"})
        yield client


def _members(s3, url: str) -> dict[str, bytes]:
    key = url.removeprefix(f"s3://{BUCKET}/")
    body = s3.get_object(Bucket=BUCKET, Key=key)["Body"].read()
    with tarfile.open(fileobj=io.BytesIO(body), mode="r:gz") as archive:
        return {m.name: archive.extractfile(m).read() for m in archive.getmembers()}


def test_the_adapter_files_land_at_the_root_of_their_own_archive(s3):
    # Given a LoRA job's model archive: merged weights, tokenizer, and adapter/ beside them
    s3.put_object(Bucket=BUCKET, Key=MODEL_KEY, Body=_model_archive(_lora_job()))
    # When the step packages it
    packaged = package_adapter(s3, model_data_url=f"s3://{BUCKET}/{MODEL_KEY}", artifact_url=ARTIFACT)
    # Then the artifact holds exactly the adapter's files, at its root, as LMI loads an adapter component
    assert _members(s3, ARTIFACT) == ADAPTER
    assert packaged.files == tuple(sorted(ADAPTER)) and packaged.artifact_url == ARTIFACT


def test_the_same_adapter_gives_the_same_bytes(s3):
    s3.put_object(Bucket=BUCKET, Key=MODEL_KEY, Body=_model_archive(_lora_job()))
    first = package_adapter(s3, model_data_url=f"s3://{BUCKET}/{MODEL_KEY}", artifact_url=ARTIFACT)
    body = s3.get_object(Bucket=BUCKET, Key=ARTIFACT.removeprefix(f"s3://{BUCKET}/"))["Body"].read()
    second = package_adapter(s3, model_data_url=f"s3://{BUCKET}/{MODEL_KEY}", artifact_url=ARTIFACT)
    assert first.bytes == second.bytes == len(body)
    assert s3.get_object(Bucket=BUCKET, Key=ARTIFACT.removeprefix(f"s3://{BUCKET}/"))["Body"].read() == body


def test_reading_stops_after_the_adapter(s3):
    # Given an archive whose bytes after the adapter are cut off (the merged weights are never needed)
    whole = _model_archive(_lora_job(weights=4 * 1024 * 1024))
    s3.put_object(Bucket=BUCKET, Key=MODEL_KEY, Body=whole[: len(whole) // 2])
    # Then packaging still succeeds, because the stream is not read past the adapter's last file
    assert (
        _members(
            s3, package_adapter(s3, model_data_url=f"s3://{BUCKET}/{MODEL_KEY}", artifact_url=ARTIFACT).artifact_url
        )
        == ADAPTER
    )


def test_a_full_fine_tune_has_no_adapter_and_the_step_says_so(s3):
    s3.put_object(
        Bucket=BUCKET,
        Key=MODEL_KEY,
        Body=_model_archive([("./config.json", b"{}"), ("./model.safetensors", b"\x01" * 1024)]),
    )
    with pytest.raises(AdapterInputError, match="no loadable adapter under adapter/"):
        package_adapter(s3, model_data_url=f"s3://{BUCKET}/{MODEL_KEY}", artifact_url=ARTIFACT)
    assert s3.list_objects_v2(Bucket=BUCKET, Prefix="adapters/")["KeyCount"] == 0


def test_an_adapter_without_weights_is_refused(s3):
    s3.put_object(
        Bucket=BUCKET,
        Key=MODEL_KEY,
        Body=_model_archive([("./adapter/adapter_config.json", b"{}"), ("./model.safetensors", b"\x01")]),
    )
    with pytest.raises(AdapterInputError, match=r"found \['adapter_config.json'\]"):
        package_adapter(s3, model_data_url=f"s3://{BUCKET}/{MODEL_KEY}", artifact_url=ARTIFACT)


def test_the_handler_raises_a_named_error_for_the_state_machine(s3, monkeypatch):
    monkeypatch.setattr(handler, "_S3", s3)
    s3.put_object(Bucket=BUCKET, Key=MODEL_KEY, Body=b"not a tar")
    with pytest.raises(handler.AdapterMissing, match="cannot be read"):
        handler.lambda_handler({"model_data_url": f"s3://{BUCKET}/{MODEL_KEY}", "artifact_url": ARTIFACT})
    s3.put_object(Bucket=BUCKET, Key=MODEL_KEY, Body=_model_archive(_lora_job()))
    result = handler.lambda_handler({"model_data_url": f"s3://{BUCKET}/{MODEL_KEY}", "artifact_url": ARTIFACT})
    assert result == {"artifact_url": ARTIFACT, "files": sorted(ADAPTER), "bytes": result["bytes"]}
    assert result["bytes"] > 0
