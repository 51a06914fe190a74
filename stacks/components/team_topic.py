"""The team stage's SNS topic: pipeline results, training job state changes, alarms and budget alerts."""

from __future__ import annotations

from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_sns as sns
from aws_cdk import aws_sns_subscriptions as subscriptions
from constructs import Construct


class TeamTopic(Construct):
    """A KMS-encrypted topic, TLS-only, with the team's email subscribed.

    It lives in the Data layer because every later layer publishes to it (Training, Inference, Monitoring).
    """

    def __init__(self, scope: Construct, id_: str, *, topic_name: str, key: kms.IKey, email: str) -> None:
        super().__init__(scope, id_)
        self.topic = sns.Topic(self, "Topic", topic_name=topic_name, display_name=topic_name, master_key=key,
                               enforce_ssl=True)
        self.topic.add_subscription(subscriptions.EmailSubscription(email))
        # CloudWatch alarms and EventBridge publish with the key; the key policy must let them use it.
        key.add_to_resource_policy(iam.PolicyStatement(
            sid="AllowAlarmsAndEventsToPublishToTheTeamTopic",
            principals=[iam.ServicePrincipal("cloudwatch.amazonaws.com"), iam.ServicePrincipal("events.amazonaws.com")],
            actions=["kms:Decrypt", "kms:GenerateDataKey*"],
            resources=["*"],  # in a key policy, "*" means this key
        ))
