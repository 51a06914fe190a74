"""One team stage: the stacks `cdk deploy '{team}-{stage}/*'` builds, with governance applied to all of them."""

from __future__ import annotations

import jsii
from aws_cdk import Aspects, CfnResource, Environment, IAspect, Stage, Tags
from aws_cdk import aws_iam as iam
from constructs import Construct, IConstruct

from stacks.data_stack import DataStack
from stacks.hosts_stack import HostsStack
from stacks.inference_stack import InferenceStack
from stacks.monitoring_stack import MonitoringStack
from stacks.rule_packs import register_rule_packs
from stacks.settings import StageConfig
from stacks.training_stack import TrainingStack


class TeamStage(Stage):
    """The stacks of one team stage, in its own account and region.

    Every resource carries the tags ``team``, ``stage``, ``cost-center`` and ``managed-by``; every role gets the
    configured permissions boundary; the AwsSolutions pack, and the packs the stage lists under ``compliance``,
    check every resource, and an unacknowledged finding fails synthesis.
    """

    def __init__(self, scope: Construct, *, stage: StageConfig) -> None:
        super().__init__(scope, stage.qualified_name, env=Environment(account=stage.account, region=stage.region))
        self.config = stage
        # Stacks are named `{team}-{stage}-{Layer}` so two teams never collide in one account.
        name = stage.qualified_name
        self.data = DataStack(self, "Data", stage=stage, stack_name=f"{name}-data")
        self.training = TrainingStack(self, "Training", stage=stage, data=self.data, stack_name=f"{name}-training")
        self.inference = (
            InferenceStack(
                self, "Inference", stage=stage, data=self.data, training=self.training, stack_name=f"{name}-inference"
            )
            if stage.endpoints
            else None
        )
        self.hosts = (
            HostsStack(self, "Hosts", stage=stage, data=self.data, training=self.training, stack_name=f"{name}-hosts")
            if stage.hosts
            else None
        )
        self.monitoring = MonitoringStack(
            self,
            "Monitoring",
            stage=stage,
            data=self.data,
            training=self.training,
            inference=self.inference,
            hosts=self.hosts,
            stack_name=f"{name}-monitoring",
        )

        for key, value in stage.tags.items():
            Tags.of(self).add(key, value)
        if stage.permissions_boundary_arn:
            iam.PermissionsBoundary.of(self).apply(
                iam.ManagedPolicy.from_managed_policy_arn(self, "PermissionsBoundary", stage.permissions_boundary_arn)
            )

        register_rule_packs(self, stage.compliance)
        Aspects.of(self).add(CdkProviderGovernance(stage.tags))


@jsii.implements(IAspect)
class CdkProviderGovernance:
    """Governance for the raw resources of aws-cdk-lib's own custom-resource providers.

    The providers behind S3 auto-delete and the VPC default-security-group restriction are plain CfnResources
    without a tag manager, so ``Tags.of`` misses them: their role and handler get the stage's tags here.
    Their handler also carries a DependsOn on its role that a GetAtt of the same role already implies (cfn-lint
    W3005); it is harmless and not ours to change, so the template acknowledges it on exactly those resources.
    """

    def __init__(self, tags: dict[str, str]) -> None:
        self._tags = [{"Key": key, "Value": value} for key, value in sorted(tags.items())]

    def visit(self, node: IConstruct) -> None:
        if not isinstance(node, CfnResource) or "CustomResourceProvider" not in node.node.path:
            return
        if node.cfn_resource_type in ("AWS::IAM::Role", "AWS::Lambda::Function"):
            node.add_property_override("Tags", self._tags)
        if node.cfn_resource_type == "AWS::Lambda::Function":
            node.add_metadata("cfn-lint", {"config": {"ignore_checks": ["W3005"]}})
