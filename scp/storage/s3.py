"""``s3://bucket[/prefix]`` backend: PUTs that S3 verifies (ChecksumSHA256), multipart for large files.

The client is built lazily with botocore's own retries off: ``with_retries`` is the one retry
policy, so a failure reaches the sender as 0xA700 within a bounded time. boto3 honours
``AWS_ENDPOINT_URL`` / ``AWS_ENDPOINT_URL_S3`` itself (moto in tests, VPC endpoints in AWS).
"""

from __future__ import annotations

import base64
import hashlib
import threading
from pathlib import Path
from typing import Any

from core.contracts import SHA256_METADATA
from scp.spool import Spooled
from scp.storage.base import StorageError, StoredObject

DICOM_CONTENT_TYPE = "application/dicom"
CONNECT_TIMEOUT_SECONDS, READ_TIMEOUT_SECONDS = 5, 60  # both S3 clients (boto3, awscrt)
MAX_PARTS = 10_000
# Client errors that are worth another try; other 4xx are permanent (no bucket, denied, ...).
_TRANSIENT_CODES = {"RequestTimeout", "SlowDown", "Throttling", "ThrottlingException", "BadDigest"}


def checksum_value(sha256_hex: str) -> str:
    """A hex SHA-256 as S3's checksum value (base64 of the digest): ChecksumSHA256, its header."""
    return base64.b64encode(bytes.fromhex(sha256_hex)).decode("ascii")


def transient_failure(status: int, code: str) -> bool:
    """Whether an S3 error response is worth another try (both clients: boto3 and awscrt)."""
    return status >= 500 or status in (408, 429) or code in _TRANSIENT_CODES


def _b64_sha256(data: bytes) -> str:
    return base64.b64encode(hashlib.sha256(data).digest()).decode("ascii")


def _storage_error(exc: Exception, what: str) -> StorageError:
    from botocore.exceptions import ClientError

    if isinstance(exc, ClientError):
        error = exc.response.get("Error", {})
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
        code = error.get("Code", "")
        transient = transient_failure(status, code)
        return StorageError(f"{what}: S3 {code or status}", transient=transient)
    return StorageError(f"{what}: {type(exc).__name__}: {exc}", transient=True)


