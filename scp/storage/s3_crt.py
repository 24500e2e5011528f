"""The journal's uploads to S3 through awscrt's S3 client: each request runs in C, off the GIL.

With the journal the SCP acknowledges at disk speed and uploads behind, so an upload's CPU is
what competes with the association loop for the process's GIL. boto3 spends ~3.8 ms of Python
per 0.5 MB PUT (request building, signing, http.client); this client ~1.2 ms of the process's
CPU, nearly all in its own C threads (docs/benchmarks/journal.md). Only the journal uses it: it
retries without end anyway, while the CRT client always retries by itself (at least once: kept
to one quick retry here) and so cannot give the acknowledge-after-PUT path its exact
``with_retries`` policy.

The object is what ``S3Storage.put_file`` writes: the same key, Content-Type, the SHA-256 the
spool computed as ``x-amz-checksum-sha256`` (S3 verifies it and refuses other bytes) and as
``sha256`` metadata. Credentials are boto3's (``new_delegate``: the same chain, refreshed by
botocore), and so are the region and the endpoint: a configured ``AWS_ENDPOINT_URL`` (moto, an
interface endpoint) is addressed path-style, S3's own endpoint virtual-hosted.
"""

from __future__ import annotations

import base64
from typing import Any
from urllib.parse import quote, urlsplit

from scp.storage.base import StorageError

UPLOAD_TIMEOUT = 60.0  # seconds for one PUT, as boto3's read timeout in S3Storage
CONNECT_TIMEOUT_MS = 5000  # as boto3's connect timeout in S3Storage
# The client retries by itself and cannot be told not to: once, quickly, so that a failing PUT
# comes back to the journal's own retry loop (and its metrics, and a SIGTERM) within a second.
RETRY = {"max_retries": 1, "backoff_scale_factor_ms": 100, "max_backoff_secs": 1}
_RETRIED_BY_S3_CODES = ("RequestTimeout", "SlowDown", "BadDigest", "InternalError", "ServiceUnavailable")


class CrtPutter:
    """PUT files to one bucket; built from the boto3 client that ``S3Storage`` uses for the rest."""

    def __init__(self, boto_client: Any, credentials: Any, bucket: str):
        """``credentials``: the boto3 session's (botocore refreshes them; read at every signing)."""
        from awscrt import auth, io, s3

        self._s3 = s3
        endpoint = urlsplit(boto_client.meta.endpoint_url)
        self._path_style = not endpoint.netloc.endswith(".amazonaws.com")
        self._host = endpoint.netloc if self._path_style else f"{bucket}.{endpoint.netloc}"
        self._bucket = bucket

        def current() -> Any:
            frozen = credentials.get_frozen_credentials()
            return auth.AwsCredentials(frozen.access_key, frozen.secret_key, frozen.token)

        bootstrap = io.ClientBootstrap.get_or_create_static_default()
        self._client = s3.S3Client(
            bootstrap=bootstrap,
            region=boto_client.meta.region_name,
            credential_provider=auth.AwsCredentialsProvider.new_delegate(current),
            tls_mode=s3.S3RequestTlsMode.ENABLED
            if endpoint.scheme == "https"
            else s3.S3RequestTlsMode.DISABLED,
            retry_config=s3.S3RetryConfig(**RETRY),
            connect_timeout_ms=CONNECT_TIMEOUT_MS,
        )

    def put(self, key: str, path: str, size: int, sha256_hex: str, content_type: str) -> None:
        """One PUT; StorageError (transient unless S3 refused it for good) when it fails."""
        from awscrt.exceptions import AwsCrtError
        from awscrt.http import HttpHeaders, HttpRequest

        target = f"/{self._bucket}/{quote(key)}" if self._path_style else f"/{quote(key)}"
        headers = HttpHeaders(
            [
                ("Host", self._host),
                ("Content-Length", str(size)),
                ("Content-Type", content_type),
                ("x-amz-checksum-sha256", base64.b64encode(bytes.fromhex(sha256_hex)).decode("ascii")),
                ("x-amz-sdk-checksum-algorithm", "SHA256"),
                ("x-amz-meta-sha256", sha256_hex),
            ]
        )
        request = self._client.make_request(
            type=self._s3.S3RequestType.PUT_OBJECT,
            request=HttpRequest("PUT", target, headers),
            send_filepath=path,
        )
        try:
            request.finished_future.result(UPLOAD_TIMEOUT)
        except self._s3.S3ResponseError as exc:
            status = int(exc.status_code or 0)
            body = (exc.body or b"").decode("utf-8", "replace")
            retried = status >= 500 or status in (408, 429) or any(c in body for c in _RETRIED_BY_S3_CODES)
            raise StorageError(f"PUT {key}: S3 {status} {exc.name}", transient=retried) from None
        except AwsCrtError as exc:  # connection, DNS, TLS, timeout: worth another try
            raise StorageError(f"PUT {key}: {exc.name}", transient=True) from None
        except TimeoutError:
            request.cancel()
            raise StorageError(f"PUT {key}: no answer in {UPLOAD_TIMEOUT:.0f} s", transient=True) from None
