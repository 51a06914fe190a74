"""`finetune local serve`: the real proxy handler behind a local HTTP server, answering from the model a local run
deployed, served by the Hugging Face inference toolkit's default handler."""

from __future__ import annotations

import io
import json
import tarfile
import urllib.error
import urllib.request

import pytest

from finetune_cli.local.serve import LocalApi
from finetune_cli.local.stage import LocalStage

from .conftest import CONFIG

pytestmark = [pytest.mark.local, pytest.mark.synth]

POSITIVE = ["a masterpiece, moving and funny", "an utterly delightful, beautifully acted film"]
NEGATIVE = ["a dull, lifeless mess", "boring, tedious and far too long"]


def _post(url: str, body: dict) -> tuple[int, dict]:
    request = urllib.request.Request(
        url, data=json.dumps(body).encode(), method="POST", headers={"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(request, timeout=120) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


@pytest.fixture
def api(classification_local_run, local_state):
    # Per test: a session holds moto's mock open, and a mock opened inside another shares its state (buckets).
    assert classification_local_run.code == 0, classification_local_run.output[-3000:]
    out = io.StringIO()
    stage = LocalStage(config_path=CONFIG, team="search", stage="dev", state=local_state, out=out)
    with LocalApi(stage, port=0).running(out) as running:
        yield running, out


def test_predict_labels_clear_examples_with_the_deployed_classifier(api, classification_local_run, local_state):
    running, out = api
    assert "search-dev-sentiment: s3://" in out.getvalue(), out.getvalue()
    # The 40-step model of the shared run is weaker than tests/e2e's (it calls NEGATIVE[1] positive); these three
    # it gets right, and every answer must equal the model's own when loaded directly.
    texts = [POSITIVE[0], NEGATIVE[0], POSITIVE[1]]

    status, body = _post(f"{running.url}/models/sentiment/predict", {"inputs": texts})

    assert status == 200, body
    # the labels train.py stored in the deployed artifact's config (SST-2: 1 positive, 0 negative)
    journal = [
        json.loads(line) for line in (local_state / "search-dev" / "sagemaker-journal.jsonl").read_text().splitlines()
    ]
    package = [e for e in journal if e["action"] == "createModelPackage"][-1]["request"]
    bucket, _, key = package["InferenceSpecification"]["Containers"][0]["ModelDataUrl"][5:].partition("/")
    with tarfile.open(local_state / "search-dev" / "s3" / bucket / key) as tar:
        id2label = json.load(tar.extractfile("config.json"))["id2label"]
    assert [p["label"] for p in body["predictions"]] == [id2label["1"], id2label["0"], id2label["1"]]
    # the proxy and the toolkit add nothing: the same labels and scores as the unpacked model in a pipeline
    from transformers import pipeline

    (model_dir,) = [
        p.parent for p in (local_state / "search-dev" / "serving" / "search-dev-sentiment").rglob("config.json")
    ]
    direct = pipeline("text-classification", model=str(model_dir))(texts)
    assert [(p["label"], p["score"]) for p in body["predictions"]] == [
        (d["label"], pytest.approx(d["score"], abs=1e-6)) for d in direct
    ]


def test_an_endpoint_no_local_run_deployed_answers_unavailable(local_state, tmp_path):
    # A state folder of its own: the session's has a model on `assistant` once the causal-LM test has run.
    out = io.StringIO()
    stage = LocalStage(config_path=CONFIG, team="search", stage="dev", state=tmp_path, out=out)
    with LocalApi(stage, port=0).running(out) as running:
        status, body = _post(
            f"{running.url}/chat/completions", {"model": "assistant", "messages": [{"role": "user", "content": "hi"}]}
        )
    assert "search-dev-assistant: not served" in out.getvalue(), out.getvalue()
    assert status >= 400 and "assistant" in json.dumps(body), body
