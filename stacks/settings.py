"""The typed, validated model of ``config/teams.yaml`` — the only place configuration is parsed.

A platform engineer edits the YAML; reviewers read it in a pull request; ``app.py`` loads it with
:func:`load_config`. Every problem in the file is reported at once, each with its path and offending value,
through :class:`ConfigError`, so a broken config never reaches the CDK constructs.

Teams hold ``defaults`` that each stage may override key by key (nested sections merge, lists replace).
"""

from __future__ import annotations

import functools
import ipaddress
import re
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from finetune import contract  # standard library only (stacks/__init__.py puts training_code on sys.path)

MANAGED_BY = "finetune-stack"
"""Value of the ``managed-by`` tag on every resource."""

SSM_PREFIX = contract.SSM_PREFIX
"""Root of the SSM parameters each stage publishes: ``/finetune-stack/{team}/{stage}/...``."""

COMPLIANCE_PACKS = ("nist-800-53-r5", "hipaa")
"""Rule packs a stage may list under ``compliance``; AwsSolutions always runs."""

# Lengths keep derived names valid: the longest is the S3 bucket `{team}-{stage}-artifacts-{account}-{region}`
# (at most 63 characters with a 14-character region).
TEAM_NAME_MAX = contract.TEAM_NAME_MAX
STAGE_NAME_MAX = contract.STAGE_NAME_MAX
_NAME_RE = re.compile(f"^{contract.NAME_PATTERN}$")
_ACCOUNT_RE = re.compile(r"^[0-9]{12}$")
_EMAIL_RE = re.compile(r"^[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}$")
# Instance type *format* only; which types exist is AWS's business, not a list we keep.
_SIZE = r"(nano|micro|small|medium|large|xlarge|[1-9][0-9]*xlarge|metal(-[1-9][0-9]*xl)?)"
_SAGEMAKER_INSTANCE_RE = re.compile(rf"^ml\.[a-z][a-z0-9-]*\.{_SIZE}$")
_EC2_INSTANCE_RE = re.compile(rf"^[a-z][a-z0-9-]*\.{_SIZE}$")
_VPC_ID_RE = re.compile(r"^vpc-([0-9a-f]{8}|[0-9a-f]{17})$")
_SUBNET_ID_RE = re.compile(r"^subnet-([0-9a-f]{8}|[0-9a-f]{17})$")
_IAM_POLICY_ARN_RE = re.compile(r"^arn:aws(-cn|-us-gov)?:iam::([0-9]{12}|aws):policy/[\w+=,.@/-]{1,512}$")
_COST_CENTER_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9 ._:/=+@-]{0,127}$")
# CloudWatch Logs accepts only these retention periods.
LOG_RETENTION_DAYS = (
    1,
    3,
    5,
    7,
    14,
    30,
    60,
    90,
    120,
    150,
    180,
    365,
    400,
    545,
    731,
    1096,
    1827,
    2192,
    2557,
    2922,
    3288,
    3653,
)


@functools.cache
def known_regions() -> frozenset[str]:
    """Every region of the commercial, China and GovCloud partitions, from botocore's offline endpoint data."""
    import botocore.loaders  # local import: only validation needs it

    endpoints = botocore.loaders.create_loader().load_data("endpoints")
    return frozenset(region for partition in endpoints["partitions"] for region in partition["regions"])


def _check(pattern: re.Pattern[str], message: str) -> AfterValidator:
    def validate(value: str) -> str:
        if not pattern.fullmatch(value):
            raise ValueError(message)
        return value

    return AfterValidator(validate)


def _check_region(value: str) -> str:
    if value not in known_regions():
        raise ValueError("is not an AWS region name (for example eu-west-1)")
    return value


def _check_retention(value: int) -> int:
    if value not in LOG_RETENTION_DAYS:
        raise ValueError(
            f"is not a CloudWatch Logs retention period (one of {', '.join(map(str, LOG_RETENTION_DAYS))})"
        )
    return value


