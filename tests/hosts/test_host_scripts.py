"""hosts/: shellcheck clean, and finetune-host runs exactly the commands it should (docker, aws and nvidia-smi
replaced on PATH by fakes that record their arguments)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import textwrap
from pathlib import Path

import pytest

HOSTS = Path(__file__).resolve().parents[2] / "hosts"
SCRIPTS = [HOSTS / "finetune-host", HOSTS / "user-data.sh"]
IMAGE = "111111111111.dkr.ecr.eu-west-1.amazonaws.com/cdk-hnb659fds-container-assets-111111111111-eu-west-1:abc"
DATA, ARTIFACTS = "search-dev-data-111111111111-eu-west-1", "search-dev-artifacts-111111111111-eu-west-1"


@pytest.mark.skipif(
    shutil.which("shellcheck") is None, reason="shellcheck is not on PATH (Debian/Ubuntu: apt-get install shellcheck)"
)
@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_scripts_are_shellcheck_clean(script):
    result = subprocess.run(["shellcheck", "--severity=style", str(script)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout


# Each fake appends one JSON line {"argv": [...]} to $RECORD. The docker fake plays the training container: it
# writes the model and evaluation.json into the directory mounted at /opt/ml/model (or a failure reason).
FAKE = textwrap.dedent("""\
    #!/usr/bin/env python3
    import json, os, sys
    from pathlib import Path
    with open(os.environ["RECORD"], "a") as record:
        record.write(json.dumps({"argv": [Path(sys.argv[0]).name] + sys.argv[1:]}) + "\\n")
    name, args = Path(sys.argv[0]).name, sys.argv[1:]
    if name == "nvidia-smi":
        print("GPU 0: NVIDIA A10G (UUID: GPU-0)\\nGPU 1: NVIDIA A10G (UUID: GPU-1)")
    elif name == "aws" and args[:2] == ["ecr", "get-login-password"]:
        print("token")
    elif name == "docker" and args[:1] == ["login"]:
        assert sys.stdin.read().strip() == "token"
    elif name == "docker" and args[:1] == ["run"]:
        mounts = dict(reversed(args[i + 1].split(":")[:2]) for i, a in enumerate(args) if a == "-v")
        if os.environ.get("FAKE_TRAINING_FAILS"):
            Path(mounts["/opt/ml/output"], "failure").write_text("Bad training data: line 3 is not JSON.")
            sys.exit(1)
        Path(mounts["/opt/ml/model"], "model.safetensors").write_text("weights")
        Path(mounts["/opt/ml/model"], "evaluation.json").write_text('{"eval_loss": 1.5}')
