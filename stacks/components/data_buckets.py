"""The team stage's S3 buckets: datasets, artifacts and the access logs of both."""

from __future__ import annotations

from typing import TypedDict

from aws_cdk import Duration, RemovalPolicy
from aws_cdk import aws_kms as kms
from aws_cdk import aws_s3 as s3
from constructs import Construct

from finetune.contract import CHECKPOINTS_PREFIX
from stacks import naming
from stacks.components.acknowledgements import acknowledge
from stacks.components.cfn import cfn_resource

DATA_CAPTURE_PREFIX = "data-capture"
"""Key prefix in the artifacts bucket under which each endpoint captures requests: `data-capture/<endpoint>/`."""

_LOGS_SSE_S3 = (
    "S3 server access logging cannot deliver to a bucket whose default encryption is SSE-KMS, so the "
    "log bucket uses SSE-S3 (AES-256); the objects hold request metadata, not datasets or models."
)
_LOGS_NO_REPLICA = (
    "Access logs are an audit trail of the data buckets in this region; they are versioned and "
    "retained for the configured period, and a second copy adds cost without a recovery need."
)
_NO_REPLICA = (
    "Durability comes from S3 (eleven nines), versioning with noncurrent-version retention, and RETAIN "
    "on non-ephemeral stages. Cross-region replication is a per-team disaster-recovery choice that "
    "would copy regulated data to a second region, so it is not on by default."
)


class _CommonBucketProps(TypedDict):
    """The properties every bucket of the stage shares (spread into each ``s3.Bucket``)."""

    versioned: bool
    enforce_ssl: bool
    minimum_tls_version: float
    block_public_access: s3.BlockPublicAccess
    object_ownership: s3.ObjectOwnership
    removal_policy: RemovalPolicy
    auto_delete_objects: bool


class DataBuckets(Construct):
    """Buckets ``data`` (datasets), ``artifacts`` (base models, job outputs, checkpoints) and ``logs``.

    Data and artifacts: SSE-KMS with the team key (bucket keys on, to keep KMS calls and cost down), versioned,
    TLS only, public access blocked, server access logs to ``logs``, old versions and abandoned multipart uploads
    expired. The ``logs`` bucket uses SSE-S3 because S3 server access logging cannot write to SSE-KMS buckets.
    """

    def __init__(
        self,
        scope: Construct,
        id_: str,
        *,
        qualified_name: str,
        account: str,
        region: str,
        key: kms.IKey,
        removal_policy: RemovalPolicy,
        noncurrent_version_days: int,
        data_capture_expire_days: int,
        log_retention_days: int,
    ) -> None:
        super().__init__(scope, id_)
        auto_delete = removal_policy == RemovalPolicy.DESTROY

        def bucket_name(purpose: str) -> str:
            return naming.bucket(qualified_name, purpose, account, region)

        common = _CommonBucketProps(
            versioned=True,
            enforce_ssl=True,
            minimum_tls_version=1.2,
            block_public_access=s3.BlockPublicAccess.BLOCK_ALL,
            object_ownership=s3.ObjectOwnership.BUCKET_OWNER_ENFORCED,
            removal_policy=removal_policy,
            auto_delete_objects=auto_delete,
        )
        abort_uploads = s3.LifecycleRule(
            id="AbortIncompleteUploads", abort_incomplete_multipart_upload_after=Duration.days(7)
        )

        self.logs_bucket = s3.Bucket(
            self,
            "LogsBucket",
            bucket_name=bucket_name("logs"),
            encryption=s3.BucketEncryption.S3_MANAGED,
            lifecycle_rules=[
                abort_uploads,
                s3.LifecycleRule(
                    id="ExpireAccessLogs",
                    expiration=Duration.days(log_retention_days),
                    noncurrent_version_expiration=Duration.days(1),
                ),
            ],
            **common,
        )
        acknowledge(
            self.logs_bucket,
            {
                "AwsSolutions-S1": "This is the server-access-log destination of the stage's buckets; logging it to "
                "itself would recurse. It is TLS-only, public access is blocked, and only the S3 "
                "logging service writes to it.",
                "NIST.800.53.R5-S3DefaultEncryptionKMS": _LOGS_SSE_S3,
                "HIPAA.Security-S3DefaultEncryptionKMS": _LOGS_SSE_S3,
                "NIST.800.53.R5-S3BucketReplicationEnabled": _LOGS_NO_REPLICA,
                "HIPAA.Security-S3BucketReplicationEnabled": _LOGS_NO_REPLICA,
            },
        )

        def kms_bucket(construct_id: str, purpose: str, extra_rules: list[s3.LifecycleRule]) -> s3.Bucket:
            return s3.Bucket(
                self,
                construct_id,
                bucket_name=bucket_name(purpose),
                encryption=s3.BucketEncryption.KMS,
                encryption_key=key,
                bucket_key_enabled=True,
                server_access_logs_bucket=self.logs_bucket,
                server_access_logs_prefix=f"{purpose}/",
                lifecycle_rules=[
                    abort_uploads,
                    s3.LifecycleRule(
                        id="ExpireNoncurrentVersions",
                        noncurrent_version_expiration=Duration.days(noncurrent_version_days),
                    ),
                    *extra_rules,
                ],
                **common,
            )

        self.data_bucket = kms_bucket("DataBucket", "data", [])
        # Object events to EventBridge (a manifest upload can start a run). Set on the CfnBucket: CDK's
        # event_bridge_enabled would add a custom-resource Lambda for what CloudFormation does natively.
        cfn_resource(self.data_bucket, s3.CfnBucket).add_property_override(
            "NotificationConfiguration.EventBridgeConfiguration.EventBridgeEnabled", True
        )
        # Checkpoints only matter while a job runs or may resume; keep them a month, not forever.
        self.artifacts_bucket = kms_bucket(
            "ArtifactsBucket",
            "artifacts",
            [
                s3.LifecycleRule(id="ExpireCheckpoints", prefix=CHECKPOINTS_PREFIX, expiration=Duration.days(30)),
                # Captured prompts and completions are personal data: kept only as long as the stage's config says.
                s3.LifecycleRule(
                    id="ExpireDataCapture",
                    prefix=f"{DATA_CAPTURE_PREFIX}/",
                    expiration=Duration.days(data_capture_expire_days),
                    noncurrent_version_expiration=Duration.days(1),
                ),
            ],
        )
        for bucket in (self.data_bucket, self.artifacts_bucket):
            acknowledge(
                bucket,
                {
                    "NIST.800.53.R5-S3BucketReplicationEnabled": _NO_REPLICA,
                    "HIPAA.Security-S3BucketReplicationEnabled": _NO_REPLICA,
                },
            )
