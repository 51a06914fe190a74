"""Cut the LoRA adapter out of a training job's model archive into an archive of its own, as plain logic over an
injected S3 client.

A LoRA or QLoRA job's ``model.tar.gz`` holds the merged model and, under ``adapter/``, the adapter PEFT saved
(``adapter_config.json``, ``adapter_model.safetensors``). An adapter inference component's ``ArtifactUrl`` must be
a ``.tar.gz`` with those files at its root, so they are copied to ``adapters/<endpoint>/<adapter>/<job>/
adapter.tar.gz``. The model archive is read as a stream, once, and no further than the adapter's last file.
"""

from __future__ import annotations

import io
import tarfile
from dataclasses import dataclass
from typing import IO, Any, Protocol, cast

from finetune.contract import ADAPTER_ARCHIVE, ADAPTER_DIR  # the asset ships finetune/contract.py

#: Files PEFT writes and vLLM needs to load an adapter.
REQUIRED_FILES = ("adapter_config.json",)
WEIGHT_FILES = ("adapter_model.safetensors", "adapter_model.bin")
#: A LoRA adapter of a model LMI serves on one GPU is megabytes; far more means the wrong directory.
MAX_ADAPTER_BYTES = 2 * 1024 * 1024 * 1024


class AdapterInputError(ValueError):
    """The job's model archive holds no loadable adapter (a full fine-tune, or a damaged archive)."""


class S3Client(Protocol):
    def get_object(self, **kwargs: Any) -> dict[str, Any]: ...
    def put_object(self, **kwargs: Any) -> dict[str, Any]: ...


@dataclass(frozen=True)
class PackagedAdapter:
    """Where the adapter archive was written and what it holds."""

    artifact_url: str
    files: tuple[str, ...]
    bytes: int


def split_s3_uri(uri: str) -> tuple[str, str]:
    if not uri.startswith("s3://") or "/" not in uri[5:] or uri.endswith("/"):
        raise AdapterInputError(f"{uri!r} is not an s3://bucket/key URI of an object")
    bucket, key = uri[5:].split("/", 1)
    return bucket, key


def extract_adapter(model_archive: IO[bytes]) -> dict[str, bytes]:
    """The files under ``adapter/`` of a model archive (read as a stream), by their name inside ``adapter/``."""
    files: dict[str, bytes] = {}
    total = 0
    prefix = f"{ADAPTER_DIR}/"
    try:
        with tarfile.open(fileobj=model_archive, mode="r|gz") as archive:
            for member in archive:
                name = member.name.removeprefix("./")
                inside = name.startswith(prefix)
                if files and not inside:
                    break  # tar adds a directory's files together: the adapter is complete
                if not inside or not member.isfile():
                    continue
                relative = name.removeprefix(prefix)
                if "/" in relative or relative in ("", ".", ".."):
                    continue  # only the adapter's top-level files: vLLM reads no subdirectory
                total += member.size
                if total > MAX_ADAPTER_BYTES:
                    raise AdapterInputError(f"{prefix} is larger than {MAX_ADAPTER_BYTES} bytes; not a LoRA adapter")
                extracted = archive.extractfile(member)
                files[relative] = extracted.read() if extracted is not None else b""
    except (tarfile.TarError, EOFError, OSError) as error:
        raise AdapterInputError(f"the model archive cannot be read: {error}") from None
    missing = [name for name in REQUIRED_FILES if name not in files]
    if missing or not any(name in files for name in WEIGHT_FILES):
        raise AdapterInputError(
            f"the model archive has no loadable adapter under {prefix} (found {sorted(files) or 'nothing'}): only "
            "LoRA and QLoRA runs save one; a full fine-tune deploys to an endpoint of its own"
        )
    return files


def adapter_archive(files: dict[str, bytes]) -> bytes:
    """A gzipped tar with the adapter's files at its root (fixed times and owners: the same files, the same bytes)."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz", format=tarfile.PAX_FORMAT) as archive:
        for name in sorted(files):
            info = tarfile.TarInfo(name)
            info.size, info.mode, info.mtime = len(files[name]), 0o644, 0
            archive.addfile(info, io.BytesIO(files[name]))
    return buffer.getvalue()


def package_adapter(s3: S3Client, *, model_data_url: str, artifact_url: str) -> PackagedAdapter:
    """Read the job's model archive, write its adapter to ``artifact_url``; raise AdapterInputError if it has none."""
    if not artifact_url.endswith(f"/{ADAPTER_ARCHIVE}"):
        raise AdapterInputError(f"{artifact_url!r} does not end with /{ADAPTER_ARCHIVE}")
    source_bucket, source_key = split_s3_uri(model_data_url)
    target_bucket, target_key = split_s3_uri(artifact_url)
    body = s3.get_object(Bucket=source_bucket, Key=source_key)["Body"]
    try:
        files = extract_adapter(cast(IO[bytes], body))
    finally:
        close = getattr(body, "close", None)
        if callable(close):
            close()  # an early stop leaves the rest of the download unread
    data = adapter_archive(files)
    # The bucket's default encryption (the team key) applies; the object is new, its key named after the job.
    s3.put_object(Bucket=target_bucket, Key=target_key, Body=data, ContentType="application/gzip")
    return PackagedAdapter(artifact_url=artifact_url, files=tuple(sorted(files)), bytes=len(data))