TeamName = Annotated[
    str,
    Field(max_length=TEAM_NAME_MAX),
    _check(_NAME_RE, "is not a valid team name (lowercase letters, digits and single hyphens, starting with a letter)"),
]
StageName = Annotated[
    str,
    Field(max_length=STAGE_NAME_MAX),
    _check(
        _NAME_RE, "is not a valid stage name (lowercase letters, digits and single hyphens, starting with a letter)"
    ),
]
AccountId = Annotated[str, _check(_ACCOUNT_RE, "is not a 12-digit AWS account id")]
Region = Annotated[str, AfterValidator(_check_region)]
Email = Annotated[str, _check(_EMAIL_RE, "is not an email address")]
SageMakerInstanceType = Annotated[
    str,
    _check(_SAGEMAKER_INSTANCE_RE, "is not a SageMaker instance type (format ml.<family>.<size>, e.g. ml.g5.2xlarge)"),
]
Ec2InstanceType = Annotated[
    str, _check(_EC2_INSTANCE_RE, "is not an EC2 instance type (format <family>.<size>, e.g. g5.2xlarge)")
]
VpcId = Annotated[str, _check(_VPC_ID_RE, "is not a VPC id (vpc- and 8 or 17 hex digits)")]
SubnetId = Annotated[str, _check(_SUBNET_ID_RE, "is not a subnet id (subnet- and 8 or 17 hex digits)")]
PolicyArn = Annotated[str, _check(_IAM_POLICY_ARN_RE, "is not an IAM managed policy ARN")]
CostCenter = Annotated[str, _check(_COST_CENTER_RE, "is not a valid cost-center tag value")]
RetentionDays = Annotated[int, AfterValidator(_check_retention)]
ComplianceName = Literal["nist-800-53-r5", "hipaa"]


def _check_cidr(value: str, *, private_only: bool) -> str:
    try:
        network = ipaddress.IPv4Network(value)
    except ValueError:
        raise ValueError("is not an IPv4 CIDR block (for example 10.40.0.0/16)") from None
    if private_only and (not network.is_private or not 16 <= network.prefixlen <= 24):
        raise ValueError("must be a private range between /16 and /24")
    return value


class _Strict(BaseModel):
    """Unknown keys are errors: a typo must never pass silently."""

    model_config = ConfigDict(extra="forbid", frozen=True, str_strip_whitespace=False)


class NewVpc(_Strict):
    """A VPC this stage creates: isolated subnets only, with the endpoints training needs."""

    cidr: str = Field("10.40.0.0/16", description="IPv4 CIDR of the VPC (a /16 to /24 private range).")
    zones: int = Field(2, ge=2, le=4, description="Number of availability zones (the account's first N).")

    _cidr = field_validator("cidr")(lambda value: _check_cidr(value, private_only=True))


class ExistingVpc(_Strict):
    """A VPC the organisation already runs; nothing is looked up, so ids and zones are given here."""

    vpc_id: VpcId = Field(description="Id of the existing VPC.")
    cidr: str = Field(description="The VPC's IPv4 CIDR; interface endpoints admit HTTPS from it.")
    isolated_subnet_ids: list[SubnetId] = Field(min_length=1, description="Private subnets for training and endpoints.")
    availability_zones: list[str] = Field(min_length=1, description="AZ of each subnet, in the same order.")
    create_endpoints: bool = Field(True, description="Create the VPC endpoints training needs (false if they exist).")

    _cidr = field_validator("cidr")(lambda value: _check_cidr(value, private_only=False))

    @model_validator(mode="after")
    def _zones_match_subnets(self) -> ExistingVpc:
        if len(self.availability_zones) != len(self.isolated_subnet_ids):
            raise ValueError(
                f"lists {len(self.isolated_subnet_ids)} subnets but {len(self.availability_zones)} "
                "availability zones; give one zone per subnet"
            )
        return self


class TrainingLimits(_Strict):
    """What this team's fine-tuning jobs may ask for; the pipeline's Validate step enforces it."""

    instance_types: list[SageMakerInstanceType] = Field(
        default_factory=lambda: ["ml.g5.2xlarge"],
        min_length=1,
        description="SageMaker instance types a training job may use.",
    )
    max_instance_count: int = Field(2, ge=1, le=64, description="Most instances one training job may use.")
    max_runtime_hours: int = Field(24, ge=1, le=672, description="Longest a training job may run.")
    spot: bool = Field(True, description="Use managed spot training by default.")
    start_on_manifest: bool = Field(
        False,
        description="Start a FineTune run when datasets/<name>/<version>/manifest.json with a `run` object "
        "is uploaded to the data bucket.",
    )
    network_isolation: bool = Field(
        True,
        description="Run training jobs with SageMaker network isolation: the container reaches nothing, "
        "SageMaker alone moves data in and out. Opt out only with the reason in a comment.",
    )
    base_models: list[
        Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,95}(/[A-Za-z0-9][A-Za-z0-9._-]{0,95})?$")]
    ] = Field(
        default_factory=list,
        description="Base models this team may fine-tune: names staged under s3://<artifacts>/models/base/<name>/ "
        "(`finetune models stage`) or hub ids. Validate rejects any other.",
    )


