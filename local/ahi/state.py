"""Datastores and import jobs: their records, ids, idempotency and status changes. Thread-safe."""

from __future__ import annotations

import re
import secrets
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from local.ahi.errors import ConflictError, NotFoundError

ACCOUNT_ID = "123456789012"  # moto's default account, so ARNs look alike across the local stack
JOB_STATUSES = ("SUBMITTED", "IN_PROGRESS", "COMPLETED", "FAILED")
# The model's ``Message`` pattern; job messages are cleaned to fit it.
_NOT_IN_MESSAGE = re.compile(r"[^\w -:`]")


def new_id() -> str:
    """Datastore, job and image set ids match ``[0-9a-z]{32}``."""
    return secrets.token_hex(16)


def now_utc() -> datetime:
    return datetime.now(UTC)


def job_output_uri(output_s3_uri: str, datastore_id: str, job_id: str) -> str:
    """The job's own output folder: ``<outputS3Uri>/<datastoreId>-DicomImport-<jobId>/``."""
    return f"{output_s3_uri.rstrip('/')}/{datastore_id}-DicomImport-{job_id}/"


@dataclass
class Datastore:
    id: str
    name: str
    arn: str
    status: str
    created_at: datetime
    updated_at: datetime
    kms_key_arn: str | None = None
    lossless_storage_format: str | None = None

    def properties(self) -> dict[str, Any]:
        return {
            "datastoreId": self.id,
            "datastoreName": self.name,
            "datastoreStatus": self.status,
            "kmsKeyArn": self.kms_key_arn,
            "losslessStorageFormat": self.lossless_storage_format,
            "datastoreArn": self.arn,
            "createdAt": self.created_at,
            "updatedAt": self.updated_at,
        }

    def summary(self) -> dict[str, Any]:
        keys = ("datastoreId", "datastoreName", "datastoreStatus", "datastoreArn", "createdAt", "updatedAt")
        return {k: v for k, v in self.properties().items() if k in keys}


@dataclass
class ImportJob:
    id: str
    datastore_id: str
    name: str
    client_token: str
    data_access_role_arn: str
    input_s3_uri: str
    requested_output_s3_uri: str  # as given; results go to its job folder (``output_s3_uri``)
    submitted_at: datetime
    fail_injected: bool = False
    status: str = "SUBMITTED"
    ended_at: datetime | None = None
    message: str | None = None

    @property
    def output_s3_uri(self) -> str:
        return job_output_uri(self.requested_output_s3_uri, self.datastore_id, self.id)

    def same_request(self, request: dict[str, Any]) -> bool:
        return (
            request.get("jobName", self.name) == self.name
            and request["dataAccessRoleArn"] == self.data_access_role_arn
            and request["inputS3Uri"] == self.input_s3_uri
            and request["outputS3Uri"] == self.requested_output_s3_uri
        )

    def properties(self) -> dict[str, Any]:
        """``jobProperties`` of GetDICOMImportJob.

        ``outputS3Uri`` is the job's output folder: AWS's sample code reads
        ``jobProperties.outputS3Uri + "job-output-manifest.json"``.
        """
        return {
            "jobId": self.id,
            "jobName": self.name,
            "jobStatus": self.status,
            "datastoreId": self.datastore_id,
            "dataAccessRoleArn": self.data_access_role_arn,
            "endedAt": self.ended_at,
            "submittedAt": self.submitted_at,
            "inputS3Uri": self.input_s3_uri,
            "outputS3Uri": self.output_s3_uri,
            "message": self.message,
        }

    def summary(self) -> dict[str, Any]:
        keys = ("jobId", "jobName", "jobStatus", "datastoreId", "dataAccessRoleArn", "endedAt", "submittedAt")
        return {k: v for k, v in self.properties().items() if k in keys or (k == "message" and v)}