""")


@pytest.fixture
def host(tmp_path):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name in ("aws", "docker", "nvidia-smi"):
        (bin_dir / name).write_text(FAKE)
        (bin_dir / name).chmod(0o755)
    env_file = tmp_path / "host.env"
    env_file.write_text(
        f"FINETUNE_REGION=eu-west-1\nFINETUNE_DATA_BUCKET={DATA}\n"
        f"FINETUNE_ARTIFACTS_BUCKET={ARTIFACTS}\nFINETUNE_IMAGE_URI={IMAGE}\n"
        "FINETUNE_HOST_NAME=search-dev-research\n"
    )
    record = tmp_path / "record.jsonl"
    env = {
        **os.environ,
        "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
        "RECORD": str(record),
        "FINETUNE_HOST_ENV": str(env_file),
        "FINETUNE_WORKDIR": str(tmp_path / "runs"),
    }

    def run(*args: str, **extra_env: str) -> tuple[subprocess.CompletedProcess, list[list[str]]]:
        result = subprocess.run(
            [str(HOSTS / "finetune-host"), *args], env={**env, **extra_env}, capture_output=True, text=True, timeout=180
        )
        calls = [json.loads(line)["argv"] for line in record.read_text().splitlines()] if record.exists() else []
        return result, calls

    run.work = tmp_path / "runs"
    return run


def test_finetune_host_runs_the_training_image_on_all_gpus_and_uploads_like_a_training_job(host):
    result, calls = host(
        "--dataset",
        f"s3://{DATA}/datasets/support/v1/",
        "--validation",
        f"s3://{DATA}/datasets/support/v1-val/",
        "--base-model",
        f"s3://{ARTIFACTS}/models/base/llama/",
        "--method",
        "qlora",
        "--hp",
        "epochs=2",
        "--hp",
        "learning_rate=2e-4",
        "--hp",
        "lora_r=16",
        "--run-name",
        "try-1",
    )
    assert result.returncode == 0, result.stderr
    work = str(host.work / "try-1")
    out = f"s3://{ARTIFACTS}/hosts/search-dev-research/try-1/output"
    sync = ["--only-show-errors", "--region", "eu-west-1"]
    # `aws ecr get-login-password | docker login` is one pipeline: its two commands start in either order.
    calls[4:6] = sorted(calls[4:6])
    assert calls == [
        ["aws", "s3", "sync", f"s3://{DATA}/datasets/support/v1/", f"{work}/input/train", *sync],
        ["aws", "s3", "sync", f"s3://{DATA}/datasets/support/v1-val/", f"{work}/input/validation", *sync],
        ["aws", "s3", "sync", f"s3://{ARTIFACTS}/models/base/llama/", f"{work}/input/model", *sync],
        ["nvidia-smi", "--list-gpus"],
        ["aws", "ecr", "get-login-password", "--region", "eu-west-1"],
        ["docker", "login", "--username", "AWS", "--password-stdin", IMAGE.split("/")[0]],
        ["docker", "pull", IMAGE],
        [
            "docker",
            "run",
            "--rm",
            "--gpus",
            "all",
            "--ipc",
            "host",
            "--network",
            "none",
            "-v",
            f"{work}/input:/opt/ml/input/data:ro",
            "-v",
            f"{work}/model:/opt/ml/model",
            "-v",
            f"{work}/output:/opt/ml/output",
            "-v",
            f"{work}/checkpoints:/opt/ml/checkpoints",
            "-e",
            "SM_CHANNEL_TRAIN=/opt/ml/input/data/train",
            "-e",
            "SM_CHANNEL_VALIDATION=/opt/ml/input/data/validation",
            "-e",
            "SM_CHANNEL_MODEL=/opt/ml/input/data/model",
            "-e",
            "SM_MODEL_DIR=/opt/ml/model",
            "-e",
            "SM_OUTPUT_DIR=/opt/ml/output",
            "-e",
            "FINETUNE_CHECKPOINT_DIR=/opt/ml/checkpoints",
            "--entrypoint",
            "torchrun",
            IMAGE,
            "--standalone",
            "--nproc_per_node",
            "2",
            "/opt/ml/code/train.py",
            "--task",
            "causal-lm",
            "--method",
            "qlora",
            "--epochs",
            "2",
            "--learning_rate",
            "2e-4",
            "--lora_r",
            "16",
        ],
        ["aws", "s3", "cp", f"{work}/model.tar.gz", f"{out}/model.tar.gz", *sync],
        ["aws", "s3", "cp", f"{work}/model/evaluation.json", f"{out}/evaluation.json", *sync],
    ]
    assert json.loads(result.stdout) == {"eval_loss": 1.5}  # the same evaluation.json a SageMaker job writes
    import tarfile

    with tarfile.open(f"{work}/model.tar.gz") as archive:
        assert sorted(archive.getnames()) == [".", "./evaluation.json", "./model.safetensors"]


def test_a_hub_model_id_is_passed_as_base_model_and_gpus_can_be_given(host):
    result, calls = host(
        "--dataset",
        f"s3://{DATA}/datasets/sst2/v1/",
        "--task",
        "classification",
        "--base-model",
        "distilbert-base-uncased",
        "--run-name",
        "cls",
        FINETUNE_GPUS="1",
    )
    assert result.returncode == 0, result.stderr
    [run] = [c for c in calls if c[:2] == ["docker", "run"]]
    assert run[run.index("--entrypoint") :][-9:] == [
        "--nproc_per_node",
        "1",
        "/opt/ml/code/train.py",
        "--task",
        "classification",
        "--method",
        "lora",
        "--base_model",
        "distilbert-base-uncased",
    ]
    assert "SM_CHANNEL_MODEL=/opt/ml/input/data/model" not in run
    assert not any(c[0] == "nvidia-smi" for c in calls)


def test_a_failed_run_uploads_the_failure_reason_and_exits_non_zero(host):
    result, calls = host(
        "--dataset", f"s3://{DATA}/datasets/x/v1/", "--base-model", "gpt2", "--run-name", "bad", FAKE_TRAINING_FAILS="1"
    )
    assert result.returncode == 1
    assert "Bad training data: line 3 is not JSON." in result.stderr
    assert calls[-1] == [
        "aws",
        "s3",
        "cp",
        str(host.work / "bad" / "output" / "failure"),
        f"s3://{ARTIFACTS}/hosts/search-dev-research/bad/output/failure",
        "--only-show-errors",
        "--region",
        "eu-west-1",
    ]


@pytest.mark.parametrize(
    "args,message",
    [
        (["--base-model", "gpt2"], "--dataset is required"),
        (["--dataset", "s3://someone-elses-bucket/d/", "--base-model", "gpt2"], "not in the team's data bucket"),
        (["--dataset", f"s3://{DATA}/d/", "--base-model", "gpt2", "--hp", "Epochs=2"], "not key=value"),
        (["--dataset", f"s3://{DATA}/d/", "--base-model", "gpt2", "--hp", "task=x"], "use --task"),
        (["--dataset", f"s3://{DATA}/d/", "--base-model", "gpt2", "--method", "magic"], "--method must be"),
    ],
)
def test_bad_arguments_fail_before_anything_runs(host, args, message):
    result, calls = host(*args)
    assert result.returncode == 2 and message in result.stderr
    assert calls == []
