"""Issue 11 items 3, 5 and 6 in the templates: VPC endpoint policies, isolated training, VPC conditions on every
SageMaker role, confused-deputy conditions on the team topic and key, and the data-capture lifecycle."""

from __future__ import annotations

import json

import pytest

from tests.contract.states import resolve_tokens

pytestmark = pytest.mark.synth

STAGES = ("search-dev", "search-prod", "support-dev")
ACCOUNTS = {"search-dev": "111111111111", "search-prod": "222222222222", "support-dev": "333333333333"}
REGIONS = {"search-dev": "eu-west-1", "search-prod": "us-east-1", "support-dev": "eu-west-1"}


def _resources(assembly, stage, stack, resource_type):
    return assembly.stack(stage, stack).resources_of_type(resource_type)


def _listify(value):
    return value if isinstance(value, list) else [value]


# --- item 3: the network ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("stage", STAGES)
def test_every_vpc_endpoint_has_a_policy_limited_to_this_account(assembly, stage):
    endpoints = _resources(assembly, stage, "Data", "AWS::EC2::VPCEndpoint")
    assert len(endpoints) == 8  # the S3 gateway and seven interface endpoints
    account = ACCOUNTS[stage]
    for logical_id, endpoint in endpoints.items():
        statements = endpoint["Properties"]["PolicyDocument"]["Statement"]
        assert statements, logical_id
        for statement in statements:
            # Every allowance is for this account's principals only.
            assert statement["Effect"] == "Allow"
            assert statement["Condition"]["StringEquals"]["aws:PrincipalAccount"] == account, logical_id
            if statement["Resource"] == "*":
                resource_accounts = (
                    statement["Condition"].get("StringEquals", {}).get("aws:ResourceAccount")
                    or statement["Condition"]["StringEqualsIfExists"]["aws:ResourceAccount"]
                )
                assert account in _listify(resource_accounts), logical_id


def test_the_hosts_endpoints_admit_only_this_accounts_principals(assembly):
    endpoints = _resources(assembly, "search-dev", "Hosts", "AWS::EC2::VPCEndpoint")
    assert len(endpoints) == 4
    for logical_id, endpoint in endpoints.items():
        (statement,) = endpoint["Properties"]["PolicyDocument"]["Statement"]
        assert statement["Condition"]["StringEquals"] == {"aws:PrincipalAccount": "111111111111"}, logical_id
        if "CloudWatchMonitoring" in logical_id:
            assert statement["Condition"]["StringEqualsIfExists"] == {"aws:ResourceAccount": ["111111111111"]}


@pytest.mark.parametrize("stage", STAGES)
def test_the_s3_gateway_admits_only_this_accounts_buckets_and_named_aws_buckets(assembly, stage):
    (s3,) = [
        e
        for e in _resources(assembly, stage, "Data", "AWS::EC2::VPCEndpoint").values()
        if e["Properties"]["VpcEndpointType"] == "Gateway"
    ]
    statements = {s["Sid"]: s for s in s3["Properties"]["PolicyDocument"]["Statement"]}
    region = REGIONS[stage]
    assert statements["ThisAccountsPrincipalsOnThisAccountsBuckets"]["Condition"]["StringEquals"] == {
        "aws:PrincipalAccount": ACCOUNTS[stage],
        "aws:ResourceAccount": ACCOUNTS[stage],
    }
    assert statements["EcrImageLayers"]["Resource"] == f"arn:aws:s3:::prod-{region}-starport-layer-bucket/*"
    assert statements["EcrImageLayers"]["Action"] == "s3:GetObject"
    assert statements["CloudWatchAgentPackage"]["Resource"] == f"arn:aws:s3:::amazoncloudwatch-agent-{region}/*"


def test_ecr_endpoints_also_admit_the_deep_learning_container_registry(assembly):
    endpoints = _resources(assembly, "search-dev", "Data", "AWS::EC2::VPCEndpoint")
    ecr = [e for logical_id, e in endpoints.items() if "Ecr" in logical_id]
    logs = [e for logical_id, e in endpoints.items() if "CloudWatchLogs" in logical_id]
    for endpoint in ecr:
        (statement,) = endpoint["Properties"]["PolicyDocument"]["Statement"]
        assert statement["Condition"]["StringEqualsIfExists"]["aws:ResourceAccount"] == ["111111111111", "763104351884"]
    (statement,) = logs[0]["Properties"]["PolicyDocument"]["Statement"]
    assert _listify(statement["Condition"]["StringEqualsIfExists"]["aws:ResourceAccount"]) == ["111111111111"]


