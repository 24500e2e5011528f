"""The data contracts between the SCP, the import workflow, the CLI and the infrastructure.

One place for: the S3 key layout, batch ids, the batch manifest the SCP writes and the
workflow reads, the DynamoDB job table's keys and indexes, and the stack outputs. (The Lambda
functions and the other names the runtimes share are in ``core.contracts``.)
Pure data and pure functions only (no pulumi, no boto3), so every reader can import it.
"""

from __future__ import annotations

import re
import secrets
from datetime import UTC, datetime

from pydantic import BaseModel, ConfigDict, Field

# --- S3 layout (DICOM bucket) -------------------------------------------------------------
INCOMING_PREFIX = "incoming/"  # incoming/<yyyy>/<mm>/<dd>/<batchId>/<Study>/<Series>/<SOP>.dcm
BATCHES_PREFIX = "batches/"  # batches/<batchId>.json: the sealed manifest, outside any import prefix
MANIFEST_SUFFIX = ".json"
QUARANTINE_PREFIX = "quarantine/"  # quarantine/<batchId>/<Study>/<Series>/<SOP>.dcm (+ .reason.json)

# AHI clientToken allows [A-Za-z0-9._-]{1,64}; Step Functions execution names allow 1-80 chars.
BATCH_ID_PATTERN = re.compile(r"^\d{8}T\d{6}Z-[0-9a-f]{16}$")


def new_batch_id(now: datetime | None = None) -> str:
    """Sortable, unique, and valid both as AHI clientToken and Step Functions execution name."""
    now = now or datetime.now(UTC)
    return f"{now:%Y%m%dT%H%M%SZ}-{secrets.token_hex(8)}"


def batch_prefix(batch_id: str, opened_at: datetime) -> str:
    """The import prefix of one batch: exactly the objects of that batch, nothing else."""
    return f"{INCOMING_PREFIX}{opened_at:%Y/%m/%d}/{batch_id}/"


def instance_key(prefix: str, study_uid: str, series_uid: str, sop_instance_uid: str) -> str:
    return f"{prefix}{study_uid}/{series_uid}/{sop_instance_uid}.dcm"


def manifest_key(batch_id: str) -> str:
    return f"{BATCHES_PREFIX}{batch_id}{MANIFEST_SUFFIX}"


def batch_id_from_manifest_key(key: str) -> str | None:
    """``batches/<id>.json`` -> ``<id>``; anything else (wrong folder, bad id) -> None."""
    if not (key.startswith(BATCHES_PREFIX) and key.endswith(MANIFEST_SUFFIX)):
        return None
    candidate = key[len(BATCHES_PREFIX) : -len(MANIFEST_SUFFIX)]
    return candidate if BATCH_ID_PATTERN.match(candidate) else None


# --- The batch manifest (written by the SCP, read by the workflow) ------------------------
SEAL_REASONS = (
    "release",  # association released normally
    "abort",  # association aborted by either side
    "rollover-files",
    "rollover-bytes",
    "rollover-age",
    "idle",  # association idle timeout
    "shutdown",  # SIGTERM drain
    "sweeper",  # sealed by the scheduled sweeper after an SCP crash
    "adopted",  # sealed by an SCP that adopted the journal directory of a dead one
)


class ManifestInstance(BaseModel):
    model_config = ConfigDict(populate_by_name=True, extra="ignore")

    key: str  # relative to the storage root (bucket or directory)
    sop_class_uid: str = Field(alias="sopClassUid")
    sop_instance_uid: str = Field(alias="sopInstanceUid")
    study_instance_uid: str = Field(alias="studyInstanceUid")
    series_instance_uid: str = Field(alias="seriesInstanceUid")
    transfer_syntax_uid: str = Field(alias="transferSyntaxUid")
    size: int
    sha256: str  # hex digest of the whole Part 10 file as stored
    # Receipts of this key in the batch: the same SOP Instance UID sent again into the same
    # series replaces the stored object (the last one is kept), and the job table counts them.
    received_count: int = Field(1, alias="receivedCount", ge=1)


