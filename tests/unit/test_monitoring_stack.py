"""The Monitoring stack: alarms go to the team topic, the budget alerts the team, and every dashboard metric is one
the other stacks (or AWS for their resources) actually publish, by the names in stacks.naming and metrics.py."""

from __future__ import annotations

import json
import re

import pytest

from stacks import naming
from stacks.components.gpu_host import agent_config
from training_code.finetune.metrics import METRIC_NAMES

pytestmark = pytest.mark.synth


def alarms(stack) -> dict[str, dict]:
    return {
        a["Properties"]["AlarmName"]: a["Properties"]
        for a in stack.resources_of_type("AWS::CloudWatch::Alarm").values()
    }


def test_every_stage_has_a_monitoring_stack_with_a_budget(assembly):
    assert {stage for stage, name in assembly.stacks if name == "Monitoring"} == {
        "search-dev",
        "search-prod",
        "support-dev",
    }


@pytest.mark.parametrize("stage,limit", [("search-dev", 3000), ("search-prod", 12000), ("support-dev", 1500)])
def test_budget_alerts_the_team_at_80_and_100_percent_actual_and_100_forecast(assembly, stage, limit):
    [budget] = assembly.stack(stage, "Monitoring").resources_of_type("AWS::Budgets::Budget").values()
    data = budget["Properties"]["Budget"]
    assert (data["BudgetType"], data["TimeUnit"]) == ("COST", "MONTHLY")
    assert data["BudgetLimit"] == {"Amount": limit, "Unit": "USD"}
    email = "ml-support@example.com" if stage.startswith("support") else "ml-search@example.com"
    alerts = sorted(
        (
            n["Notification"]["NotificationType"],
            n["Notification"]["Threshold"],
            n["Notification"]["ThresholdType"],
            n["Notification"]["ComparisonOperator"],
            tuple((s["SubscriptionType"], s["Address"]) for s in n["Subscribers"]),
        )
        for n in budget["Properties"]["NotificationsWithSubscribers"]
    )
    assert alerts == [
        ("ACTUAL", 80, "PERCENTAGE", "GREATER_THAN", (("EMAIL", email),)),
        ("ACTUAL", 100, "PERCENTAGE", "GREATER_THAN", (("EMAIL", email),)),
        ("FORECASTED", 100, "PERCENTAGE", "GREATER_THAN", (("EMAIL", email),)),
    ]


@pytest.mark.parametrize(
    "stage,expected",
    [
        (
            "search-dev",
            {
                "finetune-failed",
                "assistant-5xx",
                "assistant-latency",
                "sentiment-5xx",
                "sentiment-latency",
                "proxy-errors",
                "api-5xx",
            },
        ),
        ("search-prod", {"finetune-failed", "assistant-5xx", "assistant-latency", "proxy-errors", "api-5xx"}),
        ("support-dev", {"finetune-failed"}),  # no endpoints, no inference alarms
    ],
)
def test_alarms_notify_the_team_topic(assembly, stage, expected):
    found = alarms(assembly.stack(stage, "Monitoring"))
    assert set(found) == {f"{stage}-{name}" for name in expected}
    for name, alarm in found.items():
        assert len(alarm["AlarmActions"]) == 1 and "TeamTopic" in json.dumps(alarm["AlarmActions"]), name
        assert alarm["TreatMissingData"] == "notBreaching"


def _metric(alarm: dict) -> tuple[str, str, dict[str, str], str]:
    """(namespace, name, dimensions, statistic) of a single-metric alarm (labelled, so in the Metrics form)."""
    [query] = alarm["Metrics"]
    stat = query["MetricStat"]
    metric = stat["Metric"]
    return (
        metric["Namespace"],
        metric["MetricName"],
        {d["Name"]: d["Value"] for d in metric["Dimensions"]},
        stat["Stat"],
    )


def test_alarm_metrics_match_the_names_the_other_stacks_use(assembly):
    found = alarms(assembly.stack("search-dev", "Monitoring"))
    assert _metric(found["search-dev-assistant-5xx"]) == (
        "AWS/SageMaker",
        "Invocation5XXErrors",
        {"EndpointName": naming.endpoint("search-dev", "assistant"), "VariantName": "AllTraffic"},
        "Sum",
    )
    latency = found["search-dev-assistant-latency"]
    assert _metric(latency)[1::2] == ("ModelLatency", "p90")
    assert (latency["Threshold"], latency["EvaluationPeriods"]) == (30_000_000, 3)
    assert found["search-dev-sentiment-latency"]["Threshold"] == 1_000_000

    assert _metric(found["search-dev-api-5xx"]) == (
        "AWS/ApiGateway",
        "5XXError",
        {"ApiName": naming.inference_api("search-dev"), "Stage": "api"},
        "Sum",
    )
    assert _metric(found["search-dev-proxy-errors"]) == (
        "AWS/Lambda",
        "Errors",
        {"FunctionName": naming.inference_proxy_function("search-dev")},
        "Sum",
    )
    pipeline = found["search-dev-finetune-failed"]
    names = {m["MetricStat"]["Metric"]["MetricName"] for m in pipeline["Metrics"] if "MetricStat" in m}
    assert names == {"ExecutionsFailed", "ExecutionsTimedOut", "ExecutionsAborted"}
    [expression] = [m for m in pipeline["Metrics"] if "Expression" in m]
    assert expression["Expression"] == "failed + timedOut + aborted" and pipeline["Threshold"] == 1


