"""The journal's uploads (``S3Storage.upload_file``, awscrt) against moto: the same object as
``put_file`` writes, failures classed as the journal's retry loop needs them, and HTTPS with the
CA of ``AWS_CA_BUNDLE`` (as in AWS, or behind a site's TLS-inspecting proxy)."""

from __future__ import annotations

import hashlib
import secrets
import ssl

import pytest

from scp.spool import Spooled
from scp.storage import StorageError
from scp.storage.s3 import S3Storage
from tests.scp.certificates import make_pki
from tests.scp.harness import FAKE_AWS, FaultyS3Proxy


@pytest.fixture
def aws_env(monkeypatch):
    for name, value in FAKE_AWS.items():
        monkeypatch.setenv(name, value)


def _spooled(tmp_path, data: bytes) -> Spooled:
    path = tmp_path / f"{secrets.token_hex(4)}.dcm"
    path.write_bytes(data)
    return Spooled(
        path=path,
        size=len(data),
        sha256=hashlib.sha256(data).hexdigest(),
        header=b"",
        whole_dataset_in_header=False,
        transfer_syntax="1.2.840.10008.1.2.1",
        inode=(0, 0),
    )


def test_upload_file_writes_what_put_file_writes(aws_env, monkeypatch, moto_endpoint, s3, bucket, tmp_path):
    monkeypatch.setenv("AWS_ENDPOINT_URL", moto_endpoint)
    storage = S3Storage(bucket, "", part_size=8 * 1024 * 1024)
    data = secrets.token_bytes(300_000)
    storage.put_file("a/put.dcm", _spooled(tmp_path, data))
    storage.upload_file("a/upload.dcm", _spooled(tmp_path, data))

    def stored(key):
        head = s3.head_object(Bucket=bucket, Key=key, ChecksumMode="ENABLED")
        body = s3.get_object(Bucket=bucket, Key=key)["Body"].read()
        return body, head["ContentType"], head["Metadata"], head.get("ChecksumSHA256")

    assert stored("a/upload.dcm") == stored("a/put.dcm")
    assert stored("a/upload.dcm")[0] == data


def test_upload_failures_are_transient_unless_s3_refuses_for_good(
    aws_env, monkeypatch, moto_endpoint, tmp_path
):
    proxy = FaultyS3Proxy(int(moto_endpoint.rsplit(":", 1)[1]))
    try:
        monkeypatch.setenv("AWS_ENDPOINT_URL", proxy.url)
        missing = S3Storage(f"no-such-{secrets.token_hex(4)}", "", part_size=8 * 1024 * 1024)
        with pytest.raises(StorageError) as refused:
            missing.upload_file("k.dcm", _spooled(tmp_path, b"x" * 1000))
        assert not refused.value.transient and "404" in str(refused.value)

        proxy.down = True
        with pytest.raises(StorageError) as outage:
            missing.upload_file("k.dcm", _spooled(tmp_path, b"x" * 1000))
        assert outage.value.transient and str(outage.value).startswith("PUT k.dcm:")  # CRT: S3_SLOW_DOWN
    finally:
        proxy.close()


def test_upload_over_https_trusts_aws_ca_bundle(aws_env, monkeypatch, moto_endpoint, s3, bucket, tmp_path):
    pki = make_pki(tmp_path / "pki")
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server.load_cert_chain(pki.server_cert, pki.server_key)
    proxy = FaultyS3Proxy(int(moto_endpoint.rsplit(":", 1)[1]), tls=server)
    try:
        monkeypatch.setenv("AWS_ENDPOINT_URL", proxy.url.replace("127.0.0.1", "localhost"))
        monkeypatch.setenv("AWS_CA_BUNDLE", str(pki.ca_cert))  # boto3 and the CRT client both
        data = secrets.token_bytes(10_000)
        S3Storage(bucket, "", part_size=8 * 1024 * 1024).upload_file("tls.dcm", _spooled(tmp_path, data))
    finally:
        proxy.close()
    assert s3.get_object(Bucket=bucket, Key="tls.dcm")["Body"].read() == data
