"""A SageMaker training job run on this machine from a CreateTrainingJob request.

The request is checked against botocore's model of CreateTrainingJob; the channels are laid out as ``/opt/ml``
(under the job's own folder) from the request's S3 inputs; the training image's code runs under the real
sagemaker-training toolkit (its ``train`` command); model and output archives and checkpoints go where the request
says. The result is what DescribeTrainingJob would answer, checked against botocore's output model.
"""

from __future__ import annotations

import datetime
import functools
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tarfile
import time
from pathlib import Path
from typing import Any

import botocore.session
from botocore.model import ServiceModel
from botocore.validate import ParamValidator

#: The step a metric line of the training code reports (``metric <name>=<value> step=<n>``).
_STEP = re.compile(r"\bstep=(\d+)\b")
#: Variables of this process a SageMaker container would not have.
_FOREIGN = ("SM_", "SAGEMAKER_", "RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_", "AWS_")


class RequestInvalid(ValueError):
    """A CreateTrainingJob request botocore's model rejects (SageMaker answers ValidationException)."""


@functools.cache
def _sagemaker_model() -> ServiceModel:
    return botocore.session.get_session().get_service_model("sagemaker")


def check_shape(operation: str, params: dict[str, Any], *, output: bool = False) -> None:
    """Raise RequestInvalid when ``params`` do not fit botocore's model of an operation's input (or output)."""
    model = _sagemaker_model().operation_model(operation)
    report = ParamValidator().validate(params, model.output_shape if output else model.input_shape)
    if report.has_errors():
        raise RequestInvalid(f"{operation}{' output' if output else ''}: {report.generate_report()}")


def split_s3(uri: str) -> tuple[str, str]:
    bucket, _, key = uri[len("s3://") :].partition("/")
    return bucket, key


def download_prefix(s3: Any, uri: str, target: Path) -> int:
    """Copy every object under an S3 prefix into ``target`` (relative paths kept); returns the count."""
    bucket, prefix = split_s3(uri)
    count = 0
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        for item in page.get("Contents", []):
            relative = item["Key"][len(prefix) :].lstrip("/") or Path(item["Key"]).name
            path = target / relative
            path.parent.mkdir(parents=True, exist_ok=True)
            s3.download_file(bucket, item["Key"], str(path))
            count += 1
    return count


def upload_tree(s3: Any, source: Path, uri: str) -> None:
    bucket, prefix = split_s3(uri)
    for path in sorted(p for p in source.rglob("*") if p.is_file()):
        s3.upload_file(str(path), bucket, prefix + path.relative_to(source).as_posix())


def pack(source: Path, archive: Path) -> None:
    """``tar czf`` of a directory's contents (SageMaker's model.tar.gz / output.tar.gz layout).

    Fastest gzip level: model weights barely compress, and level 9 (tarfile's default) spends minutes on a few
    hundred MB of them on a laptop for a few percent."""
    with tarfile.open(archive, "w:gz", compresslevel=1) as tar:
        for path in sorted(source.iterdir()) if source.is_dir() else []:
            tar.add(path, arcname=path.name)


def final_metrics(log: str, definitions: list[dict[str, str]], when: datetime.datetime) -> list[dict[str, Any]]:
    """FinalMetricDataList: the last value each metric definition's regex captures in the job's log."""
    found = []
    for definition in definitions:
        values = re.findall(definition["Regex"], log)
        if values:
            last = values[-1][0] if isinstance(values[-1], tuple) else values[-1]
            found.append({"MetricName": definition["Name"], "Value": float(last), "Timestamp": when})
    return found


