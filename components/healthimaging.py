"""HealthImaging: the datastore (created, or an existing id) and the import data-access role.

The role is what HealthImaging assumes during StartDICOMImportJob: it may read the import input
(``incoming/`` of the DICOM bucket) and write the results bucket, nothing else. The trust is limited
to this account (confused-deputy protection via aws:SourceAccount).
"""

from __future__ import annotations

from dataclasses import dataclass

import pulumi
import pulumi_aws as aws
import pulumi_aws_native as aws_native

from components.iam import allow, kms_use, service_role
from core.layout import INCOMING_PREFIX
from core.stack_settings import HealthImagingSettings


@dataclass
class HealthImagingArgs:
    settings: HealthImagingSettings
    dicom_bucket_arn: pulumi.Input[str]
    results_bucket_arn: pulumi.Input[str]
    account_id: pulumi.Input[str]
    region: pulumi.Input[str]
    partition: pulumi.Input[str]
    kms_key_arn: pulumi.Input[str] | None = None  # the buckets' key with SSE-KMS
    retain_on_delete: bool = False
    tags: dict[str, str] | None = None  # aws-native resources do not get the AWS provider's default tags
    datastore_kms_key_arn: pulumi.Input[str] | None = None  # of a created datastore (None: AWS-owned key)


def import_role_statements(
    dicom_bucket_arn: pulumi.Input[str],
    results_bucket_arn: pulumi.Input[str],
    kms_key_arn: pulumi.Input[str] | None,
) -> list[dict]:
    statements = [
        allow(
            "ReadImportInput",
            ["s3:GetObject"],
            [pulumi.Output.concat(dicom_bucket_arn, "/", INCOMING_PREFIX, "*")],
        ),
        allow(
            "ListImportInput",
            ["s3:ListBucket"],
            [dicom_bucket_arn],
            {"StringLike": {"s3:prefix": [f"{INCOMING_PREFIX}*"]}},
        ),
        allow("WriteImportResults", ["s3:PutObject"], [pulumi.Output.concat(results_bucket_arn, "/*")]),
    ]
    return statements + kms_use([kms_key_arn] if kms_key_arn is not None else [], encrypt=True, decrypt=True)


class HealthImaging(pulumi.ComponentResource):
    datastore_id: pulumi.Output[str]
    datastore_arn: pulumi.Output[str]
    import_role: aws.iam.Role

    def __init__(self, name: str, args: HealthImagingArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("dicom-ingest:index:HealthImaging", name, None, opts)
        settings = args.settings
        self.datastore = None
        if settings.datastore_id:
            self.datastore_id = pulumi.Output.from_input(settings.datastore_id)
            self.datastore_arn = pulumi.Output.concat(
                "arn:", args.partition, ":medical-imaging:", args.region, ":", args.account_id,
                ":datastore/", settings.datastore_id,
            )  # fmt: skip
        else:
            self.datastore = aws_native.healthimaging.Datastore(
                f"{name}-datastore",
                datastore_name=settings.datastore_name or f"{pulumi.get_project()}-{pulumi.get_stack()}",
                kms_key_arn=args.datastore_kms_key_arn,
                tags=args.tags,
                opts=pulumi.ResourceOptions(parent=self, retain_on_delete=args.retain_on_delete),
            )
            self.datastore_id = self.datastore.datastore_id
            self.datastore_arn = self.datastore.datastore_arn

        self.import_role = service_role(
            f"{name}-import",
            "medical-imaging.amazonaws.com",
            import_role_statements(args.dicom_bucket_arn, args.results_bucket_arn, args.kms_key_arn),
            self,
            condition={"StringEquals": {"aws:SourceAccount": args.account_id}},
            description="HealthImaging import jobs: read incoming/, write results",
        )
        self.register_outputs({"datastoreId": self.datastore_id, "importRoleArn": self.import_role.arn})
