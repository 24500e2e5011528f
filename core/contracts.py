"""Names more than one runtime shares, each written once here.

The Pulumi program, the SCP, the Lambda handlers, the CLI and the local stack import them:
- metrics: the Powertools service name and the workflow's metric namespace, the SCP's EMF
  namespace and the store-failure metric its alarm watches;
- the errors the state machine retries by name (a Lambda ``errorType`` is the exception's class name);
- the tag the workflow puts on imported objects, which a lifecycle rule of the DICOM bucket expires;
- the Lambda functions: their specs, names, runtime and environment, and the ones the state machine runs;
- the execution input an execution starts with, and the message a failed batch leaves in the DLQ.
Pure: no pulumi, no boto3.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, TypedDict

from pydantic import BaseModel, ConfigDict

from core.workflow_settings import ENV_PREFIX, WorkflowResources, WorkflowSettings

# --- Metrics ------------------------------------------------------------------------------
POWERTOOLS_SERVICE = "dicom-ingest"  # the Powertools service of every Lambda function
WORKFLOW_METRICS_NAMESPACE = "DicomIngest/Workflow"  # the handlers' metrics
SCP_METRICS_NAMESPACE = "DicomIngest/Scp"  # the SCP's CloudWatch EMF lines
SCP_STORE_FAILURES_METRIC = "StoreFailures"  # one of them; the monitoring alarms on its sum
SCP_DIMENSIONS = {"Service": "dicom-scp"}  # the dimensions of the SCP's EMF lines
WORKFLOW_DIMENSIONS = {"service": POWERTOOLS_SERVICE}  # Powertools' one dimension, the service name
SCP_JOURNAL_OLDEST_AGE_METRIC = "JournalOldestAge"  # seconds; the monitoring alarms on its maximum
SCP_COMMITMENT_UNDELIVERED_METRIC = "CommitmentReportsUndelivered"  # alarmed too


# --- Errors the state machine retries by name ---------------------------------------------
class Throttled(Exception):
    """An AWS API said slow down: retried by the state machine with exponential backoff and jitter."""


class TransientError(Exception):
    """A 5xx or a dropped connection: retried by the state machine."""


# --- Tags ---------------------------------------------------------------------------------
SHA256_METADATA = "sha256"  # S3 user metadata the SCP writes on every object: its hex SHA-256
IMPORTED_TAG = ("ahi-imported", "true")  # cleanup mode "tag": a lifecycle rule expires these


# --- Lambda functions ---------------------------------------------------------------------
LAMBDA_RUNTIME = "python3.12"


class FunctionSpec(BaseModel):
    """One Lambda function: the Pulumi program and the local stack both build from this list."""

    model_config = ConfigDict(frozen=True)

    name: str  # logical name, also the key in the ASL builder's function map
    handler: str  # "module.attribute" inside the deployment package
    timeout_seconds: int = 60
    memory_mb: int = 512
    reserved_concurrency: int | None = None
    description: str = ""

    def resource_name(self, prefix: str) -> str:
        """The deployed function's name (and the Pulumi resource's): ``<prefix>-start-import``."""
        return f"{prefix}-{self.name.replace('_', '-')}"


FUNCTIONS: tuple[FunctionSpec, ...] = (
    FunctionSpec(
        name="trigger",
        handler="handlers.trigger.handler",
        description="S3 batches/*.json created -> start one execution named after the batch",
    ),
    FunctionSpec(
        name="start_import",
        handler="handlers.start_import.handler",
        timeout_seconds=300,
        memory_mb=1024,
        reserved_concurrency=1,  # StartDICOMImportJob is throttled to ~1 request/s per account
        description="validate a batch, quarantine bad instances, StartDICOMImportJob",
    ),
    FunctionSpec(
        name="check_status",
        handler="handlers.check_status.handler",
        timeout_seconds=300,
        memory_mb=1024,
        description="GetDICOMImportJob; record the job's progress",
    ),
    FunctionSpec(
        name="record_results",
        handler="handlers.record_results.handler",
        timeout_seconds=300,
        memory_mb=1024,
        description="read the import results, record image sets and failures, quarantine, clean up",
    ),
    FunctionSpec(
        name="failure",
        handler="handlers.failure.handler",
        description="record FAILED and send the batch to the DLQ",
    ),
    FunctionSpec(
        name="sweeper",
        handler="handlers.sweeper.handler",
        timeout_seconds=300,
        description="seal batches a crashed SCP task left without a manifest",
    ),
)


def function(name: str) -> FunctionSpec:
    return next(f for f in FUNCTIONS if f.name == name)


# The functions the state machine's Tasks invoke (the others: the S3 trigger, the sweeper schedule).
STATE_MACHINE_FUNCTIONS = ("start_import", "check_status", "record_results", "failure")

# Powertools' variables every function gets; each runtime adds its own (log level, tracing).
POWERTOOLS_NAMES = {
    "POWERTOOLS_SERVICE_NAME": POWERTOOLS_SERVICE,
    "POWERTOOLS_METRICS_NAMESPACE": WORKFLOW_METRICS_NAMESPACE,
}


def function_environment(
    resources: WorkflowResources, settings: WorkflowSettings, powertools: Mapping[str, str]
) -> dict[str, str]:
    """Exactly what every function reads: the workflow model's env plus Powertools' variables."""
    return {**resources.to_env(ENV_PREFIX), **settings.to_env(ENV_PREFIX), **powertools}


# --- Executions and dead letters ----------------------------------------------------------
def execution_input(batch_id: str, bucket: str, key: str, poll_seconds: int) -> dict[str, Any]:
    """The input of an execution (from the trigger, or a DLQ redrive whose original is gone)."""
    return {"batchId": batch_id, "bucket": bucket, "manifestKey": key, "pollSeconds": poll_seconds}


class DlqMessage(TypedDict, total=False):
    """One failed batch in the dead-letter queue: the failure function sends every field,
    ``dicomctl dlq`` reads them (and copes with a body that lacks some)."""

    batchId: str
    manifestKey: str
    state: str  # the state that failed
    error: str
    cause: str
    executionArn: str
    at: str  # ISO-8601 UTC