ResourceName = Annotated[
    str,
    Field(max_length=20),
    _check(_NAME_RE, "is not a valid name (lowercase letters, digits and single hyphens, starting with a letter)"),
]
_MODEL_DATA_RE = re.compile(r"^s3://[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]/.+\.tar\.gz$")
_MODEL_PACKAGE_RE = re.compile(
    r"^arn:aws(-cn|-us-gov)?:sagemaker:[a-z0-9-]+:[0-9]{12}:model-package/[A-Za-z0-9-]{1,63}/[0-9]+$"
)
_CRON_RE = re.compile(r"^cron\([^()]+\)$")


class Serverless(_Strict):
    """Serverless inference for a classifier endpoint: pay per request, no instances."""

    memory_mb: Literal[1024, 2048, 3072, 4096, 5120, 6144] = Field(3072, description="Memory per worker.")
    max_concurrency: int = Field(5, ge=1, le=200, description="Concurrent invocations before throttling.")


_ADAPTER_ARTIFACT_RE = re.compile(r"^s3://[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]/.+\.tar\.gz$")


class LoraAdapter(_Strict):
    """One LoRA adapter served by an inference component on its base model's endpoint."""

    name: ResourceName = Field(
        description="Model name callers use for this adapter (unique among the stage's "
        "endpoints and adapters); its component is `{team}-{stage}-{endpoint}-"
        "{name}`."
    )
    artifact_url: Annotated[str, _check(_ADAPTER_ARTIFACT_RE, "is not an S3 URL of a .tar.gz")] | None = Field(
        None,
        description="The adapter artifact (a tar.gz holding adapter_config.json and the adapter weights at its "
        "root), normally s3://<artifacts>/adapters/<endpoint>/<adapter>/<job>/adapter.tar.gz. Leave "
        "it out to reserve the name: the FineTune pipeline then adds the component on the first "
        "deploy_to of this adapter.",
    )


class LoraServing(_Strict):
    """Serve the endpoint with SageMaker inference components: one base component (LMI with LoRA enabled) and
    one adapter component per adapter, all on the same instances."""

    base_model: Annotated[
        str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,95}(/[A-Za-z0-9][A-Za-z0-9._-]{0,95})?$")
    ] = Field(
        description="The base model the endpoint's model_data_url holds (a training.base_models entry): a "
        "LoRA FineTune run of this base model with deploy_to an adapter name deploys its adapter "
        "here."
    )
    adapters: list[LoraAdapter] = Field(
        default_factory=list, max_length=64, description="The adapters served next to the base model."
    )
    max_loras: int = Field(4, ge=1, le=64, description="Adapters one batch may mix (LMI OPTION_MAX_LORAS).")
    max_lora_rank: Literal[8, 16, 32, 64, 128, 256] = Field(
        16, description="Largest LoRA rank served (LMI OPTION_MAX_LORA_RANK); adapters of a higher rank fail to load."
    )
    max_cpu_loras: int = Field(16, ge=1, le=256, description="Adapters kept in host memory (OPTION_MAX_CPU_LORAS).")
    accelerators_per_copy: int = Field(1, ge=1, le=8, description="GPUs one copy of the base component uses.")
    memory_mb_per_copy: int = Field(8192, ge=1024, le=2_000_000, description="Host memory one copy reserves.")
    min_copies: int = Field(
        1,
        ge=0,
        le=100,
        description="Fewest copies of the base component; 0 scales to zero "
        "(dev stages): the first request then gets 503 with "
        "Retry-After while a copy starts.",
    )
    max_copies: int = Field(2, ge=1, le=100, description="Most copies of the base component.")

    @model_validator(mode="after")
    def _consistent(self) -> LoraServing:
        if self.min_copies > self.max_copies:
            raise ValueError(f"min_copies {self.min_copies} exceeds max_copies {self.max_copies}")
        names = [adapter.name for adapter in self.adapters]
        duplicates = sorted({name for name in names if names.count(name) > 1})
        if duplicates:
            raise ValueError(f"adapter names {duplicates} are used more than once")
        return self


