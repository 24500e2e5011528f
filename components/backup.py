"""Backup: AWS Backup of what the stack cannot recreate, the job table and the results bucket.

A vault under a customer KMS key (given, or created with rotation), one plan rule on the configured
schedule and retention (optionally continuous, so the results bucket can be restored to a point in
time, and optionally copied to a vault in a second region), and one selection naming exactly the
table and the results bucket. The DICOM bucket is a staging area (HealthImaging holds what was
imported), and the datastore has no AWS Backup support.

The backup role has AWS Backup's managed service-role policies (the documented set for DynamoDB
and S3: backup and restore); AWS Backup acts only on the selected resources with it. Its own
inline policy adds exactly the vault keys.
"""

from __future__ import annotations

from dataclasses import dataclass

import pulumi
import pulumi_aws as aws

from components.iam import allow, document, trust_policy
from core.stack_settings import BackupSettings

MANAGED_POLICIES = (
    "service-role/AWSBackupServiceRolePolicyForBackup",
    "service-role/AWSBackupServiceRolePolicyForRestores",
    "AWSBackupServiceRolePolicyForS3Backup",
    "AWSBackupServiceRolePolicyForS3Restore",
)
VAULT_KEY_ACTIONS = (
    "kms:Decrypt",
    "kms:Encrypt",
    "kms:GenerateDataKey",
    "kms:DescribeKey",
    "kms:CreateGrant",
)


@dataclass
class BackupArgs:
    settings: BackupSettings
    table_arn: pulumi.Input[str]
    results_bucket_arn: pulumi.Input[str]
    account_id: pulumi.Input[str]
    partition: pulumi.Input[str]
    retain_on_delete: bool = False


class Backup(pulumi.ComponentResource):
    vault: aws.backup.Vault
    plan: aws.backup.Plan
    selection: aws.backup.Selection
    role: aws.iam.Role

    def __init__(self, name: str, args: BackupArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("dicom-ingest:index:Backup", name, None, opts)
        settings = args.settings
        vault_name = f"{pulumi.get_project()}-{pulumi.get_stack()}"
        kept = pulumi.ResourceOptions(parent=self, retain_on_delete=args.retain_on_delete)

        self.vault_key_arn = self._vault_key(f"{name}-vault-key", settings.kms_key_arn, None, kept)
        self.vault = aws.backup.Vault(
            f"{name}-vault", name=vault_name, kms_key_arn=self.vault_key_arn, opts=kept
        )
        self.copy_vault = None
        copy_actions = []
        key_arns = [self.vault_key_arn]
        if settings.copy_region:  # a second region, for the loss of this one
            copy_key_arn = self._vault_key(f"{name}-copy-vault-key", "", settings.copy_region, kept)
            self.copy_vault = aws.backup.Vault(
                f"{name}-copy-vault",
                name=vault_name,
                region=settings.copy_region,
                kms_key_arn=copy_key_arn,
                opts=kept,
            )
            key_arns.append(copy_key_arn)
            copy_actions.append(
                {
                    "destination_vault_arn": self.copy_vault.arn,
                    "lifecycle": {"delete_after": settings.retention_days},
                }
            )

        self.role = aws.iam.Role(
            f"{name}-role",
            assume_role_policy=trust_policy(
                "backup.amazonaws.com", {"StringEquals": {"aws:SourceAccount": args.account_id}}
            ),
            description="AWS Backup: back up and restore the job table and the results bucket",
            opts=pulumi.ResourceOptions(parent=self),
        )
        for policy in MANAGED_POLICIES:
            aws.iam.RolePolicyAttachment(
                f"{name}-{policy.rsplit('/', 1)[-1]}",
                role=self.role.name,
                policy_arn=pulumi.Output.concat("arn:", args.partition, ":iam::aws:policy/", policy),
                opts=pulumi.ResourceOptions(parent=self.role),
            )
        aws.iam.RolePolicy(
            f"{name}-role-policy",
            role=self.role.id,
            policy=document([allow("UseVaultKeys", VAULT_KEY_ACTIONS, key_arns)]),
            opts=pulumi.ResourceOptions(parent=self.role),
        )

        self.plan = aws.backup.Plan(
            f"{name}-plan",
            name=vault_name,
            rules=[
                {
                    "rule_name": "job-table-and-results",
                    "target_vault_name": self.vault.name,
                    "schedule": settings.schedule,
                    "enable_continuous_backup": settings.continuous,
                    "lifecycle": {"delete_after": settings.retention_days},
                    "copy_actions": copy_actions,
                }
            ],
            opts=pulumi.ResourceOptions(parent=self),
        )
        self.selection = aws.backup.Selection(
            f"{name}-selection",
            name="job-table-and-results",
            plan_id=self.plan.id,
            iam_role_arn=self.role.arn,
            resources=[args.table_arn, args.results_bucket_arn],
            opts=pulumi.ResourceOptions(parent=self.plan),
        )
        self.register_outputs({"vaultName": self.vault.name, "planId": self.plan.id})

    def _vault_key(
        self, name: str, given: str, region: str | None, opts: pulumi.ResourceOptions
    ) -> pulumi.Output[str]:
        if given:
            return pulumi.Output.from_input(given)
        key = aws.kms.Key(
            name,
            description="Backup vault of the DICOM gateway",
            enable_key_rotation=True,
            deletion_window_in_days=30,
            region=region,
            opts=opts,
        )
        return key.arn
