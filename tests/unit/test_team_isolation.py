"""Team isolation: no IAM statement in one team stage grants access to another stage's buckets, keys,
repositories, endpoints or model packages, and none grants data actions on `Resource: *`."""

from __future__ import annotations

import json

import pytest

pytestmark = pytest.mark.synth

STAGES = ("search-dev", "search-prod", "support-dev")
# Actions that touch data or models: never on every resource.
DATA_ACTION_PREFIXES = (
    "s3:",
    "kms:Decrypt",
    "kms:Encrypt",
    "kms:GenerateDataKey",
    "kms:ReEncrypt",
    "sagemaker:InvokeEndpoint",
    "sagemaker:CreateModelPackage",
    "sagemaker:UpdateEndpoint",
    "sagemaker:CreateTrainingJob",
    "ecr:BatchGetImage",
    "ecr:GetDownloadUrlForLayer",
    "states:StartExecution",
    "sns:Publish",
    "lambda:InvokeFunction",
)


def _statements(template: dict) -> list[tuple[str, dict]]:
    found = []
    for logical_id, resource in template["Resources"].items():
        properties = resource.get("Properties", {})
        documents = []
        if resource["Type"] in ("AWS::IAM::Policy", "AWS::IAM::ManagedPolicy"):
            documents.append(properties["PolicyDocument"])
        if resource["Type"] == "AWS::IAM::Role":
            documents += [p["PolicyDocument"] for p in properties.get("Policies", [])]
        for document in documents:
            found += [(logical_id, statement) for statement in document["Statement"]]
    return found


def _listify(value) -> list:
    return value if isinstance(value, list) else [value]


def test_policies_exist_to_be_checked(assembly):
    assert sum(len(_statements(s.template)) for s in assembly.stacks.values()) > 100


@pytest.mark.parametrize("stage", STAGES)
def test_no_statement_names_another_stage(assembly, stage):
    others = [other for other in STAGES if other != stage]
    for (stack_stage, stack_name), stack in assembly.stacks.items():
        if stack_stage != stage:
            continue
        for logical_id, statement in _statements(stack.template):
            text = json.dumps(statement.get("Resource", ""))
            for other in others:
                assert other not in text, f"{stage}/{stack_name} {logical_id} reaches {other}: {text}"


@pytest.mark.parametrize("stage", STAGES)
def test_data_actions_are_never_granted_on_every_resource(assembly, stage):
    checked = 0
    for (stack_stage, stack_name), stack in assembly.stacks.items():
        if stack_stage != stage:
            continue
        for logical_id, statement in _statements(stack.template):
            if statement["Effect"] != "Allow":
                continue
            actions = [a for a in _listify(statement["Action"]) if a.startswith(DATA_ACTION_PREFIXES) or a == "*"]
            if not actions:
                continue
            checked += 1
            assert "*" not in _listify(statement["Resource"]), f"{stage}/{stack_name} {logical_id}: {actions} on *"
    assert checked >= 10


def test_the_check_catches_a_cross_team_grant():
    """The check can fail: a statement naming another stage's bucket is found."""
    template = {
        "Resources": {
            "P": {
                "Type": "AWS::IAM::ManagedPolicy",
                "Properties": {
                    "PolicyDocument": {
                        "Statement": [
                            {
                                "Effect": "Allow",
                                "Action": "s3:GetObject",
                                "Resource": "arn:aws:s3:::support-dev-data-333333333333-eu-west-1/*",
                            }
                        ]
                    }
                },
            }
        }
    }
    ((_, statement),) = _statements(template)
    assert "support-dev" in json.dumps(statement["Resource"])


# --- stages of one account: no statement of one stage matches an ARN of another (issue 11, item 4) -------------
#
# The statements come from the synthesized example stages; each stage's own name, account and region are replaced
# by placeholders, so the same statements can be stamped for any team and stage name. Hypothesis then picks two
# adversarial team/stage pairs in ONE account (names that are prefixes of each other, share hyphens, or collide
# after joining), asks the real config check whether it accepts them, and, when it does, checks that no ARN
# pattern of either stage (a Resource, or an ARN in a key/topic policy condition such as the log groups) matches any
# ARN the other stage's statements name for its own resources.

import fnmatch  # noqa: E402
import re  # noqa: E402

from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from stacks.settings import STAGE_NAME_MAX, TEAM_NAME_MAX, ConfigError, parse_config  # noqa: E402
from tests.contract.states import resolve_tokens  # noqa: E402

ACCOUNTS = {
    "search-dev": ("111111111111", "eu-west-1"),
    "search-prod": ("222222222222", "us-east-1"),
    "support-dev": ("333333333333", "eu-west-1"),
}
Q, ACCOUNT, REGION = "\x00Q\x00", "123456789012", "eu-central-1"


def _arn_strings(value) -> list[str]:
    if isinstance(value, str):
        return [value] if value.startswith("arn:") else []
    if isinstance(value, list):
        return [s for item in value for s in _arn_strings(item)]
    if isinstance(value, dict):
        return [s for item in value.values() for s in _arn_strings(item)]
    return []


