"""Validate the instances of a sealed batch before it is imported.

For every manifest instance: the object exists with the recorded size, its ``sha256`` metadata
equals the manifest's, it is a Part 10 file whose SOP Instance UID matches the manifest, and it
meets HealthImaging's transfer syntax and element constraints (handlers/dicom_header.py). One
ranged GET per object returns the header bytes, the total size and the metadata; only objects
whose header is longer than the probe are read whole. Objects are checked in parallel (I/O bound).
"""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from botocore.exceptions import ClientError

from core.contracts import SHA256_METADATA
from core.layout import BatchManifest, ManifestInstance
from handlers import aws, objects
from handlers.dicom_header import HEADER_PROBE_BYTES, NotPart10, Truncated, parse_header
from handlers.errors import ManifestError, classify

PARALLELISM = aws.MAX_POOL_CONNECTIONS  # more threads than pooled connections open new ones


@dataclass(frozen=True)
class Verdict:
    instance: ManifestInstance
    reason: str | None  # None = valid
    already_quarantined: bool = False


def load_manifest(s3: Any, bucket: str, key: str) -> BatchManifest:
    try:
        body = s3.get_object(Bucket=bucket, Key=key)["Body"].read()
    except ClientError as exc:
        if objects.is_missing(exc):
            raise ManifestError(f"manifest s3://{bucket}/{key} does not exist") from None
        raise classify(exc) from exc
    try:
        return BatchManifest.model_validate(json.loads(body))
    except ValueError as exc:
        raise ManifestError(f"manifest s3://{bucket}/{key} is not a valid batch manifest: {exc}") from None


def check_instance(s3: Any, bucket: str, manifest: BatchManifest, instance: ManifestInstance) -> Verdict:
    found = objects.probe(s3, bucket, instance.key, HEADER_PROBE_BYTES)
    if found is None:
        earlier = objects.read_reason(s3, bucket, manifest.batch_id, manifest.prefix, instance.key)
        if earlier is not None:
            return Verdict(instance, earlier.get("reason", "quarantined"), already_quarantined=True)
        return Verdict(instance, "object listed in the manifest does not exist")
    data, size, metadata = found
    if size != instance.size:
        return Verdict(instance, f"object is {size} bytes, the manifest records {instance.size}")
    if metadata.get(SHA256_METADATA, "").lower() != instance.sha256.lower():
        return Verdict(instance, "object sha256 metadata differs from the manifest's checksum")
    try:
        try:
            header = parse_header(data, complete=size <= len(data))
        except Truncated:
            header = parse_header(objects.read(s3, bucket, instance.key), complete=True)
    except NotPart10 as exc:
        return Verdict(instance, str(exc))
    if header.sop_instance_uid != instance.sop_instance_uid:
        return Verdict(instance, "SOPInstanceUID in the file differs from the manifest")
    if header.problems:
        return Verdict(instance, "; ".join(header.problems))
    return Verdict(instance, None)


def validate_batch(s3: Any, bucket: str, manifest: BatchManifest) -> list[Verdict]:
    with ThreadPoolExecutor(max_workers=PARALLELISM) as pool:
        return list(pool.map(lambda i: check_instance(s3, bucket, manifest, i), manifest.instances))