class BatchManifest(BaseModel):
    """``batches/<batchId>.json``. Written only after every listed object is durable."""

    model_config = ConfigDict(populate_by_name=True, extra="ignore")

    schema_version: int = Field(1, alias="schemaVersion")
    batch_id: str = Field(alias="batchId")
    prefix: str  # the import prefix, e.g. incoming/2026/11/27/<batchId>/
    opened_at: datetime = Field(alias="openedAt")
    sealed_at: datetime = Field(alias="sealedAt")
    seal_reason: str = Field(alias="sealReason")
    calling_ae_title: str = Field("", alias="callingAeTitle")
    called_ae_title: str = Field("", alias="calledAeTitle")
    peer_address: str = Field("", alias="peerAddress")
    task_id: str = Field("", alias="taskId")
    instances: list[ManifestInstance]

    @property
    def total_bytes(self) -> int:
        return sum(i.size for i in self.instances)

    def to_json(self) -> str:
        return self.model_dump_json(by_alias=True, indent=None)


# --- DynamoDB job table -------------------------------------------------------------------
# One partition per job (= batch id). Items:
#   ts = "<ISO-8601 UTC>#<STATUS>"  one audit item per state transition (the audit trail)
#   ts = "~summary"                 the job's current state; carries the sparse GSI keys below
#   ts = "~study#<StudyUID>"        one per study in the batch; carries the by-study GSI key
# and the Storage Commitment items (core/commitment.py): jobId "commitment#<TransactionUID>"
# (ts "~commitment", keys the by-commitment GSI) and the instance index, jobId "sop#<SOPInstanceUID>".
# "~" sorts after every ISO timestamp, so a Query on the partition returns the timeline first.
TABLE_PARTITION_KEY = "jobId"
TABLE_SORT_KEY = "ts"
SUMMARY_SORT_KEY = "~summary"
STUDY_SORT_KEY_PREFIX = "~study#"
TTL_ATTRIBUTE = "expiresAt"

# name -> (partition key, sort key); all string attributes, projection ALL.
BY_STATUS, BY_STUDY, BY_CALLING_AE = "by-status", "by-study", "by-calling-ae"
BY_COMMITMENT = "by-commitment"
TABLE_INDEXES: dict[str, tuple[str, str]] = {
    BY_STATUS: ("currentStatus", "updatedAt"),  # jobs by status over a time range
    BY_STUDY: ("studyInstanceUid", "createdAt"),  # jobs containing a StudyInstanceUID
    BY_CALLING_AE: ("callingAeTitle", "createdAt"),  # jobs from a calling AE
    BY_COMMITMENT: ("commitmentState", "dueAt"),  # Storage Commitment transactions (core/commitment.py)
}

# Job states in the order a job moves through them; a conditional write never moves back.
JOB_STATES = ("RECEIVED", "VALIDATED", "SUBMITTED", "IN_PROGRESS", "COMPLETED", "PARTIAL", "FAILED")
TERMINAL_STATES = ("COMPLETED", "PARTIAL", "FAILED")


# --- Stack outputs (exported by __main__.py, written by the local stack, read by dicomctl) --
STACK_OUTPUTS: dict[str, str] = {
    "endpointHost": "DNS name (or address) modalities connect to",
    "endpointIps": "fixed IP addresses of the NLB, one per subnet (absent when AWS assigns them)",
    "dicomPort": "plain DICOM port",
    "tlsPort": "DICOM TLS port (absent when TLS is off)",
    "aeTitle": "called AE title of the gateway",
    "dicomBucket": "bucket of incoming/, batches/ and quarantine/",
    "resultsBucket": "bucket of HealthImaging import results",
    "jobTable": "DynamoDB job table name",
    "stateMachineArn": "import workflow state machine ARN",
    "datastoreId": "HealthImaging datastore id",
    "dlqUrl": "dead-letter queue URL of failed batches",
    "dashboardUrl": "CloudWatch dashboard URL",
    "region": "AWS region of the stack",
}
