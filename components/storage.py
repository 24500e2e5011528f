"""Storage: the temporary DICOM bucket, the long-lived results bucket and their access-log bucket.

Every bucket: public access blocked, object ownership enforced (no ACLs), TLS-only bucket policy,
server-side encryption (SSE-S3, or SSE-KMS with a given or created key), server access logging
(the log bucket itself uses SSE-S3, the only encryption S3 log delivery supports).
The DICOM bucket is a staging area: lifecycle rules expire what HealthImaging already holds.
The results bucket is versioned, kept long, and optionally replicated to a second region.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pulumi
import pulumi_aws as aws

from components.iam import account_administers, allow, document, kms_use, logs_encrypt, service_role, tls_only
from core.contracts import IMPORTED_TAG
from core.layout import BATCHES_PREFIX, INCOMING_PREFIX, QUARANTINE_PREFIX
from core.stack_settings import StorageSettings


@dataclass
class StorageArgs:
    settings: StorageSettings
    account_id: pulumi.Input[str]
    tags: dict[str, str] | None = None  # the stack's default tags, also on the replica region's provider
    # The created key also encrypts log groups (storageKmsAllStores): its policy must let CloudWatch Logs.
    key_for_logs: bool = False
    region: pulumi.Input[str] = ""
    partition: pulumi.Input[str] = "aws"


class Storage(pulumi.ComponentResource):
    dicom_bucket: aws.s3.Bucket
    results_bucket: aws.s3.Bucket
    log_bucket: aws.s3.Bucket
    kms_key_arn: pulumi.Output[str] | None  # None: SSE-S3

    def __init__(self, name: str, args: StorageArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("dicom-ingest:index:Storage", name, None, opts)
        self._settings = settings = args.settings
        self._account_id = args.account_id
        self._tags = dict(args.tags or {})
        self._versioning: dict[str, aws.s3.BucketVersioning] = {}  # replication needs versioning first

        self.kms_key = None
        self.kms_key_arn = None
        if settings.encryption == "sse-kms":
            if settings.kms_key_arn:
                self.kms_key_arn = pulumi.Output.from_input(settings.kms_key_arn)
            else:
                policy = None
                if args.key_for_logs:
                    policy = document(
                        [
                            account_administers(args.account_id, args.partition),
                            logs_encrypt(args.region, args.account_id, args.partition),
                        ]
                    )
                self.kms_key = aws.kms.Key(
                    f"{name}-key",
                    description="DICOM gateway data stores",
                    enable_key_rotation=True,
                    deletion_window_in_days=30,
                    policy=policy,
                    opts=self._data_opts(),
                )
                self.kms_key_arn = self.kms_key.arn

        self.log_bucket = self._bucket(f"{name}-access-logs", key_arn=None, log_target=None)
        aws.s3.BucketLifecycleConfiguration(
            f"{name}-access-logs-lifecycle",
            bucket=self.log_bucket.id,
            rules=[
                {
                    "id": "expire-access-logs",
                    "status": "Enabled",
                    "filter": {"prefix": ""},
                    "expiration": {"days": settings.access_log_retention_days},
                    "abort_incomplete_multipart_upload": {"days_after_initiation": 1},
                }
            ],
            opts=pulumi.ResourceOptions(parent=self.log_bucket),
        )

        self.dicom_bucket = self._bucket(f"{name}-dicom", key_arn=self.kms_key_arn, log_target="dicom/")
        aws.s3.BucketLifecycleConfiguration(
            f"{name}-dicom-lifecycle",
            bucket=self.dicom_bucket.id,
            rules=self._dicom_rules(),
            opts=pulumi.ResourceOptions(parent=self.dicom_bucket),
        )

        self.results_bucket = self._bucket(
            f"{name}-results", key_arn=self.kms_key_arn, log_target="results/", versioned=True
        )
        results_rule: dict[str, Any] = {
            "id": "results-retention",
            "status": "Enabled",
            "filter": {"prefix": ""},
            "noncurrent_version_expiration": {"noncurrent_days": settings.results_noncurrent_days},
            "abort_incomplete_multipart_upload": {"days_after_initiation": settings.abort_multipart_days},
        }
        if settings.results_retention_days:
            results_rule["expiration"] = {"days": settings.results_retention_days}
        if settings.results_transitions:
            results_rule["transitions"] = settings.results_transitions
        aws.s3.BucketLifecycleConfiguration(
            f"{name}-results-lifecycle",
            bucket=self.results_bucket.id,
            rules=[results_rule],
            opts=pulumi.ResourceOptions(parent=self.results_bucket),
        )

        self.replica_bucket = None
        if settings.replication_region:
            self._replicate(name)

        self.register_outputs(
            {"dicomBucket": self.dicom_bucket.bucket, "resultsBucket": self.results_bucket.bucket}
        )

    def _data_opts(self, **kwargs: Any) -> pulumi.ResourceOptions:
        """Options of resources holding data: kept in AWS on destroy when the stack says so."""
        return pulumi.ResourceOptions(parent=self, retain_on_delete=self._settings.retain_on_delete, **kwargs)

    def _dicom_rules(self) -> list[dict[str, Any]]:
        s = self._settings
        abort = {"days_after_initiation": s.abort_multipart_days}
        return [
            {"id": "expire-incoming", "status": "Enabled", "filter": {"prefix": INCOMING_PREFIX},
             "expiration": {"days": s.incoming_expiry_days}, "abort_incomplete_multipart_upload": abort},
            {"id": "expire-imported", "status": "Enabled",
             "filter": {"tag": {"key": IMPORTED_TAG[0], "value": IMPORTED_TAG[1]}},
             "expiration": {"days": s.imported_expiry_days}},
            {"id": "expire-quarantine", "status": "Enabled", "filter": {"prefix": QUARANTINE_PREFIX},
             "expiration": {"days": s.quarantine_expiry_days}, "abort_incomplete_multipart_upload": abort},
            {"id": "expire-batches", "status": "Enabled", "filter": {"prefix": BATCHES_PREFIX},
             "expiration": {"days": s.batches_expiry_days}, "abort_incomplete_multipart_upload": abort},
        ]  # fmt: skip

    def _bucket(
        self,
        name: str,
        *,
        key_arn: pulumi.Input[str] | None,
        log_target: str | None,
        versioned: bool = False,
        provider: aws.Provider | None = None,
    ) -> aws.s3.Bucket:
        """A private, encrypted, TLS-only bucket; children share its provider."""
        bucket = aws.s3.Bucket(
            name, force_destroy=self._settings.force_destroy, opts=self._data_opts(provider=provider)
        )
        child = pulumi.ResourceOptions(parent=bucket, provider=provider)
        aws.s3.BucketPublicAccessBlock(
            f"{name}-public-access",
            bucket=bucket.id,
            block_public_acls=True,
            block_public_policy=True,
            ignore_public_acls=True,
            restrict_public_buckets=True,
            opts=child,
        )
        aws.s3.BucketOwnershipControls(
            f"{name}-ownership",
            bucket=bucket.id,
            rule={"object_ownership": "BucketOwnerEnforced"},
            opts=child,
        )
        default = (
            {"sse_algorithm": "aws:kms", "kms_master_key_id": key_arn}
            if key_arn is not None
            else {"sse_algorithm": "AES256"}
        )
        aws.s3.BucketServerSideEncryptionConfiguration(
            f"{name}-encryption",
            bucket=bucket.id,
            rules=[
                {
                    "apply_server_side_encryption_by_default": default,
                    "bucket_key_enabled": key_arn is not None,
                }
            ],
            opts=child,
        )
        if versioned:
            self._versioning[name] = aws.s3.BucketVersioning(
                f"{name}-versioning",
                bucket=bucket.id,
                versioning_configuration={"status": "Enabled"},
                opts=child,
            )
        statements = [tls_only("Bucket", [bucket.arn, pulumi.Output.concat(bucket.arn, "/*")], "s3:*")]
        if log_target is None and provider is None:  # the access-log bucket receives S3 log delivery
            statements.append(
                {
                    "Sid": "S3ServerAccessLogs",
                    "Effect": "Allow",
                    "Principal": {"Service": "logging.s3.amazonaws.com"},
                    "Action": "s3:PutObject",
                    "Resource": pulumi.Output.concat(bucket.arn, "/*"),
                    "Condition": {"StringEquals": {"aws:SourceAccount": self._account_id}},
                }
            )
        aws.s3.BucketPolicy(f"{name}-policy", bucket=bucket.id, policy=document(statements), opts=child)
        if log_target is not None:
            aws.s3.BucketLogging(
                f"{name}-logging",
                bucket=bucket.id,
                target_bucket=self.log_bucket.id,
                target_prefix=log_target,
                opts=child,
            )
        return bucket

    def _replicate(self, name: str) -> None:
        """Results replicated to a bucket in ``replication_region`` through a second provider."""
        s = self._settings
        self.replica_provider = aws.Provider(
            f"{name}-replica-region",
            region=s.replication_region,
            default_tags={"tags": self._tags},
            opts=pulumi.ResourceOptions(parent=self),
        )
        replica_key_arn = None
        if self.kms_key_arn is not None:
            replica_key = aws.kms.Key(
                f"{name}-replica-key",
                description="Replicated import results",
                enable_key_rotation=True,
                deletion_window_in_days=30,
                opts=self._data_opts(provider=self.replica_provider),
            )
            replica_key_arn = replica_key.arn
        self.replica_bucket = self._bucket(
            f"{name}-results-replica",
            key_arn=replica_key_arn,
            log_target=None,
            versioned=True,
            provider=self.replica_provider,
        )
        source, target = self.results_bucket.arn, self.replica_bucket.arn
        statements = [
            allow("ReadReplicationConfig", ["s3:GetReplicationConfiguration", "s3:ListBucket"], [source]),
            allow(
                "ReadSourceVersions",
                ["s3:GetObjectVersionForReplication", "s3:GetObjectVersionAcl", "s3:GetObjectVersionTagging"],
                [pulumi.Output.concat(source, "/*")],
            ),
            allow(
                "WriteReplicas",
                ["s3:ReplicateObject", "s3:ReplicateDelete", "s3:ReplicateTags"],
                [pulumi.Output.concat(target, "/*")],
            ),
        ]
        if self.kms_key_arn is not None:
            statements += kms_use([self.kms_key_arn], encrypt=False, decrypt=True)
            statements.append(
                allow("EncryptReplicas", ["kms:Encrypt", "kms:GenerateDataKey"], [replica_key_arn])
            )
        self.replication_role = service_role(
            f"{name}-replication", "s3.amazonaws.com", statements, self, description="Results replication"
        )
        rule: dict[str, Any] = {
            "id": "replicate-results",
            "status": "Enabled",
            "filter": {"prefix": ""},
            "delete_marker_replication": {"status": "Enabled"},
            "destination": {"bucket": target, "storage_class": "STANDARD_IA"},
        }
        if replica_key_arn is not None:
            rule["source_selection_criteria"] = {"sse_kms_encrypted_objects": {"status": "Enabled"}}
            rule["destination"]["encryption_configuration"] = {"replica_kms_key_id": replica_key_arn}
        aws.s3.BucketReplicationConfig(
            f"{name}-results-replication",
            bucket=self.results_bucket.id,
            role=self.replication_role.arn,
            rules=[rule],
            opts=pulumi.ResourceOptions(
                parent=self.results_bucket, depends_on=list(self._versioning.values())
            ),
        )
