"""The team stage's customer-managed KMS key."""

from __future__ import annotations

from typing import Any

import jsii
from aws_cdk import Aspects, Duration, IAspect, RemovalPolicy, Stack
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from constructs import Construct, IConstruct

from stacks.components.cfn import cfn_resource


class TeamKey(Construct):
    """One KMS key per team stage, rotated yearly, encrypting its buckets, logs, topics and volumes.

    The key policy gives the account's administrators (through IAM) control of the key, as AWS recommends so the
    key never becomes unmanageable, and lets CloudWatch Logs use it only for this stage's log groups
    (kms:EncryptionContext:aws:logs:arn).
    """

    def __init__(self, scope: Construct, id_: str, *, qualified_name: str, removal_policy: RemovalPolicy) -> None:
        super().__init__(scope, id_)
        stack = Stack.of(self)
        self.key = kms.Key(
            self,
            "Key",
            alias=f"alias/finetune-stack/{qualified_name}",
            description=f"finetune-stack {qualified_name}: data, artifacts, logs and volumes",
            enable_key_rotation=True,
            rotation_period=Duration.days(365),
            removal_policy=removal_policy,
            pending_window=Duration.days(30),
        )
        # Every log group the key encrypts, by its anchored name pattern: `*{q}*` would also admit the groups of
        # a stage named e.g. x{q} or {q}-eu in the same account.
        log_groups = f"arn:{stack.partition}:logs:{stack.region}:{stack.account}:log-group:"
        log_group_arns = [f"{log_groups}{pattern}" for pattern in log_group_patterns(qualified_name)]
        self.key.add_to_resource_policy(
            iam.PolicyStatement(
                sid="AllowCloudWatchLogsForThisStage",
                principals=[iam.ServicePrincipal(f"logs.{stack.region}.amazonaws.com")],
                actions=["kms:Encrypt*", "kms:Decrypt*", "kms:ReEncrypt*", "kms:GenerateDataKey*", "kms:Describe*"],
                resources=["*"],  # in a key policy, "*" means this key
                conditions={"ArnLike": {"kms:EncryptionContext:aws:logs:arn": log_group_arns}},
            )
        )
        # Step Functions' encrypted log delivery makes the CDK add an unconditioned statement for
        # delivery.logs.amazonaws.com to this key; CloudWatch Logs documents aws:SourceAccount for that principal,
        # so the statement is held to deliveries of this account. (Its aws:SourceArn is the delivery's, which
        # no name of this stage predicts; an account-wide pattern would add nothing.)
        Aspects.of(self).add(_ConditionLogDelivery(self.key, {"StringEquals": {"aws:SourceAccount": stack.account}}))


def log_group_patterns(qualified_name: str) -> list[str]:
    """Names of the stage's encrypted log groups: Step Functions vended logs, Lambda functions, the stage's own
    /finetune-stack/{q}/ groups (flow logs, API access logs, hosts) and the WAF log group."""
    return [
        f"/aws/vendedlogs/states/{qualified_name}-*",
        f"/aws/lambda/{qualified_name}-*",
        f"/finetune-stack/{qualified_name}/*",
        f"aws-waf-logs-{qualified_name}-*",
    ]


LOG_DELIVERY = "delivery.logs.amazonaws.com"


@jsii.implements(IAspect)
class _ConditionLogDelivery:
    """Adds confused-deputy conditions to the key-policy statement the CDK writes for vended log delivery.

    It runs once every stack has added its statements to the key (aspects run at synthesis), and rewrites the
    key's resolved policy with the conditions on that one statement.
    """

    def __init__(self, key: kms.Key, conditions: dict[str, Any]) -> None:
        self._key, self._conditions = key, conditions

    def visit(self, node: IConstruct) -> None:
        if not isinstance(node, kms.CfnKey) or node.node.path != cfn_resource(self._key, kms.CfnKey).node.path:
            return
        document = Stack.of(node).resolve(node.key_policy)
        changed = False
        for statement in document["Statement"]:
            if statement.get("Principal") == {"Service": LOG_DELIVERY} and "Condition" not in statement:
                statement["Condition"] = self._conditions
                changed = True
        if changed:
            node.add_property_override("KeyPolicy", document)
