"""Settings of the import workflow: read by the Lambda handlers from ``WORKFLOW_<SETTING>``
variables, written into every function's environment by the Pulumi program and the local
stack from the same model. Resource names (buckets, table, ...) are filled in at deploy time."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from core.config_base import Settings

ENV_PREFIX = "workflow"


class WorkflowResources(Settings):
    """Names of deployed resources: set by the Pulumi program / local stack, never by users."""

    dicom_bucket: str = Field("", description="Bucket the SCP writes incoming/ and batches/ to")
    results_bucket: str = Field("", description="Bucket AHI writes import results to")
    job_table: str = Field("", description="DynamoDB job table name")
    state_machine_arn: str = Field("", description="Import state machine (for the trigger)")
    datastore_id: str = Field("", description="HealthImaging datastore id")
    import_role_arn: str = Field("", description="Role HealthImaging assumes to read/write S3")
    dlq_url: str = Field("", description="SQS dead-letter queue for failed batches")


class WorkflowSettings(Settings):
    """What an operator tunes per stack (stack config keys ``workflow<Setting>``)."""

    poll_seconds: int = Field(30, ge=1, le=3600, description="Wait between import status checks")
    max_poll_attempts: int = Field(120, ge=1, le=10000, description="Status checks before giving up")
    cleanup_mode: Literal["delete", "tag", "keep"] = Field(
        "delete", description="What happens to imported objects: delete, tag for lifecycle expiry, keep"
    )
    sweeper_min_age_seconds: int = Field(
        900, ge=60, description="Seal a manifest-less batch once its newest object is this old"
    )
    job_ttl_days: int = Field(365, ge=1, description="Job table items expire after this many days")
