"""The team stage's SNS topic: pipeline results, training job state changes, alarms and budget alerts."""

from __future__ import annotations

from typing import TYPE_CHECKING

import jsii
from aws_cdk import Stack
from aws_cdk import aws_events as events
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_sns as sns
from aws_cdk import aws_sns_subscriptions as subscriptions
from constructs import Construct

if TYPE_CHECKING:
    from aws_cdk.interfaces.aws_events import IRuleRef


class TeamTopic(Construct):
    """A KMS-encrypted topic, TLS-only, with the team's email subscribed.

    It lives in the Data layer because every later layer publishes to it (Training, Inference, Monitoring).
    EventBridge may publish only for this stage's rules and CloudWatch only for its alarms (confused-deputy
    conditions ``aws:SourceAccount`` and ``aws:SourceArn`` on the topic policy and on the key policy).
    """

    def __init__(
        self, scope: Construct, id_: str, *, topic_name: str, qualified_name: str, key: kms.IKey, email: str
    ) -> None:
        super().__init__(scope, id_)
        stack = Stack.of(self)
        self.topic = sns.Topic(
            self, "Topic", topic_name=topic_name, display_name=topic_name, master_key=key, enforce_ssl=True
        )
        self.topic.add_subscription(subscriptions.EmailSubscription(email))
        # Rules and alarms are named {team}-{stage}-...; the config check keeps another stage of the account from
        # extending this name with '-', so the patterns below admit this stage's sources only.
        # The topic's ARN spelled out (its name is fixed): a reference from the key policy would make key and topic
        # depend on each other.
        topic_arn = f"arn:{stack.partition}:sns:{stack.region}:{stack.account}:{topic_name}"
        rule_arns = f"arn:{stack.partition}:events:{stack.region}:{stack.account}:rule/{qualified_name}-*"
        alarm_arns = f"arn:{stack.partition}:cloudwatch:{stack.region}:{stack.account}:alarm:{qualified_name}-*"
        self.topic.add_to_resource_policy(
            iam.PolicyStatement(
                sid="EventBridgeRulesOfThisStage",
                principals=[iam.ServicePrincipal("events.amazonaws.com")],
                actions=["sns:Publish"],
                resources=[self.topic.topic_arn],
                conditions={
                    "StringEquals": {"aws:SourceAccount": stack.account},
                    "ArnLike": {"aws:SourceArn": rule_arns},
                },
            )
        )
        # CloudWatch alarms and EventBridge publish with the key; the key policy lets them use it only through SNS,
        # for this topic, on behalf of this stage's alarms and rules.
        for sid, service, source_arns in (
            ("AllowAlarmsOfThisStageToPublishToTheTeamTopic", "cloudwatch.amazonaws.com", alarm_arns),
            ("AllowRulesOfThisStageToPublishToTheTeamTopic", "events.amazonaws.com", rule_arns),
        ):
            key.add_to_resource_policy(
                iam.PolicyStatement(
                    sid=sid,
                    principals=[iam.ServicePrincipal(service)],
                    actions=["kms:Decrypt", "kms:GenerateDataKey*"],
                    resources=["*"],  # in a key policy, "*" means this key
                    conditions={
                        "StringEquals": {
                            "aws:SourceAccount": stack.account,
                            "kms:ViaService": f"sns.{stack.region}.amazonaws.com",
                            "kms:EncryptionContext:aws:sns:topicArn": topic_arn,
                        },
                        "ArnLike": {"aws:SourceArn": source_arns},
                    },
                )
            )


@jsii.implements(events.IRuleTarget)
class TeamTopicTarget:
    """An EventBridge target that publishes to the team topic.

    Unlike ``aws_events_targets.SnsTopic`` it adds no topic-policy statement of its own: :class:`TeamTopic`
    already admits EventBridge, with ``aws:SourceAccount`` and ``aws:SourceArn`` conditions the CDK target omits.
    """

    def __init__(self, topic: sns.ITopic, *, message: events.RuleTargetInput) -> None:
        self._topic, self._message = topic, message

    def bind(self, _rule: IRuleRef, _id: str | None = None) -> events.RuleTargetConfig:
        return events.RuleTargetConfig(arn=self._topic.topic_arn, input=self._message)
