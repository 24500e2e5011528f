"""Read what a completed HealthImaging import job wrote to its output location.

Layout (AWS HealthImaging Developer Guide, "Understanding import jobs"; the same paths AWS's
sample code reads): ``<outputS3Uri>/<datastoreId>-DicomImport-<jobId>/job-output-manifest.json``
(``jobSummary`` with ``imageSetsSummary[].imageSetId``), ``SUCCESS/success.ndjson`` (one line per
imported instance, ``importResponse.imageSetId``/``isPrimary``) and ``FAILURE/failure.ndjson``
(one line per failed file with its ``inputFile`` and an ``exception``/``message``). A missing
ndjson file means "no lines of that kind".
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlparse

from botocore.exceptions import ClientError

from core.contracts import TransientError
from handlers import objects
from handlers.errors import classify


@dataclass
class ImportOutcome:
    image_set_ids: list[str] = field(default_factory=list)
    imported_keys: set[str] = field(default_factory=set)
    failed: dict[str, str] = field(default_factory=dict)  # input key -> reason
    non_primary_image_set_ids: list[str] = field(default_factory=list)
    image_set_by_key: dict[str, str] = field(default_factory=dict)  # input key -> its image set id
    summary: dict[str, Any] = field(default_factory=dict)


def split_s3_uri(uri: str) -> tuple[str, str]:
    parsed = urlparse(uri)
    return parsed.netloc, parsed.path.lstrip("/")


def job_output_prefix(output_s3_uri: str, datastore_id: str, job_id: str) -> tuple[str, str]:
    bucket, prefix = split_s3_uri(output_s3_uri)
    if prefix and not prefix.endswith("/"):
        prefix += "/"
    return bucket, f"{prefix}{datastore_id}-DicomImport-{job_id}/"


def _get(s3: Any, bucket: str, key: str) -> bytes | None:
    try:
        return s3.get_object(Bucket=bucket, Key=key)["Body"].read()
    except ClientError as exc:
        if objects.is_missing(exc):
            return None
        raise classify(exc) from exc


def _lines(data: bytes | None) -> list[dict[str, Any]]:
    if not data:
        return []
    return [json.loads(line) for line in data.decode("utf-8").splitlines() if line.strip()]


def _input_key(line: dict[str, Any]) -> str:
    """The S3 key of the input file a result line is about (``inputFile`` is an s3:// URI or a key)."""
    value = line.get("inputFile") or line.get("inputS3Uri") or line.get("file") or ""
    if isinstance(value, dict):
        value = value.get("uri") or value.get("key") or ""
    if str(value).startswith("s3://"):
        return split_s3_uri(str(value))[1]
    return str(value)


def _failure_reason(line: dict[str, Any]) -> str:
    exc = line.get("exception")
    if isinstance(exc, dict):
        kind = exc.get("exceptionType") or exc.get("type") or ""
        message = exc.get("message") or ""
        return f"{kind}: {message}".strip(": ") or "import failed"
    return str(exc or line.get("message") or line.get("error") or "import failed")


def read_outcome(s3: Any, output_s3_uri: str, datastore_id: str, job_id: str) -> ImportOutcome:
    bucket, prefix = job_output_prefix(output_s3_uri, datastore_id, job_id)
    manifest = _get(s3, bucket, f"{prefix}job-output-manifest.json")
    if manifest is None:
        # The job is COMPLETED but its output is not visible yet: a retry can help.
        raise TransientError(f"s3://{bucket}/{prefix}job-output-manifest.json is not there yet")
    summary = json.loads(manifest).get("jobSummary", {})
    outcome = ImportOutcome(summary={k: v for k, v in summary.items() if not isinstance(v, list | dict)})
    ids: dict[str, None] = {}
    for entry in summary.get("imageSetsSummary", []) or []:
        if entry.get("imageSetId"):
            ids[entry["imageSetId"]] = None
            if entry.get("isPrimary") is False:
                outcome.non_primary_image_set_ids.append(entry["imageSetId"])
    for line in _lines(_get(s3, bucket, f"{prefix}SUCCESS/success.ndjson")):
        response = line.get("importResponse") or {}
        if response.get("imageSetId"):
            ids[response["imageSetId"]] = None
        outcome.imported_keys.add(_input_key(line))
        if response.get("imageSetId"):
            outcome.image_set_by_key[_input_key(line)] = response["imageSetId"]
    for line in _lines(_get(s3, bucket, f"{prefix}FAILURE/failure.ndjson")):
        outcome.failed[_input_key(line)] = _failure_reason(line)
    outcome.image_set_ids = list(ids)
    return outcome
