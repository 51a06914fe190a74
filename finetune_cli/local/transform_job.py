"""A SageMaker batch transform job run on this machine from a CreateTransformJob request.

The request is checked against botocore's model; the model's container runs here over its unpacked artifact (as
``finetune local serve`` runs it); every object under the input prefix is split and batched as the request says
(SplitType, BatchStrategy), each request goes to the container with the request's content types, and the answers are
assembled (AssembleWith) into ``<output prefix><relative key>.out``, as SageMaker writes them.
"""

from __future__ import annotations

import datetime
from pathlib import Path
from typing import Any

from .containers import ContainerError
from .training_job import RequestInvalid, check_shape, split_s3

#: SageMaker's default MaxPayloadInMB.
_DEFAULT_PAYLOAD_MB = 6


def _batches(records: list[bytes], strategy: str, limit: int) -> list[list[bytes]]:
    if strategy != "MultiRecord":
        return [[record] for record in records]
    batches: list[list[bytes]] = []
    current: list[bytes] = []
    size = 0
    for record in records:
        if current and size + len(record) + 1 > limit:
            batches.append(current)
            current, size = [], 0
        current.append(record)
        size += len(record) + 1
    return batches + ([current] if current else [])


class LocalTransformJob:
    """One transform job: ``run()`` returns the DescribeTransformJob answer (Failed with a FailureReason when the
    container rejects a request)."""

    def __init__(
        self, request: dict[str, Any], *, sagemaker: Any, s3: Any, work_dir: Path, account: str, region: str, out: Any
    ) -> None:
        check_shape("CreateTransformJob", request)
        self.request, self.sagemaker, self.s3, self.out = request, sagemaker, s3, out
        self.name = request["TransformJobName"]
        self.arn = f"arn:aws:sagemaker:{region}:{account}:transform-job/{self.name.lower()}"
        self.work = work_dir / self.name

    def run(self) -> dict[str, Any]:
        from .serve import model_container  # the container as the endpoint would run it

        request, started = self.request, datetime.datetime.now(datetime.UTC)
        transform_input, output = request["TransformInput"], request["TransformOutput"]
        described: dict[str, Any] = {
            "TransformJobName": self.name,
            "TransformJobArn": self.arn,
            "ModelName": request["ModelName"],
            "TransformInput": transform_input,
            "TransformOutput": output,
            "TransformResources": request["TransformResources"],
            "CreationTime": started,
            "TransformStartTime": started,
            "BatchStrategy": request.get("BatchStrategy", "SingleRecord"),
        }
        try:
            _, container = model_container(self.sagemaker, self.s3, request["ModelName"], self.work)
        except Exception as error:  # the model or its artifact is missing
            return self._end(described, f"ClientError: cannot load model {request['ModelName']}: {error}")
        bucket, prefix = split_s3(transform_input["DataSource"]["S3DataSource"]["S3Uri"])
        out_bucket, out_prefix = split_s3(output["S3OutputPath"].rstrip("/") + "/")
        limit = int(request.get("MaxPayloadInMB") or _DEFAULT_PAYLOAD_MB) * 1024 * 1024
        joiner = b"\n" if output.get("AssembleWith") == "Line" else b""
        for page in self.s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
            for item in page.get("Contents", []):
                data = self.s3.get_object(Bucket=bucket, Key=item["Key"])["Body"].read()
                records = (
                    [line for line in data.splitlines() if line.strip()]
                    if transform_input.get("SplitType") == "Line"
                    else [data]
                )
                answers = []
                for batch in _batches(records, described["BatchStrategy"], limit):
                    try:
                        answer, _ = container.invoke(
                            b"\n".join(batch),
                            transform_input.get("ContentType", ""),
                            output.get("Accept", "application/json"),
                        )
                    except ContainerError as error:
                        return self._end(
                            described,
                            f"ClientError: {item['Key']}: the model container answered {error.status}: {error}",
                        )
                    answers.append(answer.rstrip(b"\n"))
                relative = item["Key"][len(prefix) :].lstrip("/")
                self.s3.put_object(
                    Bucket=out_bucket,
                    Key=f"{out_prefix}{relative}.out",
                    Body=joiner.join(answers) + (joiner if answers else b""),
                )
                print(f"    [{self.name}] {item['Key']}: {len(records)} records", file=self.out, flush=True)
        return self._end(described, None)

    @staticmethod
    def _end(described: dict[str, Any], failure: str | None) -> dict[str, Any]:
        ended = datetime.datetime.now(datetime.UTC)
        described.update(TransformJobStatus="Failed" if failure else "Completed", TransformEndTime=ended)
        if failure:
            described["FailureReason"] = failure[:1024]
        check_shape("DescribeTransformJob", described, output=True)
        return described


__all__ = ["LocalTransformJob", "RequestInvalid"]