@pytest.mark.parametrize("stage", STAGES)
def test_training_security_group_reaches_only_the_endpoints_and_itself(assembly, stage):
    training = assembly.stack(stage, "Training")
    groups = training.resources_of_type("AWS::EC2::SecurityGroup")
    (group_id,) = [k for k in groups if k.startswith("TrainingJobSecurityGroup")]
    inline = groups[group_id]["Properties"].get("SecurityGroupEgress", [])
    separate = [
        r["Properties"]
        for r in training.resources_of_type("AWS::EC2::SecurityGroupEgress").values()
        if r["Properties"]["GroupId"] == {"Fn::GetAtt": [group_id, "GroupId"]}
    ]
    rules = inline + separate
    assert not any("CidrIp" in rule or "CidrIpv6" in rule for rule in rules), rules
    destinations = sorted(next(k for k in rule if k.startswith("Destination")) for rule in rules)
    assert destinations == ["DestinationPrefixListId", "DestinationSecurityGroupId", "DestinationSecurityGroupId"]
    (to_self,) = [r for r in rules if r.get("DestinationSecurityGroupId") == {"Fn::GetAtt": [group_id, "GroupId"]}]
    (to_endpoints,) = [r for r in rules if r is not to_self and "DestinationSecurityGroupId" in r]
    assert "EndpointSecurityGroup" in json.dumps(to_endpoints) and to_endpoints["FromPort"] == 443
    (to_s3,) = [r for r in rules if "DestinationPrefixListId" in r]
    assert "S3PrefixList" in json.dumps(to_s3) and to_s3["ToPort"] == 443


def test_the_prefix_list_lookup_asks_for_the_regions_s3_list(assembly):
    (lookup,) = _resources(assembly, "search-prod", "Data", "Custom::AWS").values()
    call = json.loads(lookup["Properties"]["Create"])
    assert call["action"] == "describeManagedPrefixLists"
    assert call["parameters"]["Filters"] == [{"Name": "prefix-list-name", "Values": ["com.amazonaws.us-east-1.s3"]}]


def _states(assembly, stage, stack):
    (machine,) = _resources(assembly, stage, stack, "AWS::StepFunctions::StateMachine").values()
    return json.loads(resolve_tokens(machine["Properties"]["DefinitionString"]))["States"]


@pytest.mark.parametrize("stage", STAGES)
def test_training_jobs_run_with_network_isolation(assembly, stage):
    train = _states(assembly, stage, "Training")["Train"]["Parameters"]
    assert train["EnableNetworkIsolation"] is True
    assert train["Environment"]["HF_HUB_OFFLINE"] == "1"


def _managed_statements(assembly, stage, stack):
    for policy in _resources(assembly, stage, stack, "AWS::IAM::ManagedPolicy").values():
        for statement in policy["Properties"]["PolicyDocument"]["Statement"]:
            yield policy, statement


@pytest.mark.parametrize("stage", STAGES)
def test_every_network_interface_grant_is_held_to_the_team_vpc(assembly, stage):
    found = 0
    for stack in ("Training", "Inference") if stage != "support-dev" else ("Training",):
        for _, statement in _managed_statements(assembly, stage, stack):
            if "ec2:CreateNetworkInterfacePermission" not in _listify(statement["Action"]):
                continue
            found += 1
            conditions = statement["Condition"]
            assert set(conditions["ArnEqualsIfExists"]) == {"ec2:Vpc", "ec2:Subnet"}
            assert len(conditions["ArnEqualsIfExists"]["ec2:Subnet"]) == 2
            assert conditions["StringEqualsIfExists"] == {"ec2:AuthorizedService": "sagemaker.amazonaws.com"}
    # the training role; and on stages with endpoints the endpoint-model and BatchInfer-model roles
    assert found == (1 if stage == "support-dev" else 3)


# --- item 5: confused deputy ------------------------------------------------------------------------------------


@pytest.mark.parametrize("stage", STAGES)
def test_eventbridge_publishes_to_the_topic_only_for_this_stages_rules(assembly, stage):
    (policy,) = _resources(assembly, stage, "Data", "AWS::SNS::TopicPolicy").values()
    statements = [s for s in policy["Properties"]["PolicyDocument"]["Statement"] if s["Effect"] == "Allow"]
    (events,) = statements
    assert events["Principal"] == {"Service": "events.amazonaws.com"}
    assert events["Condition"] == {
        "StringEquals": {"aws:SourceAccount": ACCOUNTS[stage]},
        "ArnLike": {"aws:SourceArn": f"arn:aws:events:{REGIONS[stage]}:{ACCOUNTS[stage]}:rule/{stage}-*"},
    }


