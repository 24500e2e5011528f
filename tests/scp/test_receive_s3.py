"""The SCP as its own process on the S3 backend: moto in server mode as the real endpoint, behind
a proxy that can fail chosen writes or the whole endpoint."""

from __future__ import annotations

import base64
import hashlib
import secrets
import subprocess

import pytest
from pydicom import dcmread
from pydicom.uid import generate_uid

from local.credentials import local_client
from tests.scp.dicom_factory import write_instance
from tests.scp.harness import FAKE_AWS, FaultyS3Proxy, ScpProcess, http_get, send_files, wait_for
from tests.scp.manifests import s3_manifests, sha256_hex, wait_s3_manifests

PART = 5 * 1024 * 1024
BIG = 9 * PART + 1234  # 45 MiB of pixel data: 10 parts


@pytest.fixture(scope="module")
def s3_module(moto_endpoint):
    return local_client("s3", moto_endpoint)


@pytest.fixture(scope="module")
def proxy(moto_endpoint):
    proxy = FaultyS3Proxy(int(moto_endpoint.rsplit(":", 1)[1]))
    yield proxy
    proxy.close()


@pytest.fixture(scope="module")
def scp(tmp_path_factory, s3_module, proxy):
    bucket = f"dicom-{secrets.token_hex(6)}"
    s3_module.create_bucket(Bucket=bucket)
    work = tmp_path_factory.mktemp("scp-s3")
    process = ScpProcess(
        {
            **FAKE_AWS,
            "AWS_ENDPOINT_URL": proxy.url,
            "SCP_STORAGE_URI": f"s3://{bucket}",
            "SCP_MULTIPART_THRESHOLD": str(PART),
            "SCP_STORE_RETRIES": "2",
            "SCP_STORE_RETRY_DELAY": "0.01",
        },
        work,
    )
    process.bucket = bucket
    yield process
    assert process.stop() == 0


@pytest.fixture(autouse=True)
def healthy_proxy(proxy):
    proxy.down = False
    proxy.fail_keys_containing = set()
    yield


def _b64_sha256(data: bytes) -> str:
    return base64.b64encode(hashlib.sha256(data).digest()).decode()


