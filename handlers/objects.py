"""S3 operations on the objects of a batch: read headers, quarantine, clean up.

Quarantine keeps a failed instance for an operator: it is copied to
``quarantine/<batchId>/<path below the batch prefix>`` next to ``<that key>.reason.json``
(``{"batchId", "sourceKey", "sopInstanceUid", "stage", "reason", "at"}``) and then deleted from
the import prefix. Every step is idempotent, so a retried Lambda can repeat it.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from botocore.exceptions import ClientError

from core.contracts import IMPORTED_TAG
from core.layout import QUARANTINE_PREFIX
from handlers.errors import classify
from handlers.jobs import now_iso

DELETE_BATCH = 1000  # keys per DeleteObjects request (the S3 maximum)
TAGGING_PARALLELISM = 8  # PutObjectTagging takes one key: a few at a time, bounded for the S3 rate


def quarantine_key(batch_id: str, prefix: str, key: str) -> str:
    relative = key[len(prefix) :] if key.startswith(prefix) else key.rsplit("/", 1)[-1]
    return f"{QUARANTINE_PREFIX}{batch_id}/{relative}"


def reason_key(quarantined_key: str) -> str:
    return f"{quarantined_key}.reason.json"


def is_missing(exc: ClientError) -> bool:
    code = exc.response.get("Error", {}).get("Code", "")
    return code in {"404", "NoSuchKey", "NotFound"}


def head(s3: Any, bucket: str, key: str) -> dict[str, Any] | None:
    try:
        return s3.head_object(Bucket=bucket, Key=key)
    except ClientError as exc:
        if is_missing(exc):
            return None
        raise classify(exc) from exc


def probe(s3: Any, bucket: str, key: str, first_bytes: int) -> tuple[bytes, int, dict[str, str]] | None:
    """The first bytes of an object, its total size and its metadata, in one ranged GET (None: missing)."""
    try:
        response = s3.get_object(Bucket=bucket, Key=key, Range=f"bytes=0-{first_bytes - 1}")
    except ClientError as exc:
        if is_missing(exc):
            return None
        if exc.response.get("Error", {}).get("Code") == "InvalidRange":  # an empty object
            found = head(s3, bucket, key)
            return None if found is None else (b"", 0, found.get("Metadata") or {})
        raise classify(exc) from exc
    data = response["Body"].read()
    content_range = response.get("ContentRange") or ""
    size = int(content_range.rsplit("/", 1)[1]) if "/" in content_range else int(response["ContentLength"])
    return data, size, response.get("Metadata") or {}


def read(s3: Any, bucket: str, key: str, first_bytes: int | None = None) -> bytes:
    kwargs = {"Range": f"bytes=0-{first_bytes - 1}"} if first_bytes else {}
    try:
        return s3.get_object(Bucket=bucket, Key=key, **kwargs)["Body"].read()
    except ClientError as exc:
        raise classify(exc) from exc


def read_reason(s3: Any, bucket: str, batch_id: str, prefix: str, key: str) -> dict[str, Any] | None:
    """The reason an object was quarantined earlier (a retried invocation), or None."""
    try:
        body = s3.get_object(Bucket=bucket, Key=reason_key(quarantine_key(batch_id, prefix, key)))["Body"]
    except ClientError as exc:
        if is_missing(exc):
            return None
        raise classify(exc) from exc
    return json.loads(body.read())


def quarantine(
    s3: Any,
    bucket: str,
    batch_id: str,
    prefix: str,
    key: str,
    *,
    sop_instance_uid: str,
    stage: str,
    reason: str,
) -> str:
    """Move ``key`` to the quarantine prefix with its reason; returns the quarantine key."""
    target = quarantine_key(batch_id, prefix, key)
    document = {
        "batchId": batch_id,
        "sourceKey": key,
        "sopInstanceUid": sop_instance_uid,
        "stage": stage,
        "reason": reason,
        "at": now_iso(),
    }
    try:
        if head(s3, bucket, key) is not None:
            s3.copy_object(
                Bucket=bucket, Key=target, CopySource={"Bucket": bucket, "Key": key}, MetadataDirective="COPY"
            )
        s3.put_object(
            Bucket=bucket,
            Key=reason_key(target),
            Body=json.dumps(document).encode(),
            ContentType="application/json",
        )
        s3.delete_object(Bucket=bucket, Key=key)
    except ClientError as exc:
        raise classify(exc) from exc
    return target


def clean_up(s3: Any, bucket: str, keys: Iterable[str], mode: str) -> int:
    """Apply the cleanup mode to imported objects: delete, tag for lifecycle expiry, or keep.

    Returns how many objects were really cleaned: DeleteObjects can refuse single keys while the
    request succeeds; those stay behind (the bucket's lifecycle rule still expires them) and are
    not counted, so the job record never claims more than happened.
    """
    keys = list(keys)
    if mode == "keep" or not keys:
        return 0
    refused = 0
    try:
        if mode == "delete":
            for start in range(0, len(keys), DELETE_BATCH):
                chunk = keys[start : start + DELETE_BATCH]
                response = s3.delete_objects(
                    Bucket=bucket, Delete={"Objects": [{"Key": k} for k in chunk], "Quiet": True}
                )
                refused += len(response.get("Errors", []))
        elif mode == "tag":
            tag = {"TagSet": [{"Key": IMPORTED_TAG[0], "Value": IMPORTED_TAG[1]}]}
            with ThreadPoolExecutor(max_workers=TAGGING_PARALLELISM) as pool:
                list(pool.map(lambda key: s3.put_object_tagging(Bucket=bucket, Key=key, Tagging=tag), keys))
        else:
            raise ValueError(f"unknown cleanup mode {mode!r}")
    except ClientError as exc:
        raise classify(exc) from exc
    return len(keys) - refused
