"""When batches are sealed: release, abort, rollover (files, bytes, age), idle timeout, SIGTERM."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time

import pytest
from pydicom import dcmread
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

from core.scp_settings import ScpSettings
from scp.server import StoreScp
from tests.scp.dicom_factory import write_instance
from tests.scp.harness import (
    REPO,
    ScpProcess,
    associate,
    file_contexts,
    http_get,
    raw_sending,
    send_files,
    wait_for,
)
from tests.scp.manifests import file_manifests, wait_file_manifests


def _uids(files) -> set[str]:
    return {str(dcmread(f, stop_before_pixels=True).SOPInstanceUID) for f in files}


@pytest.fixture(scope="module")
def scp(tmp_path_factory):
    work = tmp_path_factory.mktemp("scp-lifecycle")
    process = ScpProcess(
        {
            "SCP_STORAGE_URI": f"file://{work / 'store'}",
            "SCP_BATCH_MAX_FILES": "3",
            "SCP_BATCH_MAX_BYTES": "20000",
            "SCP_NETWORK_TIMEOUT": "1.5",
        },
        work,
    )
    process.store = work / "store"
    yield process
    assert process.stop() == 0


def test_rollover_at_max_files_then_release(scp, tmp_path):
    study = generate_uid()
    files = [write_instance(tmp_path / f"{n}.dcm", study_uid=study) for n in range(7)]
    assert send_files(scp.port, files) == [0] * 7

    manifests = sorted(wait_file_manifests(scp.store, _uids(files)), key=lambda m: m.opened_at)
    assert [(m.seal_reason, len(m.instances)) for m in manifests] == [
        ("rollover-files", 3),
        ("rollover-files", 3),
        ("release", 1),
    ]
    assert len({m.batch_id for m in manifests}) == 3
    for manifest in manifests:  # each batch lists exactly the objects under its own prefix
        assert all(i.key.startswith(manifest.prefix) for i in manifest.instances)
        on_disk = {p.relative_to(scp.store).as_posix() for p in (scp.store / manifest.prefix).rglob("*.dcm")}
        assert on_disk == {i.key for i in manifest.instances}


def test_rollover_at_max_bytes(scp, tmp_path):
    small, big, last = (
        write_instance(tmp_path / "a.dcm"),
        write_instance(tmp_path / "b.dcm", pixel_bytes=30000),
        write_instance(tmp_path / "c.dcm"),
    )
    assert send_files(scp.port, [small, big, last]) == [0, 0, 0]
    manifests = sorted(wait_file_manifests(scp.store, _uids([small, big, last])), key=lambda m: m.opened_at)
    assert [(m.seal_reason, len(m.instances)) for m in manifests] == [("rollover-bytes", 2), ("release", 1)]
    assert manifests[0].total_bytes >= 20000


def test_abort_seals_what_was_stored(scp, tmp_path):
    files = [write_instance(tmp_path / f"{n}.dcm") for n in range(2)]
    assert send_files(scp.port, files, release=False) == [0, 0]
    [manifest] = wait_file_manifests(scp.store, _uids(files))
    assert manifest.seal_reason == "abort" and len(manifest.instances) == 2


def test_idle_association_is_aborted_and_sealed(scp, tmp_path):
    path = write_instance(tmp_path / "idle.dcm")
    assoc = associate(scp.port, file_contexts([path]))
    with raw_sending():
        assert assoc.send_c_store(path).Status == 0
    # stay silent past SCP_NETWORK_TIMEOUT: the SCP aborts the association and seals its batch
    [manifest] = wait_file_manifests(scp.store, _uids([path]), timeout=15)
    assert manifest.seal_reason == "idle"
    wait_for(lambda: not assoc.is_established, timeout=10, what="the SCP to abort the idle association")


def test_foreign_peer_address_is_rejected(start_scp, tmp_path):
    scp = start_scp(
        SCP_STORAGE_URI=f"file://{tmp_path / 'store'}", SCP_ALLOWED_CIDRS="10.0.0.0/8,192.168.0.0/16"
    )
    assoc = associate(scp.port, [(CTImageStorage, ExplicitVRLittleEndian)])
    assert assoc.is_rejected
    reject = assoc.acceptor.primitive
    assert (reject.result, reject.result_source, reject.diagnostic) == (0x01, 0x01, 0x01)
    assert any(line.get("outcome") == "rejected-peer-address" for line in scp.logs())


def test_sigterm_with_an_open_association_drains_aborts_seals_and_exits_0(start_scp, tmp_path):
    store = tmp_path / "store"
    # the drain window is the only time /readyz says 503: wide enough for a loaded CI machine to see it
    scp = start_scp(SCP_STORAGE_URI=f"file://{store}", SCP_DRAIN_SECONDS="8")
    files = [write_instance(tmp_path / f"{n}.dcm") for n in range(2)]
    assoc = associate(scp.port, file_contexts(files))
    with raw_sending():
        assert [assoc.send_c_store(f).Status for f in files] == [0, 0]

    scp.proc.send_signal(signal.SIGTERM)
    # draining: not ready, and no longer accepting, while the association is still open
    wait_for(lambda: http_get(scp.health_port, "/readyz")[0] == 503, timeout=10, what="/readyz 503")
    assert "draining" in http_get(scp.health_port, "/readyz")[1]
    assert not associate(scp.port, [(CTImageStorage, ExplicitVRLittleEndian)]).is_established
    assert assoc.is_established

    assert scp.proc.wait(30) == 0
    [manifest] = wait_file_manifests(store, _uids(files), timeout=5)
    assert manifest.seal_reason == "shutdown" and len(manifest.instances) == 2
    assert not assoc.is_established
    summaries = [line for line in scp.logs() if line.get("event") == "association"]
    assert [s["outcome"] for s in summaries] == ["shutdown"]
    emf = [d for d in scp.emf_documents() if d.get("Instances")]
    assert emf and emf[-1]["_aws"]["CloudWatchMetrics"][0]["Namespace"] == "DicomIngest/Scp"
    assert sum(d["Instances"] for d in emf) == 2


def test_in_process_api_age_rollover_while_the_association_stays_open(tmp_path):
    settings = ScpSettings(
        port=0,
        health_port=0,
        bind_address="127.0.0.1",
        storage_uri=f"file://{tmp_path / 'store'}",
        batch_max_age_seconds=0.5,
    )
    first, second = write_instance(tmp_path / "1.dcm"), write_instance(tmp_path / "2.dcm")
    with StoreScp(settings) as scp:
        assert scp.port and scp.health_port and scp.tls_port is None
        assoc = associate(scp.port, file_contexts([first]))
        with raw_sending():
            assert assoc.send_c_store(first).Status == 0
            [aged] = wait_file_manifests(tmp_path / "store", _uids([first]))
            assert aged.seal_reason == "rollover-age" and assoc.is_established
            assert assoc.send_c_store(second).Status == 0
        assoc.release()
        [released] = wait_file_manifests(tmp_path / "store", _uids([second]))
    assert released.seal_reason in ("release", "rollover-age") and released.batch_id != aged.batch_id
    assert len(file_manifests(tmp_path / "store")) == 2
    started = time.monotonic()
    scp.stop()  # idempotent
    assert time.monotonic() - started < 1


def test_an_unknown_scp_variable_stops_the_scp_with_the_nearest_name(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("SCP_")}
    env.update(SCP_AE_TITEL="MYGATEWAY", SCP_PORTT="104", SCP_SPOOL_DIR=str(tmp_path / "spool"))
    result = subprocess.run(
        [sys.executable, "-m", "scp"], cwd=REPO, env=env, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr.splitlines() == [
        "environment: SCP_AE_TITEL: unknown setting; did you mean SCP_AE_TITLE?",
        "environment: SCP_PORTT: unknown setting; did you mean SCP_PORT?",
    ]


def test_connections_per_peer_and_associations_are_limited_with_the_reason(tmp_path):
    scp = ScpProcess(
        {
            "SCP_STORAGE_URI": f"file://{tmp_path / 'store'}",
            "SCP_MAX_CONNECTIONS_PER_PEER": "2",
            "SCP_MAX_ASSOCIATIONS": "3",
        },
        tmp_path,
    )
    contexts = [(CTImageStorage, ExplicitVRLittleEndian)]
    try:
        first, second = associate(scp.port, contexts), associate(scp.port, contexts)
        assert first.is_established and second.is_established
        third = associate(scp.port, contexts)
        assert third.is_rejected
        reject = third.acceptor.primitive
        assert (reject.result, reject.result_source, reject.diagnostic) == (0x02, 0x03, 0x02)
        rejection = wait_for(lambda: [r for r in scp.logs() if r.get("outcome") == "rejected-peer-limit"])
        assert "more than 2 connections from this address" in rejection[0]["detail"]
        first.release()
        # The association's end is logged before its connection's handler returns and uncounts it.
        wait_for(
            lambda: "dicom_scp_open_connections 1\n" in http_get(scp.health_port, "/metrics")[1],
            what="only the second connection still open",
        )
        again = associate(scp.port, contexts)  # the released connection no longer counts
        assert again.is_established
        again.release()
        second.release()
    finally:
        assert scp.stop() == 0


def test_only_associations_count_against_the_association_limit(tmp_path):
    scp = ScpProcess(
        {"SCP_STORAGE_URI": f"file://{tmp_path / 'store'}", "SCP_MAX_ASSOCIATIONS": "1"}, tmp_path
    )
    contexts = [(CTImageStorage, ExplicitVRLittleEndian)]
    idle = [socket.create_connection(("127.0.0.1", scp.port)) for _ in range(5)]  # no request yet
    try:
        first = associate(scp.port, contexts)
        assert first.is_established  # the idle connections took no slot
        second = associate(scp.port, contexts)
        assert second.is_rejected
        reject = second.acceptor.primitive
        assert (reject.result, reject.result_source, reject.diagnostic) == (0x02, 0x03, 0x02)
        [rejection] = wait_for(
            lambda: [r for r in scp.logs() if r.get("outcome") == "rejected-association-limit"]
        )
        assert rejection["detail"] == "all 1 association slots in use (SCP_MAX_ASSOCIATIONS)"
        first.release()
    finally:
        for sock in idle:
            sock.close()
        assert scp.stop() == 0
