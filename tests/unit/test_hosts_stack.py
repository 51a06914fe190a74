"""The Hosts stack of the example config: a GPU host nobody can reach but through Session Manager."""

from __future__ import annotations

import json

import pytest

from stacks.components.gpu_host import AmiNotPinned, agent_config, pinned_ami

pytestmark = pytest.mark.synth

STAGE = "search-dev"
PARAMETER = "/aws/service/deeplearning/ami/x86_64/base-oss-nvidia-driver-gpu-ubuntu-22.04/latest/ami-id"


@pytest.fixture(scope="module")
def hosts(assembly):
    return assembly.stack(STAGE, "Hosts")


def only(resources: dict) -> dict:
    assert len(resources) == 1, sorted(resources)
    return next(iter(resources.values()))


def test_only_stages_with_hosts_have_a_hosts_stack(assembly):
    assert {stage for stage, name in assembly.stacks if name == "Hosts"} == {STAGE}


def test_instance_is_isolated_imdsv2_monitored_and_has_no_key_pair(hosts):
    instance = only(hosts.resources_of_type("AWS::EC2::Instance"))["Properties"]
    assert "KeyName" not in instance
    assert instance["Monitoring"] is True
    assert instance["InstanceType"] == "g5.2xlarge"
    assert instance["ImageId"] == pinned_ami(PARAMETER, "eu-west-1")
    assert instance["DisableApiTermination"] is False  # ephemeral dev stage
    [interface] = instance["NetworkInterfaces"]
    assert interface["AssociatePublicIpAddress"] is False
    template = only(hosts.resources_of_type("AWS::EC2::LaunchTemplate"))["Properties"]["LaunchTemplateData"]
    assert template["MetadataOptions"]["HttpTokens"] == "required"
    tags = {t["Key"]: t["Value"] for t in instance["Tags"]}
    assert tags["Name"] == "search-dev-research" and tags["owner"] == "data-scientist@example.com"
    # The subnet is one of the Data stack's isolated subnets.
    assert "Isolated" in json.dumps(interface["SubnetId"])


def test_security_group_has_no_ingress_and_only_https_egress(hosts):
    groups = hosts.resources_of_type("AWS::EC2::SecurityGroup")
    assert len(groups) == 1
    group = only(groups)["Properties"]
    assert "SecurityGroupIngress" not in group
    assert not hosts.resources_of_type("AWS::EC2::SecurityGroupIngress")
    assert [(rule["IpProtocol"], rule["FromPort"], rule["ToPort"]) for rule in group["SecurityGroupEgress"]] == [
        ("tcp", 443, 443)
    ]


def test_root_volume_is_gp3_encrypted_with_the_team_key(hosts):
    instance = only(hosts.resources_of_type("AWS::EC2::Instance"))["Properties"]
    [device] = instance["BlockDeviceMappings"]
    assert device["DeviceName"] == "/dev/sda1"
    ebs = device["Ebs"]
    assert (ebs["VolumeType"], ebs["VolumeSize"], ebs["Encrypted"]) == ("gp3", 300, True)
    assert "TeamKey" in json.dumps(ebs["KmsKeyId"])


def _statements(hosts) -> dict[str, dict]:
    policy = only(
        {k: v for k, v in hosts.resources_of_type("AWS::IAM::ManagedPolicy").items() if "HostresearchPolicy" in k}
    )
    return {s["Sid"]: s for s in policy["Properties"]["PolicyDocument"]["Statement"]}


def test_role_reads_data_and_writes_only_its_own_artifacts_prefix(hosts):
    statements = _statements(hosts)
    data = "arn:aws:s3:::search-dev-data-111111111111-eu-west-1"
    artifacts = "arn:aws:s3:::search-dev-artifacts-111111111111-eu-west-1"
    assert statements["ReadTeamData"]["Resource"] == [data, f"{data}/*"]
    assert not any(a.startswith("s3:Put") or a.startswith("s3:Delete") for a in statements["ReadTeamData"]["Action"])
    assert statements["WriteThisHostsResults"]["Resource"] == f"{artifacts}/hosts/research/*"
    writers = [s for s in statements.values() if any(a.startswith("s3:Put") for a in _list(s["Action"]))]
    assert writers == [statements["WriteThisHostsResults"]]
    assert "s3:Delete" not in json.dumps(statements)


def _list(value):
    return value if isinstance(value, list) else [value]


def test_role_pulls_only_the_training_image_repository_and_writes_only_its_log_group(hosts):
    statements = _statements(hosts)
    pull = statements["PullTheTrainingImage"]
    assert "container-assets" in json.dumps(pull["Resource"])
    assert statements["EcrLogin"]["Action"] == "ecr:GetAuthorizationToken"
    assert "HostresearchLogs" in json.dumps(statements["WriteOwnLogs"]["Resource"])
    metrics = statements["PublishHostMetrics"]
    assert metrics["Condition"] == {"StringEquals": {"cloudwatch:namespace": "FineTuneStack"}}
    kms = statements["UseTheTeamKeyThroughS3"]
    assert kms["Condition"] == {"StringEquals": {"kms:ViaService": "s3.eu-west-1.amazonaws.com"}}
    # Every "*" resource is one of the two actions AWS only defines on "*".
    assert {sid for sid, s in statements.items() if s["Resource"] == "*"} == {"EcrLogin", "PublishHostMetrics"}


