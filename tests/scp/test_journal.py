"""The durable journal (SCP_JOURNAL_DIR): real ``python -m scp`` processes against moto behind a
proxy that delays, fails (503) or drops PUTs; SIGKILL and SIGTERM of real processes."""

from __future__ import annotations

import io
import random
import secrets
import signal
import time
from collections import Counter
from datetime import UTC, datetime

import pytest
from pydicom import dcmread
from pydicom.uid import generate_uid

from core.layout import BatchManifest, ManifestInstance
from scp.batching import Origin
from scp.journal import Journal, JournalLimits
from scp.metrics import Metrics
from scp.spool import Spooled
from scp.storage.s3 import S3Storage
from tests.scp.dicom_factory import write_instance
from tests.scp.harness import (
    FAKE_AWS,
    FaultyS3Proxy,
    associate,
    file_contexts,
    http_get,
    raw_sending,
    send_files,
    wait_for,
)
from tests.scp.manifests import s3_manifests, sha256_hex


@pytest.fixture
def proxy(moto_endpoint):
    proxy = FaultyS3Proxy(int(moto_endpoint.rsplit(":", 1)[1]))
    yield proxy
    proxy.close()


@pytest.fixture
def journal_dir(tmp_path):
    return tmp_path / "journal"


@pytest.fixture
def start_journal_scp(start_scp, proxy, bucket, journal_dir):
    def start(**env: str):
        return start_scp(
            **FAKE_AWS,
            AWS_ENDPOINT_URL=proxy.url,
            SCP_STORAGE_URI=f"s3://{bucket}",
            SCP_JOURNAL_DIR=str(journal_dir),
            SCP_JOURNAL_HEARTBEAT_SECONDS="0.2",
            SCP_JOURNAL_STALE_SECONDS="1.5",
            SCP_STORE_RETRIES="0",
            **env,
        )

    return start


def _files(tmp_path, count: int, seed: int) -> dict[str, object]:
    rng = random.Random(seed)
    study = generate_uid()
    files = {}
    for n in range(count):
        path = write_instance(
            tmp_path / f"{seed}-{n}.dcm", study_uid=study, pixel_bytes=rng.randrange(2000, 40000)
        )
        files[str(dcmread(path, stop_before_pixels=True).SOPInstanceUID)] = path
    return files


def _assert_each_in_exactly_one_manifest(s3, bucket: str, files: dict, timeout: float = 30.0) -> list:
    """Every acknowledged instance is in S3 with its bytes, listed by exactly one manifest."""

    def listed():
        manifests = s3_manifests(s3, bucket)
        counts = Counter(i.sop_instance_uid for m in manifests for i in m.instances)
        return manifests if set(files) <= set(counts) else None

    manifests = wait_for(listed, timeout, what=f"manifests listing {len(files)} instances")
    counts = Counter(i.sop_instance_uid for m in manifests for i in m.instances)
    assert all(counts[uid] == 1 for uid in files), counts
    assert len({m.batch_id for m in manifests}) == len(manifests)
    for manifest in manifests:
        for item in manifest.instances:
            if item.sop_instance_uid in files:
                body = s3.get_object(Bucket=bucket, Key=item.key)["Body"].read()
                assert sha256_hex(body) == item.sha256
                sent = dcmread(files[item.sop_instance_uid])
                assert dcmread(io.BytesIO(body)).PixelData == sent.PixelData
                assert item.key.startswith(manifest.prefix)
    return manifests


def _owner_dirs(journal_dir):
    return [d for d in journal_dir.iterdir() if d.is_dir()] if journal_dir.exists() else []


def test_acknowledges_before_the_upload_and_everything_lands_once(
    start_journal_scp, proxy, s3, bucket, tmp_path
):
    proxy.put_delay = 0.4
    scp = start_journal_scp()
    files = _files(tmp_path, 8, seed=1)

    started = time.monotonic()
    assert send_files(scp.port, list(files.values())) == [0] * 8
    elapsed = time.monotonic() - started

    assert elapsed < 8 * 0.4 / 2, f"8 stores took {elapsed:.2f}s: answered after the PUTs?"
    [manifest] = _assert_each_in_exactly_one_manifest(s3, bucket, files)
    assert manifest.seal_reason == "release"
    wait_for(lambda: "dicom_scp_journal_uploads_total 8" in http_get(scp.health_port, "/metrics")[1])


