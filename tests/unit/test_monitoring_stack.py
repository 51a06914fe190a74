"""The Monitoring stack: alarms go to the team topic, the budget alerts the team, and every dashboard metric is one
the other stacks (or AWS for their resources) actually publish, by the names in stacks.naming and metrics.py."""

from __future__ import annotations

import json
import re

import pytest

from scripts.asl_check import resolve_tokens
from stacks import naming
from stacks.components.gpu_host import agent_config
from stacks.monitoring_stack import ERROR_COUNT_THRESHOLD, LATENCY_P90_MICROSECONDS, LATENCY_PERIODS
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
                "chat-base-5xx",  # the LoRA endpoint chat: one alarm per inference component
                "chat-base-latency",
                "chat-support-tone-5xx",
                "chat-sql-helper-5xx",
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


def _dashboard_widgets(stack) -> list[dict]:
    """The dashboard's widgets, with the body's Fn::Join flattened to text."""
    [dashboard] = stack.resources_of_type("AWS::CloudWatch::Dashboard").values()
    body = dashboard["Properties"]["DashboardBody"]
    if isinstance(body, dict):  # Fn::Join of literal parts and references (the host's instance id)
        body = "".join(part if isinstance(part, str) else "INSTANCE_ID" for part in body["Fn::Join"][1])
    return json.loads(body)["widgets"]


def _dashboard_metrics(stack) -> list[list]:
    """The metric arrays of every dashboard widget."""
    widgets = _dashboard_widgets(stack)
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
    components = _components(assembly, "search-dev")
    component_names = {  # docs.aws.amazon.com/sagemaker/latest/dg/monitoring-cloudwatch.html, by InferenceComponentName
        "AWS/SageMaker": {
            "Invocations",
            "Invocation4XXErrors",
            "Invocation5XXErrors",
            "InvocationsPerCopy",
            "ModelLatency",
            "OverheadLatency",
        },
        "/aws/sagemaker/InferenceComponents": {
            "CPUUtilizationNormalized",
            "GPUUtilizationNormalized",
            "GPUMemoryUtilizationNormalized",
            "MemoryUtilizationNormalized",
        },
    }
    watched = set()
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
        if "InferenceComponentName" in dimensions:
            assert name in component_names[namespace], (namespace, name)
            assert set(dimensions) == {"InferenceComponentName"}, (namespace, name)
            assert dimensions["InferenceComponentName"] in components, dimensions
            if namespace != "AWS/SageMaker":  # copies' utilisation: adapters have no copies of their own
                assert components[dimensions["InferenceComponentName"]] is None, dimensions
            watched.add(dimensions["InferenceComponentName"])
            continue
        if namespace == "AWS/SageMaker":
            assert name in sagemaker_names
            assert dimensions["EndpointName"] in endpoints and dimensions["VariantName"] == "AllTraffic"
            continue
        names, expected_dimensions = published[namespace]
        assert name in names, (namespace, name)
        assert dimensions == expected_dimensions, (namespace, name)
    assert seen_namespaces == {
        "AWS/States",
        "AWS/Lambda",
        "AWS/ApiGateway",
        "AWS/SageMaker",
        "/aws/sagemaker/InferenceComponents",
        naming.METRICS_NAMESPACE,
    }
    assert watched == set(components)
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


# ---- LoRA endpoints: inference components, joined to the components the other stacks create ----


def _components(assembly, stage: str) -> dict[str, str | None]:
    """Every inference component of the stage (name -> its base component, None for a base): those the Inference
    stack creates, and the adapters' the FineTune pipeline's Deploy step creates (reserved without an artifact)."""
    created = {
        c["Properties"]["InferenceComponentName"]: c["Properties"]["Specification"].get("BaseInferenceComponentName")
        for c in assembly.stack(stage, "Inference").resources_of_type("AWS::SageMaker::InferenceComponent").values()
    }
    (machine,) = assembly.stack(stage, "Training").resources_of_type("AWS::StepFunctions::StateMachine").values()
    definition = json.loads(resolve_tokens(machine["Properties"]["DefinitionString"]))
    deployed = {
        parameters["component_name"]: parameters["base_component_name"]
        for state in definition["States"].values()
        for parameters in [state.get("Parameters", {})]
        if isinstance(parameters.get("component_name"), str)
    }
    for name, base in deployed.items():
        assert created.get(name, base) == base, name  # both stacks agree on an adapter's base
    return created | deployed