class EndpointSpec(_Strict):
    """A real-time SageMaker endpoint named `{team}-{stage}-{name}`, behind the team's inference API."""

    name: ResourceName = Field(description="Short name; callers use it as `model`.")
    kind: Literal["llm", "classifier"] = Field(description="llm: LMI (vLLM) container; classifier: HF PyTorch.")
    model_data_url: Annotated[str, _check(_MODEL_DATA_RE, "is not an S3 URL of a model.tar.gz")] | None = Field(
        None, description="Model artifact: s3://<artifacts bucket>/.../model.tar.gz."
    )
    model_package_arn: (
        Annotated[str, _check(_MODEL_PACKAGE_RE, "is not a SageMaker model package version ARN")] | None
    ) = Field(None, description="An approved model package version from the team's registry.")
    instance_type: SageMakerInstanceType = Field("ml.g5.xlarge", description="Instance type of each endpoint instance.")
    min_instances: int = Field(1, ge=1, le=100, description="Autoscaling minimum.")
    max_instances: int = Field(2, ge=1, le=100, description="Autoscaling maximum.")
    invocations_per_instance: int = Field(
        60, ge=1, le=100000, description="Target SageMakerVariantInvocationsPerInstance (per minute)."
    )
    scale_down_out_of_hours: bool = Field(False, description="Scale to the minimum outside office hours (dev).")
    serverless: Serverless | None = Field(None, description="Serverless instead of instances (classifiers only).")
    data_capture_percent: int = Field(10, ge=0, le=100, description="Share of requests captured to S3 (0: off).")
    latency_alarm_seconds: float | None = Field(
        None,
        gt=0,
        le=3600,
        description="Alarm when p90 ModelLatency stays above this many seconds for 15 minutes. "
        "Default: 30 for llm, 1 for classifier.",
    )
    lora: LoraServing | None = Field(
        None,
        description="Serve this LLM endpoint with inference components: its model_data_url is the base "
        "model, and each adapter is a model name of its own (README: many LoRA adapters).",
    )

    @property
    def adapter_names(self) -> tuple[str, ...]:
        """The model names of this endpoint's LoRA adapters (none unless it is served by inference components)."""
        return tuple(adapter.name for adapter in self.lora.adapters) if self.lora else ()

    @model_validator(mode="after")
    def _consistent(self) -> EndpointSpec:
        if self.lora is not None:
            if self.kind != "llm":
                raise ValueError("lora (inference components with adapters) is only available for llm endpoints")
            if self.model_data_url is None:
                raise ValueError(
                    "lora needs model_data_url (the base model's artifact); a model package cannot "
                    "serve as a base inference component"
                )
            if self.name in self.adapter_names:
                raise ValueError(f"adapter name {self.name!r} is the endpoint's own name")
        if (self.model_data_url is None) == (self.model_package_arn is None):
            raise ValueError("needs exactly one of model_data_url or model_package_arn")
        if self.min_instances > self.max_instances:
            raise ValueError(f"min_instances {self.min_instances} exceeds max_instances {self.max_instances}")
        if self.serverless is not None and self.kind != "classifier":
            raise ValueError("serverless is only available for classifier endpoints (LLMs need GPUs)")
        return self


DATA_CAPTURE_EXPIRE_DAYS = 30
"""Default days captured requests and responses are kept (``data_capture.expire_days``)."""


class DataCapture(_Strict):
    """Endpoint data capture of a stage: prompts and completions sampled to the artifacts bucket."""

    enabled: bool = Field(
        True,
        description="Capture a share of each endpoint's requests and responses "
        "(the share is the endpoint's data_capture_percent). Stages listing "
        "hipaa must set this explicitly.",
    )
    expire_days: int = Field(
        DATA_CAPTURE_EXPIRE_DAYS,
        ge=1,
        le=3650,
        description="Days a captured request or response is kept before S3 deletes it.",
    )


class OfficeHours(_Strict):
    """When a host or dev endpoint runs; outside these hours it is stopped or scaled down."""

    start: Annotated[str, _check(_CRON_RE, "is not an EventBridge cron expression, e.g. cron(0 8 ? * MON-FRI *)")] = (
        Field("cron(0 8 ? * MON-FRI *)", description="When to start (EventBridge Scheduler cron).")
    )
    stop: Annotated[str, _check(_CRON_RE, "is not an EventBridge cron expression, e.g. cron(0 19 ? * MON-FRI *)")] = (
        Field("cron(0 19 ? * MON-FRI *)", description="When to stop.")
    )
    timezone: str = Field("UTC", pattern=r"^[A-Za-z_]+(/[A-Za-z_+-]+)*$", description="IANA time zone.")


class HostSpec(_Strict):
    """A GPU host from the Deep Learning AMI, reached by SSM Session Manager only."""

    name: ResourceName = Field(description="Host name; the instance is named `{team}-{stage}-{name}`.")
    instance_type: Ec2InstanceType = Field("g5.2xlarge", description="EC2 instance type.")
    volume_gb: int = Field(200, ge=100, le=16384, description="Root volume size (gp3, encrypted with the team key).")
    owner: Email | None = Field(None, description="Who uses the host; tagged `owner`.")
    schedule: OfficeHours | None = Field(None, description="Start and stop the host on a schedule.")
    idle_minutes: int = Field(60, ge=10, le=1440, description="Stop after GPU utilisation stays low this long.")
    idle_gpu_percent: float = Field(5.0, gt=0, lt=100, description="Below this GPU utilisation the host is idle.")


