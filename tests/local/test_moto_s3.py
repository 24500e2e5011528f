"""The local stack's GetObject fast path answers exactly what moto's S3 answers.

Objects are written through the real S3 API (boto3 on moto); each request is then sent to moto's
WSGI application twice, once directly and once through the fast path, and the answers (status,
headers and body but the random request ids) must be equal. A spy behind the fast path says which
requests it answered itself: the plain ones must not reach moto, the others must.
"""

from __future__ import annotations

import hashlib
import re
from typing import Any

import boto3
import pytest
from moto import mock_aws
from moto.moto_server.werkzeug_app import DomainDispatcherApplication, create_backend_app
from werkzeug.test import Client

from local.credentials import FAKE_AWS_ENV, LOCAL_REGION
from local.moto_s3 import serve_reads_from_backend
from local.stack import LOCAL_ACCOUNT

BUCKET = "reads-bucket"
VERSIONED = "reads-versioned"
BODY = bytes(range(256)) * 20  # 5,120 bytes
AUTH = (
    "AWS4-HMAC-SHA256 Credential=local/20261128/us-east-1/s3/aws4_request, "
    "SignedHeaders=host;x-amz-date, Signature=0"
)
HOST = "127.0.0.1:5000"
A = "/reads-bucket/in/a.dcm"
CHECKSUM_MODE = {"x-amz-checksum-mode": "ENABLED"}

# (request path, extra headers): answered by the fast path
PLAIN = {
    "whole object, checksum mode": (A, CHECKSUM_MODE),
    "head of the object": (A, {"Range": "bytes=0-99", **CHECKSUM_MODE}),
    "range past the end": (A, {"Range": "bytes=0-65535", **CHECKSUM_MODE}),
    "open range": (A, {"Range": "bytes=100-"}),
    "no checksum stored": ("/reads-bucket/in/plain.dcm", {"Range": "bytes=0-9"}),
    "empty object": ("/reads-bucket/in/empty.dcm", {}),
    "versioned bucket": ("/reads-versioned/in/v.dcm", {"Range": "bytes=0-9"}),
}
# answered by moto
FALLBACK = {
    "missing key": ("/reads-bucket/in/missing.dcm", {}),
    "missing bucket": ("/no-such-bucket/in/a.dcm", {}),
    "range beyond the object": (A, {"Range": "bytes=9000-9999"}),
    "range of an empty object": ("/reads-bucket/in/empty.dcm", {"Range": "bytes=0-9"}),
    "suffix range": (A, {"Range": "bytes=-10"}),
    "two ranges": (A, {"Range": "bytes=0-1,5-6"}),
    "conditional": (A, {"If-Match": '"not-the-etag"'}),
    "query string": (A + "?tagging", {}),
    "key to decode": ("/reads-bucket/in/b%20c%2Bd.dcm", {}),
    "virtual-hosted": ("/in/a.dcm", {"Host": "reads-bucket.s3.amazonaws.com"}),
    "CORS request": (A, {"Origin": "http://example.org"}),
}


@pytest.fixture(scope="module")
def written() -> Any:
    with pytest.MonkeyPatch.context() as env, mock_aws():
        for name, value in FAKE_AWS_ENV.items():
            env.setenv(name, value)
        s3 = boto3.client("s3", region_name=LOCAL_REGION)
        s3.create_bucket(Bucket=BUCKET)
        s3.put_object(
            Bucket=BUCKET, Key="in/a.dcm", Body=BODY, ContentType="application/dicom",
            Metadata={"sha256": hashlib.sha256(BODY).hexdigest()}, ChecksumAlgorithm="SHA256",
        )  # fmt: skip
        s3.put_object(Bucket=BUCKET, Key="in/plain.dcm", Body=b"0123456789abcdef")
        s3.put_object(Bucket=BUCKET, Key="in/empty.dcm", Body=b"")
        s3.put_object(Bucket=BUCKET, Key="in/b c+d.dcm", Body=b"spaced")
        s3.create_bucket(Bucket=VERSIONED)
        s3.put_bucket_versioning(Bucket=VERSIONED, VersioningConfiguration={"Status": "Enabled"})
        s3.put_object(Bucket=VERSIONED, Key="in/v.dcm", Body=b"version one")
        yield


def _answers(path: str, headers: dict[str, str]) -> tuple[tuple, tuple, bool]:
    """(moto's answer, the fast path's answer, whether the fast path passed the request on)."""
    moto_app = DomainDispatcherApplication(create_backend_app)
    passed_on = []

    def spy(environ, start_response):
        passed_on.append(environ["PATH_INFO"])
        return moto_app(environ, start_response)

    fast_app = serve_reads_from_backend(spy, LOCAL_ACCOUNT)
    sent = {"Authorization": AUTH, "Host": HOST, **headers}
    direct = Client(moto_app).get(path, headers=sent)
    fast = Client(fast_app).get(path, headers=sent)
    return _comparable(direct), _comparable(fast), bool(passed_on)


def _comparable(response: Any) -> tuple:
    headers = sorted((k.lower(), v) for k, v in response.headers.items() if k.lower() != "x-amzn-requestid")
    body = re.sub(rb"<RequestId>[^<]*</RequestId>", b"", response.get_data())  # random per answer
    return response.status, headers, body


@pytest.mark.parametrize("case", PLAIN)
def test_plain_gets_are_answered_from_the_backend_as_moto_answers_them(written, case):
    direct, fast, passed_on = _answers(*PLAIN[case])
    assert not passed_on
    assert fast == direct
    assert direct[0].startswith(("200", "206"))


@pytest.mark.parametrize("case", FALLBACK)
def test_other_requests_are_passed_on_to_moto(written, case):
    direct, fast, passed_on = _answers(*FALLBACK[case])
    assert passed_on
    assert fast == direct


def test_the_fast_path_answers_botocore_ranged_gets_with_metadata_and_size(written):
    """What validation reads (handlers/objects.probe): the bytes, the total size, the metadata."""
    direct, fast, _ = _answers(*PLAIN["head of the object"])
    headers = dict(fast[1])
    assert fast[2] == BODY[:100]
    assert headers["content-range"] == f"bytes 0-99/{len(BODY)}"
    assert headers["x-amz-meta-sha256"] == hashlib.sha256(BODY).hexdigest()
    assert not any(name.startswith("x-amz-checksum-") for name in headers)  # part of the object
    whole = dict(_answers(*PLAIN["whole object, checksum mode"])[1][1])
    assert "x-amz-checksum-sha256" in whole