def test_role_has_only_the_session_manager_managed_policy(hosts):
    role = only({k: v for k, v in hosts.resources_of_type("AWS::IAM::Role").items() if "HostresearchRole" in k})
    assert json.dumps(role["Properties"]["ManagedPolicyArns"]).count("AmazonSSMManagedInstanceCore") == 1
    assert len(role["Properties"]["ManagedPolicyArns"]) == 1
    assert "Policies" not in role["Properties"]


def test_session_manager_and_metrics_endpoints_are_added_to_the_vpc(hosts):
    services = sorted(
        json.dumps(e["Properties"]["ServiceName"]) for e in hosts.resources_of_type("AWS::EC2::VPCEndpoint").values()
    )
    assert [s.split(".")[-1].strip('"]} ') for s in services] == ["ec2messages", "monitoring", "ssm", "ssmmessages"]
    for endpoint in hosts.resources_of_type("AWS::EC2::VPCEndpoint").values():
        assert endpoint["Properties"]["PrivateDnsEnabled"] is True


def test_idle_alarm_stops_the_instance_and_tells_the_team(hosts):
    alarm = only(hosts.resources_of_type("AWS::CloudWatch::Alarm"))["Properties"]
    assert (alarm["Namespace"], alarm["MetricName"]) == ("FineTuneStack", "nvidia_smi_utilization_gpu")
    assert [d["Name"] for d in alarm["Dimensions"]] == ["InstanceId"]
    assert (alarm["ComparisonOperator"], alarm["Threshold"]) == ("LessThanThreshold", 5)
    assert (alarm["Period"], alarm["EvaluationPeriods"], alarm["Statistic"]) == (60, 60, "Maximum")
    assert alarm["TreatMissingData"] == "notBreaching"
    actions = json.dumps(alarm["AlarmActions"])
    assert ":automate:" in actions and ":ec2:stop" in actions and "TeamTopic" in actions


def test_agent_config_publishes_the_metric_the_alarm_watches():
    config = agent_config(log_group_name="/finetune-stack/x/hosts/y")
    assert config["metrics"]["namespace"] == "FineTuneStack"
    assert "utilization_gpu" in config["metrics"]["metrics_collected"]["nvidia_gpu"]["measurement"]
    assert config["metrics"]["aggregation_dimensions"] == [["InstanceId"]]
    assert config["agent"]["omit_hostname"] is True


def test_user_data_installs_finetune_host_and_the_agent(hosts):
    instance = only(hosts.resources_of_type("AWS::EC2::Instance"))["Properties"]
    user_data = json.dumps(instance["UserData"])
    assert "/opt/finetune-stack/finetune-host" in user_data and "install -m 0755" in user_data
    assert "amazon-cloudwatch-agent-ctl -a fetch-config" in user_data.replace(
        '\\"$agent_ctl\\"', "amazon-cloudwatch-agent-ctl"
    )
    assert "nvidia_gpu" in user_data
    assert "FINETUNE_DATA_BUCKET=search-dev-data-111111111111-eu-west-1" in user_data


def test_office_hours_schedule_starts_and_stops_the_host(hosts):
    schedules = {
        s["Properties"]["Name"]: s["Properties"] for s in hosts.resources_of_type("AWS::Scheduler::Schedule").values()
    }
    assert sorted(schedules) == ["search-dev-research-start", "search-dev-research-stop"]
    start, stop = schedules["search-dev-research-start"], schedules["search-dev-research-stop"]
    assert (start["ScheduleExpression"], start["ScheduleExpressionTimezone"]) == (
        "cron(0 8 ? * MON-FRI *)",
        "Europe/Dublin",
    )
    assert stop["ScheduleExpression"] == "cron(0 19 ? * MON-FRI *)"
    assert start["Target"]["Arn"].endswith(":aws-sdk:ec2:startInstances")
    assert stop["Target"]["Arn"].endswith(":aws-sdk:ec2:stopInstances")


def test_log_group_is_encrypted_with_the_team_key(hosts):
    group = only(hosts.resources_of_type("AWS::Logs::LogGroup"))["Properties"]
    assert group["LogGroupName"] == "/finetune-stack/search-dev/hosts/research"
    assert "TeamKey" in json.dumps(group["KmsKeyId"])
    assert group["RetentionInDays"] == 30


def test_a_region_without_a_pinned_ami_fails_with_the_command_to_pin_one():
    with pytest.raises(AmiNotPinned, match=r"aws ssm get-parameter --name /aws/service/.* --region ap-south-2"):
        pinned_ami(PARAMETER, "ap-south-2")


PROD_HOST_CONFIG = """
teams:
  - name: lab
    cost_center: CC-7
    email: lab@example.com
    stages:
      prod:
        account: "555555555555"
        region: eu-west-1
        hosts: [{name: box}]
"""


def test_non_ephemeral_stages_protect_the_host_from_termination(tmp_path):
    from app import build_app
    from tests.conftest import read_assembly

    config = tmp_path / "teams.yaml"
    config.write_text(PROD_HOST_CONFIG)
    build_app(config, outdir=str(tmp_path / "out")).synth()
    stack = read_assembly(tmp_path / "out").stack("lab-prod", "Hosts")
    instance = only(stack.resources_of_type("AWS::EC2::Instance"))["Properties"]
    assert instance["DisableApiTermination"] is True
    assert not stack.resources_of_type("AWS::Scheduler::Schedule")  # no schedule in config
    group = only(stack.resources_of_type("AWS::Logs::LogGroup"))
    assert group["DeletionPolicy"] == "Retain"