@pytest.mark.parametrize("stage", STAGES)
def test_every_service_principal_in_the_key_policy_carries_conditions(assembly, stage):
    (key,) = _resources(assembly, stage, "Data", "AWS::KMS::Key").values()
    account, region = ACCOUNTS[stage], REGIONS[stage]
    by_service = {}
    for statement in key["Properties"]["KeyPolicy"]["Statement"]:
        service = statement["Principal"].get("Service") if isinstance(statement["Principal"], dict) else None
        if service:
            assert statement.get("Condition"), f"{service} may use the key without conditions"
            by_service[service] = statement["Condition"]
    assert set(by_service) == {
        "cloudwatch.amazonaws.com",
        "events.amazonaws.com",
        f"logs.{region}.amazonaws.com",
        "delivery.logs.amazonaws.com",
    }
    assert by_service["delivery.logs.amazonaws.com"] == {"StringEquals": {"aws:SourceAccount": account}}
    topic = f"arn:aws:sns:{region}:{account}:{stage}-events"
    for service, source in (
        ("cloudwatch.amazonaws.com", f"arn:aws:cloudwatch:{region}:{account}:alarm:{stage}-*"),
        ("events.amazonaws.com", f"arn:aws:events:{region}:{account}:rule/{stage}-*"),
    ):
        assert by_service[service] == {
            "StringEquals": {
                "aws:SourceAccount": account,
                "kms:ViaService": f"sns.{region}.amazonaws.com",
                "kms:EncryptionContext:aws:sns:topicArn": topic,
            },
            "ArnLike": {"aws:SourceArn": source},
        }
    log_groups = by_service[f"logs.{region}.amazonaws.com"]["ArnLike"]["kms:EncryptionContext:aws:logs:arn"]
    prefix = f"arn:aws:logs:{region}:{account}:log-group:"
    assert log_groups == [
        f"{prefix}/aws/vendedlogs/states/{stage}-*",
        f"{prefix}/aws/lambda/{stage}-*",
        f"{prefix}/finetune-stack/{stage}/*",
        f"{prefix}aws-waf-logs-{stage}-*",
    ]


@pytest.mark.parametrize("stage", STAGES)
def test_every_encrypted_log_group_matches_a_key_policy_pattern(assembly, stage):
    """The anchored patterns still cover every log group the key encrypts (none would fail to create)."""
    import fnmatch

    patterns = ["/aws/vendedlogs/states/{q}-*", "/aws/lambda/{q}-*", "/finetune-stack/{q}/*", "aws-waf-logs-{q}-*"]
    checked = 0
    for (stack_stage, _), stack in assembly.stacks.items():
        if stack_stage != stage:
            continue
        for group in stack.resources_of_type("AWS::Logs::LogGroup").values():
            if "KmsKeyId" not in group["Properties"]:
                continue
            name = group["Properties"]["LogGroupName"]
            assert isinstance(name, str), name
            assert any(fnmatch.fnmatchcase(name, p.format(q=stage)) for p in patterns), name
            checked += 1
    assert checked >= 5


# --- item 6: data capture ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("stage", STAGES)
def test_captured_traffic_expires(assembly, stage):
    buckets = _resources(assembly, stage, "Data", "AWS::S3::Bucket")
    (artifacts,) = [b for b in buckets.values() if b["Properties"]["BucketName"].startswith(f"{stage}-artifacts-")]
    rules = {r["Id"]: r for r in artifacts["Properties"]["LifecycleConfiguration"]["Rules"]}
    assert rules["ExpireDataCapture"] == {
        "Id": "ExpireDataCapture",
        "Prefix": "data-capture/",
        "ExpirationInDays": 30,
        "Status": "Enabled",
        "NoncurrentVersionExpiration": {"NoncurrentDays": 1},
    }


def test_a_stage_can_turn_capture_off(assembly):
    dev = _resources(assembly, "search-dev", "Inference", "AWS::SageMaker::EndpointConfig")
    prod = _resources(assembly, "search-prod", "Inference", "AWS::SageMaker::EndpointConfig")
    assert any("DataCaptureConfig" in c["Properties"] for c in dev.values())
    assert prod and not any("DataCaptureConfig" in c["Properties"] for c in prod.values())
    # ...and its model role is given no write access to the capture prefix either.
    writes = [
        s
        for _, s in _managed_statements(assembly, "search-prod", "Inference")
        if "data-capture" in json.dumps(s.get("Resource"))
    ]
    assert writes == []


@pytest.mark.parametrize("stage", STAGES)
def test_no_training_or_inference_security_group_opens_egress_to_the_internet(assembly, stage):
    """Lambdas, training jobs and models reach the interface endpoints and S3's prefix list, never 0.0.0.0/0."""
    checked = 0
    for stack_name in ("Training", "Inference"):
        if (stage, stack_name) not in assembly.stacks:
            continue
        stack = assembly.stack(stage, stack_name)
        rules = [
            r
            for g in stack.resources_of_type("AWS::EC2::SecurityGroup").values()
            for r in g["Properties"].get("SecurityGroupEgress", [])
        ]
        rules += [r["Properties"] for r in stack.resources_of_type("AWS::EC2::SecurityGroupEgress").values()]
        for rule in rules:
            checked += 1
            assert rule.get("CidrIp") not in ("0.0.0.0/0",) and "CidrIpv6" not in rule, rule
    assert checked >= 5