class Registry:
    """The datastores and import jobs of one emulator."""

    def __init__(self, region: str):
        self.region = region
        self._lock = threading.RLock()
        self._datastores: dict[str, Datastore] = {}
        self._jobs: dict[str, ImportJob] = {}
        self._tokens: dict[tuple[str, str], str] = {}  # (datastore, clientToken) -> job id
        self._datastore_tokens: dict[str, str] = {}  # CreateDatastore clientToken -> datastore id

    @property
    def arn_prefix(self) -> str:
        return f"arn:aws:medical-imaging:{self.region}:{ACCOUNT_ID}:datastore/"

    # --- datastores -----------------------------------------------------------------------
    def create_datastore(
        self, name: str, client_token: str | None = None, **options: str | None
    ) -> tuple[Datastore, bool]:
        """A new ACTIVE datastore (or the one this clientToken already created); (datastore, created)."""
        with self._lock:
            if client_token and client_token in self._datastore_tokens:
                existing = self._datastores[self._datastore_tokens[client_token]]
                if existing.name != name:
                    raise ConflictError("clientToken was already used with different parameters")
                return existing, False
            datastore_id = new_id()
            now = now_utc()
            datastore = Datastore(
                id=datastore_id,
                name=name,
                arn=f"{self.arn_prefix}{datastore_id}",
                status="ACTIVE",
                created_at=now,
                updated_at=now,
                kms_key_arn=options.get("kms_key_arn"),
                lossless_storage_format=options.get("lossless_storage_format"),
            )
            self._datastores[datastore_id] = datastore
            if client_token:
                self._datastore_tokens[client_token] = datastore_id
            return datastore, True

    def datastore(self, datastore_id: str, *, active: bool = False) -> Datastore:
        with self._lock:
            datastore = self._datastores.get(datastore_id)
            if datastore is None or datastore.status == "DELETED":
                raise NotFoundError(f"Datastore {datastore_id} does not exist")
            if active and datastore.status != "ACTIVE":
                raise ConflictError(f"Datastore {datastore_id} is {datastore.status}, not ACTIVE")
            return datastore

    def datastores(self, status: str | None = None) -> list[Datastore]:
        with self._lock:
            return [d for d in self._datastores.values() if status is None or d.status == status]

    def delete_datastore(self, datastore_id: str, image_set_count: int) -> Datastore:
        with self._lock:
            datastore = self.datastore(datastore_id)
            if image_set_count:
                raise ConflictError(f"Datastore {datastore_id} still holds {image_set_count} image sets")
            if any(
                j.datastore_id == datastore_id and j.status in JOB_STATUSES[:2] for j in self._jobs.values()
            ):
                raise ConflictError(f"Datastore {datastore_id} has import jobs in progress")
            datastore.status = "DELETED"
            datastore.updated_at = now_utc()
            return datastore

    # --- import jobs ----------------------------------------------------------------------
    def submit_job(
        self, datastore_id: str, request: dict[str, Any], fail_injected: Callable[[], bool]
    ) -> tuple[ImportJob, bool]:
        """A new SUBMITTED job, or the job this clientToken already started; (job, created).

        Reusing a clientToken with different parameters is a ConflictException.
        ``fail_injected`` is asked only when a job is really created.
        """
        with self._lock:
            self.datastore(datastore_id, active=True)
            token = (datastore_id, request["clientToken"])
            if token in self._tokens:
                existing = self._jobs[self._tokens[token]]
                if not existing.same_request(request):
                    raise ConflictError("clientToken was already used with different parameters")
                return existing, False
            job_id = new_id()
            job = ImportJob(
                id=job_id,
                datastore_id=datastore_id,
                name=request.get("jobName") or f"DicomImport-{job_id}",
                client_token=request["clientToken"],
                data_access_role_arn=request["dataAccessRoleArn"],
                input_s3_uri=request["inputS3Uri"],
                requested_output_s3_uri=request["outputS3Uri"],
                submitted_at=now_utc(),
                fail_injected=fail_injected(),
            )
            self._jobs[job_id] = job
            self._tokens[token] = job_id
            return job, True

    def job(self, datastore_id: str, job_id: str) -> ImportJob:
        with self._lock:
            self.datastore(datastore_id)
            job = self._jobs.get(job_id)
            if job is None or job.datastore_id != datastore_id:
                raise NotFoundError(f"Import job {job_id} does not exist in datastore {datastore_id}")
            return job

    def job_by_id(self, job_id: str) -> ImportJob:
        with self._lock:
            return self._jobs[job_id]

    def jobs(self, datastore_id: str | None = None, status: str | None = None) -> list[ImportJob]:
        """Jobs in submission order."""
        with self._lock:
            return [
                j
                for j in self._jobs.values()
                if (datastore_id is None or j.datastore_id == datastore_id)
                and (status is None or j.status == status)
            ]

    def set_status(self, job_id: str, status: str, message: str | None = None) -> None:
        with self._lock:
            job = self._jobs[job_id]
            if message:
                job.message = _NOT_IN_MESSAGE.sub("_", message)[:2048]
            if status in ("COMPLETED", "FAILED"):
                job.ended_at = now_utc()
            job.status = status  # last: readers outside the lock never see an end state without endedAt
