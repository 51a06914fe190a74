"""`finetune local batch`: the stage's synthesized BatchInfer state machine over local JSONL files, the transform
job answered by the model's real serving container (the HF inference toolkit's default handler)."""

from __future__ import annotations

import json
import os
import tarfile
from pathlib import Path

import pytest

from finetune import local_models

from .conftest import run_local, stage_args

pytestmark = [pytest.mark.local, pytest.mark.synth]


@pytest.fixture(scope="module")
def artifact_url(local_state, tmp_path_factory) -> str:
    """The packaged MiniLM as a classifier artifact (an untrained head: the labels are arbitrary, the line count
    is not) in the local artifacts bucket."""
    from finetune_cli.local.assembly import StageAssembly

    stage = StageAssembly.load(Path(os.environ["FINETUNE_LOCAL_ASSEMBLY"]), "search-dev")
    bucket = stage.outputs("data")["ArtifactsBucketName"]
    model = local_models.minilm()
    config = json.loads((model / "config.json").read_text())
    config.update(
        architectures=["BertForSequenceClassification"],
        id2label={"0": "negative", "1": "positive"},
        label2id={"negative": 0, "positive": 1},
    )
    target = local_state / "search-dev" / "s3" / bucket / "models" / "batch-test" / "model.tar.gz"
    target.parent.mkdir(parents=True, exist_ok=True)
    config_file = tmp_path_factory.mktemp("artifact") / "config.json"
    config_file.write_text(json.dumps(config))
    with tarfile.open(target, "w:gz") as tar:
        for path in sorted(model.iterdir()):
            if path.name != "config.json" and not path.name.startswith("."):
                tar.add(path, arcname=path.name)
        tar.add(config_file, arcname="config.json")
    return f"s3://{bucket}/models/batch-test/model.tar.gz"


def test_batch_writes_one_output_line_per_input_line(local_state, artifact_url, tmp_path):
    texts = {"a": ["great", "awful", "fine"], "b": ["boring", "moving"]}
    inputs = tmp_path / "in"
    inputs.mkdir()
    for name, lines in texts.items():
        (inputs / f"{name}.jsonl").write_text("".join(json.dumps({"inputs": t}) + "\n" for t in lines))

    run = run_local(
        local_state,
        "batch",
        str(inputs),
        *stage_args(),
        "--model-data-url",
        artifact_url,
        "--output",
        str(tmp_path / "out"),
        "--json",
    )

    assert run.code == 0, run.output[-3000:]
    assert run.result is not None and run.result["status"] == "SUCCEEDED"
    assert {"TransformJob", "TransformJobOnInstanceStorage"} & set(run.result["states"])
    for name, lines in texts.items():
        answers = [json.loads(line) for line in (tmp_path / "out" / f"{name}.jsonl.out").read_text().splitlines()]
        # one answer per line, in order: each the toolkit's text-classification answer to that line alone
        assert len(answers) == len(lines)
        assert all(isinstance(a, list) and len(a) == 1 and a[0]["label"] in ("negative", "positive") for a in answers)


def test_a_line_the_container_cannot_decode_fails_the_job_naming_the_file(local_state, artifact_url, tmp_path):
    inputs = tmp_path / "in"
    inputs.mkdir()
    (inputs / "bad.jsonl").write_text('{"inputs": "fine"}\nnot json at all\n')

    run = run_local(
        local_state,
        "batch",
        str(inputs),
        *stage_args(),
        "--model-data-url",
        artifact_url,
        "--output",
        str(tmp_path / "out"),
        "--json",
    )

    assert run.code == 1 and run.result is not None and run.result["status"] == "FAILED"
    assert "bad.jsonl" in str(run.result["task_cause"]), run.result
