"""Sweeper (scheduled): seal batches that a crashed SCP task left without a manifest.

Walks ``incoming/<yyyy>/<mm>/<dd>/<batchId>/`` folder by folder (one HEAD per batch for its
manifest), and for a batch that has none and whose newest object is older than
``sweeper_min_age_seconds`` builds the manifest from the objects themselves: UIDs and transfer
syntax from each header, size from the listing, sha256 from the object metadata the SCP wrote
(computed from the bytes if absent). An object that is not DICOM is still listed (with empty
UIDs) so that validation quarantines it with a reason: nothing acknowledged is stranded.
Writing ``batches/<batchId>.json`` (seal reason "sweeper") starts the normal import path. The
write is conditional (If-None-Match), so a late seal by the SCP itself wins and is not replaced.
The SCP's journal (``scp/journal.py``) writes its manifests the same way: whichever is first
stays, and the instances a sweeper's manifest lacks are sealed by the SCP under a new batch id,
never under this one (docs/scp.md, "The journal").
An invocation event ``{"minAgeSeconds": N}`` overrides the age (operators, tests).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from typing import Any

from aws_lambda_powertools.metrics import MetricUnit
from botocore.exceptions import ClientError

from core.contracts import SHA256_METADATA
from core.layout import (
    BATCH_ID_PATTERN,
    INCOMING_PREFIX,
    BatchManifest,
    ManifestInstance,
    manifest_key,
)
from handlers import aws, objects
from handlers.dicom_header import HEADER_PROBE_BYTES, NotPart10, Truncated, parse_header
from handlers.errors import classify
from handlers.runtime import environment, lambda_entry_point, powertools

logger, metrics, tracer = powertools()

PARALLELISM = aws.MAX_POOL_CONNECTIONS  # more threads than pooled connections open new ones


def _folders(s3: Any, bucket: str, prefix: str) -> Iterator[str]:
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix, Delimiter="/"):
        for common in page.get("CommonPrefixes", []):
            yield common["Prefix"]


def batch_prefixes(s3: Any, bucket: str) -> Iterator[tuple[str, str]]:
    """Every ``(batchId, prefix)`` under incoming/ (year / month / day / batch folders)."""
    for year in _folders(s3, bucket, INCOMING_PREFIX):
        for month in _folders(s3, bucket, year):
            for day in _folders(s3, bucket, month):
                for batch in _folders(s3, bucket, day):
                    batch_id = batch[len(day) :].rstrip("/")
                    if BATCH_ID_PATTERN.match(batch_id):
                        yield batch_id, batch


def _list(s3: Any, bucket: str, prefix: str) -> list[dict[str, Any]]:
    found = []
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        found.extend(page.get("Contents", []))
    return found


def describe_object(s3: Any, bucket: str, listed: dict[str, Any]) -> ManifestInstance:
    key = listed["Key"]
    found = objects.probe(s3, bucket, key, HEADER_PROBE_BYTES)
    data, size, metadata = found if found is not None else (b"", int(listed["Size"]), {})
    sha256 = metadata.get(SHA256_METADATA, "")
    if not sha256:  # not written by our SCP: hash the bytes themselves
        if size > len(data):
            data = objects.read(s3, bucket, key)
        sha256 = hashlib.sha256(data).hexdigest()
    uids = dict.fromkeys(
        (
            "sop_class_uid",
            "sop_instance_uid",
            "study_instance_uid",
            "series_instance_uid",
            "transfer_syntax_uid",
        ),
        "",
    )
    try:
        try:
            header = parse_header(data, complete=size <= len(data))
        except Truncated:
            header = parse_header(objects.read(s3, bucket, key), complete=True)
        uids = {k: getattr(header, k) for k in uids}
    except NotPart10:
        pass  # listed anyway: validation quarantines it with the reason
    return ManifestInstance(key=key, size=size, sha256=sha256, **uids)


def seal_batch(
    s3: Any, bucket: str, batch_id: str, prefix: str, listed: list[dict[str, Any]], now: datetime
) -> bool:
    with ThreadPoolExecutor(max_workers=PARALLELISM) as pool:
        instances = list(pool.map(lambda o: describe_object(s3, bucket, o), listed))
    manifest = BatchManifest(
        batch_id=batch_id,
        prefix=prefix,
        opened_at=min(o["LastModified"] for o in listed),
        sealed_at=now,
        seal_reason="sweeper",
        task_id="sweeper",
        instances=instances,
    )
    try:
        s3.put_object(
            Bucket=bucket,
            Key=manifest_key(batch_id),
            Body=manifest.to_json().encode(),
            ContentType="application/json",
            IfNoneMatch="*",
        )
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") in {"PreconditionFailed", "ConditionalRequestConflict"}:
            return False
        raise classify(exc) from exc
    return True


@tracer.capture_method
def sweep(*, s3: Any, bucket: str, min_age_seconds: int, now: datetime | None = None) -> dict[str, Any]:
    now = now or datetime.now(UTC)
    cutoff = now - timedelta(seconds=min_age_seconds)
    sealed: list[str] = []
    too_young = 0
    for batch_id, prefix in batch_prefixes(s3, bucket):
        if objects.head(s3, bucket, manifest_key(batch_id)) is not None:
            continue
        listed = _list(s3, bucket, prefix)
        if not listed:
            continue
        if max(o["LastModified"] for o in listed) > cutoff:
            too_young += 1
            continue
        if seal_batch(s3, bucket, batch_id, prefix, listed, now):
            sealed.append(batch_id)
            logger.info("sealed orphaned batch", extra={"batchId": batch_id, "instances": len(listed)})
    metrics.add_metric(name="BatchesSealedBySweeper", unit=MetricUnit.Count, value=len(sealed))
    return {"sealed": sealed, "waiting": too_young}


@lambda_entry_point(logger, metrics, tracer)
def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    """Scheduled (EventBridge) or invoked by an operator; ``{"minAgeSeconds": N}`` overrides the age."""
    env = environment()
    min_age = (event or {}).get("minAgeSeconds", env.settings.sweeper_min_age_seconds)
    return sweep(s3=aws.client("s3"), bucket=env.resources.dicom_bucket, min_age_seconds=int(min_age))
