"""The config model: the example loads, defaults merge, and every bad config gets its exact message."""

from __future__ import annotations

import textwrap

import pytest

from scripts.write_schema import SCHEMA_PATH, render
from stacks.settings import ConfigError, load_config, parse_config
from tests.conftest import EXAMPLE_CONFIG

GOOD_STAGE = '{account: "111111111111", region: eu-west-1}'


def _config(stages: str = f"dev: {GOOD_STAGE}", team_extra: str = "", name: str = "search") -> str:
    return (
        textwrap.dedent(f"""\
        teams:
          - name: {name}
            cost_center: CC-1
            email: team@example.com
        """)
        + textwrap.indent(team_extra, "    ")
        + "    stages:\n"
        + textwrap.indent(stages, "      ")
        + "\n"
    )


def test_example_config_resolves_team_defaults_and_stage_overrides():
    stages = {s.qualified_name: s for s in load_config(EXAMPLE_CONFIG)}
    assert list(stages) == ["search-dev", "search-prod", "support-dev"]
    dev, prod = stages["search-dev"], stages["search-prod"]
    assert (dev.region, prod.region) == ("eu-west-1", "us-east-1")  # default, then override
    assert (dev.budget_usd_monthly, prod.budget_usd_monthly) == (3000, 12000)
    assert dev.training.instance_types == ["ml.g5.2xlarge", "ml.g5.12xlarge"]
    assert prod.training.max_instance_count == 4
    assert prod.training.max_runtime_hours == 24  # built-in default survives a partial override
    # a stage that sets one training key keeps the team's other training keys
    assert dev.training.start_on_manifest and dev.training.base_models == prod.training.base_models != []
    assert prod.compliance == ("nist-800-53-r5", "hipaa") and dev.compliance == ()
    assert dev.ephemeral and not prod.ephemeral
    assert prod.tags == {"team": "search", "stage": "prod", "cost-center": "CC-1042", "managed-by": "finetune-stack"}
    assert prod.ssm_prefix == "/finetune-stack/search/prod"


def test_schema_file_is_generated_from_the_model():
    assert SCHEMA_PATH.read_text(encoding="utf-8") == render(), "config/teams.schema.json is stale: run make schema"


def test_yaml_points_editors_at_the_schema():
    assert EXAMPLE_CONFIG.read_text().splitlines()[0] == "# yaml-language-server: $schema=./teams.schema.json"