def test_an_endpoint_can_set_its_own_latency_alarm(assembly):
    # search-prod's assistant sets latency_alarm_seconds: 20 in config/teams.yaml
    alarms = assembly.stack("search-prod", "Monitoring").resources_of_type("AWS::CloudWatch::Alarm").values()
    (latency,) = [a["Properties"] for a in alarms if a["Properties"]["AlarmName"] == "search-prod-assistant-latency"]
    assert latency["Threshold"] == 20_000_000
    assert "above 20 s for 15 minutes" in latency["AlarmDescription"]


def _dashboard_metrics(stack) -> list[list]:
    """The metric arrays of every dashboard widget, with the body's Fn::Join flattened to text."""
    [dashboard] = stack.resources_of_type("AWS::CloudWatch::Dashboard").values()
    body = dashboard["Properties"]["DashboardBody"]
    if isinstance(body, dict):  # Fn::Join of literal parts and references (the host's instance id)
        body = "".join(part if isinstance(part, str) else "INSTANCE_ID" for part in body["Fn::Join"][1])
    widgets = json.loads(body)["widgets"]
    return [metric for widget in widgets for metric in widget.get("properties", {}).get("metrics", [])]


def test_dashboard_metrics_exist_with_the_namespaces_names_and_dimensions_they_are_published_under(assembly):
    stack = assembly.stack("search-dev", "Monitoring")
    state_machine = f"arn:aws:states:eu-west-1:111111111111:stateMachine:{naming.fine_tune_state_machine('search-dev')}"
    published = {
        "AWS/States": (
            {"ExecutionsStarted", "ExecutionsSucceeded", "ExecutionsFailed", "ExecutionsTimedOut", "ExecutionsAborted"},
            {"StateMachineArn": state_machine},
        ),
        "AWS/Lambda": (
            {"Invocations", "Errors", "Throttles", "Duration"},
            {"FunctionName": naming.inference_proxy_function("search-dev")},
        ),
        "AWS/ApiGateway": (
            {"Count", "4XXError", "5XXError"},
            {"ApiName": naming.inference_api("search-dev"), "Stage": "api"},
        ),
        naming.METRICS_NAMESPACE: (
            {
                f"nvidia_smi_{m}"
                for m in agent_config(log_group_name="x")["metrics"]["metrics_collected"]["nvidia_gpu"]["measurement"]
            },
            {"InstanceId": "INSTANCE_ID"},
        ),
    }
    endpoints = {naming.endpoint("search-dev", name) for name in ("assistant", "sentiment")}
    sagemaker_names = {
        "Invocations",
        "InvocationsPerInstance",
        "Invocation4XXErrors",
        "Invocation5XXErrors",
        "ModelLatency",
        "OverheadLatency",
        "ModelSetupTime",
    }
    seen_namespaces, searches = set(), []
    for metric in _dashboard_metrics(stack):
        options = metric[-1] if isinstance(metric[-1], dict) else {}
        if "expression" in options:
            if options["expression"].startswith("SEARCH"):
                searches.append(options["expression"])
            continue
        namespace, name, *rest = [m for m in metric if not isinstance(m, dict)]
        dimensions = dict(zip(rest[::2], rest[1::2], strict=True))
        seen_namespaces.add(namespace)
        if namespace == "AWS/SageMaker":
            assert name in sagemaker_names
            assert dimensions["EndpointName"] in endpoints and dimensions["VariantName"] == "AllTraffic"
            continue
        names, expected_dimensions = published[namespace]
        assert name in names, (namespace, name)
        assert dimensions == expected_dimensions, (namespace, name)
    assert seen_namespaces == {"AWS/States", "AWS/Lambda", "AWS/ApiGateway", "AWS/SageMaker", naming.METRICS_NAMESPACE}
    trained = {re.search(r'MetricName="([a-z_]+)"', s).group(1) for s in searches}
    assert trained and trained <= set(METRIC_NAMES)
    assert all("{/aws/sagemaker/TrainingJobs,Host}" in s for s in searches)


def test_a_stage_without_endpoints_or_hosts_has_only_pipeline_and_training_widgets(assembly):
    namespaces = {
        m[0]
        for m in _dashboard_metrics(assembly.stack("support-dev", "Monitoring"))
        if isinstance(m[0], str) and not m[0].startswith("{")
    }
    assert namespaces == {"AWS/States"}
