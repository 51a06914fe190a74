"""The delivery pipeline stack (CDK Pipelines): waves and their order, the approval before production, the synth
step, cross-account deploys through the CDK bootstrap roles, rule packs and cfn-lint clean, and a snapshot.

One synthesis of a three-stage config with the pipeline enabled (two non-production stages of two teams, one
production stage in another account and region).
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from syrupy.extensions.json import JSONSnapshotExtension

from scripts.bootstrap_commands import bootstrap_commands
from scripts.cloud_assembly import read_app_stacks
from stacks.settings import ConfigError, load_settings, parse_settings
from tests.conftest import EXAMPLE_CONFIG

ROOT = Path(__file__).resolve().parents[2]
TOOLING = "999999999999"
CONNECTION = "arn:aws:codeconnections:eu-west-1:999999999999:connection/8b1e2f4c-0d3a-4c5e-9f6a-1b2c3d4e5f60"
DELIVERY = f"""\
delivery:
  enabled: true
  account: "{TOOLING}"
  region: eu-west-1
  connection_arn: {CONNECTION}
  repository: example-org/finetune-stack
  branch: release
"""
CONFIG = (
    """\
teams:
  - name: support
    cost_center: CC-2210
    email: ml-support@example.com
    defaults: {region: eu-west-1, training: {base_models: [all-minilm-l6-v2]}}
    stages:
      dev: {account: "333333333333", ephemeral: true, new_vpc: {cidr: 10.50.0.0/16}}
      prod: {account: "444444444444", region: us-east-1, new_vpc: {cidr: 10.51.0.0/16}}
  - name: search
    cost_center: CC-1042
    email: ml-search@example.com
    stages:
      dev: {account: "111111111111", region: eu-west-1, ephemeral: true, new_vpc: {cidr: 10.40.0.0/16}}