def _stage_arns(assembly, stage: str) -> list[str]:
    """Every ARN or ARN pattern in the stage's IAM, key and topic policy statements, in placeholder form."""
    account, region = ACCOUNTS[stage]
    found = set()
    for (stack_stage, _), stack in assembly.stacks.items():
        if stack_stage != stage:
            continue
        for resource in stack.template["Resources"].values():
            properties = resource.get("Properties", {})
            documents = {
                "AWS::IAM::Policy": ["PolicyDocument"],
                "AWS::IAM::ManagedPolicy": ["PolicyDocument"],
                "AWS::KMS::Key": ["KeyPolicy"],
                "AWS::SNS::TopicPolicy": ["PolicyDocument"],
            }
            for field in documents.get(resource["Type"], []):
                for statement in properties[field]["Statement"]:
                    if statement["Effect"] != "Allow":
                        continue
                    # What a statement reaches: its Resource; in a key or topic policy (Resource: this key or
                    # topic) the ARNs of its conditions name whose use it admits (log groups, rules, alarms).
                    # In an identity policy a condition only narrows the Resource, so it is not a reach.
                    reach = [statement.get("Resource", [])]
                    if resource["Type"] in ("AWS::KMS::Key", "AWS::SNS::TopicPolicy"):
                        reach.append(statement.get("Condition", {}))
                    values = resolve_tokens(reach)
                    for arn in _arn_strings(values):
                        found.add(arn.replace(stage, Q).replace(account, ACCOUNT).replace(region, REGION))
    return sorted(found)


@pytest.fixture(scope="module")
def stage_arns(assembly) -> dict[str, list[str]]:
    arns = {stage: _stage_arns(assembly, stage) for stage in STAGES}
    for stage, found in arns.items():
        assert sum(Q in arn for arn in found) >= 15, f"{stage}: too few stage ARNs to test: {found}"
    return arns


def _names(max_size: int):
    # A small alphabet makes prefixes, shared hyphen segments and collisions after joining likely.
    segment = st.text("ab", min_size=1, max_size=3)
    return (
        st.lists(segment, min_size=1, max_size=3)
        .map("-".join)
        .map(lambda n: "a" + n if n[0] == "b" else n)
        .filter(lambda n: len(n) <= max_size)
    )


def _config_for(pairs: list[tuple[str, str]]) -> str:
    teams: dict[str, list[str]] = {}
    for team, stage in pairs:
        teams.setdefault(team, []).append(stage)
    text = "teams:\n"
    for index, (team, stages) in enumerate(teams.items()):
        text += f"  - name: {team}\n    cost_center: CC-{index}\n    email: t{index}@example.com\n    stages:\n"
        text += "".join(f'      {s}: {{account: "{ACCOUNT}", region: {REGION}}}\n' for s in stages)
    return text


def _patterns(arns: list[str], qualified_name: str) -> re.Pattern[str]:
    # IAM globbing: `*` any run of characters, `?` one character (fnmatch's [..] sets never occur in ARNs).
    return re.compile("|".join(f"(?:{fnmatch.translate(a.replace(Q, qualified_name))})" for a in arns))


def _concrete(arns: list[str], qualified_name: str, filler: str) -> list[str]:
    """The ARNs a stage's statements name for its own resources, wildcards filled in."""
    return [a.replace(Q, qualified_name).replace("*", filler).replace("?", "a") for a in arns if Q in a]


def _cross_matches(stage_arns, first: str, second: str, filler: str) -> list[tuple[str, str]]:
    found = []
    for template_a in STAGES:
        patterns = _patterns(stage_arns[template_a], first)
        for template_b in STAGES:
            for arn in _concrete(stage_arns[template_b], second, filler):
                if patterns.fullmatch(arn):
                    found.append((template_a, arn))
    return found


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    team_a=_names(TEAM_NAME_MAX),
    stage_a=_names(STAGE_NAME_MAX),
    team_b=_names(TEAM_NAME_MAX),
    stage_b=_names(STAGE_NAME_MAX),
    filler=st.sampled_from(["", "x", "a", "b-a", "-", "a-b-x"]),
)
def test_no_statement_of_one_stage_matches_another_stage_of_the_account(
    stage_arns, team_a, stage_a, team_b, stage_b, filler
):
    if (team_a, stage_a) == (team_b, stage_b):
        return
    try:
        parse_config(_config_for([(team_a, stage_a), (team_b, stage_b)]))
    except ConfigError:
        return  # the config check refuses this pair; nothing is deployed
    first, second = f"{team_a}-{stage_a}", f"{team_b}-{stage_b}"
    assert _cross_matches(stage_arns, first, second, filler) == []
    assert _cross_matches(stage_arns, second, first, filler) == []


def test_the_property_can_fail_without_the_config_check(stage_arns):
    """Stages the config check refuses (search-dev and search-dev-eu in one account) do reach each other: the
    check is what keeps the `{team}-{stage}-*` patterns apart, and the comparison above can see a match."""
    assert _cross_matches(stage_arns, "search-dev", "search-dev-eu", "x")
    with pytest.raises(ConfigError):
        parse_config(_config_for([("search", "dev"), ("search", "dev-eu")]))


def test_no_account_wide_pattern_reaches_another_stage(stage_arns):
    """A pattern without the stage's name (an account-wide grant) matches no stage-owned ARN of any name."""
    for stage, arns in stage_arns.items():
        account_wide = [a for a in arns if Q not in a and ("*" in a or "?" in a)]
        patterns = _patterns(account_wide, "unused") if account_wide else None
        for other in STAGES:
            for arn in _concrete(stage_arns[other], "zz-other", "x"):
                assert patterns is None or not patterns.fullmatch(arn), f"{stage}: {arn}"