def test_dcmtk_storescu_to_s3_objects_carry_verified_checksums(scp, s3_module, tmp_path):
    files = [write_instance(tmp_path / f"{n}.dcm") for n in range(3)]
    result = subprocess.run(
        ["storescu", "-aec", "AHI-GATEWAY", "127.0.0.1", str(scp.port), *map(str, files)],
        capture_output=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    uids = {str(dcmread(f).SOPInstanceUID) for f in files}
    [manifest] = wait_s3_manifests(s3_module, scp.bucket, uids)
    assert manifest.seal_reason == "release" and manifest.prefix.startswith("incoming/")
    for item in manifest.instances:
        response = s3_module.get_object(Bucket=scp.bucket, Key=item.key, ChecksumMode="ENABLED")
        body = response["Body"].read()
        assert item.size == len(body) and item.sha256 == sha256_hex(body)
        assert response["Metadata"]["sha256"] == item.sha256
        assert response["ChecksumSHA256"] == _b64_sha256(body)
        assert response["ContentType"] == "application/dicom"


def test_large_object_goes_multipart_byte_for_byte_with_flat_memory(scp, s3_module, tmp_path):
    big = write_instance(tmp_path / "big.dcm", pixel_bytes=BIG)
    small = write_instance(tmp_path / "small.dcm")
    assert send_files(scp.port, [small]) == [0]
    baseline = _peak_rss_kib(scp.proc.pid)
    assert send_files(scp.port, [big]) == [0]
    growth_mib = (_peak_rss_kib(scp.proc.pid) - baseline) / 1024

    uid = str(dcmread(big, stop_before_pixels=True).SOPInstanceUID)
    [manifest] = wait_s3_manifests(s3_module, scp.bucket, {uid})
    [item] = manifest.instances
    stored = s3_module.get_object(Bucket=scp.bucket, Key=item.key)
    body = stored["Body"].read()
    assert item.size == len(body) > BIG
    assert item.sha256 == sha256_hex(body) == stored["Metadata"]["sha256"]
    assert body[-BIG:] == big.read_bytes()[-BIG:]  # the pixel data, unchanged
    head = s3_module.head_object(Bucket=scp.bucket, Key=item.key, PartNumber=1)
    assert head["PartsCount"] == -(-len(body) // PART)
    # the object is never held in memory whole: one part at a time, plus PDU buffers
    assert growth_mib < 24, f"peak RSS grew by {growth_mib:.1f} MiB for a {len(body) >> 20} MiB object"


def test_failed_writes_get_a700_and_everything_acknowledged_is_durable(scp, s3_module, proxy, tmp_path):
    study = generate_uid()
    doomed_prefix = f"1.2.826.0.1.3680043.10.{secrets.randbelow(10**8)}.99."
    files = []
    for n in range(6):
        sop = f"{doomed_prefix}{n}" if n in (1, 4) else generate_uid()
        files.append(write_instance(tmp_path / f"{n}.dcm", study_uid=study, sop_instance_uid=sop))
    proxy.fail_keys_containing = {doomed_prefix}

    statuses = send_files(scp.port, files)

    assert statuses == [0x0000, 0xA700, 0x0000, 0x0000, 0xA700, 0x0000]
    assert proxy.failed_requests >= 2 * 3  # each doomed PUT was tried 1 + SCP_STORE_RETRIES times
    acknowledged = {str(dcmread(files[n]).SOPInstanceUID): files[n] for n in (0, 2, 3, 5)}
    [manifest] = wait_s3_manifests(s3_module, scp.bucket, set(acknowledged))
    assert {i.sop_instance_uid for i in manifest.instances} == set(acknowledged)
    for item in manifest.instances:
        body = s3_module.get_object(Bucket=scp.bucket, Key=item.key)["Body"].read()
        assert sha256_hex(body) == item.sha256
        assert (
            dcmread(acknowledged[item.sop_instance_uid]).PixelData
            == dcmread(_bytes_file(tmp_path, body)).PixelData
        )
    keys = [o["Key"] for o in s3_module.list_objects_v2(Bucket=scp.bucket).get("Contents", [])]
    assert not [k for k in keys if doomed_prefix in k]


def test_unreachable_storage_means_not_ready_and_a700(scp, s3_module, proxy, tmp_path):
    proxy.down = True
    wait_for(lambda: http_get(scp.health_port, "/readyz")[0] == 503, timeout=10, what="/readyz 503")
    assert "storage unreachable" in http_get(scp.health_port, "/readyz")[1]
    files = [write_instance(tmp_path / f"{n}.dcm") for n in range(2)]
    before = len(s3_manifests(s3_module, scp.bucket))

    assert send_files(scp.port, files) == [0xA700, 0xA700]

    proxy.down = False
    later = write_instance(tmp_path / "later.dcm")
    assert send_files(scp.port, [later]) == [0x0000]
    uid = str(dcmread(later).SOPInstanceUID)
    [manifest] = wait_s3_manifests(s3_module, scp.bucket, {uid})
    assert len(manifest.instances) == 1
    assert len(s3_manifests(s3_module, scp.bucket)) == before + 1  # the failed association sealed nothing


def _peak_rss_kib(pid: int) -> int:
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise AssertionError("no VmHWM")


def _bytes_file(tmp_path, data: bytes):
    path = tmp_path / f"stored-{secrets.token_hex(4)}.dcm"
    path.write_bytes(data)
    return path


def test_manifest_write_failure_keeps_the_acknowledged_objects_for_the_sweeper(
    scp, s3_module, proxy, tmp_path
):
    proxy.fail_keys_containing = {"/batches/"}
    path = write_instance(tmp_path / "orphan.dcm")
    uid = str(dcmread(path).SOPInstanceUID)

    assert send_files(scp.port, [path]) == [0x0000]

    failure = wait_for(
        lambda: [line for line in scp.logs() if line.get("message", "").startswith("manifest not written")],
        timeout=15,
        what="the manifest failure log line",
    )
    batch_id = failure[-1]["batchId"]
    keys = [o["Key"] for o in s3_module.list_objects_v2(Bucket=scp.bucket).get("Contents", [])]
    assert [k for k in keys if k.endswith(f"/{uid}.dcm") and f"/{batch_id}/" in k]  # durable, unsealed
    assert f"batches/{batch_id}.json" not in keys
    assert not [
        m for m in s3_manifests(s3_module, scp.bucket) if uid in {i.sop_instance_uid for i in m.instances}
    ]
    assert "dicom_scp_manifest_failures_total 1" in http_get(scp.health_port, "/metrics")[1]
