"""Test helpers: put a batch into S3 exactly as the SCP lays it out (core/layout.py)."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime
from pathlib import Path

from pydicom import dcmread

from core.layout import (
    BatchManifest,
    ManifestInstance,
    batch_prefix,
    instance_key,
    manifest_key,
    new_batch_id,
)


def put_instance(s3, bucket: str, key: str, data: bytes) -> str:
    digest = hashlib.sha256(data).hexdigest()
    s3.put_object(Bucket=bucket, Key=key, Body=data, Metadata={"sha256": digest})
    return digest


def upload_batch(
    s3,
    bucket: str,
    files: list[Path],
    *,
    extra: dict[str, bytes] | None = None,
    calling_ae: str = "MODALITY1",
    write_manifest: bool = True,
) -> BatchManifest:
    """Upload ``files`` (Part 10) plus ``extra`` raw objects (name -> bytes) as one batch."""
    now = datetime.now(UTC)
    batch_id = new_batch_id(now)
    prefix = batch_prefix(batch_id, now)
    instances = []
    for path in files:
        ds = dcmread(path, stop_before_pixels=True)
        key = instance_key(prefix, ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID)
        data = path.read_bytes()
        digest = put_instance(s3, bucket, key, data)
        instances.append(
            ManifestInstance(
                key=key,
                sop_class_uid=ds.SOPClassUID,
                sop_instance_uid=ds.SOPInstanceUID,
                study_instance_uid=ds.StudyInstanceUID,
                series_instance_uid=ds.SeriesInstanceUID,
                transfer_syntax_uid=ds.file_meta.TransferSyntaxUID,
                size=len(data),
                sha256=digest,
            )
        )
    for name, data in (extra or {}).items():
        key = f"{prefix}{name}"
        digest = put_instance(s3, bucket, key, data)
        instances.append(
            ManifestInstance(
                key=key,
                sop_class_uid="",
                sop_instance_uid=name,
                study_instance_uid="1.2.3",
                series_instance_uid="1.2.3.4",
                transfer_syntax_uid="",
                size=len(data),
                sha256=digest,
            )
        )
    manifest = BatchManifest(
        batch_id=batch_id,
        prefix=prefix,
        opened_at=now,
        sealed_at=now,
        seal_reason="release",
        calling_ae_title=calling_ae,
        called_ae_title="AHI-GATEWAY",
        instances=instances,
    )
    if write_manifest:
        s3.put_object(Bucket=bucket, Key=manifest_key(batch_id), Body=manifest.to_json().encode())
    return manifest
