"""The delivery pipeline: CDK Pipelines in a tooling account, rolling every team stage out in waves.

Source (the repository branch, through a CodeConnections connection) -> Synth (`make synth`: the same rule packs
and cfn-lint as a developer's machine, so a finding stops the rollout) -> the pipeline updates itself -> assets
(the training image, Lambda code) -> every non-production stage, in parallel -> a manual approval -> every
production stage. Stage accounts trust the tooling account through their CDK bootstrap (`cdk bootstrap --trust`),
so the pipeline deploys with the bootstrap roles of each account and holds no credentials of its own.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from aws_cdk import Environment, Stack, Stage, pipelines
from aws_cdk import aws_codebuild as codebuild
from aws_cdk import aws_codepipeline as codepipeline
from aws_cdk import aws_ecr as ecr
from aws_cdk import aws_s3 as s3
from constructs import Construct, IConstruct

from stacks.components.acknowledgements import acknowledge
from stacks.components.cfn import cfn_resource
from stacks.components.images import pytorch_training, registry_account
from stacks.settings import Delivery, StageConfig

SYNTH_COMMANDS = ("make synth",)
"""What the synth step runs: exactly the developer's command, so the pipeline checks what `make synth` checks."""

NON_PRODUCTION_WAVE = "NonProduction"
PRODUCTION_WAVE = "Production"
APPROVAL_STEP = "PromoteToProduction"


