"""Monitoring stack: the team stage's dashboard, its alarms (to the team topic) and its monthly budget."""

from __future__ import annotations

from typing import Any

from aws_cdk import Duration, Stack
from aws_cdk import aws_budgets as budgets
from aws_cdk import aws_cloudwatch as cloudwatch
from aws_cdk import aws_cloudwatch_actions as cw_actions
from constructs import Construct

from stacks import naming
from stacks.components import platform_metrics as metrics
from stacks.components.gpu_host import GPU_MEMORY_METRIC, GPU_METRIC
from stacks.data_stack import DataStack
from stacks.hosts_stack import HostsStack
from stacks.settings import EndpointSpec, StageConfig

# Alarm thresholds. ModelLatency is in microseconds: an LLM answer takes seconds, a classifier milliseconds.
ERROR_COUNT_THRESHOLD = 5  # per 5 minutes, for endpoint 5xx, proxy errors and API 5xx
LATENCY_P90_MICROSECONDS = {"llm": 30_000_000, "classifier": 1_000_000}
LATENCY_PERIODS = 3  # consecutive 5-minute periods above the threshold
ALARM_NAME_MAX_LENGTH = 255  # CloudWatch's limit on AlarmName

# Budget alerts: (notification type, percent of the monthly limit).
BUDGET_ALERTS = (("ACTUAL", 80), ("ACTUAL", 100), ("FORECASTED", 100))

TRAINING_WIDGET_METRICS = ("train_loss", "eval_loss", "learning_rate", "tokens_per_second")


def latency_threshold_microseconds(spec: EndpointSpec) -> float:
    """The endpoint's p90 ModelLatency alarm threshold: its own `latency_alarm_seconds`, else its kind's default."""
    if spec.latency_alarm_seconds is not None:
        return spec.latency_alarm_seconds * 1e6
    return LATENCY_P90_MICROSECONDS[spec.kind]