class ImageVersions(_Strict):
    """AWS Deep Learning Container versions (resolved to URIs with the SageMaker SDK's offline image_uris)."""

    pytorch_training: str = Field("2.8.0", description="PyTorch training DLC, the training image's base.")
    pytorch_training_py: str = Field("py312", description="Python of the PyTorch training DLC.")
    lmi: str = Field("0.32.0", description="Large Model Inference (DJL, vLLM backend) container for LLMs.")
    huggingface_transformers: str = Field("4.49.0", description="Hugging Face PyTorch inference: transformers.")
    huggingface_pytorch: str = Field("2.6.0", description="Hugging Face PyTorch inference: PyTorch.")
    huggingface_py: str = Field("py312", description="Hugging Face PyTorch inference: Python.")
    dlami_ssm_parameter: str = Field(
        "/aws/service/deeplearning/ami/x86_64/base-oss-nvidia-driver-gpu-ubuntu-22.04/latest/ami-id",
        pattern=r"^/aws/service/deeplearning/ami/.+",
        description="SSM parameter of the Deep Learning AMI flavour for hosts.",
    )


class StageSpec(_Strict):
    """Settings of one stage; the same keys form a team's ``defaults``. Everything is optional here and
    resolved (defaults, then the stage's own values) into :class:`StageConfig`."""

    account: AccountId | None = Field(None, description="12-digit AWS account id the stage deploys to.")
    region: Region | None = Field(None, description="AWS region the stage deploys to.")
    ephemeral: bool | None = Field(
        None, description="Destroy buckets and their objects when the stage is deleted (never on data you keep)."
    )
    compliance: list[ComplianceName] | None = Field(
        None, description="Extra cdk-nag rule packs for this stage (AwsSolutions always runs)."
    )
    budget_usd_monthly: float | None = Field(None, gt=0, le=10_000_000, description="Monthly AWS Budgets limit, USD.")
    permissions_boundary_arn: PolicyArn | None = Field(
        None, description="Managed policy applied as permissions boundary to every role in the stage."
    )
    log_retention_days: RetentionDays | None = Field(None, description="Retention of the stage's CloudWatch logs.")
    noncurrent_version_days: int | None = Field(
        None, ge=1, le=3650, description="Days a replaced or deleted object version is kept in data and artifacts."
    )
    new_vpc: NewVpc | None = Field(None, description="Create a VPC (the default when no VPC is given).")
    existing_vpc: ExistingVpc | None = Field(None, description="Use an existing VPC instead of creating one.")
    training: TrainingLimits | None = Field(None, description="Limits for training jobs.")
    auto_approve_models: bool | None = Field(
        None, description="Register models that pass the gate as Approved (else PendingManualApproval)."
    )
    images: ImageVersions | None = Field(None, description="Pinned container image versions.")
    proxy_reserved_concurrency: int | None = Field(
        None,
        ge=1,
        le=1000,
        description="Concurrent executions reserved for (and capping) the inference proxy "
        "Lambda: the most requests the stage's API serves at once. Default 20.",
    )
    data_capture: DataCapture | None = Field(
        None, description="Data capture of the stage's endpoints (default on, kept 30 days; required on hipaa stages)."
    )
    endpoints: list[EndpointSpec] | None = Field(None, description="Real-time endpoints of this stage.")
    hosts: list[HostSpec] | None = Field(None, description="GPU hosts of this stage.")


class StageConfig(_Strict):
    """One team stage, fully resolved: what the CDK constructs receive."""

    team: str
    name: str
    account: str
    region: str
    cost_center: str
    email: str
    ephemeral: bool
    compliance: tuple[ComplianceName, ...]
    budget_usd_monthly: float
    permissions_boundary_arn: str | None
    log_retention_days: int
    noncurrent_version_days: int
    vpc: NewVpc | ExistingVpc
    training: TrainingLimits
    auto_approve_models: bool
    images: ImageVersions
    proxy_reserved_concurrency: int
    data_capture: DataCapture
    endpoints: tuple[EndpointSpec, ...]
    hosts: tuple[HostSpec, ...]

    @property
    def qualified_name(self) -> str:
        """``{team}-{stage}``: the stage id and the root of every resource name."""
        return contract.qualified_name(self.team, self.name)

    @property
    def is_prod(self) -> bool:
        """Production-like stages keep their data when the stack is deleted."""
        return not self.ephemeral

    @property
    def ssm_prefix(self) -> str:
        return contract.ssm_prefix(self.team, self.name)

    @property
    def tags(self) -> dict[str, str]:
        return {"team": self.team, "stage": self.name, "cost-center": self.cost_center, "managed-by": MANAGED_BY}


# Values used where neither the team defaults nor the stage say anything.
_BUILTIN_DEFAULTS: dict[str, Any] = {
    "ephemeral": False,
    "compliance": [],
    "budget_usd_monthly": 1000.0,
    "permissions_boundary_arn": None,
    "log_retention_days": 365,
    "noncurrent_version_days": 90,
    "training": {},
    "auto_approve_models": False,
    "images": {},
    "proxy_reserved_concurrency": 20,
    "endpoints": [],
    "hosts": [],
}