class LocalTrainingJob:
    """One training job: ``run()`` blocks until it ends and returns the DescribeTrainingJob answer."""

    def __init__(
        self,
        request: dict[str, Any],
        *,
        code_dir: Path,
        work_dir: Path,
        s3: Any,
        account: str,
        region: str,
        out: Any,
        train_command: Path | None = None,
        interrupt_after_step: int | None = None,
    ) -> None:
        check_shape("CreateTrainingJob", request)
        self.request, self.code_dir, self.s3, self.out = request, code_dir, s3, out
        self.name = request["TrainingJobName"]
        self.arn = f"arn:aws:sagemaker:{region}:{account}:training-job/{self.name.lower()}"
        self.base = work_dir / self.name
        self.train_command = train_command or Path(sys.executable).parent / "train"
        #: Reclaim the (spot) instance once the job logs this optimizer step: SIGTERM, as SageMaker sends it.
        self.interrupt_after_step = interrupt_after_step
        self.interrupted_at: int | None = None

    def _layout(self) -> None:
        """/opt/ml: config files, channels from S3, code from the image's build context, checkpoints to resume."""
        request, base = self.request, self.base
        shutil.rmtree(base, ignore_errors=True)
        config = base / "input" / "config"
        config.mkdir(parents=True)
        (config / "hyperparameters.json").write_text(json.dumps(request.get("HyperParameters", {})))
        # SageMaker names hosts algo-N; the toolkit waits until every host name resolves, which here only
        # localhost does.
        (config / "resourceconfig.json").write_text(json.dumps({"current_host": "localhost", "hosts": ["localhost"]}))
        channels = {}
        for channel in request.get("InputDataConfig", []):
            source = channel["DataSource"]["S3DataSource"]
            target = base / "input" / "data" / channel["ChannelName"]
            target.mkdir(parents=True)
            if not download_prefix(self.s3, source["S3Uri"], target):
                raise RequestInvalid(f"channel {channel['ChannelName']}: no objects under {source['S3Uri']}")
            channels[channel["ChannelName"]] = {
                "TrainingInputMode": request["AlgorithmSpecification"].get("TrainingInputMode", "File"),
                **({"ContentType": channel["ContentType"]} if "ContentType" in channel else {}),
            }
        (config / "inputdataconfig.json").write_text(json.dumps(channels))
        code = base / "code"
        # The image copies train.py and finetune/ to /opt/ml/code (training_code/Dockerfile); requirements.txt is
        # installed at build time, so it is not copied here (the toolkit would pip-install it).
        shutil.copytree(
            self.code_dir, code, ignore=shutil.ignore_patterns("__pycache__", "Dockerfile", "requirements.txt", ".*")
        )
        checkpoint = request.get("CheckpointConfig")
        if checkpoint:
            download_prefix(self.s3, checkpoint["S3Uri"], base / "checkpoints")

    def _environment(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(_FOREIGN)}
        env.update(self.request.get("Environment", {}))
        threads = str(min(os.cpu_count() or 1, 2))
        # No network here: the base model comes in the model channel, so the hub is never needed.
        env.update(
            HF_HUB_OFFLINE="1",
            TRANSFORMERS_OFFLINE="1",
            PYTHONUNBUFFERED="1",
            OMP_NUM_THREADS=env.get("OMP_NUM_THREADS", threads),
            MKL_NUM_THREADS=env.get("MKL_NUM_THREADS", threads),
            SAGEMAKER_BASE_DIR=str(self.base),
            SAGEMAKER_PROGRAM="train.py",
            TRAINING_JOB_NAME=self.name,
            TRAINING_JOB_ARN=self.arn,
        )
        return env

    def _watch(self, process: subprocess.Popen[str], log_path: Path) -> str:
        """Stream the job's log to its file; echo progress and metric lines to the terminal as they come; reclaim
        the instance when the interruption's step is logged."""
        if process.stdout is None:
            raise TypeError("the training process was started without stdout=PIPE")
        lines = []
        with log_path.open("w") as log:
            for line in process.stdout:
                log.write(line)
                log.flush()  # so `tail -f job.log` follows the job
                lines.append(line)
                text = line.rstrip()
                if text.startswith("metric ") or "%|" in text or text.startswith(("progress", "step ")):
                    print(f"    [{self.name}] {text}", file=self.out, flush=True)
                step = _STEP.search(text) if text.startswith("metric ") else None
                if (
                    step
                    and self.interrupt_after_step is not None
                    and self.interrupted_at is None
                    and int(step.group(1)) >= self.interrupt_after_step
                ):
                    self.interrupted_at = int(step.group(1))
                    print(
                        f"    [{self.name}] spot instance reclaimed after step {self.interrupted_at}: SIGTERM",
                        file=self.out,
                        flush=True,
                    )
                    # Every process of the container gets it (the toolkit does not forward signals to train.py).
                    os.killpg(process.pid, signal.SIGTERM)
        return "".join(lines)

    @staticmethod
    def _wait_for_group(process_group: int, seconds: float = 120.0) -> None:
        """Until every process of the job has exited (train.py outlives the toolkit while it checkpoints)."""
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            try:
                os.killpg(process_group, 0)
            except ProcessLookupError:
                return
            time.sleep(0.2)
        os.killpg(process_group, signal.SIGKILL)

    def run(self) -> dict[str, Any]:
        created = datetime.datetime.now(datetime.UTC)
        print(f"    [{self.name}] laying out /opt/ml under {self.base}", file=self.out, flush=True)
        self._layout()
        started = time.monotonic()
        # Its own process group: the job's processes can be signalled together, as a container's are.
        process = subprocess.Popen(
            [str(self.train_command)],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env=self._environment(),
            cwd=self.base,
            start_new_session=True,
        )
        log = self._watch(process, self.base / "job.log")
        returncode = process.wait()
        self._wait_for_group(process.pid)
        seconds = max(1, int(time.monotonic() - started))
        ended = datetime.datetime.now(datetime.UTC)
        output_path = self.request["OutputDataConfig"]["S3OutputPath"].rstrip("/") + "/"
        job_output = f"{output_path}{self.name}/output/"
        archives = self.base / "archives"
        archives.mkdir()
        failure_file = self.base / "output" / "failure"
        failed = returncode != 0
        if not failed:
            pack(self.base / "model", archives / "model.tar.gz")
            self.s3.upload_file(str(archives / "model.tar.gz"), *split_s3(job_output + "model.tar.gz"))
        pack(self.base / "output" / "data", archives / "output.tar.gz")
        self.s3.upload_file(str(archives / "output.tar.gz"), *split_s3(job_output + "output.tar.gz"))
        checkpoint = self.request.get("CheckpointConfig")
        if checkpoint and (self.base / "checkpoints").is_dir():
            upload_tree(self.s3, self.base / "checkpoints", checkpoint["S3Uri"].rstrip("/") + "/")
        described: dict[str, Any] = {
            "TrainingJobName": self.name,
            "TrainingJobArn": self.arn,
            "TrainingJobStatus": "Failed" if failed else "Completed",
            "SecondaryStatus": "Failed" if failed else "Completed",
            "ModelArtifacts": {"S3ModelArtifacts": job_output + "model.tar.gz"},
            "HyperParameters": self.request.get("HyperParameters", {}),
            "AlgorithmSpecification": self.request["AlgorithmSpecification"],
            "RoleArn": self.request["RoleArn"],
            "InputDataConfig": self.request.get("InputDataConfig", []),
            "OutputDataConfig": self.request["OutputDataConfig"],
            "ResourceConfig": self.request["ResourceConfig"],
            "StoppingCondition": self.request["StoppingCondition"],
            "CreationTime": created,
            "TrainingStartTime": created,
            "TrainingEndTime": ended,
            "LastModifiedTime": ended,
            "FinalMetricDataList": final_metrics(
                log, self.request["AlgorithmSpecification"].get("MetricDefinitions", []), ended
            ),
            "EnableNetworkIsolation": self.request.get("EnableNetworkIsolation", False),
            "EnableInterContainerTrafficEncryption": self.request.get("EnableInterContainerTrafficEncryption", False),
            "EnableManagedSpotTraining": self.request.get("EnableManagedSpotTraining", False),
            "TrainingTimeInSeconds": seconds,
            "BillableTimeInSeconds": seconds,
        }
        for key in ("CheckpointConfig", "VpcConfig", "Environment"):
            if key in self.request:
                described[key] = self.request[key]
        if failed and self.interrupted_at is not None:
            # SageMaker restarts an interrupted spot job itself while capacity comes back within
            # MaxWaitTimeInSeconds; locally it never comes back, so the job fails with the capacity error the
            # FineTune state machine retries (IsCapacityError -> WaitForCapacity -> Train, same checkpoints).
            described["FailureReason"] = (
                f"CapacityError: the spot instance was reclaimed after step {self.interrupted_at} and no capacity "
                f"came back (local interruption); checkpoints are in {checkpoint['S3Uri'] if checkpoint else 'none'}"
            )
        elif failed:
            reason = failure_file.read_text().strip() if failure_file.is_file() else ""
            described["FailureReason"] = (
                f"AlgorithmError: {reason}"
                if reason
                else f"AlgorithmError: the training process exited with status {returncode}; "
                f"see {self.base / 'job.log'}"
            )
            described["ModelArtifacts"] = {"S3ModelArtifacts": ""}
        check_shape("DescribeTrainingJob", described, output=True)
        return described


def to_state_json(value: Any) -> Any:
    """Timestamps as Step Functions passes them on (epoch milliseconds), the rest as is."""
    if isinstance(value, datetime.datetime):
        return int(value.timestamp() * 1000)
    if isinstance(value, dict):
        return {k: to_state_json(v) for k, v in value.items()}
    if isinstance(value, list):
        return [to_state_json(v) for v in value]
    return value