def test_the_lora_endpoint_has_a_base_and_two_adapter_components_to_watch(assembly):
    # Given search-dev's chat: support-tone has an artifact (the Inference stack creates it), sql-helper is reserved
    # (the pipeline creates it on its first deploy)
    inference = assembly.stack("search-dev", "Inference").resources_of_type("AWS::SageMaker::InferenceComponent")
    components = _components(assembly, "search-dev")
    assert len(inference) == 2 and len(components) == 3
    (base,) = [name for name, parent in components.items() if parent is None]
    assert set(components.values()) == {None, base}


def test_every_inference_component_has_a_5xx_alarm_on_its_own_metric(assembly):
    found = alarms(assembly.stack("search-dev", "Monitoring"))
    components = _components(assembly, "search-dev")
    for component in components:
        alarm = found[f"{component}-5xx"]
        assert _metric(alarm) == (
            "AWS/SageMaker",
            "Invocation5XXErrors",
            {"InferenceComponentName": component},
            "Sum",
        )
        assert alarm["Threshold"] == ERROR_COUNT_THRESHOLD == found["search-dev-assistant-5xx"]["Threshold"]
        assert (alarm["EvaluationPeriods"], alarm["ComparisonOperator"]) == (1, "GreaterThanOrEqualToThreshold")
        assert component in alarm["AlarmDescription"]
    # and no alarm watches a component that neither stack creates
    watched = {
        dimension["Value"]
        for alarm in found.values()
        for query in alarm.get("Metrics", [])
        for dimension in query.get("MetricStat", {}).get("Metric", {}).get("Dimensions", [])
        if dimension["Name"] == "InferenceComponentName"
    }
    assert watched == set(components)


def test_the_base_component_has_a_p90_model_latency_alarm_and_the_adapters_none(assembly):
    found = alarms(assembly.stack("search-dev", "Monitoring"))
    components = _components(assembly, "search-dev")
    (base,) = [name for name, parent in components.items() if parent is None]
    latency = found[f"{base}-latency"]
    assert _metric(latency) == ("AWS/SageMaker", "ModelLatency", {"InferenceComponentName": base}, "p90")
    # chat sets no latency_alarm_seconds: the LLM default, like whole-model LLM endpoints
    assert latency["Threshold"] == LATENCY_P90_MICROSECONDS["llm"] == found["search-dev-assistant-latency"]["Threshold"]
    assert (latency["EvaluationPeriods"], latency["DatapointsToAlarm"]) == (LATENCY_PERIODS, LATENCY_PERIODS)
    assert latency["ComparisonOperator"] == "GreaterThanThreshold"
    adapters = {name for name, parent in components.items() if parent is not None}
    assert not {f"{adapter}-latency" for adapter in adapters} & set(found)


def test_component_alarm_names_are_unique_and_within_cloudwatchs_limit(assembly):
    for stage in ("search-dev", "search-prod", "support-dev"):
        names = [
            a["Properties"]["AlarmName"]
            for a in assembly.stack(stage, "Monitoring").resources_of_type("AWS::CloudWatch::Alarm").values()
        ]
        assert len(names) == len(set(names)), stage
        assert all(len(name) <= 255 for name in names), stage


def test_the_dashboard_has_a_row_for_every_inference_component(assembly):
    widgets = _dashboard_widgets(assembly.stack("search-dev", "Monitoring"))
    body = json.dumps(widgets)
    titles = [widget["properties"].get("title", "") for widget in widgets]
    for component in _components(assembly, "search-dev"):
        assert component in body
        assert any(title.endswith(f"({component}): invocations and errors") for title in titles), component


def test_two_alarms_of_one_name_fail_synthesis_rather_than_the_deployment():
    # Given search-dev with a whole-model endpoint named like chat's base component (its alarm is chat-base-5xx too)
    from types import SimpleNamespace

    from aws_cdk import App, Environment, Stack
    from aws_cdk import aws_sns as sns

    from stacks.monitoring_stack import MonitoringStack
    from stacks.settings import load_config
    from tests.conftest import EXAMPLE_CONFIG

    (stage,) = [s for s in load_config(EXAMPLE_CONFIG) if s.qualified_name == "search-dev"]
    (assistant,) = [e for e in stage.endpoints if e.name == "assistant"]
    chat_base = assistant.model_copy(update={"name": "chat-base"})
    clash = stage.model_copy(update={"endpoints": [*stage.endpoints, chat_base]})
    app = App()
    env = Environment(account=clash.account, region=clash.region)
    data = SimpleNamespace(topic=sns.Topic(Stack(app, "Data", env=env), "TeamTopic"))  # all Monitoring uses of Data
    # When the Monitoring stack is built, then it stops, naming the alarm
    with pytest.raises(ValueError, match="search-dev-chat-base-5xx"):
        MonitoringStack(app, "Monitoring", stage=clash, data=data, env=env)