class Team(_Strict):
    """A team and its stages."""

    name: TeamName = Field(description="Team name; with the stage it names every resource.")
    cost_center: CostCenter = Field(description="Value of the cost-center tag.")
    email: Email = Field(description="Team contact: budget alerts and pipeline notifications.")
    defaults: StageSpec = Field(default_factory=StageSpec, description="Settings every stage inherits.")
    stages: dict[StageName, StageSpec] = Field(min_length=1, description="The team's stages by name.")


_CONNECTION_ARN_RE = re.compile(
    r"^arn:aws(-cn|-us-gov)?:(codeconnections|codestar-connections):[a-z0-9-]+:[0-9]{12}:connection/[0-9a-f-]{36}$"
)
_REPOSITORY_RE = re.compile(r"^[A-Za-z0-9_.-]+/[A-Za-z0-9_.-]+$")
_BRANCH_RE = re.compile(r"^[A-Za-z0-9._/-]{1,255}$")


class Delivery(_Strict):
    """The optional CDK Pipelines delivery pipeline, in a tooling account, that rolls every stage out in waves."""

    enabled: bool = Field(False, description="Synthesize the delivery pipeline stack (off: the stages alone).")
    account: AccountId = Field(description="Tooling account the pipeline runs in; stage accounts trust it.")
    region: Region = Field(description="Region of the pipeline.")
    connection_arn: Annotated[str, _check(_CONNECTION_ARN_RE, "is not a CodeConnections connection ARN")] = Field(
        description="CodeConnections (CodeStar) connection to the repository host, created once in the console."
    )
    repository: Annotated[str, _check(_REPOSITORY_RE, "is not an owner/name repository")] = Field(
        description="Repository the pipeline builds, as owner/name."
    )
    branch: Annotated[str, _check(_BRANCH_RE, "is not a branch name")] = Field(
        "main", description="Branch whose pushes start the pipeline."
    )


class TeamsFile(_Strict):
    """Root of ``config/teams.yaml``."""

    teams: list[Team] = Field(min_length=1, description="Every team this platform stamps.")
    delivery: Delivery | None = Field(None, description="The delivery pipeline (optional, off by default).")


class ConfigError(Exception):
    """Every problem found in one config file; ``str()`` gives one line per problem."""

    def __init__(self, source: str, problems: Iterable[str]):
        self.source = source
        self.problems = list(problems)
        super().__init__("\n".join(f"{source}: {problem}" for problem in self.problems))


def _path(location: Iterable[str | int]) -> str:
    text = ""
    for part in location:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text or "(top level)"


def _describe(error: Mapping[str, Any]) -> str:
    """One pydantic error as `path: value problem`, in the words a config author understands."""
    location = [part for part in error["loc"] if not (isinstance(part, str) and "[" in part)]  # drop union tags
    path = _path(location)
    kind, value = error["type"], error.get("input")
    if kind == "missing":
        return f"{path}: is required"
    if kind == "extra_forbidden":
        return f"{path}: unknown key (check the spelling; config/teams.schema.json lists the keys)"
    if kind == "value_error":
        message = str(error["ctx"]["error"]) if "ctx" in error else error["msg"]
        return f"{path}: {value!r} {message}" if not isinstance(value, (dict, list)) else f"{path}: {message}"
    if kind == "too_short":
        return f"{path}: must have at least {error['ctx']['min_length']} entry"
    if kind == "literal_error":
        return f"{path}: {value!r} is not one of {error['ctx']['expected']}"
    if kind in {"string_too_long", "too_long"}:
        return f"{path}: {value!r} is too long ({error['msg'].lower()})"
    message = error["msg"].replace("Input should be", "must be")
    return f"{path}: {value!r} {message[0].lower()}{message[1:]}"


