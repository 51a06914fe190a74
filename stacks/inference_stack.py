"""Inference stack: a team stage's endpoints, the authenticated inference API in front of them, batch inference."""

from __future__ import annotations

from typing import Any

from aws_cdk import CfnOutput, RemovalPolicy, Stack
from aws_cdk import aws_ec2 as ec2
from constructs import Construct

from finetune.contract import BATCH_INFER_OUTPUT
from stacks import naming
from stacks.components import images
from stacks.components.batch_inference import BatchInference
from stacks.components.endpoints import EndpointNetwork, ModelEndpoint, ModelExecutionRole
from stacks.components.inference_api import InferenceApi, InferenceProxy
from stacks.components.inference_components import InferenceComponentEndpoint
from stacks.components.retention import log_retention
from stacks.components.sagemaker_iam import vpc_conditions
from stacks.data_stack import DataStack
from stacks.settings import OfficeHours, StageConfig
from stacks.training_stack import TrainingStack


class InferenceStack(Stack):
    """Serving for one team stage (only stamped for stages with endpoints).

    Exposes ``endpoints`` (short name -> ModelEndpoint), ``proxy`` (the inference-proxy function), ``api``
    (the REST API, stage ``api``) and ``batch`` (the BatchInfer state machine).
    """

    def __init__(
        self, scope: Construct, id_: str, *, stage: StageConfig, data: DataStack, training: TrainingStack, **kwargs: Any
    ) -> None:
        super().__init__(scope, id_, description=f"finetune-stack {stage.qualified_name}: inference", **kwargs)
        q = stage.qualified_name
        removal_policy = RemovalPolicy.DESTROY if stage.ephemeral else RemovalPolicy.RETAIN
        retention = log_retention(stage.log_retention_days)
        key = data.team_key
        # The buckets' literal names (as DataBuckets names them), so ARNs and acknowledgements read as plain text.
        artifacts_bucket_name = naming.bucket(q, "artifacts", stage.account, stage.region)
        data_bucket_name = naming.bucket(q, "data", stage.account, stage.region)

        lmi_image = images.lmi_inference(stage.region, stage.images)
        hf_gpu_image = images.huggingface_inference(stage.region, stage.images, gpu=True)
        hf_cpu_image = images.huggingface_inference(stage.region, stage.images, gpu=False)

        # Models reach nothing (network isolation); the group only gives their interfaces an identity in the VPC.
        self.model_security_group = ec2.SecurityGroup(
            self,
            "ModelSecurityGroup",
            vpc=data.network.vpc,
            allow_all_outbound=False,
            description=f"{q}: SageMaker models and batch transform jobs (HTTPS inside the VPC only)",
        )
        self.model_security_group.add_egress_rule(
            ec2.Peer.ipv4(stage.vpc.cidr), ec2.Port.tcp(443), "HTTPS to the VPC interface endpoints"
        )
        # SageMaker fetches model artifacts and batch input, and writes capture and batch output, over the models'
        # VPC interfaces: S3 through the gateway endpoint, whose addresses are the region's S3 prefix list.
        self.model_security_group.add_egress_rule(
            ec2.Peer.prefix_list(data.network.s3_prefix_list_id),
            ec2.Port.tcp(443),
            "HTTPS to S3 through the gateway endpoint",
        )
        placement = data.network.subnets
        network = EndpointNetwork(
            subnet_ids=data.network.vpc.select_subnets(
                subnet_type=placement.subnet_type, subnets=placement.subnets
            ).subnet_ids,
            security_group_ids=[self.model_security_group.security_group_id],
        )

        def image_for(kind: str, instance_type: str) -> str:
            if kind == "llm":
                return lmi_image
            return hf_cpu_image if instance_type.startswith(("ml.m", "ml.c", "ml.r", "ml.t")) else hf_gpu_image

        network_conditions = vpc_conditions(self, vpc_id=data.network.vpc.vpc_id, subnet_ids=network.subnet_ids)
        endpoint_images = {spec.name: image_for(spec.kind, spec.instance_type) for spec in stage.endpoints}
        self.model_role = ModelExecutionRole(
            self,
            "ModelExecutionRole",
            qualified_name=q,
            endpoints=stage.endpoints,
            image_uris=sorted(set(endpoint_images.values())),
            key=key,
            artifacts_bucket_name=artifacts_bucket_name,
            data_capture=stage.data_capture.enabled,
            network_conditions=network_conditions,
        )
        self.endpoints: dict[str, ModelEndpoint] = {}
        self.component_endpoints: dict[str, InferenceComponentEndpoint] = {}
        for spec in stage.endpoints:
            if spec.lora is not None:
                # A base LLM and its LoRA adapters as inference components of one endpoint.
                self.component_endpoints[spec.name] = InferenceComponentEndpoint(
                    self,
                    f"Endpoint{_pascal(spec.name)}",
                    spec=spec,
                    lora=spec.lora,
                    team=stage.team,
                    stage_name=stage.name,
                    endpoint_name=naming.endpoint(q, spec.name),
                    image_uri=endpoint_images[spec.name],
                    environment=images.serving_environment(spec.kind),
                    role=self.model_role.role,
                    key=key,
                    network=network,
                )
                self.component_endpoints[spec.name].endpoint_config.node.add_dependency(self.model_role.policy)
                continue
            self.endpoints[spec.name] = ModelEndpoint(
                self,
                f"Endpoint{_pascal(spec.name)}",
                spec=spec,
                endpoint_name=naming.endpoint(q, spec.name),
                image_uri=endpoint_images[spec.name],
                environment=images.serving_environment(spec.kind),
                role=self.model_role.role,
                key=key,
                network=network,
                capture_bucket_name=artifacts_bucket_name,
                data_capture=stage.data_capture.enabled,
                office_hours=OfficeHours(),
            )
            self.endpoints[spec.name].model.node.add_dependency(self.model_role.policy)

        self.proxy = InferenceProxy(
            self,
            "Proxy",
            qualified_name=q,
            team=stage.team,
            stage_name=stage.name,
            endpoints=stage.endpoints,
            key=key,
            vpc=data.network.vpc,
            subnets=data.network.subnets,
            vpc_cidr=stage.vpc.cidr,
            log_retention=retention,
            removal_policy=removal_policy,
            reserved_concurrency=stage.proxy_reserved_concurrency,
        )
        self.api = InferenceApi(
            self,
            "Api",
            qualified_name=q,
            function=self.proxy.function,
            key=key,
            log_retention=retention,
            removal_policy=removal_policy,
        )
        self.batch = BatchInference(
            self,
            "BatchInfer",
            qualified_name=q,
            key=key,
            topic=data.topic,
            data_bucket_name=data_bucket_name,
            artifacts_bucket_name=artifacts_bucket_name,
            model_package_group_name=training.model_package_group_name,
            subnet_ids=network.subnet_ids,
            security_group_ids=network.security_group_ids,
            gpu_image_uri=hf_gpu_image,
            cpu_image_uri=hf_cpu_image,
            team=stage.team,
            stage_name=stage.name,
            instance_types=stage.training.instance_types,
            max_instance_count=stage.training.max_instance_count,
            network_conditions=network_conditions,
            log_retention=retention,
            removal_policy=removal_policy,
        )
        # `finetune batch` starts executions here (finetune_cli/resources.py reads this output).
        CfnOutput(
            self,
            BATCH_INFER_OUTPUT,
            value=self.batch.state_machine.state_machine_arn,
            description="Start a batch inference run here (finetune batch)",
        )


def _pascal(name: str) -> str:
    return "".join(part.capitalize() for part in name.split("-"))
