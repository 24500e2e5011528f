"""Read S3 objects straight from moto's in-process backend: the HealthImaging emulator's reads.

On the local stack the emulator and moto share one process. Reading an object through boto3
costs ~10 ms of Python CPU here (botocore on one side, werkzeug + Flask + moto's responses on
the other, a new TCP connection per request because moto's server does not keep connections
alive), and an import reads every object of a batch; the real HealthImaging reads S3 inside
AWS, not through our process. So the local stack hands the emulator this reader, which takes
the bytes from moto's S3 backend (same data the S3 endpoint serves). The handlers still go
through the S3 API. Errors are raised as the ``ClientError`` the S3 API would return, so the
emulator treats them exactly like a failed GetObject. tests/local/test_moto_internals.py fails
loudly if the moto names used here move.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from botocore.exceptions import ClientError
from moto.s3.exceptions import MissingBucket
from moto.s3.models import s3_backends

PARTITION = "aws"


def _error(code: str, message: str) -> ClientError:
    return ClientError({"Error": {"Code": code, "Message": message}}, "GetObject")


def s3_backend(account_id: str) -> Any:
    """moto's S3 backend of ``account_id``. Look it up once per user, not per read: moto takes a
    process-wide lock on every lookup, and the readers run in many threads."""
    return s3_backends[account_id][PARTITION]


def object_reader(account_id: str) -> Callable[[str, str], tuple[bytes, str]]:
    """A ``(bucket, key) -> (body, content_encoding)`` reader over moto's S3 backend."""
    backend = s3_backend(account_id)

    def read(bucket: str, key: str) -> tuple[bytes, str]:
        try:
            found = backend.get_object(bucket, key)
        except MissingBucket:
            raise _error("NoSuchBucket", f"bucket {bucket} does not exist") from None
        if found is None:
            raise _error("NoSuchKey", f"s3://{bucket}/{key} does not exist")
        return found.value, found.metadata.get("content-encoding", "")

    return read