def test_s3_down_fills_the_journal_to_its_limit_then_a700_then_it_drains(
    start_journal_scp, proxy, s3, bucket, tmp_path
):
    proxy.down = True
    scp = start_journal_scp(SCP_JOURNAL_MAX_FILES="3")
    files = _files(tmp_path, 5, seed=2)

    results = _store_results(scp.port, list(files.values()))

    assert [status for status, _ in results] == [0, 0, 0, 0xA700, 0xA700]
    assert results[3][1] == "journal full (files), retry later"
    status, body = http_get(scp.health_port, "/readyz")
    assert status == 503 and "journal full" in body
    wait_for(
        lambda: "dicom_scp_journal_upload_failures_total" in http_get(scp.health_port, "/metrics")[1],
        what="the failed uploads counted",
    )
    assert not s3_manifests(s3, bucket)

    proxy.down = False
    acknowledged = dict(list(files.items())[:3])
    _assert_each_in_exactly_one_manifest(s3, bucket, acknowledged)
    wait_for(lambda: http_get(scp.health_port, "/readyz")[0] == 200, timeout=15, what="/readyz 200")
    assert send_files(scp.port, list(files.values())[3:]) == [0, 0]
    _assert_each_in_exactly_one_manifest(s3, bucket, files)


def test_a_journal_that_cannot_be_written_refuses_a700_then_recovers_by_itself(
    start_journal_scp, s3, bucket, journal_dir, tmp_path
):
    scp = start_journal_scp()
    [owner] = wait_for(lambda: _owner_dirs(journal_dir), what="the process's owner directory")
    files = _files(tmp_path, 3, seed=7)
    paths = list(files.values())
    # A regular file where the owner directory was: every write under it fails (ENOTDIR), as on a
    # lost or read-only mount, and unlike a chmod it also stops a process running as root.
    moved = owner.with_name(f"{owner.name}.aside")
    owner.rename(moved)
    owner.write_text("not a directory")

    assert _store_results(scp.port, paths[:1]) == [(0xA700, "journal not writable, retry later")]
    status, body = http_get(scp.health_port, "/readyz")
    assert status == 503 and "journal not writable" in body

    owner.unlink()
    moved.rename(owner)
    wait_for(lambda: http_get(scp.health_port, "/readyz")[0] == 200, timeout=15, what="/readyz 200 again")
    assert send_files(scp.port, paths) == [0, 0, 0]
    _assert_each_in_exactly_one_manifest(s3, bucket, files)


def _store_results(port, files):
    from tests.scp.harness import store_results

    return store_results(port, files)


def test_sigkill_mid_association_then_restart_uploads_and_seals_everything(
    start_journal_scp, proxy, s3, bucket, journal_dir, tmp_path
):
    proxy.down = True  # nothing gets out before the kill
    first = start_journal_scp()
    files = _files(tmp_path, 4, seed=3)
    assoc = associate(first.port, file_contexts(list(files.values())))
    with raw_sending():
        assert [assoc.send_c_store(f).Status for f in files.values()] == [0] * 4
    first.proc.send_signal(signal.SIGKILL)
    first.proc.wait(10)
    assoc.abort()

    proxy.down = False
    second = start_journal_scp()
    [manifest] = _assert_each_in_exactly_one_manifest(s3, bucket, files)
    assert manifest.seal_reason == "adopted"
    # Nothing but the files survived the kill: every manifest line was rebuilt from its file.
    for item in manifest.instances:
        sent = dcmread(files[item.sop_instance_uid], stop_before_pixels=True)
        body = s3.get_object(Bucket=bucket, Key=item.key)["Body"].read()
        assert (item.study_instance_uid, item.series_instance_uid, item.sop_class_uid) == (
            sent.StudyInstanceUID,
            sent.SeriesInstanceUID,
            sent.SOPClassUID,
        )
        assert item.transfer_syntax_uid == sent.file_meta.TransferSyntaxUID
        assert item.size == len(body)
        series_path = f"{manifest.prefix}{sent.StudyInstanceUID}/{sent.SeriesInstanceUID}"
        assert item.key == f"{series_path}/{item.sop_instance_uid}.dcm"
    wait_for(lambda: len(_owner_dirs(journal_dir)) == 1, what="the dead owner's directory to be removed")
    assert second.stop() == 0
    assert not _owner_dirs(journal_dir)  # drained: its own directory is gone too


def test_two_processes_share_the_journal_and_the_survivor_adopts(
    start_journal_scp, proxy, s3, bucket, journal_dir, tmp_path
):
    proxy.drop_puts = True  # PUTs are lost on the way: the uploads wait in the journal
    doomed = start_journal_scp()
    survivor = start_journal_scp()
    files = _files(tmp_path, 3, seed=4)
    assert send_files(doomed.port, list(files.values())) == [0] * 3
    wait_for(lambda: list(journal_dir.glob("*/*/_sealed.json")), what="the release recorded in the journal")
    doomed.kill()  # SIGKILL

    proxy.drop_puts = False
    [manifest] = _assert_each_in_exactly_one_manifest(s3, bucket, files)
    assert manifest.seal_reason == "release"  # recorded by the dead owner, kept by the adopter
    assert any(line.get("message") == "adopted a stale journal directory" for line in survivor.logs())
    assert survivor.stop() == 0