BAD_CONFIGS = [
    (
        "account",
        _config('prod: {account: "12345", region: eu-west-1}'),
        ["teams[0].stages.prod.account: '12345' is not a 12-digit AWS account id"],
    ),
    (
        "account as number",
        _config("dev: {account: 111111111111, region: eu-west-1}"),
        ["teams[0].stages.dev.account: 111111111111 must be a valid string"],
    ),
    (
        "region",
        _config('dev: {account: "111111111111", region: eu-west-9}'),
        ["teams[0].stages.dev.region: 'eu-west-9' is not an AWS region name (for example eu-west-1)"],
    ),
    (
        "typo",
        _config('dev: {account: "111111111111", region: eu-west-1, ephemral: true}'),
        ["teams[0].stages.dev.ephemral: unknown key (check the spelling; config/teams.schema.json lists the keys)"],
    ),
    (
        "team name",
        _config(name="Search_Team"),
        [
            "teams[0].name: 'Search_Team' is not a valid team name (lowercase letters, digits and single hyphens, "
            "starting with a letter)"
        ],
    ),
    (
        "stage name",
        _config(f"Prod: {GOOD_STAGE}"),
        [
            "teams[0].stages.Prod: 'Prod' is not a valid stage name (lowercase letters, digits and single hyphens, "
            "starting with a letter)"
        ],
    ),
    (
        "email",
        _config(team_extra="").replace("team@example.com", "team-at-example"),
        ["teams[0].email: 'team-at-example' is not an email address"],
    ),
    (
        "instance type",
        _config(team_extra="defaults: {training: {instance_types: [g5.2xlarge]}}\n"),
        [
            "teams[0].defaults.training.instance_types[0]: 'g5.2xlarge' is not a SageMaker instance type "
            "(format ml.<family>.<size>, e.g. ml.g5.2xlarge)"
        ],
    ),
    (
        "budget",
        _config(team_extra="defaults: {budget_usd_monthly: -5}\n"),
        ["teams[0].defaults.budget_usd_monthly: -5 must be greater than 0"],
    ),
    (
        "compliance",
        _config('dev: {account: "111111111111", region: eu-west-1, compliance: [pci]}'),
        ["teams[0].stages.dev.compliance[0]: 'pci' is not one of 'nist-800-53-r5' or 'hipaa'"],
    ),
    (
        "retention",
        _config('dev: {account: "111111111111", region: eu-west-1, log_retention_days: 10}'),
        [
            "teams[0].stages.dev.log_retention_days: 10 is not a CloudWatch Logs retention period (one of 1, 3, 5, 7, "
            "14, 30, 60, 90, 120, 150, 180, 365, 400, 545, 731, 1096, 1827, 2192, 2557, 2922, 3288, 3653)"
        ],
    ),
    (
        "boundary",
        _config(team_extra="defaults: {permissions_boundary_arn: my-boundary}\n"),
        ["teams[0].defaults.permissions_boundary_arn: 'my-boundary' is not an IAM managed policy ARN"],
    ),
    (
        "missing account",
        _config("dev: {region: eu-west-1}"),
        ["teams[0].stages.dev.account: is required (set it on the stage or in teams[0].defaults)"],
    ),
    ("missing email", _config().replace("    email: team@example.com\n", ""), ["teams[0].email: is required"]),
    (
        "no stages",
        _config(stages="{}").replace("stages:\n      {}", "stages: {}"),
        ["teams[0].stages: must have at least 1 entry"],
    ),
    (
        "public cidr",
        _config('dev: {account: "111111111111", region: eu-west-1, new_vpc: {cidr: 8.8.0.0/16}}'),
        ["teams[0].stages.dev.new_vpc.cidr: '8.8.0.0/16' must be a private range between /16 and /24"],
    ),
    (
        "both vpcs",
        _config(
            team_extra="defaults: {new_vpc: {cidr: 10.0.0.0/16}}\n",
            stages=(
                'dev: {account: "111111111111", region: eu-west-1, existing_vpc: {vpc_id: vpc-0123456789abcdef0, '
                "cidr: 10.1.0.0/16, isolated_subnet_ids: [subnet-01234567], availability_zones: [eu-west-1a]}}"
            ),
        ),
        ["teams[0].stages.dev: sets both new_vpc and existing_vpc (after team defaults); keep one"],
    ),
    (
        "zones mismatch",
        _config(
            stages=(
                'dev: {account: "111111111111", region: eu-west-1, existing_vpc: {vpc_id: vpc-0123456789abcdef0, '
                "cidr: 10.1.0.0/16, isolated_subnet_ids: [subnet-01234567], "
                "availability_zones: [eu-west-1a, eu-west-1b]}}"
            )
        ),
        ["teams[0].stages.dev.existing_vpc: lists 1 subnets but 2 availability zones; give one zone per subnet"],
    ),
    (
        "duplicate team",
        _config() + _config(name="search").replace("teams:\n", ""),
        ["teams[1].name: 'search' duplicates teams[0].name"],
    ),
    (
        "duplicate stage key",
        _config(f"dev: {GOOD_STAGE}\ndev: {GOOD_STAGE}"),
        ["line 7, column 7: duplicate key 'dev' (first at line 6)"],
    ),
    ("not yaml", "teams: [\n", ["line 2, column 1: expected the node content, but found '<stream end>'"]),
    ("not a mapping", "- just a list\n", ["the file must be a mapping with a top-level 'teams' list"]),
]


@pytest.mark.parametrize("case,text,expected", BAD_CONFIGS, ids=[case for case, _, _ in BAD_CONFIGS])
def test_bad_config_gets_exact_messages(case, text, expected):
    with pytest.raises(ConfigError) as raised:
        parse_config(text, source="config/teams.yaml")
    assert raised.value.problems == expected
    assert str(raised.value).splitlines() == [f"config/teams.yaml: {line}" for line in expected]


def test_every_problem_is_reported_at_once():
    text = _config('dev: {account: "123", region: mars-1, ephemral: true}').replace("team@example.com", "nope")
    with pytest.raises(ConfigError) as raised:
        parse_config(text)
    assert len(raised.value.problems) == 4
    assert [p.split(":")[0] for p in raised.value.problems] == [
        "teams[0].email",
        "teams[0].stages.dev.account",
        "teams[0].stages.dev.region",
        "teams[0].stages.dev.ephemral",
    ]


def test_merged_stage_problems_are_reported_with_field_errors():
    # A stage missing its account (known only after merging the team defaults) in a file that also has a field
    # error: both come back from one run, not one now and the other after the first is fixed.
    text = _config(f"dev: {{region: eu-west-1}}\nprod: {GOOD_STAGE}").replace("team@example.com", "nope")
    with pytest.raises(ConfigError) as raised:
        parse_config(text)
    assert raised.value.problems == [
        "teams[0].email: 'nope' is not an email address",
        "teams[0].stages.dev.account: is required (set it on the stage or in teams[0].defaults)",
    ]


