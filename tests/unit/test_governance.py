"""Tags on every resource, the permissions boundary on every role, names from `{team}-{stage}`."""

from __future__ import annotations

import pytest

from tests.conftest import read_assembly

pytestmark = pytest.mark.synth


def taggable(resource_type: str) -> bool:
    """Whether CloudFormation's own resource schema (as cfn-lint ships it) gives the type a Tags property."""
    from cfnlint.schema import PROVIDER_SCHEMA_MANAGER

    if not resource_type.startswith("AWS::"):
        return False  # custom resources
    schema = PROVIDER_SCHEMA_MANAGER.get_resource_schema("us-east-1", resource_type).schema
    return "Tags" in schema.get("properties", {})


def _tags(resource: dict) -> dict[str, str]:
    tags = resource.get("Properties", {}).get("Tags", {})
    if isinstance(tags, dict):  # AWS::SSM::Parameter uses a map
        return tags
    return {tag["Key"]: tag["Value"] for tag in tags}


@pytest.mark.parametrize(
    "stage,expected",
    [
        ("search-dev", {"team": "search", "stage": "dev", "cost-center": "CC-1042", "managed-by": "finetune-stack"}),
        ("search-prod", {"team": "search", "stage": "prod", "cost-center": "CC-1042", "managed-by": "finetune-stack"}),
        ("support-dev", {"team": "support", "stage": "dev", "cost-center": "CC-2210", "managed-by": "finetune-stack"}),
    ],
)
def test_every_taggable_resource_carries_the_governance_tags(assembly, stage, expected):
    checked = 0
    for (stack_stage, _), stack in assembly.stacks.items():
        if stack_stage != stage:
            continue
        for logical_id, resource in stack.template["Resources"].items():
            if not taggable(resource["Type"]):
                continue
            tags = _tags(resource)
            assert {k: tags.get(k) for k in expected} == expected, f"{stage} {logical_id} {resource['Type']}"
            checked += 1
    assert checked >= 20


BOUNDARY_CONFIG = """
teams:
  - name: audit
    cost_center: CC-9
    email: audit@example.com
    defaults:
      permissions_boundary_arn: arn:aws:iam::444444444444:policy/finetune-boundary
    stages:
      dev: {account: "444444444444", region: eu-central-1, ephemeral: true}
"""


@pytest.fixture(scope="module")
def boundary_assembly(tmp_path_factory):
    from app import build_app

    workdir = tmp_path_factory.mktemp("boundary")
    config = workdir / "teams.yaml"
    config.write_text(BOUNDARY_CONFIG)
    build_app(config, outdir=str(workdir / "cdk.out")).synth()
    return read_assembly(workdir / "cdk.out")


def test_permissions_boundary_applies_to_every_role_including_cdk_generated_ones(boundary_assembly):
    roles = {}
    for stack in boundary_assembly.stacks.values():
        roles.update(stack.resources_of_type("AWS::IAM::Role"))
    assert len(roles) >= 3  # flow logs, auto-delete provider, default-SG provider
    for logical_id, role in roles.items():
        assert role["Properties"]["PermissionsBoundary"] == "arn:aws:iam::444444444444:policy/finetune-boundary", (
            logical_id
        )


def test_without_a_boundary_no_role_has_one(assembly):
    for stack in assembly.stacks.values():
        for logical_id, role in stack.resources_of_type("AWS::IAM::Role").items():
            assert "PermissionsBoundary" not in role["Properties"], logical_id


def test_stack_names_derive_from_team_and_stage(assembly):
    stacks = {(stage, name): stack.template.get("Description", "") for (stage, name), stack in assembly.stacks.items()}
    # Inference only where a stage has endpoints, Hosts only where it has hosts.
    assert sorted(stacks) == sorted(
        [
            *[("search-dev", layer) for layer in ("Data", "Training", "Inference", "Hosts", "Monitoring")],
            *[("search-prod", layer) for layer in ("Data", "Training", "Inference", "Monitoring")],
            *[("support-dev", layer) for layer in ("Data", "Training", "Monitoring")],
        ]
    )
    for (stage, _name), description in stacks.items():
        assert description.startswith(f"finetune-stack {stage}: ")


def test_synthesis_is_deterministic(assembly, tmp_path):
    """Two syntheses of the same config give byte-identical templates: nothing from clocks or randomness."""
    from app import build_app
    from tests.conftest import EXAMPLE_CONFIG

    build_app(EXAMPLE_CONFIG, teams="support", outdir=str(tmp_path)).synth()
    again = read_assembly(tmp_path)
    assert again.stack("support-dev", "Data").template == assembly.stack("support-dev", "Data").template
