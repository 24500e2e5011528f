"""Reading what the SCP stored: manifests and objects, from a directory or a bucket."""

from __future__ import annotations

import hashlib
from pathlib import Path

from core.layout import BatchManifest
from tests.scp.harness import wait_for


def file_manifests(store: Path) -> list[BatchManifest]:
    return [BatchManifest.model_validate_json(p.read_text()) for p in sorted(store.glob("batches/*.json"))]


def wait_file_manifests(store: Path, sop_uids: set[str], timeout: float = 15.0) -> list[BatchManifest]:
    """The manifests listing any of ``sop_uids``, once together they list all of them."""

    def found():
        hits = [m for m in file_manifests(store) if {i.sop_instance_uid for i in m.instances} & sop_uids]
        listed = {i.sop_instance_uid for m in hits for i in m.instances}
        return hits if sop_uids <= listed else None

    return wait_for(found, timeout, what=f"manifests listing {len(sop_uids)} instances")


def s3_manifests(s3, bucket: str) -> list[BatchManifest]:
    listing = s3.list_objects_v2(Bucket=bucket, Prefix="batches/").get("Contents", [])
    return [
        BatchManifest.model_validate_json(s3.get_object(Bucket=bucket, Key=o["Key"])["Body"].read())
        for o in listing
    ]


def wait_s3_manifests(s3, bucket: str, sop_uids: set[str], timeout: float = 15.0) -> list[BatchManifest]:
    def found():
        hits = [m for m in s3_manifests(s3, bucket) if {i.sop_instance_uid for i in m.instances} & sop_uids]
        listed = {i.sop_instance_uid for m in hits for i in m.instances}
        return hits if sop_uids <= listed else None

    return wait_for(found, timeout, what=f"manifests listing {len(sop_uids)} instances")


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()
