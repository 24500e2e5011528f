"""The operations the emulator implements: validated input dict in, output dict out.

Requests reach these already parsed and validated against botocore's model (local/ahi/model.py);
what is checked here is what the model cannot say: existence (ResourceNotFoundException), state
and idempotency (ConflictException), throttling (ThrottlingException) and search filter rules.
"""

from __future__ import annotations

import base64
import binascii
import gzip
import json
import threading
from collections.abc import Callable
from typing import Any, TypeVar

from local.ahi.errors import ThrottledError, ValidationError
from local.ahi.faults import Faults, TokenBucket
from local.ahi.imagesets import ImageSetCatalog, check_filter
from local.ahi.importer import JobRunner
from local.ahi.state import Registry

T = TypeVar("T")
DEFAULT_MAX_RESULTS = 50


class Operations:
    def __init__(
        self,
        registry: Registry,
        catalog: ImageSetCatalog,
        runner: JobRunner,
        faults: Faults,
        start_bucket: TokenBucket | None = None,
    ):
        self._registry = registry
        self._catalog = catalog
        self._runner = runner
        self._faults = faults
        self._start_bucket = start_bucket
        self._lock = threading.Lock()
        self.start_import_calls = 0  # accepted StartDICOMImportJob calls that created a job
        self.handlers: dict[str, Callable[[dict[str, Any]], dict[str, Any]]] = {
            "CreateDatastore": self.create_datastore,
            "GetDatastore": self.get_datastore,
            "ListDatastores": self.list_datastores,
            "DeleteDatastore": self.delete_datastore,
            "StartDICOMImportJob": self.start_dicom_import_job,
            "GetDICOMImportJob": self.get_dicom_import_job,
            "ListDICOMImportJobs": self.list_dicom_import_jobs,
            "SearchImageSets": self.search_image_sets,
            "GetImageSet": self.get_image_set,
            "GetImageSetMetadata": self.get_image_set_metadata,
            "ListImageSetVersions": self.list_image_set_versions,
        }

    # --- datastores -----------------------------------------------------------------------
    def create_datastore(self, p: dict[str, Any]) -> dict[str, Any]:
        datastore, _ = self._registry.create_datastore(
            p.get("datastoreName") or "datastore",
            p.get("clientToken"),
            kms_key_arn=p.get("kmsKeyArn"),
            lossless_storage_format=p.get("losslessStorageFormat"),
        )
        return {"datastoreId": datastore.id, "datastoreStatus": datastore.status}

    def get_datastore(self, p: dict[str, Any]) -> dict[str, Any]:
        return {"datastoreProperties": self._registry.datastore(p["datastoreId"]).properties()}

    def list_datastores(self, p: dict[str, Any]) -> dict[str, Any]:
        datastores = self._registry.datastores(p.get("datastoreStatus"))
        page, token = _page([d.summary() for d in datastores], p)
        return {"datastoreSummaries": page, "nextToken": token}

    def delete_datastore(self, p: dict[str, Any]) -> dict[str, Any]:
        datastore_id = p["datastoreId"]
        self._registry.delete_datastore(datastore_id, self._catalog.count(datastore_id))
        return {"datastoreId": datastore_id, "datastoreStatus": "DELETING"}

    # --- import jobs ----------------------------------------------------------------------
    def start_dicom_import_job(self, p: dict[str, Any]) -> dict[str, Any]:
        if p.get("importConfiguration"):
            raise ValidationError("importConfiguration is not supported by the local HealthImaging emulator")
        self._registry.datastore(p["datastoreId"], active=True)
        if self._faults.take_start_throttle() or (self._start_bucket and not self._start_bucket.try_take()):
            raise ThrottledError("Rate exceeded for StartDICOMImportJob")
        job, created = self._registry.submit_job(p["datastoreId"], p, self._faults.take_job_failure)
        if created:
            with self._lock:
                self.start_import_calls += 1
            self._runner.submit(job)
        return {
            "datastoreId": job.datastore_id,
            "jobId": job.id,
            "jobStatus": job.status,
            "submittedAt": job.submitted_at,
        }

    def get_dicom_import_job(self, p: dict[str, Any]) -> dict[str, Any]:
        return {"jobProperties": self._registry.job(p["datastoreId"], p["jobId"]).properties()}

    def list_dicom_import_jobs(self, p: dict[str, Any]) -> dict[str, Any]:
        self._registry.datastore(p["datastoreId"])
        jobs = reversed(self._registry.jobs(p["datastoreId"], p.get("jobStatus")))  # newest first
        page, token = _page([j.summary() for j in jobs], p)
        return {"jobSummaries": page, "nextToken": token}

    # --- image sets -----------------------------------------------------------------------
    def search_image_sets(self, p: dict[str, Any]) -> dict[str, Any]:
        self._registry.datastore(p["datastoreId"])
        criteria = p.get("searchCriteria") or {}
        filters = criteria.get("filters") or []
        for search_filter in filters:
            check_filter(search_filter)
        summaries = self._catalog.search(p["datastoreId"], filters, criteria.get("sort"))
        page, token = _page(summaries, p)
        result: dict[str, Any] = {"imageSetsMetadataSummaries": page, "nextToken": token}
        if criteria.get("sort"):
            result["sort"] = criteria["sort"]
        return result

    def get_image_set(self, p: dict[str, Any]) -> dict[str, Any]:
        self._registry.datastore(p["datastoreId"])
        image_set = self._catalog.get(p["datastoreId"], p["imageSetId"])
        version = image_set.get_version(p.get("versionId"))
        return {
            "datastoreId": image_set.datastore_id,
            "imageSetId": image_set.id,
            "versionId": str(version.version),
            "imageSetState": "ACTIVE",
            "imageSetWorkflowStatus": "IMPORTED",
            "createdAt": image_set.created_at,
            "updatedAt": version.updated_at,
            "imageSetArn": image_set.arn,
            "isPrimary": image_set.is_primary,
            "storageTier": "FREQUENT_ACCESS",
        }

    def get_image_set_metadata(self, p: dict[str, Any]) -> dict[str, Any]:
        self._registry.datastore(p["datastoreId"])
        image_set = self._catalog.get(p["datastoreId"], p["imageSetId"])
        document = image_set.get_version(p.get("versionId")).document
        return {
            "imageSetMetadataBlob": gzip.compress(json.dumps(document).encode()),
            "contentType": "application/json",
            "contentEncoding": "gzip",
        }

    def list_image_set_versions(self, p: dict[str, Any]) -> dict[str, Any]:
        self._registry.datastore(p["datastoreId"])
        image_set = self._catalog.get(p["datastoreId"], p["imageSetId"])
        versions = [
            {
                "imageSetId": image_set.id,
                "versionId": str(v.version),
                "imageSetState": "ACTIVE",
                "ImageSetWorkflowStatus": "IMPORTED",
                "createdAt": image_set.created_at,
                "updatedAt": v.updated_at,
                "isPrimary": image_set.is_primary,
            }
            for v in reversed(image_set.versions)
        ]
        page, token = _page(versions, p)
        return {"imageSetPropertiesList": page, "nextToken": token}


def _page(items: list[T], p: dict[str, Any]) -> tuple[list[T], str | None]:
    """One page of ``items`` after ``nextToken``; the token is an opaque, encoded offset."""
    start = _decode_token(p["nextToken"]) if p.get("nextToken") else 0
    size = p.get("maxResults") or DEFAULT_MAX_RESULTS
    end = start + size
    token = base64.urlsafe_b64encode(f"offset:{end}".encode()).decode() if end < len(items) else None
    return items[start:end], token


def _decode_token(token: str) -> int:
    try:
        label, _, offset = base64.urlsafe_b64decode(token.encode()).decode().partition(":")
        if label == "offset" and offset.isdigit():
            return int(offset)
    except (binascii.Error, UnicodeDecodeError, ValueError):
        pass
    raise ValidationError("Invalid nextToken")