class MonitoringStack(Stack):
    """Dashboard, alarms and budget of one team stage. Exposes ``dashboard``, ``alarms`` (name -> Alarm), ``budget``.

    Metrics come from the deterministic names in :mod:`stacks.naming`, never from the Training or Inference
    constructs; only the hosts' instance ids are references (of the Hosts stack, when the stage has hosts).
    """

    def __init__(
        self,
        scope: Construct,
        id_: str,
        *,
        stage: StageConfig,
        data: DataStack,
        hosts: HostsStack | None = None,
        **kwargs: Any,
    ) -> None:
        for layer in ("training", "inference"):  # accepted for the stage's uniform wiring; not referenced
            kwargs.pop(layer, None)
        super().__init__(scope, id_, description=f"finetune-stack {stage.qualified_name}: monitoring", **kwargs)
        q = stage.qualified_name
        self.alarms: dict[str, cloudwatch.Alarm] = {}
        notify = cw_actions.SnsAction(data.topic)

        def alarm(
            construct_id: str,
            name: str,
            description: str,
            metric: cloudwatch.IMetric,
            threshold: float,
            periods: int = 1,
            comparison: cloudwatch.ComparisonOperator = (
                cloudwatch.ComparisonOperator.GREATER_THAN_OR_EQUAL_TO_THRESHOLD
            ),
        ) -> cloudwatch.Alarm:
            alarm_name = f"{q}-{name}"
            # CloudFormation would only fail at deploy time: two alarms of one name (an endpoint named like a
            # LoRA endpoint's component, `chat-base` next to `chat`), or a name CloudWatch refuses.
            if name in self.alarms:
                raise ValueError(f"two alarms of {q} are named {alarm_name}: rename an endpoint or adapter")
            if len(alarm_name) > ALARM_NAME_MAX_LENGTH:
                raise ValueError(f"alarm name {alarm_name} is longer than {ALARM_NAME_MAX_LENGTH} characters")
            created = cloudwatch.Alarm(
                self,
                construct_id,
                alarm_name=alarm_name,
                alarm_description=description,
                metric=metric,
                threshold=threshold,
                evaluation_periods=periods,
                datapoints_to_alarm=periods,
                comparison_operator=comparison,
                treat_missing_data=cloudwatch.TreatMissingData.NOT_BREACHING,
            )
            created.add_alarm_action(notify)
            created.add_ok_action(notify)
            self.alarms[name] = created
            return created

        def latency_alarm(
            construct_id: str, name: str, subject: str, metric: cloudwatch.IMetric, spec: EndpointSpec
        ) -> cloudwatch.Alarm:
            """p90 ModelLatency above the endpoint's threshold for LATENCY_PERIODS five-minute periods."""
            threshold = latency_threshold_microseconds(spec)
            return alarm(
                construct_id,
                name,
                f"{subject}: p90 ModelLatency above {threshold / 1e6:g} s for {LATENCY_PERIODS * 5} minutes.",
                metric,
                threshold,
                periods=LATENCY_PERIODS,
                comparison=cloudwatch.ComparisonOperator.GREATER_THAN_THRESHOLD,
            )

        def component_rows(spec: EndpointSpec) -> list[list[cloudwatch.IWidget]]:
            """A LoRA endpoint's rows and alarms, one row per inference component: the base, then each adapter.

            SageMaker publishes these per component (`InferenceComponentName` alone), not per endpoint variant.
            Adapters reserved without an artifact are watched too: the FineTune pipeline creates their components
            under the same names, and until then their metrics are missing, which the alarms treat as not breaching.
            Copies and utilisation belong to the base: adapters run inside its copies and reserve nothing.
            """
            rows: list[list[cloudwatch.IWidget]] = []
            for adapter in (None, *spec.adapter_names):
                component = naming.inference_component(q, spec.name, adapter)
                short = component.removeprefix(f"{q}-")  # so the alarms are named `{component}-5xx`, `-latency`
                model = f"{adapter or spec.name} ({component})"
                invocations = [
                    metrics.component(q, spec.name, adapter, name)
                    for name in ("Invocations", "Invocation4XXErrors", "Invocation5XXErrors")
                ]
                latency = [
                    metrics.component(q, spec.name, adapter, "ModelLatency", cloudwatch.Stats.percentile(90)),
                    # SageMaker documents no percentiles for OverheadLatency.
                    metrics.component(q, spec.name, adapter, "OverheadLatency", cloudwatch.Stats.AVERAGE),
                ]
                width = 12 if adapter else 6
                row: list[cloudwatch.IWidget] = [
                    cloudwatch.GraphWidget(title=f"{model}: invocations and errors", left=invocations, width=width),
                    cloudwatch.GraphWidget(
                        title=f"{adapter or spec.name}: ModelLatency p90, OverheadLatency average (microseconds)",
                        left=latency,
                        width=width,
                    ),
                ]
                if adapter is None:
                    row.append(
                        cloudwatch.GraphWidget(
                            title=f"{spec.name}: copies", left=[metrics.component_copies(q, spec.name)], width=6
                        )
                    )
                    row.append(
                        cloudwatch.GraphWidget(
                            title=f"{spec.name}: utilisation per copy (% of its reservation)",
                            left=[
                                metrics.component(q, spec.name, None, name, cloudwatch.Stats.AVERAGE)
                                for name in metrics.COMPONENT_UTILISATION_METRICS
                            ],
                            left_y_axis=cloudwatch.YAxisProps(min=0, max=100),
                            width=6,
                        )
                    )
                rows.append(row)
                construct_id = f"Component{short.title().replace('-', '')}"
                alarm(
                    f"{construct_id}5xxAlarm",
                    f"{short}-5xx",
                    f"Inference component {component} (model {adapter or spec.name} on endpoint "
                    f"{naming.endpoint(q, spec.name)}) returned {ERROR_COUNT_THRESHOLD} or more 5xx errors "
                    "in 5 minutes.",
                    invocations[2],
                    ERROR_COUNT_THRESHOLD,
                )
                if adapter is None:
                    latency_alarm(
                        f"{construct_id}LatencyAlarm",
                        f"{short}-latency",
                        f"Inference component {component} (base model of endpoint {naming.endpoint(q, spec.name)})",
                        latency[0],
                        spec,
                    )
            return rows

        # The pipeline.
        executions = [
            metrics.fine_tune(self, q, name)
            for name in (
                "ExecutionsStarted",
                "ExecutionsSucceeded",
                "ExecutionsFailed",
                "ExecutionsTimedOut",
                "ExecutionsAborted",
            )
        ]
        alarm(
            "FineTuneFailedAlarm",
            "finetune-failed",
            f"A FineTune execution of {q} failed, timed out or was aborted; the team topic has the cause.",
            cloudwatch.MathExpression(
                expression="failed + timedOut + aborted",
                label="FineTune failures",
                period=metrics.FIVE_MINUTES,
                using_metrics={"failed": executions[2], "timedOut": executions[3], "aborted": executions[4]},
            ),
            threshold=1,
        )
        widgets: list[list[cloudwatch.IWidget]] = [
            [
                cloudwatch.TextWidget(
                    markdown=(
                        f"# {q}\nFineTune pipeline `{naming.fine_tune_state_machine(q)}`, training jobs, "
                        f"endpoints, inference API and GPU hosts. Alarms notify `{naming.team_topic(q)}`."
                    ),
                    width=24,
                    height=2,
                )
            ],
            [
                cloudwatch.GraphWidget(title="FineTune executions", left=executions, width=12, stacked=False),
                cloudwatch.AlarmStatusWidget(title="Alarms", alarms=[], width=12),
            ],  # filled in below
            [
                cloudwatch.GraphWidget(title=f"Training: {name}", left=[metrics.training_search(name)], width=6)
                for name in TRAINING_WIDGET_METRICS
            ],
        ]

        # Endpoints and the inference API (only where the stage has endpoints).
        for spec in stage.endpoints:
            if spec.lora is not None:
                widgets.extend(component_rows(spec))
                continue
            invocations = [
                metrics.endpoint(q, spec.name, name)
                for name in ("Invocations", "Invocation4XXErrors", "Invocation5XXErrors", "ModelSetupTime")
                if not (name == "ModelSetupTime" and spec.serverless is None)
            ]
            latency = [
                metrics.endpoint(q, spec.name, name, cloudwatch.Stats.percentile(90))
                for name in ("ModelLatency", "OverheadLatency")
            ]
            row: list[cloudwatch.IWidget] = [
                cloudwatch.GraphWidget(title=f"{spec.name}: invocations and errors", left=invocations, width=8),
                cloudwatch.GraphWidget(title=f"{spec.name}: latency p90 (microseconds)", left=latency, width=8),
            ]
            if spec.serverless is None:
                row.append(
                    cloudwatch.GraphWidget(
                        title=f"{spec.name}: instances", left=[metrics.endpoint_instances(q, spec.name)], width=8
                    )
                )
            widgets.append(row)
            alarm(
                f"Endpoint{spec.name.title().replace('-', '')}5xxAlarm",
                f"{spec.name}-5xx",
                f"Endpoint {naming.endpoint(q, spec.name)} returned {ERROR_COUNT_THRESHOLD} or more 5xx errors "
                "in 5 minutes.",
                invocations[2],
                ERROR_COUNT_THRESHOLD,
            )
            latency_alarm(
                f"Endpoint{spec.name.title().replace('-', '')}LatencyAlarm",
                f"{spec.name}-latency",
                f"Endpoint {naming.endpoint(q, spec.name)}",
                latency[0],
                spec,
            )
        if stage.endpoints:
            widgets.append(
                [
                    cloudwatch.GraphWidget(
                        title="Inference proxy: errors and throttles",
                        width=8,
                        left=[
                            metrics.proxy(q, "Invocations"),
                            metrics.proxy(q, "Errors"),
                            metrics.proxy(q, "Throttles"),
                        ],
                    ),
                    cloudwatch.GraphWidget(
                        title="Inference proxy: duration (ms)",
                        width=8,
                        left=[
                            metrics.proxy(q, "Duration", cloudwatch.Stats.percentile(50)),
                            metrics.proxy(q, "Duration", cloudwatch.Stats.percentile(99)),
                        ],
                    ),
                    cloudwatch.GraphWidget(
                        title="Inference API: requests, 4xx, 5xx",
                        width=8,
                        left=[metrics.api(q, "Count"), metrics.api(q, "4XXError"), metrics.api(q, "5XXError")],
                    ),
                ]
            )
            alarm(
                "ProxyErrorsAlarm",
                "proxy-errors",
                f"The inference proxy {naming.inference_proxy_function(q)} failed {ERROR_COUNT_THRESHOLD} or "
                "more times in 5 minutes.",
                metrics.proxy(q, "Errors"),
                ERROR_COUNT_THRESHOLD,
            )
            alarm(
                "Api5xxAlarm",
                "api-5xx",
                f"The inference API {naming.inference_api(q)} returned {ERROR_COUNT_THRESHOLD} or more 5xx "
                "responses in 5 minutes.",
                metrics.api(q, "5XXError"),
                ERROR_COUNT_THRESHOLD,
            )

        # GPU hosts.
        if hosts is not None:
            widgets.append(
                [
                    cloudwatch.GraphWidget(
                        title=f"Host {host.host_name}: GPU utilisation (%)",
                        width=12,
                        left_y_axis=cloudwatch.YAxisProps(min=0, max=100),
                        left=[
                            metrics.host_gpu(host.instance.instance_id, host.host_name, GPU_METRIC),
                            metrics.host_gpu(host.instance.instance_id, host.host_name, GPU_MEMORY_METRIC),
                        ],
                        left_annotations=[
                            cloudwatch.HorizontalAnnotation(
                                value=spec.idle_gpu_percent, label=f"idle below {spec.idle_gpu_percent:g}%"
                            )
                        ],
                    )
                    for spec in stage.hosts
                    for host in [hosts.hosts[spec.name]]
                ]
            )

        widgets[1][1] = cloudwatch.AlarmStatusWidget(title="Alarms", alarms=list(self.alarms.values()), width=12)
        self.dashboard = cloudwatch.Dashboard(
            self, "Dashboard", dashboard_name=q, widgets=widgets, default_interval=Duration.hours(24)
        )

        self.budget = budgets.CfnBudget(
            self,
            "Budget",
            budget=budgets.CfnBudget.BudgetDataProperty(
                budget_name=f"{q}-monthly",
                budget_type="COST",
                time_unit="MONTHLY",
                budget_limit=budgets.CfnBudget.SpendProperty(amount=stage.budget_usd_monthly, unit="USD"),
            ),
            notifications_with_subscribers=[
                budgets.CfnBudget.NotificationWithSubscribersProperty(
                    notification=budgets.CfnBudget.NotificationProperty(
                        notification_type=kind,
                        comparison_operator="GREATER_THAN",
                        threshold=percent,
                        threshold_type="PERCENTAGE",
                    ),
                    subscribers=[budgets.CfnBudget.SubscriberProperty(subscription_type="EMAIL", address=stage.email)],
                )
                for kind, percent in BUDGET_ALERTS
            ],
        )
