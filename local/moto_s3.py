"""moto's S3 backend, read in this process: the local stack's two hot read paths past moto's HTTP front.

On the local stack moto, the HealthImaging emulator and the Step Functions interpreter share one
process, and a read through moto's server costs Python CPU there (werkzeug, Flask, moto's request
parsing and response machinery; a new TCP connection per request, as moto's server does not keep
connections alive). Both readers below take the bytes from moto's S3 backend: the same data the S3
endpoint serves.

- ``object_reader``: the emulator's reads. Reading an object through boto3 costs ~10 ms of Python
  CPU here (botocore on one side, moto on the other), and an import reads every object of a batch;
  the real HealthImaging reads S3 inside AWS, not through our process. Errors are raised as the
  ``ClientError`` the S3 API would return, so the emulator treats them exactly like a failed
  GetObject. The handlers still go through the S3 API.
- ``serve_reads_from_backend``: the handlers' plain GetObject requests. Validation reads the header
  of every object of a batch (3,000 ranged GETs in the workflow benchmark); moto answers each in
  ~2.3 ms of the ~4.2 ms of server CPU per request (docs/benchmarks/workflow.md). This WSGI
  middleware, in front of moto's application, answers the plain case itself: a path-style GET
  signed for S3 of an existing object, no query string (versions, parts, response overrides,
  sub-resources), no conditional, SSE-C or CORS headers, at most one ``bytes=first-last`` range
  inside the object, not a multipart upload. Headers come from moto's own ``FakeKey`` fields, in
  the order moto sends them. Everything else, errors included, goes to moto unchanged.

tests/local/test_moto_internals.py fails loudly if the moto names used here move, and
tests/local/test_moto_s3.py compares the middleware's answers with moto's request by request, so
a moto upgrade that changes them fails there.
"""

from __future__ import annotations

import ipaddress
import re
import secrets
from collections.abc import Callable, Iterable
from typing import Any

from botocore.exceptions import ClientError
from moto.s3.exceptions import MissingBucket
from moto.s3.models import FakeKey, s3_backends

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


WsgiApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]

_RANGE = re.compile(r"bytes=(\d+)-(\d*)")
# Keys made only of these need no decoding decisions (our layout: dates, batch ids, UIDs).
_PLAIN_KEY = re.compile(r"[A-Za-z0-9._-]+(/[A-Za-z0-9._-]+)*")
_SIGNED_FOR_S3 = "/s3/aws4_request"
# Request headers that change what moto answers: conditional GETs, SSE-C, CORS.
_HANDLED_BY_MOTO = ("HTTP_IF_", "HTTP_X_AMZ_SERVER_SIDE_ENCRYPTION_CUSTOMER", "HTTP_ORIGIN")


def serve_reads_from_backend(app: WsgiApp, account_id: str) -> WsgiApp:
    """``app`` (moto's WSGI application) with plain GetObject requests answered from the backend."""
    backend = s3_backend(account_id)

    def application(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        found = _plain_get(environ, backend)
        if found is None:
            return app(environ, start_response)
        key, byte_range = found
        status, headers, body = _answer(key, byte_range, environ.get("HTTP_X_AMZ_CHECKSUM_MODE") == "ENABLED")
        start_response(status, headers)
        return [body]

    return application


def _plain_get(environ: dict[str, Any], backend: Any) -> tuple[FakeKey, tuple[int, int] | None] | None:
    """The object and the range asked for, or None when moto should answer."""
    if environ["REQUEST_METHOD"] != "GET" or environ.get("QUERY_STRING"):
        return None
    if _SIGNED_FOR_S3 not in environ.get("HTTP_AUTHORIZATION", "") or not _path_style(environ):
        return None
    if any(name.startswith(_HANDLED_BY_MOTO) for name in environ):
        return None
    bucket_name, _, key_name = environ.get("PATH_INFO", "").lstrip("/").partition("/")
    if not _PLAIN_KEY.fullmatch(key_name):
        return None
    bucket = backend.buckets.get(bucket_name)
    key = bucket.keys.get(key_name) if bucket is not None else None
    if not isinstance(key, FakeKey) or key.multipart is not None or key.storage_class != "STANDARD":
        return None
    if "HTTP_RANGE" not in environ:
        return key, None
    matched = _RANGE.fullmatch(environ["HTTP_RANGE"])
    if matched is None:
        return None
    first, last = int(matched[1]), min(int(matched[2] or key.size - 1), key.size - 1)
    return (key, (first, last)) if first <= last else None


def _path_style(environ: dict[str, Any]) -> bool:
    """Addressed by IP or localhost (path style), not ``<bucket>.<host>`` (virtual-hosted)."""
    host = environ.get("HTTP_HOST", "").rsplit(":", 1)[0].strip("[]")
    if host == "localhost":
        return True
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def _answer(key: FakeKey, byte_range: tuple[int, int] | None, checksum_mode: bool) -> tuple[str, list, bytes]:
    """What moto's S3 ``get_object`` + range handling + server would send for this plain GET."""
    headers = {"x-amz-version-id": key.version_id} if key.version_id != "null" else {}
    headers.update(key.response_dict)
    if checksum_mode and key.checksum_algorithm:
        headers[f"x-amz-checksum-{key.checksum_algorithm.lower()}"] = key.checksum_value
        if key.checksum_type:
            headers["x-amz-checksum-type"] = key.checksum_type
    headers.update(key.metadata)
    headers["Accept-Ranges"] = "bytes"
    headers["x-amzn-requestid"] = secrets.token_hex(26)
    value = key.value
    status = "200 OK"
    if byte_range is not None:
        first, last = byte_range
        if first or last < key.size - 1:  # a range of part of the object carries no checksum
            headers = {k: v for k, v in headers.items() if not k.startswith("x-amz-checksum-")}
        headers["content-range"] = f"bytes {first}-{last}/{key.size}"
        value = value[first : last + 1]
        status = "206 PARTIAL CONTENT"
    headers["content-length"] = str(len(value))
    headers["Access-Control-Allow-Origin"] = "*"
    return status, list(headers.items()), value