def _merge(base: Mapping[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in override.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def _merged_problems(where: str, team_where: str, values: Mapping[str, Any]) -> list[str]:
    """Problems visible only once team defaults are merged into a stage; ``values`` may be unvalidated YAML."""
    problems = []
    for required in ("account", "region"):
        if values.get(required) is None:
            problems.append(f"{where}.{required}: is required (set it on the stage or in {team_where}.defaults)")
    if values.get("new_vpc") is not None and values.get("existing_vpc") is not None:
        problems.append(f"{where}: sets both new_vpc and existing_vpc (after team defaults); keep one")
    compliance = values.get("compliance")
    capture = values.get("data_capture")
    if (
        isinstance(compliance, list)
        and "hipaa" in compliance
        and not (isinstance(capture, Mapping) and "enabled" in capture)
    ):
        problems.append(
            f"{where}.data_capture.enabled: is required on a stage that lists hipaa (captured prompts "
            "and completions may hold protected health information): set true or false on the stage "
            f"or in {team_where}.defaults"
        )
    for key in ("endpoints", "hosts"):
        items = values.get(key)
        names = [item.get("name") for item in items if isinstance(item, Mapping)] if isinstance(items, list) else []
        for duplicate in sorted({str(n) for n in names if n is not None and names.count(n) > 1}):
            problems.append(f"{where}.{key}: name {duplicate!r} is used more than once")
    # Adapters are model names next to the endpoints' own: one name must mean one model.
    endpoints = values.get("endpoints")
    endpoint_names = (
        {item.get("name") for item in endpoints if isinstance(item, Mapping)} if isinstance(endpoints, list) else set()
    )
    seen: set[str] = set()
    for item in endpoints if isinstance(endpoints, list) else []:
        lora = item.get("lora") if isinstance(item, Mapping) else None
        adapters = lora.get("adapters") if isinstance(lora, Mapping) else None
        for adapter in adapters if isinstance(adapters, list) else []:
            name = adapter.get("name") if isinstance(adapter, Mapping) else None
            if not isinstance(name, str):
                continue
            if name in endpoint_names:
                problems.append(
                    f"{where}.endpoints: adapter {name!r} of {item.get('name')!r} has the name of an "
                    "endpoint; a model name must mean one model"
                )
            elif name in seen:
                problems.append(f"{where}.endpoints: adapter name {name!r} is used by more than one endpoint")
            seen.add(name)
    return problems


def _merged_stages(teams: Any, problems: list[str]) -> Iterator[tuple[Mapping[str, Any], str, str, dict[str, Any]]]:
    """Each stage's values with the built-in and team defaults applied, as (team, stage name, where, values).

    ``teams`` is the file's ``teams`` list, validated and dumped or raw YAML. Duplicate team names and the
    problems visible only after merging go to ``problems``, and those stages are not yielded.
    """
    first_index: dict[str, int] = {}
    for index, team in enumerate(teams if isinstance(teams, list) else []):
        if not isinstance(team, Mapping):
            continue
        name = team.get("name")
        if isinstance(name, str) and name in first_index:
            problems.append(f"teams[{index}].name: {name!r} duplicates teams[{first_index[name]}].name")
            continue
        if isinstance(name, str):
            first_index[name] = index
        defaults: Mapping[str, Any] = found if isinstance(found := team.get("defaults"), Mapping) else {}
        stages: Mapping[str, Any] = found if isinstance(found := team.get("stages"), Mapping) else {}
        for stage_name, spec in stages.items():
            where = f"teams[{index}].stages.{stage_name}"
            values = _merge(_merge(_BUILTIN_DEFAULTS, defaults), spec if isinstance(spec, Mapping) else {})
            stage_problems = _merged_problems(where, f"teams[{index}]", values)
            problems += stage_problems
            if not stage_problems:
                yield team, stage_name, where, values


def resolve_stages(teams_file: TeamsFile) -> tuple[list[StageConfig], list[str]]:
    """Apply team defaults to each stage; return the stages and any problem found while resolving."""
    stages: list[StageConfig] = []
    problems: list[str] = []
    teams = teams_file.model_dump(exclude_none=True, exclude_unset=True)["teams"]
    for team, stage_name, where, values in _merged_stages(teams, problems):
        vpc = values.pop("existing_vpc", None) or values.pop("new_vpc", None) or {}
        values.pop("new_vpc", None)
        if "vpc_id" in vpc and not all(zone.startswith(values["region"]) for zone in vpc["availability_zones"]):
            problems.append(
                f"{where}: availability zones {vpc['availability_zones']} are not in region {values['region']!r}"
            )
            continue
        stages.append(
            StageConfig(
                team=team["name"],
                name=stage_name,
                cost_center=team["cost_center"],
                email=team["email"],
                vpc=ExistingVpc(**vpc) if "vpc_id" in vpc else NewVpc(**vpc),
                **{
                    key: value
                    for key, value in values.items()
                    if key not in ("compliance", "endpoints", "hosts", "data_capture")
                },
                compliance=tuple(dict.fromkeys(values["compliance"])),
                data_capture=DataCapture(**values.pop("data_capture", None) or {}),
                endpoints=tuple(EndpointSpec(**e) for e in values["endpoints"]),
                hosts=tuple(HostSpec(**h) for h in values["hosts"]),
            )
        )
    return stages, problems


def names_overlap(first: str, second: str) -> bool:
    """Whether resource-name patterns of one qualified name (``{q}-*``) also match the other's resources.

    Every stage resource is named ``{team}-{stage}`` followed by ``-`` or ``/``, so ``{q}-*`` reaches another stage
    exactly when that stage's name equals ``q`` or starts with ``q-`` (``search-dev`` and ``search-dev-eu``).
    """
    return first == second or first.startswith(f"{second}-") or second.startswith(f"{first}-")


def overlapping_stages(stages: Iterable[StageConfig]) -> list[str]:
    """Pairs of stages whose names would make one stage's IAM patterns match the other's resources.

    Two stages of one account must not overlap (IAM statements name resources by ``{team}-{stage}-*`` where no
    tag condition is available); two stages of any accounts must not share a qualified name (the CDK stage id).
    """
    problems = []
    stages = list(stages)
    for index, first in enumerate(stages):
        for second in stages[index + 1 :]:
            same_name = first.qualified_name == second.qualified_name
            if same_name or (
                first.account == second.account and names_overlap(first.qualified_name, second.qualified_name)
            ):
                problems.append(
                    f"stages {first.qualified_name!r} (team {first.team!r}, stage {first.name!r}) and "
                    f"{second.qualified_name!r} (team {second.team!r}, stage {second.name!r}) "
                    + (
                        "have the same name {team}-{stage}"
                        if same_name
                        else f"share account {first.account} and one name extends the other with '-', so the "
                        "`{team}-{stage}-*` resource patterns of one would match the other's resources"
                    )
                    + "; rename one or deploy it to another account"
                )
    return problems


class _UniqueKeyLoader(yaml.SafeLoader):
    """A YAML loader that rejects duplicate mapping keys, which plain YAML silently overwrites."""


def _construct_mapping(loader: _UniqueKeyLoader, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
    mapping: dict[Any, Any] = {}
    for key_node, value_node in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if key in mapping:
            raise yaml.constructor.ConstructorError(
                None,
                None,
                f"duplicate key {key!r} (first at line {_first_line(node, key, loader)})",
                key_node.start_mark,
            )
        mapping[key] = loader.construct_object(value_node, deep=deep)
    return mapping


def _first_line(node: yaml.MappingNode, key: Any, loader: _UniqueKeyLoader) -> int:
    for key_node, _ in node.value:
        if loader.construct_object(key_node) == key:
            line: int = key_node.start_mark.line + 1  # PyYAML's stubs type a mapping node's items as Any
            return line
    return 0


_UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def parse_config(text: str, source: str = "config/teams.yaml") -> list[StageConfig]:
    """Parse and validate the YAML text of a teams file into resolved stages, or raise :class:`ConfigError`."""
    return parse_settings(text, source)[0]


def parse_settings(text: str, source: str = "config/teams.yaml") -> tuple[list[StageConfig], Delivery | None]:
    """Parse and validate a teams file into its resolved stages and its delivery pipeline settings."""
    try:
        raw = yaml.load(text, Loader=_UniqueKeyLoader)  # safe: _UniqueKeyLoader is a SafeLoader subclass
    except yaml.MarkedYAMLError as error:
        mark = error.problem_mark or error.context_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else "unknown position"
        raise ConfigError(source, [f"{where}: {error.problem or error.context}"]) from None
    except yaml.YAMLError as error:
        raise ConfigError(source, [f"not valid YAML: {error}"]) from None
    if not isinstance(raw, dict):
        raise ConfigError(source, ["the file must be a mapping with a top-level 'teams' list"])
    try:
        teams_file = TeamsFile.model_validate(raw)
    except ValidationError as error:
        field_problems = [_describe(e) for e in error.errors()]
        # Walking the merged stages collects their problems; the stages themselves are not valid yet.
        merged_problems: list[str] = []
        list(_merged_stages(raw.get("teams"), merged_problems))
        raise ConfigError(source, field_problems + [p for p in merged_problems if p not in field_problems]) from None
    stages, problems = resolve_stages(teams_file)
    problems += overlapping_stages(stages)
    if problems:
        raise ConfigError(source, problems)
    return stages, teams_file.delivery


def load_config(path: str | Path) -> list[StageConfig]:
    """Read and validate a teams file; raise :class:`ConfigError` listing every problem."""
    return load_settings(path)[0]


def load_settings(path: str | Path) -> tuple[list[StageConfig], Delivery | None]:
    """Read and validate a teams file: its resolved stages and its delivery pipeline settings (or None)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise ConfigError(str(path), [f"cannot be read: {error}"]) from None
    return parse_settings(text, source=str(path))


def json_schema() -> dict[str, Any]:
    """The JSON schema of the teams file, committed as ``config/teams.schema.json`` for editors."""
    schema = TeamsFile.model_json_schema()
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "finetune-stack teams"
    return schema