"""
    + DELIVERY
)


def _pipeline(template: dict) -> dict:
    [pipeline] = [r for r in template["Resources"].values() if r["Type"] == "AWS::CodePipeline::Pipeline"]
    return pipeline["Properties"]


@pytest.fixture(scope="module")
def outdir(tmp_path_factory) -> Path:
    """The pipeline config synthesized once; a rule-pack finding would fail this synthesis."""
    from app import build_app

    folder = tmp_path_factory.mktemp("delivery")
    (folder / "teams.yaml").write_text(CONFIG)
    build_app(folder / "teams.yaml", outdir=str(folder / "cdk.out")).synth()
    return folder / "cdk.out"


@pytest.fixture(scope="module")
def app_stacks(outdir):
    return read_app_stacks(outdir)


@pytest.mark.synth
def test_waves_non_production_first_then_production_behind_one_approval(app_stacks):
    stages = _pipeline(app_stacks["Delivery"].template)["Stages"]
    names = [stage["Name"] for stage in stages]
    assert names[:4] == ["Source", "Build", "UpdatePipeline", "Assets"]
    assert names[4:] == ["NonProduction", "support-prod"]
    non_production, production = stages[4], stages[5]
    deployed = {action["Name"].split(".")[0] for action in non_production["Actions"]}
    assert deployed == {"search-dev", "support-dev"}, "both non-production stages deploy in one wave"
    [approval] = [a for a in production["Actions"] if a["ActionTypeId"]["Category"] == "Approval"]
    assert approval["Name"] == "PromoteToProduction" and approval["RunOrder"] == 1
    assert "support-prod" in approval["Configuration"]["CustomData"]
    deploys = [a for a in production["Actions"] if a["ActionTypeId"]["Category"] == "Deploy"]
    assert deploys and min(a["RunOrder"] for a in deploys) > approval["RunOrder"]
    assert all(a["ActionTypeId"]["Category"] != "Approval" for s in stages[:5] for a in s["Actions"])


@pytest.mark.synth
def test_the_source_is_the_configured_connection_and_branch(app_stacks):
    [source] = _pipeline(app_stacks["Delivery"].template)["Stages"][0]["Actions"]
    assert source["Configuration"]["ConnectionArn"] == CONNECTION
    assert source["Configuration"]["FullRepositoryId"] == "example-org/finetune-stack"
    assert source["Configuration"]["BranchName"] == "release"


@pytest.mark.synth
def test_the_synth_step_runs_make_synth_which_runs_the_rule_packs_and_cfn_lint(app_stacks):
    template = app_stacks["Delivery"].template
    [synth] = [
        r
        for logical_id, r in template["Resources"].items()
        if r["Type"] == "AWS::CodeBuild::Project" and "Synth" in logical_id
    ]
    build_spec = json.dumps(synth["Properties"]["Source"]["BuildSpec"])
    assert '\\"build\\": {\\n      \\"commands\\": [\\n        \\"make synth\\"\\n      ]' in build_spec
    makefile = (ROOT / "Makefile").read_text()
    synth_recipe = makefile.split("\nsynth:", 1)[1].split("\n\n", 1)[0]
    assert "$(CDK) synth" in synth_recipe and "scripts/synth_report.py" in synth_recipe  # rule packs, cfn-lint


@pytest.mark.synth
def test_cross_account_deploys_use_each_stage_accounts_bootstrap_roles(app_stacks):
    template = app_stacks["Delivery"].template
    roles_by_pipeline_stage = {}
    for stage in _pipeline(template)["Stages"][4:]:
        roles_by_pipeline_stage[stage["Name"]] = {
            "".join(part for part in action["RoleArn"]["Fn::Join"][1] if isinstance(part, str))  # minus partition
            for action in stage["Actions"]
            if action["ActionTypeId"]["Category"] == "Deploy"
        }
    assert roles_by_pipeline_stage == {
        "NonProduction": {
            "arn::iam::333333333333:role/cdk-hnb659fds-deploy-role-333333333333-eu-west-1",
            "arn::iam::111111111111:role/cdk-hnb659fds-deploy-role-111111111111-eu-west-1",
        },
        "support-prod": {"arn::iam::444444444444:role/cdk-hnb659fds-deploy-role-444444444444-us-east-1"},
    }
    # Artifacts cross accounts encrypted with the pipeline's own rotated key, which the stage accounts may use.
    [key] = [r for r in template["Resources"].values() if r["Type"] == "AWS::KMS::Key"]
    assert key["Properties"]["EnableKeyRotation"] is True
    key_principals = json.dumps(key["Properties"]["KeyPolicy"])
    for account in ("111111111111", "333333333333"):
        assert f":iam::{account}:role/cdk-hnb659fds-deploy-role-{account}-eu-west-1" in key_principals
    # The other region's artifacts go through a replication bucket and key in a support stack of the tooling
    # account in that region, whose key admits that region's stage deploy role.
    assert set(app_stacks) == {"Delivery", f"cross-region-stack-{TOOLING}:us-east-1"}
    support = app_stacks[f"cross-region-stack-{TOOLING}:us-east-1"].template
    [replication_key] = [r for r in support["Resources"].values() if r["Type"] == "AWS::KMS::Key"]
    assert ":iam::444444444444:role/cdk-hnb659fds-deploy-role-444444444444-us-east-1" in json.dumps(
        replication_key["Properties"]["KeyPolicy"]
    )


@pytest.mark.synth
def test_pipeline_stacks_are_rule_pack_and_cfn_lint_clean(app_stacks):
    from cfnlint.api import ManualArgs, lint

    for name, stack in app_stacks.items():
        region = "us-east-1" if "us-east-1" in name else "eu-west-1"
        assert [m.message for m in lint(json.dumps(stack.template), config=ManualArgs(regions=[region]))] == [], name
        acknowledged = [
            (path, rule, reason)
            for path, entries in stack.metadata.items()
            for entry in entries
            if entry["type"] == "aws:cdk:acknowledged-rules"
            for rule, reason in entry["data"].items()
        ]
        assert acknowledged, name
        for path, rule, reason in acknowledged:
            assert path.count("/") >= 3, f"{rule} acknowledged on a whole stack ({path})"
            assert len(reason) > 80, f"{path} {rule}: the reason says too little"


@pytest.mark.synth
def test_the_cfn_lint_findings_ignored_on_the_pipeline_are_only_the_mislabelled_fn_sub_hint(app_stacks):
    from cfnlint.api import ManualArgs, lint

    template = json.loads(json.dumps(app_stacks["Delivery"].template))
    [pipeline] = [r for r in template["Resources"].values() if r["Type"] == "AWS::CodePipeline::Pipeline"]
    assert pipeline["Metadata"].pop("cfn-lint") == {"config": {"ignore_checks": ["W3005", "E3703"]}}
    findings = {(m.rule.id, m.message) for m in lint(json.dumps(template), config=ManualArgs(regions=["eu-west-1"]))}
    assert {rule for rule, _ in findings} == {"W3005", "E3703"}
    assert {message for rule, message in findings if rule == "E3703"} == {
        "Prefer using Fn::Sub over Fn::Join with an empty delimiter"
    }


@pytest.mark.synth
def test_pipeline_snapshot(app_stacks, snapshot):
    assert app_stacks["Delivery"].template == snapshot(extension_class=JSONSnapshotExtension)


def test_bootstrap_commands_trust_the_tooling_account_in_every_stage_account():
    stages, delivery = parse_settings(CONFIG)
    policy = "arn:aws:iam::aws:policy/AdministratorAccess"
    assert bootstrap_commands(delivery, stages) == [
        f"cdk bootstrap aws://{TOOLING}/eu-west-1",
        f"cdk bootstrap aws://{TOOLING}/us-east-1",
        f"cdk bootstrap aws://111111111111/eu-west-1 --trust {TOOLING} --trust-for-lookup {TOOLING} "
        f"--cloudformation-execution-policies {policy}",
        f"cdk bootstrap aws://333333333333/eu-west-1 --trust {TOOLING} --trust-for-lookup {TOOLING} "
        f"--cloudformation-execution-policies {policy}",
        f"cdk bootstrap aws://444444444444/us-east-1 --trust {TOOLING} --trust-for-lookup {TOOLING} "
        f"--cloudformation-execution-policies {policy}",
    ]


def test_the_example_config_configures_the_pipeline_but_leaves_it_off():
    _, delivery = load_settings(EXAMPLE_CONFIG)
    assert delivery is not None and delivery.enabled is False


def test_synthesis_without_the_pipeline_loads_no_pipeline_code():
    """The default app builds no pipeline and imports none of its modules, so it stays as fast as before."""
    code = textwrap.dedent(f"""\
        import sys
        from app import build_app
        app = build_app({str(EXAMPLE_CONFIG)!r}, teams="support")
        assert [c.node.id for c in app.node.children] == ["support-dev"], app.node.children
        print("stacks.delivery_stack" in sys.modules, "aws_cdk.pipelines" in sys.modules)
    """)
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.split()[-2:] == ["False", "False"]


@pytest.mark.parametrize(
    ("line", "message"),
    [
        (
            "  connection_arn: arn:aws:s3:::not-a-connection",
            "delivery.connection_arn: 'arn:aws:s3:::not-a-connection' is not a CodeConnections connection ARN",
        ),
        ('  account: "12345"', "delivery.account: '12345' is not a 12-digit AWS account id"),
        ("  repository: finetune-stack", "delivery.repository: 'finetune-stack' is not an owner/name repository"),
        ("  enabeld: true", "delivery.enabeld: unknown key"),
    ],
)
def test_a_bad_delivery_section_names_the_key_and_the_problem(line, message):
    key = line.split(":")[0]
    lines = [existing for existing in DELIVERY.splitlines() if not existing.startswith(key + ":")]
    config = CONFIG.replace(DELIVERY, "\n".join([*lines, line]) + "\n")
    with pytest.raises(ConfigError) as error:
        parse_settings(config)
    assert any(problem.startswith(message) for problem in error.value.problems), error.value.problems


@pytest.mark.synth
def test_make_review_reads_a_new_training_image_as_one_asset_line_not_a_pipeline_change(outdir, tmp_path):
    """The pipeline's asset actions name every asset digest; the review reports the image once, not as noise."""
    import shutil

    from scripts.review import compare, read_assets

    # One image digest per region (the DLC the image is built FROM differs): a code edit changes each of them.
    images = sorted({a.digest for a in read_assets(outdir) if a.kind == "image"})
    assert len(images) == 2
    edited = tmp_path / "cdk.out"
    shutil.copytree(outdir, edited)
    new_digests = [str(index) * 64 for index in range(1, len(images) + 1)]
    for path in edited.rglob("*.json"):
        text = path.read_text()
        for old, new in zip(images, new_digests, strict=True):
            text = text.replace(old, new)
        path.write_text(text)
    pipeline_text = (edited / "Delivery.template.json").read_text()
    assert all(new in pipeline_text for new in new_digests), "the pipeline names no image digest: nothing tested"
    review = compare("0" * 40, "edited", outdir, edited, [], [])
    assert review.assets == [
        {
            "asset": "the training image (training_code/)",
            "change": "changes",
            "stages": ["search-dev", "support-dev", "support-prod"],
        }
    ]
    assert review.rows() == []
