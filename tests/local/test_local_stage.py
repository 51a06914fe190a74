"""A local session deploys the stage as CloudFormation would, as far as moto can: quick, no training."""

from __future__ import annotations

import io

import pytest

from finetune_cli.local.stage import LocalStage

from .conftest import CONFIG

pytestmark = [pytest.mark.local, pytest.mark.synth]


def test_a_stage_with_a_lora_endpoint_opens_with_its_other_endpoints(local_state, tmp_path):
    # Given search-dev, whose `chat` endpoint is served by inference components (moto has none), in a state folder
    # of its own (the session's holds the endpoint configs that earlier local runs deployed)
    stage = LocalStage(config_path=CONFIG, team="search", stage="dev", state=tmp_path / "state", out=io.StringIO())
    # When a local session deploys the stage
    with stage.session(tmp_path / "run") as services:
        sagemaker = services.client("sagemaker")
        endpoints = sorted(e["EndpointName"] for e in sagemaker.list_endpoints()["Endpoints"])
        configs = [c["EndpointConfigName"] for c in sagemaker.list_endpoint_configs()["EndpointConfigs"]]
    # Then the whole-model endpoints exist as in AWS, and the LoRA endpoint is left out rather than failing the run
    assert endpoints == ["search-dev-assistant", "search-dev-sentiment"]
    assert len(configs) == 2


def test_local_serve_leaves_the_lora_models_out_of_the_proxys_models(assembly):
    import json

    from finetune_cli.local.serve import without_component_models

    (function,) = assembly.stack("search-dev", "Inference").resources_of_type("AWS::Lambda::Function").values()
    environment = function["Properties"]["Environment"]["Variables"]
    assert {"chat", "support-tone", "sql-helper"} <= set(json.loads(environment["ENDPOINTS"]))
    local = without_component_models(environment)
    assert sorted(json.loads(local["ENDPOINTS"])) == ["assistant", "sentiment"]
    assert {k: v for k, v in local.items() if k != "ENDPOINTS"} == {
        k: v for k, v in environment.items() if k != "ENDPOINTS"
    }