def test_unreadable_file_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="cannot be read"):
        load_config(tmp_path / "missing.yaml")


# --- issue 11: stage overlap, data capture, network isolation ----------------------------------------------------


def _two_teams(
    first: str, second: str, first_account: str = "111111111111", second_account: str = "111111111111"
) -> str:
    """Two teams, each with one stage, given as `team/stage`."""
    text = "teams:\n"
    for index, (qualified, account) in enumerate(((first, first_account), (second, second_account))):
        team, stage = qualified.split("/")
        text += (
            f"  - name: {team}\n    cost_center: CC-{index}\n    email: t{index}@example.com\n"
            f'    stages:\n      {stage}: {{account: "{account}", region: eu-west-1}}\n'
        )
    return text


def test_stages_of_one_account_whose_names_extend_each_other_are_rejected():
    with pytest.raises(ConfigError) as raised:
        parse_config(_config(f"dev: {GOOD_STAGE}\ndev-eu: {GOOD_STAGE}"))
    assert raised.value.problems == [
        "stages 'search-dev' (team 'search', stage 'dev') and 'search-dev-eu' (team 'search', stage 'dev-eu') "
        "share account 111111111111 and one name extends the other with '-', so the `{team}-{stage}-*` resource "
        "patterns of one would match the other's resources; rename one or deploy it to another account"
    ]


def test_overlap_across_teams_is_rejected_too():
    # team `search` stage `dev-x` and team `search-dev` stage `x` share no config key but both are search-dev-x.
    with pytest.raises(ConfigError) as raised:
        parse_config(_two_teams("search/dev-x", "search-dev/x", second_account="222222222222"))
    assert raised.value.problems == [
        "stages 'search-dev-x' (team 'search', stage 'dev-x') and 'search-dev-x' (team 'search-dev', stage 'x') "
        "have the same name {team}-{stage}; rename one or deploy it to another account"
    ]
    with pytest.raises(ConfigError, match=r"'search-dev' .* and 'search-dev-x' .* share account"):
        parse_config(_two_teams("search/dev", "search-dev/x"))


@pytest.mark.parametrize(
    "first,second,accounts",
    [
        ("search/dev", "search-dev/x", ("111111111111", "222222222222")),  # overlap, but separate accounts
        ("search/dev", "search-x/dev2", ("111111111111", "111111111111")),  # search-x-dev2 vs search-dev
        ("search/dev", "xsearch/dev", ("111111111111", "111111111111")),
    ],
)
def test_names_that_cannot_reach_each_other_are_accepted(first, second, accounts):
    assert len(parse_config(_two_teams(first, second, *accounts))) == 2


def test_hipaa_stage_must_choose_data_capture():
    with pytest.raises(ConfigError) as raised:
        parse_config(_config('prod: {account: "111111111111", region: eu-west-1, compliance: [hipaa]}'))
    assert raised.value.problems == [
        "teams[0].stages.prod.data_capture.enabled: is required on a stage that lists hipaa (captured prompts and "
        "completions may hold protected health information): set true or false on the stage or in "
        "teams[0].defaults"
    ]
    # An explicit choice, on the stage or in the team defaults, is accepted.
    (stage,) = parse_config(
        _config(
            'prod: {account: "111111111111", region: eu-west-1, compliance: [hipaa], data_capture: {enabled: true}}'
        )
    )
    assert stage.data_capture.enabled and stage.data_capture.expire_days == 30
    (stage,) = parse_config(
        _config(
            'prod: {account: "111111111111", region: eu-west-1, compliance: [hipaa]}',
            team_extra="defaults: {data_capture: {enabled: false}}\n",
        )
    )
    assert not stage.data_capture.enabled


def test_data_capture_and_network_isolation_defaults_and_bounds():
    (stage,) = parse_config(_config())
    assert (stage.data_capture.enabled, stage.data_capture.expire_days) == (True, 30)
    assert stage.training.network_isolation is True
    with pytest.raises(ConfigError) as raised:
        parse_config(_config('dev: {account: "111111111111", region: eu-west-1, data_capture: {expire_days: 0}}'))
    assert raised.value.problems == [
        "teams[0].stages.dev.data_capture.expire_days: 0 must be greater than or equal to 1"
    ]
    stages = {s.qualified_name: s for s in load_config(EXAMPLE_CONFIG)}
    assert not stages["search-prod"].data_capture.enabled  # the hipaa stage chose explicitly