class DeliveryPipelineStack(Stack):
    """The CDK Pipelines pipeline of the whole platform, in the tooling account named by ``delivery``.

    ``stages`` pairs each team stage's config with its :class:`~stacks.team_stage.TeamStage` (created at app
    scope, as CDK Pipelines requires). Ephemeral stages form the non-production wave; the others the production
    wave, behind one manual approval.
    """

    def __init__(
        self,
        scope: Construct,
        id_: str,
        *,
        delivery: Delivery,
        stages: Sequence[tuple[StageConfig, Stage]],
        **kwargs: Any,
    ) -> None:
        super().__init__(scope, id_, env=Environment(account=delivery.account, region=delivery.region), **kwargs)
        source = pipelines.CodePipelineSource.connection(
            delivery.repository, delivery.branch, connection_arn=delivery.connection_arn
        )
        self.synth_step = pipelines.CodeBuildStep(
            "Synth",
            input=source,
            # make synth installs the pinned Python and Node environments itself (requirements*.txt,
            # package-lock.json), exactly as on a developer's machine and in CI.
            install_commands=["python3 --version", "npm --version"],
            commands=list(SYNTH_COMMANDS),
            primary_output_directory="cdk.out",
        )
        regions = sorted({config.region for config, _ in stages})
        self.pipeline = pipelines.CodePipeline(
            self,
            "Pipeline",
            pipeline_name="finetune-stack-delivery",
            synth=self.synth_step,
            # Cross-account deployments: artifacts are encrypted with a key the stage accounts' bootstrap roles
            # may use, rotated yearly.
            cross_account_keys=True,
            enable_key_rotation=True,
            code_build_defaults=pipelines.CodeBuildOptions(
                build_environment=codebuild.BuildEnvironment(
                    build_image=codebuild.LinuxBuildImage.STANDARD_7_0,
                    compute_type=codebuild.ComputeType.MEDIUM,
                )
            ),
            synth_code_build_defaults=pipelines.CodeBuildOptions(
                partial_build_spec=codebuild.BuildSpec.from_object(
                    {"phases": {"install": {"runtime-versions": {"python": "3.11"}}}}
                )
            ),
            # The training image is built FROM the region's AWS Deep Learning Container: its registry needs a
            # login before `docker build` in the asset publishing step.
            docker_credentials=[
                pipelines.DockerCredential.ecr(
                    [
                        ecr.Repository.from_repository_arn(
                            self,
                            f"DeepLearningContainers{region.replace('-', '').title()}",
                            f"arn:aws:ecr:{region}:{registry}:repository/pytorch-training",
                        )
                        for region, registry in sorted(
                            {
                                (config.region, registry_account(pytorch_training(config.region, config.images)))
                                for config, _ in stages
                            }
                        )
                    ]
                )
            ]
            if regions
            else None,
        )
        non_production = [stage for config, stage in stages if config.ephemeral]
        production = [stage for config, stage in stages if not config.ephemeral]
        self.waves: list[pipelines.Wave] = []
        if non_production:
            wave = self.pipeline.add_wave(NON_PRODUCTION_WAVE)
            for stage in non_production:
                wave.add_stage(stage)
            self.waves.append(wave)
        if production:
            wave = self.pipeline.add_wave(
                PRODUCTION_WAVE,
                pre=[
                    pipelines.ManualApprovalStep(
                        APPROVAL_STEP,
                        comment="Non-production stages are deployed. Approve to deploy production: "
                        + ", ".join(stage.stage_name for stage in production),
                    )
                ],
            )
            for stage in production:
                wave.add_stage(stage)
            self.waves.append(wave)
        # Build now, so the rule packs and the tests see the CodePipeline and its CodeBuild projects.
        self.pipeline.build_pipeline()
        self._acknowledge_generated_resources()
        # Two cfn-lint findings on the generated pipeline resource, acknowledged on exactly that resource:
        # W3005, a DependsOn on its role that the GetAtt of the same role already implies (harmless); and E3703,
        # which checks each deploy action's RoleArn and reports its informational "Prefer using Fn::Sub over
        # Fn::Join" (I1022) on aws-cdk-lib's Fn::Join role ARNs under its own error id. A test lints the resource
        # without this metadata and checks that those are the only E3703 findings.
        cfn_resource(self.pipeline.pipeline, codepipeline.CfnPipeline).add_metadata(
            "cfn-lint", {"config": {"ignore_checks": ["W3005", "E3703"]}}
        )

    def _acknowledge_generated_resources(self) -> None:
        """CDK Pipelines generates the pipeline's roles, bucket and key; their findings are acknowledged here, each
        on the one policy it concerns, finding by finding, with what the wildcard covers."""
        code_pipeline = self.pipeline.pipeline
        acknowledge(
            code_pipeline.artifact_bucket,
            {
                "AwsSolutions-S1": "The pipeline's artifact bucket holds only build inputs and outputs (source zip, "
                "cloud assembly) that are rebuilt from the repository on every run; it is "
                "KMS-encrypted, TLS-only and private, and CloudTrail records who reads it.",
            },
        )
        # Finding ids name resources as cdk-nag renders them: <LogicalId.Arn> for a GetAtt, <LogicalId> for a Ref.
        bucket_id = self.get_logical_id(cfn_resource(code_pipeline.artifact_bucket, s3.CfnBucket))
        artifacts = {f"AwsSolutions-IAM5[Resource::<{bucket_id}.Arn>/*]": _ARTIFACT_OBJECTS}
        read_artifacts = {
            **artifacts,
            **{
                f"AwsSolutions-IAM5[Action::{action}]": _ARTIFACT_OBJECTS
                for action in ("s3:GetBucket*", "s3:GetObject*", "s3:List*")
            },
        }
        write_artifacts = {
            **read_artifacts,
            **{
                f"AwsSolutions-IAM5[Action::{action}]": _ARTIFACT_OBJECTS
                for action in ("s3:Abort*", "s3:DeleteObject*")
            },
        }
        artifact_key = {
            f"AwsSolutions-IAM5[Action::{action}]": _ARTIFACT_KEY
            for action in ("kms:GenerateDataKey*", "kms:ReEncrypt*")
        }
        where = f"{self.region}:{self.account}"

        def project_logs(project: codebuild.IProject) -> dict[str, str]:
            name = f"<{self.get_logical_id(cfn_resource(project, codebuild.CfnProject))}>"
            return {
                f"AwsSolutions-IAM5[Resource::arn:aws:logs:{where}:log-group:/aws/codebuild/{name}:*]": _PROJECT_LOGS,
                f"AwsSolutions-IAM5[Resource::arn:aws:codebuild:{where}:report-group/{name}-*]": _PROJECT_LOGS,
            }

        for support in code_pipeline.cross_region_support.values():
            acknowledge(support.replication_bucket, {"AwsSolutions-S1": _REPLICATION_NO_ACCESS_LOG})
        replication = {
            (
                f"AwsSolutions-IAM5[Resource::arn:aws:s3:::{self.resolve(support.replication_bucket.bucket_name)}/*]"
            ): _REPLICATION
            for support in code_pipeline.cross_region_support.values()
        }
        asset_projects = {
            f"AwsSolutions-IAM5[Resource::arn:aws:logs:{where}:log-group:/aws/codebuild/*]": _ASSET_PROJECTS,
            f"AwsSolutions-IAM5[Resource::arn:aws:codebuild:{where}:report-group/*]": _ASSET_PROJECTS,
            "AwsSolutions-IAM5[Resource::*]": _ASSET_PROJECTS,
        }
        findings_by_role: dict[IConstruct, dict[str, str]] = {
            code_pipeline.role: {
                **write_artifacts,
                **artifact_key,
                **replication,
                "AwsSolutions-IAM5[Resource::*]": _REPLICATION_KEY,
            },
            self._source_action_role(): {**write_artifacts, **artifact_key},
            _role(self.pipeline.synth_project): {
                **write_artifacts,
                **artifact_key,
                **project_logs(self.pipeline.synth_project),
                "AwsSolutions-IAM5[Resource::*]": _ECR_LOGIN,
            },
            _role(self.pipeline.self_mutation_project): {
                **read_artifacts,
                **artifact_key,
                **project_logs(self.pipeline.self_mutation_project),
                f"AwsSolutions-IAM5[Resource::arn:*:iam::{self.account}:role/*]": _SELF_MUTATION_ROLES,
                "AwsSolutions-IAM5[Resource::*]": _SELF_MUTATION_READS,
            },
        }
        for role_id in ("FileRole", "DockerRole"):
            role = self.pipeline.node.find_child("Assets").node.try_find_child(role_id)
            if role is not None:
                findings_by_role[role] = {**read_artifacts, **asset_projects}
        for role, findings in findings_by_role.items():
            acknowledge(role.node.find_child("DefaultPolicy"), findings)

    def _source_action_role(self) -> IConstruct:
        """The role of the source action (its construct id is the repository name with `/` as `_`)."""
        source_stage = self.pipeline.pipeline.node.find_child("Source")
        [action] = source_stage.node.children
        return action.node.find_child("CodePipelineActionRole")


