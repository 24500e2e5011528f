"""Job table: the workflow's DynamoDB audit trail and job state (keys and indexes from layout.py)."""

from __future__ import annotations

from dataclasses import dataclass

import pulumi
import pulumi_aws as aws

from core.layout import TABLE_INDEXES, TABLE_PARTITION_KEY, TABLE_SORT_KEY, TTL_ATTRIBUTE
from core.stack_settings import JobTableSettings


@dataclass
class JobTableArgs:
    settings: JobTableSettings
    retain_on_delete: bool = False
    kms_key_arn: pulumi.Input[str] | None = None  # the customer key to use (None: the AWS-managed key)


def key_attributes() -> list[str]:
    """Every attribute used as a key of the table or an index (all strings), in a stable order."""
    names = [TABLE_PARTITION_KEY, TABLE_SORT_KEY]
    for partition, sort in TABLE_INDEXES.values():
        names += [n for n in (partition, sort) if n not in names]
    return names


class JobTable(pulumi.ComponentResource):
    table: aws.dynamodb.Table

    def __init__(self, name: str, args: JobTableArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("dicom-ingest:index:JobTable", name, None, opts)
        settings = args.settings
        encryption: dict = {"enabled": True}
        if args.kms_key_arn is not None:
            encryption["kms_key_arn"] = args.kms_key_arn
        self.table = aws.dynamodb.Table(
            f"{name}-jobs",
            billing_mode="PAY_PER_REQUEST",
            hash_key=TABLE_PARTITION_KEY,
            range_key=TABLE_SORT_KEY,
            attributes=[{"name": n, "type": "S"} for n in key_attributes()],
            global_secondary_indexes=[
                {"name": index, "hash_key": partition, "range_key": sort, "projection_type": "ALL"}
                for index, (partition, sort) in TABLE_INDEXES.items()
            ],
            ttl={"attribute_name": TTL_ATTRIBUTE, "enabled": True},
            point_in_time_recovery={"enabled": settings.point_in_time_recovery},
            server_side_encryption=encryption,
            deletion_protection_enabled=settings.deletion_protection,
            opts=pulumi.ResourceOptions(parent=self, retain_on_delete=args.retain_on_delete),
        )
        self.register_outputs({"tableName": self.table.name, "tableArn": self.table.arn})
