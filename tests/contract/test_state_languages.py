"""Every synthesized state machine is valid States Language, as Step Functions checks it at CreateStateMachine:
asl-validator and moto's parser (scripts/asl_check.py, the check `make synth` runs) over the example config and
over generated configs that cover the shapes a definition can take, and proof that the check can fail."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import yaml

from scripts import asl_check
from scripts.cloud_assembly import read_assembly

pytestmark = pytest.mark.synth

ROOT = Path(__file__).resolve().parents[2]


def _machine(states: dict, start: str | None = None) -> asl_check.StateMachine:
    return asl_check.StateMachine(
        "test", "Training", "Machine", {"StartAt": start or next(iter(states)), "States": states}
    )


def _state_names(machine: asl_check.StateMachine) -> set[str]:
    return set(machine.definition["States"])


# ---- the example config ----


def test_every_state_machine_of_the_example_config_is_valid(assembly):
    machines, findings = asl_check.check(assembly)
    found = {(m.stage, m.logical_id.rstrip("0123456789ABCDEF")) for m in machines}
    # FineTune on every stage, BatchInfer where the stage has an Inference layer.
    assert found == {
        ("search-dev", "FineTuneStateMachine"),
        ("search-dev", "BatchInferStateMachine"),
        ("search-prod", "FineTuneStateMachine"),
        ("search-prod", "BatchInferStateMachine"),
        ("support-dev", "FineTuneStateMachine"),
    }
    assert findings == []


def test_a_stage_without_endpoints_has_no_deploy_branch(assembly):
    machines = {(m.stage, m.logical_id.rstrip("0123456789ABCDEF")): m for m in asl_check.state_machines(assembly)}
    without = _state_names(machines[("support-dev", "FineTuneStateMachine")])
    with_endpoints = _state_names(machines[("search-dev", "FineTuneStateMachine")])
    deploy_states = {"DeployRequested", "PickEndpoint", "CreateModel", "UpdateEndpoint", "DescribeDeployFailure"}
    assert deploy_states <= with_endpoints
    assert not deploy_states & without
    # Registration goes straight to the success notification.
    fine_tune = machines[("support-dev", "FineTuneStateMachine")].definition["States"]
    assert fine_tune["RegisterLlm"]["Next"] == fine_tune["RegisterClassifier"]["Next"] == "NotifySuccess"


def test_placeholders_are_well_formed(assembly):
    # Cross-stack references resolve to the producing stack's real values, so path and ARN checks see real shapes.
    (fine_tune,) = [
        m for m in asl_check.state_machines(assembly) if m.stage == "search-dev" and m.logical_id.startswith("FineTune")
    ]
    text = json.dumps(fine_tune.definition)
    assert "search-dev-artifacts-111111111111-eu-west-1" in text
    assert "imported-value" not in text
    validate = fine_tune.definition["States"]["Validate"]
    assert validate["Parameters"]["FunctionName"].startswith("arn:aws:lambda:eu-west-1:111111111111:function:")


# ---- generated configs: zero, one and several endpoints, manifest triggers on and off ----

GENERATED_STAGES = {
    # name: (endpoints, start_on_manifest, auto_approve_models)
    "none": ([], False, False),
    "one": (
        [{"name": "chat", "kind": "llm", "model_data_url": "s3://gen-models-bucket/chat/model.tar.gz"}],
        True,
        True,
    ),
    "many": (
        [
            {"name": "chat", "kind": "llm", "model_data_url": "s3://gen-models-bucket/chat/model.tar.gz"},
            {
                "name": "tone",
                "kind": "classifier",
                "model_data_url": "s3://gen-models-bucket/tone/model.tar.gz",
                "serverless": {"memory_mb": 2048, "max_concurrency": 2},
            },
            {
                "name": "topic",
                "kind": "classifier",
                "model_data_url": "s3://gen-models-bucket/topic/model.tar.gz",
                "instance_type": "ml.m5.xlarge",
            },
        ],
        False,
        True,
    ),
    "cls": (
        [{"name": "tone", "kind": "classifier", "model_data_url": "s3://gen-models-bucket/tone/model.tar.gz"}],
        True,
        False,
    ),
}


@pytest.fixture(scope="module")
def generated(tmp_path_factory):
    from app import build_app

    stages = {}
    for index, (name, (endpoints, on_manifest, auto_approve)) in enumerate(GENERATED_STAGES.items()):
        spec = {
            "account": f"4444444444{index:02d}",
            "new_vpc": {"cidr": f"10.{60 + index}.0.0/16"},
            "auto_approve_models": auto_approve,
            "training": {"start_on_manifest": on_manifest},
        }
        if endpoints:
            spec["endpoints"] = endpoints
        stages[name] = spec
    config = {
        "teams": [
            {
                "name": "gen",
                "cost_center": "CC-1",
                "email": "gen@example.com",
                "defaults": {"region": "eu-west-1", "training": {"base_models": ["all-minilm-l6-v2"]}},
                "stages": stages,
            }
        ]
    }
    folder = tmp_path_factory.mktemp("generated")
    (folder / "teams.yaml").write_text(yaml.safe_dump(config))
    build_app(folder / "teams.yaml", outdir=str(folder / "cdk.out")).synth()
    return read_assembly(folder / "cdk.out")


def test_generated_configs_synthesize_only_valid_state_machines(generated):
    machines, findings = asl_check.check(generated)
    assert findings == []
    by_stage = {}
    for machine in machines:
        by_stage.setdefault(machine.stage, {})[machine.logical_id.rstrip("0123456789ABCDEF")] = machine
    assert set(by_stage) == {f"gen-{name}" for name in GENERATED_STAGES}
    for name, (endpoints, _, _) in GENERATED_STAGES.items():
        fine_tune = by_stage[f"gen-{name}"]["FineTuneStateMachine"].definition["States"]
        if not endpoints:
            assert "PickEndpoint" not in fine_tune and "DeployRequested" not in fine_tune
            continue
        # One rule per endpoint: deploy_to names it and the task matches its kind; anything else is refused.
        rules = fine_tune["PickEndpoint"]["Choices"]
        assert len(rules) == len(endpoints)
        assert fine_tune["PickEndpoint"]["Default"] == "DescribeUnknownEndpoint"
        assert {rule["And"][0]["StringEquals"] for rule in rules} == {e["name"] for e in endpoints}


def test_manifest_triggers_only_where_configured(generated):
    for name, (_, on_manifest, _) in GENERATED_STAGES.items():
        rules = generated.stack(f"gen-{name}", "Training").resources_of_type("AWS::Events::Rule")
        starts = [r for r in rules.values() if "finetune-on-manifest" in str(r["Properties"].get("Name", ""))]
        assert len(starts) == (1 if on_manifest else 0), name


# ---- the check can fail, and says where ----


def test_asl_validator_reports_a_broken_intrinsic_with_its_state_and_field():
    machine = _machine(
        {"Describe": {"Type": "Pass", "Parameters": {"Cause.$": "States.Format('a {} ' + 'b', $.x)"}, "End": True}}
    )
    findings = asl_check.asl_validator_findings([machine])
    assert len(findings) == 1
    assert "/States/Describe/Parameters/Cause.$" in findings[0].message


def test_moto_reports_a_broken_intrinsic_that_it_only_prints():
    machine = _machine(
        {"Describe": {"Type": "Pass", "Parameters": {"Cause.$": "States.Format('a {} ' + 'b', $.x)"}, "End": True}}
    )
    findings = asl_check.moto_findings([machine])
    assert findings, "moto printed a syntax error that the check did not report"
    assert all("/States/Describe/Parameters/Cause.$" in f.message for f in findings)
    assert any("token recognition error at: '+'" in f.message for f in findings)


def test_an_empty_choice_is_reported():
    machine = _machine({"Pick": {"Type": "Choice", "Default": "Done"}, "Done": {"Type": "Succeed"}})
    findings = asl_check.asl_validator_findings([machine])
    assert findings and "/States/Pick" in findings[0].message


def test_a_missing_transition_target_is_reported():
    machine = _machine({"Start": {"Type": "Pass", "Next": "Nowhere"}})
    assert asl_check.asl_validator_findings([machine])


def test_a_valid_definition_passes_both_checkers():
    machine = _machine(
        {
            "Describe": {
                "Type": "Pass",
                "Parameters": {"Cause.$": "States.Format('a {} b {}', $.x, States.JsonToString($.y))"},
                "Next": "Done",
            },
            "Done": {"Type": "Succeed"},
        }
    )
    assert asl_check.asl_validator_findings([machine]) == []
    assert asl_check.moto_findings([machine]) == []


def test_synth_report_fails_on_an_invalid_definition(assembly, tmp_path, capsys):
    # Given one stage's synthesized assembly with a broken intrinsic written into its FineTune definition
    from scripts import synth_report

    stage_dir = next(d for d in assembly.outdir.glob("assembly-*") if d.name.endswith("support-dev"))
    copy = tmp_path / "cdk.out"
    shutil.copytree(stage_dir, copy / stage_dir.name)
    (template_path,) = (copy / stage_dir.name).glob("*Training*.template.json")
    template = json.loads(template_path.read_text())
    (machine,) = [r for r in template["Resources"].values() if r["Type"] == "AWS::StepFunctions::StateMachine"]
    parts = machine["Properties"]["DefinitionString"]["Fn::Join"][1]
    index = next(
        i for i, part in enumerate(parts) if isinstance(part, str) and "States.Format('{} from execution" in part
    )
    parts[index] = parts[index].replace(
        "States.Format('{} from execution {}'", "States.Format('{} from ' + 'execution {}'"
    )
    template_path.write_text(json.dumps(template))

    # When the synth report runs over it
    status = synth_report.main(copy)

    # Then it fails, naming the stage, the state and the field
    assert status == 1
    err = capsys.readouterr().err
    assert "support-dev/Training/FineTuneStateMachine" in err
    assert "/States/RegisterClassifier/Parameters/ModelPackageDescription.$" in err


def test_synth_report_fails_on_an_unacknowledged_rule_pack_finding(tmp_path, capsys):
    # Given a real synthesis of one stage with a bucket nobody hardened or acknowledged. The CDK CLI exits 0
    # after a failed validation, so the validation report the app writes is what must fail `make synth`.
    from aws_cdk import aws_s3 as s3

    from app import build_app
    from scripts import synth_report
    from tests.conftest import EXAMPLE_CONFIG

    app = build_app(EXAMPLE_CONFIG, teams="support", outdir=str(tmp_path / "cdk.out"))
    data_stack = next(c for c in app.node.find_all() if c.node.path == "support-dev/Data")
    s3.Bucket(data_stack, "UnreviewedBucket")
    with pytest.raises(RuntimeError, match="ValidationFailed"):
        app.synth()

    # When the synth report runs over what synthesis left behind
    status = synth_report.main(tmp_path / "cdk.out")

    # Then it fails, and names the rule and the construct
    assert status == 1
    err = capsys.readouterr().err
    assert "support-dev/Data/UnreviewedBucket/Resource: AwsSolutions: AwsSolutions-S10" in err