def test_sigterm_drains_the_uploads_within_the_window(
    start_journal_scp, proxy, s3, bucket, journal_dir, tmp_path
):
    proxy.put_delay = 0.1
    scp = start_journal_scp(SCP_DRAIN_SECONDS="20", SCP_JOURNAL_UPLOADS="2")
    files = _files(tmp_path, 10, seed=5)
    assert send_files(scp.port, list(files.values())) == [0] * 10
    assert scp.stop() == 0
    _assert_each_in_exactly_one_manifest(s3, bucket, files, timeout=1)
    assert not _owner_dirs(journal_dir)


def test_sigterm_past_the_window_leaves_the_journal_for_adoption_never_half_sealed(
    start_journal_scp, proxy, s3, bucket, journal_dir, tmp_path
):
    proxy.down = True
    scp = start_journal_scp(SCP_DRAIN_SECONDS="1")
    files = _files(tmp_path, 3, seed=6)
    assert send_files(scp.port, list(files.values())) == [0] * 3
    wait_for(lambda: list(journal_dir.glob("*/*/_sealed.json")), what="the release recorded in the journal")
    assert scp.stop() == 0
    assert not s3_manifests(s3, bucket)
    [left] = _owner_dirs(journal_dir)
    assert len(list(left.rglob("*.dcm"))) == 3

    proxy.down = False
    start_journal_scp()
    [manifest] = _assert_each_in_exactly_one_manifest(s3, bucket, files)
    assert manifest.seal_reason == "release"


def test_a_batch_the_sweeper_sealed_first_gets_its_missing_instances_in_a_new_batch(
    moto_endpoint, s3, bucket, tmp_path, monkeypatch
):
    """The sweeper wrote batches/<id>.json from a partial upload: the rest goes to a new batch id."""
    for key, value in FAKE_AWS.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("AWS_ENDPOINT_URL", moto_endpoint)
    storage = S3Storage(bucket, "", part_size=8 * 1024**2)
    journal = Journal(
        tmp_path / "journal",
        storage,
        Metrics(),
        task_id="t",
        uploads=2,
        limits=JournalLimits(100, 10**9, 600),
        heartbeat_seconds=0.2,
        stale_seconds=60,
    )
    journal.start()
    now = datetime.now(UTC)

    class Batch:
        batch_id = f"{now:%Y%m%dT%H%M%SZ}-{secrets.token_hex(8)}"
        prefix = f"incoming/{now:%Y/%m/%d}/{batch_id}/"
        opened_at = now

    files = _files(tmp_path, 3, seed=7)
    instances = []
    for uid, path in files.items():
        spool = tmp_path / f"spool-{uid}.dcm"
        spool.write_bytes(path.read_bytes())
        spooled = Spooled.from_file(spool, "1.2.840.10008.1.2.1")
        instance = ManifestInstance(
            key=f"{Batch.prefix}1/2/{uid}.dcm",
            sop_class_uid="1.2",
            sop_instance_uid=uid,
            study_instance_uid="1",
            series_instance_uid="2",
            transfer_syntax_uid="1.2.840.10008.1.2.1",
            size=spooled.size,
            sha256=spooled.sha256,
        )
        instances.append(instance)
        journal.write(Batch, Origin("A", "B", "127.0.0.1", "t"), spooled, instance)
    sweeper_manifest = BatchManifest(
        batch_id=Batch.batch_id,
        prefix=Batch.prefix,
        opened_at=now,
        sealed_at=now,
        seal_reason="sweeper",
        task_id="sweeper",
        instances=instances[:1],
    )
    s3.put_object(
        Bucket=bucket, Key=f"batches/{Batch.batch_id}.json", Body=sweeper_manifest.to_json().encode()
    )
    journal.seal(Batch.batch_id, "release", now)

    manifests = _assert_each_in_exactly_one_manifest(s3, bucket, files)
    assert journal.stop(10)
    by_id = {m.batch_id: m for m in manifests}
    assert by_id[Batch.batch_id].seal_reason == "sweeper"  # never replaced
    [other] = [m for m in manifests if m.batch_id != Batch.batch_id]
    assert {i.sop_instance_uid for i in other.instances} == {i.sop_instance_uid for i in instances[1:]}
