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
