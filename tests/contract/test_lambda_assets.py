"""Every Lambda function of every synthesized stage imports as deployed.

The handler module is imported from the function's asset folder in the cloud assembly (what `cdk deploy`
uploads), not from the source tree, in a Python that sees nothing but the asset and what the Lambda runtime and
the Powertools layer provide, with exactly the environment variables the template gives the function plus the
ones Lambda sets. Then the function's settings loader runs. A module the asset forgot, a dependency the layer
lacks, or an environment variable the template misses fails here instead of on the first invocation.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from scripts.asl_check import resolve_tokens

pytestmark = pytest.mark.synth

SITE_PACKAGES = Path(next(p for p in sys.path if p.endswith("site-packages")))
# The python3.x Lambda runtime ships boto3 and its dependencies; the Powertools layer adds Powertools, pydantic
# and the X-Ray SDK. Nothing else exists at run time.
RUNTIME_PACKAGES = ("boto3", "botocore", "s3transfer", "jmespath", "dateutil", "six", "urllib3")
POWERTOOLS_LAYER_PACKAGES = (
    "aws_lambda_powertools",
    "pydantic",
    "pydantic_core",
    "typing_extensions",
    "annotated_types",
    "typing_inspection",
    "aws_xray_sdk",
    "wrapt",
)
CDK_PROVIDED = ("Custom", "AWS")  # CDK's own custom-resource providers (Node.js), not ours

IMPORT_AS_DEPLOYED = """
import importlib, json, os, sys
asset, allowed, handler = sys.argv[1:4]
sys.path[:0] = [asset, allowed]
module_name, function_name = handler.rsplit(".", 1)
module = importlib.import_module(module_name)
assert callable(getattr(module, function_name)), handler
package = module_name.rsplit(".", 1)[0]
try:
    settings_module = importlib.import_module(package + ".settings")
except ModuleNotFoundError:
    settings_module = None
loaded = None
if settings_module is not None and hasattr(settings_module, "load_settings"):
    loaded = type(settings_module.load_settings(os.environ)).__name__
outside = sorted({m.split(".")[0] for m, mod in list(sys.modules.items())
                  if getattr(mod, "__file__", None) and not mod.__file__.startswith((asset, allowed, sys.base_prefix))})
print(json.dumps({"settings": loaded, "outside": outside}))
"""


@pytest.fixture(scope="module")
def allowed_packages(tmp_path_factory) -> Path:
    """A folder holding only what the runtime and the Powertools layer provide (links into this venv)."""
    folder = tmp_path_factory.mktemp("lambda-runtime")
    for entry in SITE_PACKAGES.iterdir():
        name = entry.name.split("-")[0].replace(".py", "")
        if name in RUNTIME_PACKAGES + POWERTOOLS_LAYER_PACKAGES or name == "python_dateutil":
            (folder / entry.name).symlink_to(entry)
    return folder


def _python_functions(assembly):
    for (stage, stack_name), stack in sorted(assembly.stacks.items()):
        resources = stack.template["Resources"]
        for logical_id, resource in sorted(resources.items()):
            if resource["Type"] != "AWS::Lambda::Function":
                continue
            properties = resource["Properties"]
            if not properties.get("Runtime", "").startswith("python"):
                assert logical_id.startswith(CDK_PROVIDED), f"{stage}/{stack_name}/{logical_id} is not Python"
                continue
            asset = stack.asset_source(properties["Code"]["S3Key"])
            variables = properties.get("Environment", {}).get("Variables", {})
            yield stage, stack, logical_id, properties, asset, resolve_tokens(variables, resources, assembly)


def _lambda_environment(stage_region: str, function_name: str, variables: dict) -> dict:
    """The template's variables plus what the Lambda runtime itself sets (credentials are fake: nothing calls AWS)."""
    return {
        **variables,
        "AWS_REGION": stage_region,
        "AWS_DEFAULT_REGION": stage_region,
        "AWS_LAMBDA_FUNCTION_NAME": function_name,
        "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": "256",
        "AWS_LAMBDA_FUNCTION_VERSION": "$LATEST",
        "AWS_EXECUTION_ENV": "AWS_Lambda_python3.14",
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_SESSION_TOKEN": "testing",
        "LANG": "en_US.UTF-8",
        "PATH": "/usr/bin:/bin",
        "TZ": ":UTC",
    }


def _import_as_deployed(asset: Path, allowed: Path, handler: str, environ: dict) -> subprocess.CompletedProcess:
    # -S: no site-packages; -E: no PYTHON* variables; only the asset and the allowed folder are importable.
    return subprocess.run(
        [sys.executable, "-S", "-E", "-c", IMPORT_AS_DEPLOYED, str(asset), str(allowed), handler],
        env=environ,
        cwd=asset,
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.fixture(scope="module")
def regions() -> dict[str, str]:
    """Each stage's region, from the config the `assembly` fixture synthesized."""
    from stacks.settings import load_config
    from tests.conftest import EXAMPLE_CONFIG

    return {stage.qualified_name: stage.region for stage in load_config(EXAMPLE_CONFIG)}


def test_every_python_function_imports_from_its_asset_and_loads_its_settings(assembly, allowed_packages, regions):
    checked = []
    for stage, stack, logical_id, properties, asset, variables in _python_functions(assembly):
        function_name = variables.get("POWERTOOLS_SERVICE_NAME", logical_id)
        result = _import_as_deployed(
            asset,
            allowed_packages,
            properties["Handler"],
            _lambda_environment(regions[stage], function_name, variables),
        )
        assert result.returncode == 0, f"{stage}/{stack.name}/{logical_id}: {result.stderr[-2000:]}"
        report = json.loads(result.stdout.strip().splitlines()[-1])
        assert report["outside"] == [], f"{logical_id} imported from outside its asset and layer: {report}"
        checked.append((stage, logical_id.rstrip("0123456789ABCDEF"), report["settings"]))
    # Every stage's Validate and Gate; the proxy where the stage has an Inference layer.
    assert sorted(checked) == sorted(
        [
            ("search-dev", "Gate", None),
            ("search-dev", "ProxyFunction", "ProxySettings"),
            ("search-dev", "ValidateRequest", "ValidateSettings"),
            ("search-prod", "Gate", None),
            ("search-prod", "ProxyFunction", "ProxySettings"),
            ("search-prod", "ValidateRequest", "ValidateSettings"),
            ("support-dev", "Gate", None),
            ("support-dev", "ValidateRequest", "ValidateSettings"),
        ]
    )


def test_a_missing_environment_variable_fails_the_import(assembly, allowed_packages, regions):
    # The same harness refuses what Lambda would: drop one variable the template sets.
    stage, _, logical_id, properties, asset, variables = next(
        f for f in _python_functions(assembly) if f[2].startswith("ValidateRequest")
    )
    del variables["DATA_BUCKET"]
    result = _import_as_deployed(
        asset, allowed_packages, properties["Handler"], _lambda_environment(regions[stage], logical_id, variables)
    )
    assert result.returncode != 0
    assert "DATA_BUCKET" in result.stderr


def test_a_dependency_outside_the_runtime_is_not_importable(assembly, allowed_packages, tmp_path):
    # The harness really hides the test venv: an asset importing yaml (not in the runtime or layer) fails.
    (tmp_path / "uses_yaml.py").write_text("import yaml\ndef handler(event, context):\n    return None\n")
    result = _import_as_deployed(
        tmp_path, allowed_packages, "uses_yaml.handler", _lambda_environment("eu-west-1", "x", {})
    )
    assert result.returncode != 0
    assert "No module named 'yaml'" in result.stderr