def _role(project: codebuild.IProject) -> IConstruct:
    """The role of a project CDK Pipelines generated (it always makes one; ``IProject.role`` is optional)."""
    if project.role is None:
        raise TypeError(f"{project.node.path}: a generated CodeBuild project without a role")
    return project.role


_ARTIFACT_OBJECTS = (
    "Generated by CDK Pipelines: S3 action families (GetObject*, GetBucket*, List*, Abort*, "
    "DeleteObject*) on the objects of the pipeline's own artifact bucket, where every action "
    "reads its input and writes its output; no other bucket is granted."
)
_ARTIFACT_KEY = (
    "Generated by CDK Pipelines: data-key actions (GenerateDataKey*, ReEncrypt*) on the pipeline's own "
    "artifact key, which encrypts what the stage accounts' deploy roles read; no other key."
)
_REPLICATION = (
    "Generated by CDK Pipelines: objects of the pipeline's replication bucket in a stage's region, "
    "where CodePipeline copies artifacts for deploy actions in that region."
)
_REPLICATION_NO_ACCESS_LOG = (
    "CodePipeline's replication bucket for a stage in another region holds copies of pipeline artifacts for the "
    "length of a run; it is KMS-encrypted and private like the artifact bucket, and CloudTrail records its use."
)
_REPLICATION_KEY = (
    "Generated by CDK Pipelines: the replication bucket's key in another region is referenced by "
    "alias, so the KMS statement names '*'; that key's policy admits only this tooling account and "
    "the stage's CDK deploy role."
)
_PROJECT_LOGS = (
    "Generated by CDK Pipelines for this CodeBuild project: the log streams of its own log group "
    "(/aws/codebuild/<project>:*) and its own report groups (<project>-*)."
)
_ECR_LOGIN = (
    "ecr:GetAuthorizationToken has no resource-level permissions in IAM, so it is granted on '*', to log "
    "in to the AWS Deep Learning Containers registry the training image is built FROM."
)
_ASSET_PROJECTS = (
    "Generated by CDK Pipelines for the asset publishing projects, whose names are generated: their "
    "log groups and report groups in this account and region, codebuild:StartBuild to run them and "
    "ecr:GetAuthorizationToken (no resource-level permissions); they publish through the stage "
    "accounts' CDK bootstrap publishing roles, the only roles they may assume."
)
_SELF_MUTATION_ROLES = (
    "The self-mutation step assumes only roles of the tooling account that carry the CDK "
    "bootstrap tag of a deploy or publishing role (an iam:ResourceTag condition on the grant)."
)
_SELF_MUTATION_READS = (
    "The self-mutation step reads stack status (cloudformation:DescribeStacks), lists buckets "
    "and logs in to ECR, which `cdk deploy` of the pipeline stack needs; none of these "
    "actions has resource-level permissions narrower than '*' for what CDK asks."
)