class S3Storage:
    def __init__(self, bucket: str, prefix: str, *, part_size: int, max_connections: int = 32):
        self.bucket = bucket
        self.prefix = prefix.strip("/") + "/" if prefix.strip("/") else ""
        self.part_size = part_size
        self.max_connections = max_connections
        self.description = f"s3://{bucket}/{self.prefix}"
        self._client: Any = None
        self._session: Any = None
        self._crt: Any = None
        self._client_lock = threading.Lock()

    @property
    def client(self) -> Any:
        with self._client_lock:
            if self._client is None:
                import boto3
                from botocore.config import Config

                self._session = boto3.session.Session()
                self._client = self._session.client(
                    "s3",
                    config=Config(
                        retries={"total_max_attempts": 1},
                        connect_timeout=CONNECT_TIMEOUT_SECONDS,
                        read_timeout=READ_TIMEOUT_SECONDS,
                        max_pool_connections=self.max_connections,
                    ),
                )
            return self._client

    def full_key(self, key: str) -> str:
        return self.prefix + key

    def prepare(self) -> None:
        self.client  # noqa: B018  build the client (and read credentials) before the first store

    def check(self) -> None:
        try:
            self.client.head_bucket(Bucket=self.bucket)
        except Exception as exc:  # any failure means not ready
            raise _storage_error(exc, f"bucket {self.bucket}") from exc

    def put_bytes(self, key: str, data: bytes, content_type: str) -> StoredObject:
        sha256 = hashlib.sha256(data).hexdigest()
        self._put_object(key, data, sha256, content_type)
        return StoredObject(key=key, size=len(data), sha256=sha256)

    def put_bytes_if_absent(self, key: str, data: bytes, content_type: str) -> bool:
        return self._put_object(key, data, hashlib.sha256(data).hexdigest(), content_type, if_absent=True)

    def get_bytes(self, key: str) -> bytes | None:
        from botocore.exceptions import ClientError

        try:
            return self.client.get_object(Bucket=self.bucket, Key=key)["Body"].read()
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in {"NoSuchKey", "404"}:
                return None
            raise _storage_error(exc, f"GET {key}") from exc
        except Exception as exc:
            raise _storage_error(exc, f"GET {key}") from exc

    def put_file(self, key: str, spooled: Spooled) -> StoredObject:
        """The SHA-256 computed while spooling is the checksum S3 verifies: no second pass to hash."""
        if spooled.size >= self.part_size:
            self._put_multipart(key, spooled.path, spooled.size, spooled.sha256)
        else:
            try:
                data = spooled.path.read_bytes()
            except OSError as exc:
                raise StorageError(f"reading the spooled object failed: {exc}", transient=False) from exc
            self._put_object(key, data, spooled.sha256, DICOM_CONTENT_TYPE)
        return StoredObject(key=key, size=spooled.size, sha256=spooled.sha256)

    def upload_file(self, key: str, spooled: Spooled) -> StoredObject:
        """``put_file`` for the journal's uploader: objects below the multipart threshold go
        through awscrt's client (``scp/storage/s3_crt.py``), which keeps the GIL free."""
        if spooled.size >= self.part_size:
            return self.put_file(key, spooled)
        client = self.client
        with self._client_lock:
            if self._crt is None:
                from scp.storage.s3_crt import CrtPutter

                self._crt = CrtPutter(client, self._session.get_credentials(), self.bucket)
        self._crt.put(key, str(spooled.path), spooled.size, spooled.sha256, DICOM_CONTENT_TYPE)
        return StoredObject(key=key, size=spooled.size, sha256=spooled.sha256)

    def _put_object(
        self, key: str, data: bytes, sha256: str, content_type: str, *, if_absent: bool = False
    ) -> bool:
        """False only with ``if_absent`` when the key exists (S3 conditional write, If-None-Match)."""
        from botocore.exceptions import ClientError

        try:
            self.client.put_object(
                Bucket=self.bucket,
                Key=key,
                Body=data,
                ContentType=content_type,
                ChecksumAlgorithm="SHA256",
                ChecksumSHA256=checksum_value(sha256),
                Metadata={SHA256_METADATA: sha256},
                **({"IfNoneMatch": "*"} if if_absent else {}),
            )
        except Exception as exc:
            code = exc.response.get("Error", {}).get("Code") if isinstance(exc, ClientError) else None
            if if_absent and code in {"PreconditionFailed", "ConditionalRequestConflict"}:
                return False
            raise _storage_error(exc, f"PUT {key}") from exc
        return True

    def _put_multipart(self, key: str, path: Path, size: int, sha256: str) -> None:
        """One part in memory at a time: memory stays flat whatever the object size."""
        part_size = max(self.part_size, -(-size // MAX_PARTS))
        try:
            upload_id = self.client.create_multipart_upload(
                Bucket=self.bucket,
                Key=key,
                ContentType=DICOM_CONTENT_TYPE,
                ChecksumAlgorithm="SHA256",
                Metadata={SHA256_METADATA: sha256},
            )["UploadId"]
        except Exception as exc:
            raise _storage_error(exc, f"multipart start {key}") from exc
        try:
            parts = []
            with path.open("rb") as source:
                number = 1
                while chunk := source.read(part_size):
                    checksum = _b64_sha256(chunk)
                    etag = self.client.upload_part(
                        Bucket=self.bucket,
                        Key=key,
                        UploadId=upload_id,
                        PartNumber=number,
                        Body=chunk,
                        ChecksumAlgorithm="SHA256",
                        ChecksumSHA256=checksum,
                    )["ETag"]
                    parts.append({"PartNumber": number, "ETag": etag, "ChecksumSHA256": checksum})
                    number += 1
            self.client.complete_multipart_upload(
                Bucket=self.bucket, Key=key, UploadId=upload_id, MultipartUpload={"Parts": parts}
            )
        except Exception as exc:
            try:
                self.client.abort_multipart_upload(Bucket=self.bucket, Key=key, UploadId=upload_id)
            except Exception:  # best effort: a lifecycle rule cleans up leftovers
                pass
            if isinstance(exc, OSError):
                raise StorageError(f"reading the spooled object failed: {exc}", transient=False) from exc
            raise _storage_error(exc, f"multipart {key}") from exc
