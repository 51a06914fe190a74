"""The one contract module (training_code/finetune/contract.py): standard library only, shipped with every asset
that imports it, and the copies that cannot import it agree with it."""

from __future__ import annotations

import ast
import sys
import typing
from pathlib import Path

import pytest

from finetune import contract

ROOT = Path(__file__).resolve().parents[2]


def test_contract_module_imports_only_the_standard_library():
    tree = ast.parse((ROOT / "training_code" / "finetune" / "contract.py").read_text())
    imported = {
        alias.name.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names
    }
    imported |= {node.module.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
    assert imported <= set(sys.stdlib_module_names) | {"__future__"}, imported


def test_every_part_uses_the_contract_names():
    from finetune import config
    from finetune_cli.resources import OUTPUTS_READ
    from lambda_handlers.gate.logic import MAIN_METRICS
    from lambda_handlers.validate_request import request, settings
    from stacks.components.fine_tune_pipeline import TASK_OF_KIND

    assert config.TASKS is contract.TASKS and config.METHODS is contract.METHODS
    assert typing.get_args(request.Task) == contract.TASKS  # a Literal: pydantic checks the request against it
    assert settings.BASE_MODELS_PREFIX == contract.BASE_MODELS_PREFIX
    assert MAIN_METRICS is contract.MAIN_METRIC and TASK_OF_KIND is contract.TASK_OF_ENDPOINT_KIND
    assert OUTPUTS_READ is contract.STACK_OUTPUTS_READ


@pytest.mark.synth
def test_lambda_assets_that_import_the_contract_ship_it(assembly):
    stack = assembly.stack("search-dev", "Training")
    for function in stack.resources_of_type("AWS::Lambda::Function").values():
        handler = function["Properties"].get("Handler", "")
        if not handler.startswith(("gate.", "lambda_handlers.validate_request")):
            continue
        asset = assembly.outdir / f"asset.{function['Properties']['Code']['S3Key'].removesuffix('.zip')}"
        shipped = asset / "finetune" / "contract.py"
        assert shipped.read_text() == (ROOT / "training_code" / "finetune" / "contract.py").read_text(), handler


def test_the_naming_rules_have_one_definition():
    import re

    from lambda_handlers.inference_proxy import settings as proxy_settings
    from lambda_handlers.validate_request import settings as validate_settings
    from stacks import naming
    from stacks import settings as stack_settings

    assert naming.endpoint is contract.endpoint_name and naming.bucket is contract.bucket_name
    assert naming.fine_tune_state_machine is contract.fine_tune_state_machine
    assert stack_settings.TEAM_NAME_MAX == contract.TEAM_NAME_MAX
    assert stack_settings._NAME_RE.pattern == f"^{contract.NAME_PATTERN}$"
    assert validate_settings._NAME == contract.NAME_PATTERN
    # the proxy's asset does not ship the contract: its copies must agree
    assert proxy_settings._NAME == contract.NAME_PATTERN
    assert proxy_settings.endpoint_name("search", "dev", "chat") == contract.endpoint_name(
        contract.qualified_name("search", "dev"), "chat"
    )
    for name in ("search", "a1-b2", "x"):
        assert re.fullmatch(contract.NAME_PATTERN, name)
    for name in ("1search", "a--b", "a-", "Search"):
        assert not re.fullmatch(contract.NAME_PATTERN, name)


def test_the_cli_reads_stack_names_and_outputs_from_the_contract():
    from finetune_cli import resources

    assert resources.OUTPUTS_READ["data"] == (contract.DATA_BUCKET_OUTPUT, contract.ARTIFACTS_BUCKET_OUTPUT)
    for layer, outputs in contract.STACK_OUTPUTS_READ.items():
        published = contract.PUBLISHED_OUTPUTS.get(layer)
        if published is not None:  # what the CLI reads of a layer that publishes parameters is published too
            assert set(outputs) <= set(published), layer
