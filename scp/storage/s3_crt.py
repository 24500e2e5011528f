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

import os
import re
from typing import Any
from urllib.parse import quote, urlsplit

from awscrt import auth, io, s3
from awscrt.exceptions import AwsCrtError
from awscrt.http import HttpHeaders, HttpRequest

from core.contracts import SHA256_METADATA
from scp.storage.base import StorageError
from scp.storage.s3 import CONNECT_TIMEOUT_SECONDS, READ_TIMEOUT_SECONDS, checksum_value, transient_failure

# The client retries by itself and cannot be told not to: once, quickly, so that a failing PUT
# comes back to the journal's own retry loop (and its metrics, and a SIGTERM) within a second.
RETRY = {"max_retries": 1, "backoff_scale_factor_ms": 100, "max_backoff_secs": 1}
CA_BUNDLE_ENV = "AWS_CA_BUNDLE"  # boto3's too: a site's TLS-inspecting proxy, a test's CA
_ERROR_CODE = re.compile(rb"<Code>([^<]+)</Code>")  # in S3's XML error body


class CrtPutter:
    """PUT files to one bucket; built from the boto3 client that ``S3Storage`` uses for the rest."""

    def __init__(self, boto_client: Any, credentials: Any, bucket: str):
        """``credentials``: the boto3 session's (botocore refreshes them; read at every signing)."""
        endpoint = urlsplit(boto_client.meta.endpoint_url)
        self._path_style = not endpoint.netloc.endswith(".amazonaws.com")
        self._host = endpoint.netloc if self._path_style else f"{bucket}.{endpoint.netloc}"
        self._bucket = bucket

        def current() -> Any:
            frozen = credentials.get_frozen_credentials()
            return auth.AwsCredentials(frozen.access_key, frozen.secret_key, frozen.token)

        tls = None
        if endpoint.scheme == "https":
            options = io.TlsContextOptions()
            if os.environ.get(CA_BUNDLE_ENV):
                options.override_default_trust_store_from_path(ca_filepath=os.environ[CA_BUNDLE_ENV])
            tls = io.ClientTlsContext(options).new_connection_options()
            tls.set_server_name(endpoint.hostname if self._path_style else f"{bucket}.{endpoint.hostname}")
        self._client = s3.S3Client(
            bootstrap=io.ClientBootstrap.get_or_create_static_default(),
            region=boto_client.meta.region_name,
            credential_provider=auth.AwsCredentialsProvider.new_delegate(current),
            tls_mode=s3.S3RequestTlsMode.ENABLED if tls else s3.S3RequestTlsMode.DISABLED,
            tls_connection_options=tls,
            retry_config=s3.S3RetryConfig(**RETRY),
            connect_timeout_ms=CONNECT_TIMEOUT_SECONDS * 1000,
        )

    def put(self, key: str, path: str, size: int, sha256_hex: str, content_type: str) -> None:
        """One PUT; StorageError (transient unless S3 refused it for good) when it fails."""
        target = f"/{self._bucket}/{quote(key)}" if self._path_style else f"/{quote(key)}"
        headers = HttpHeaders(
            [
                ("Host", self._host),
                ("Content-Length", str(size)),
                ("Content-Type", content_type),
                ("x-amz-checksum-sha256", checksum_value(sha256_hex)),
                ("x-amz-sdk-checksum-algorithm", "SHA256"),
                (f"x-amz-meta-{SHA256_METADATA}", sha256_hex),
            ]
        )
        request = self._client.make_request(
            type=s3.S3RequestType.PUT_OBJECT,
            request=HttpRequest("PUT", target, headers),
            send_filepath=path,
        )
        try:
            request.finished_future.result(READ_TIMEOUT_SECONDS)
        except s3.S3ResponseError as exc:
            status = int(exc.status_code or 0)
            found = _ERROR_CODE.search(exc.body or b"")
            code = found.group(1).decode("ascii", "replace") if found else ""
            raise StorageError(
                f"PUT {key}: S3 {status} {code or exc.name}", transient=transient_failure(status, code)
            ) from None
        except AwsCrtError as exc:  # connection, DNS, TLS, timeout: worth another try
            raise StorageError(f"PUT {key}: {exc.name}", transient=True) from None
        except TimeoutError:
            request.cancel()
            raise StorageError(f"PUT {key}: no answer in {READ_TIMEOUT_SECONDS} s", transient=True) from None
