"""The SCP's parts on their own: access policy, batch writer races, retries, metrics, TLS, config."""

from __future__ import annotations

import json
import ssl
import subprocess
import sys
import threading
from datetime import UTC, datetime

import pytest
from botocore.exceptions import ClientError, EndpointConnectionError

from core.layout import BATCH_ID_PATTERN, BatchManifest, ManifestInstance
from core.scp_settings import ScpSettings
from scp.access import AccessPolicy
from scp.batching import BatchLimits, BatchWriter, Origin, RetryPolicy
from scp.metrics import EMF_MAX_VALUES, Metrics
from scp.storage import StorageError, with_retries
from scp.storage.file import FileStorage
from scp.storage.s3 import _storage_error
from scp.tls import server_context
from tests.scp.certificates import make_pki
from tests.scp.harness import REPO

ORIGIN = Origin("CT1", "AHI-GATEWAY", "10.1.2.3", "task-1")


def _writer(tmp_path, **limits) -> BatchWriter:
    return BatchWriter(
        FileStorage(tmp_path),
        ORIGIN,
        BatchLimits(limits.get("files", 100), limits.get("bytes", 10**9), limits.get("age", 3600)),
        RetryPolicy(0, 0),
    )


def _instance(batch, n: int, size: int = 10) -> ManifestInstance:
    return ManifestInstance(
        key=batch.instance_key("1.2", "1.3", f"1.4.{n}"),
        sop_class_uid="1.2.840.10008.5.1.4.1.1.2",
        sop_instance_uid=f"1.4.{n}",
        study_instance_uid="1.2",
        series_instance_uid="1.3",
        transfer_syntax_uid="1.2.840.10008.1.2.1",
        size=size,
        sha256="0" * 64,
    )


# --- access policy --------------------------------------------------------------------------
def test_access_policy_reasons_and_addresses():
    policy = AccessPolicy(
        "GW", require_called_ae=True, allowed_calling_aes=["CT1"], allowed_cidrs=["10.0.0.0/8", "fd00::/8"]
    )
    ok = {"called_ae": "GW", "calling_ae": "CT1"}
    assert policy.check(**ok, peer_address="10.9.8.7") is None
    assert policy.check(**ok, peer_address="::ffff:10.9.8.7") is None  # IPv4 via a dual-stack socket
    assert policy.check(**ok, peer_address="fd00::1") is None
    assert policy.check(**ok, peer_address="192.168.1.1").reason == 1
    assert policy.check(called_ae="OTHER", calling_ae="CT1", peer_address="10.0.0.1").reason == 7
    assert policy.check(called_ae="GW", calling_ae="MR9", peer_address="10.0.0.1").reason == 3
    open_policy = AccessPolicy("GW", require_called_ae=False, allowed_calling_aes=[], allowed_cidrs=[])
    assert open_policy.check(called_ae="ANY", calling_ae="ANY", peer_address="203.0.113.9") is None


# --- batch writer ---------------------------------------------------------------------------
def test_empty_batch_writes_nothing(tmp_path):
    writer = _writer(tmp_path)
    assert writer.seal("release") is None
    batch = writer.reserve()
    writer.release(batch)  # the only write failed
    assert writer.seal("release") is None
    assert not list(tmp_path.rglob("*.json"))


def test_manifest_lists_the_batch_and_is_what_layout_reads(tmp_path):
    writer = _writer(tmp_path)
    batch = writer.reserve()
    writer.commit(batch, _instance(batch, 1, size=7))
    batch2 = writer.reserve()
    assert batch2 is batch
    writer.commit(batch, _instance(batch, 1, size=9))  # the same instance again: listed once
    manifest = writer.seal("release")
    assert BATCH_ID_PATTERN.match(manifest.batch_id)
    stored = BatchManifest.model_validate_json((tmp_path / f"batches/{manifest.batch_id}.json").read_text())
    assert [i.size for i in stored.instances] == [9]
    assert (stored.calling_ae_title, stored.peer_address, stored.task_id) == ("CT1", "10.1.2.3", "task-1")
    assert stored.prefix == f"incoming/{stored.opened_at:%Y/%m/%d}/{stored.batch_id}/"


def test_seal_waits_for_writes_in_flight_and_new_stores_go_to_the_next_batch(tmp_path):
    writer = _writer(tmp_path)
    in_flight = writer.reserve()
    result: list[BatchManifest | None] = []
    sealer = threading.Thread(target=lambda: result.append(writer.seal("shutdown")))
    sealer.start()
    sealer.join(0.3)
    assert sealer.is_alive(), "the manifest must wait for the object still being written"
    racing = writer.reserve()  # a store arriving during the seal
    assert racing is not in_flight
    writer.commit(in_flight, _instance(in_flight, 1))
    sealer.join(10)
    [manifest] = result
    assert [i.sop_instance_uid for i in manifest.instances] == ["1.4.1"]
    writer.commit(racing, _instance(racing, 2))
    assert [i.sop_instance_uid for i in writer.seal("release").instances] == ["1.4.2"]


def test_age_rollover_is_checked_on_reserve_and_by_the_housekeeper(tmp_path):
    now = [datetime(2026, 11, 27, 12, 0, tzinfo=UTC)]
    writer = BatchWriter(
        FileStorage(tmp_path), ORIGIN, BatchLimits(100, 10**9, 60), RetryPolicy(0, 0), clock=lambda: now[0]
    )
    first = writer.reserve()
    writer.commit(first, _instance(first, 1))
    assert writer.seal_if_expired() is None
    now[0] = now[0].replace(minute=1)
    second = writer.reserve()
    assert second is not first
    assert (
        json.loads((tmp_path / f"batches/{first.batch_id}.json").read_text())["sealReason"] == "rollover-age"
    )
    writer.commit(second, _instance(second, 2))
    now[0] = now[0].replace(minute=2)
    assert writer.seal_if_expired().seal_reason == "rollover-age"


# --- retries and error classes --------------------------------------------------------------
def test_retries_transient_failures_only():
    calls = []

    def flaky():
        calls.append(1)
        if len(calls) < 3:
            raise StorageError("503", transient=True)
        return "ok"

    assert with_retries(flaky, retries=3, first_delay=0, what="k", sleep=lambda s: None) == "ok"
    assert len(calls) == 3

    def denied():
        calls.append(1)
        raise StorageError("403", transient=False)

    calls.clear()
    with pytest.raises(StorageError):
        with_retries(denied, retries=5, first_delay=0, what="k", sleep=lambda s: None)
    assert len(calls) == 1


def _client_error(status: int, code: str) -> ClientError:
    return ClientError({"Error": {"Code": code}, "ResponseMetadata": {"HTTPStatusCode": status}}, "PutObject")


def test_s3_error_classification():
    assert _storage_error(_client_error(500, "InternalError"), "x").transient
    assert _storage_error(_client_error(503, "SlowDown"), "x").transient
    assert _storage_error(_client_error(400, "BadDigest"), "x").transient
    assert not _storage_error(_client_error(404, "NoSuchBucket"), "x").transient
    assert not _storage_error(_client_error(403, "AccessDenied"), "x").transient
    assert _storage_error(EndpointConnectionError(endpoint_url="http://x"), "x").transient


# --- metrics --------------------------------------------------------------------------------
def test_prometheus_text_and_emf_window():
    metrics = Metrics()
    for n in range(150):
        metrics.stored(1000, 0.002 * n)
    metrics.store_failed("storage")
    metrics.association("release")
    metrics.association("rejected-called-ae")
    text = metrics.prometheus({"dicom_scp_active_associations": 2})
    assert "dicom_scp_instances_stored_total 150" in text
    assert 'dicom_scp_store_failures_total{reason="storage"} 1' in text
    assert 'dicom_scp_store_latency_seconds_bucket{le="+Inf"} 150' in text
    assert "dicom_scp_active_associations 2" in text

    document = metrics.drain_emf({"Service": "dicom-scp"}, {"TaskId": "t"}, now=1.5)
    directive = document["_aws"]["CloudWatchMetrics"][0]
    assert document["_aws"]["Timestamp"] == 1500
    assert directive["Dimensions"] == [["Service"]] and document["Service"] == "dicom-scp"
    names = {m["Name"] for m in directive["Metrics"]}
    assert {
        "Instances",
        "Bytes",
        "StoreFailures",
        "Associations",
        "RejectedAssociations",
        "StoreLatency",
    } <= names
    assert document["Instances"] == 150 and document["Bytes"] == 150000
    assert len(document["StoreLatency"]) == EMF_MAX_VALUES
    assert metrics.drain_emf({"Service": "dicom-scp"}, {}) is None  # nothing happened since


# --- TLS and configuration ------------------------------------------------------------------
def test_tls_context_requires_tls12_and_client_certificates(tmp_path):
    pki = make_pki(tmp_path)
    settings = ScpSettings(
        tls_enabled=True,
        tls_cert_file=pki.server_cert,
        tls_key_file=pki.server_key,
        tls_ca_file=pki.ca_cert,
        tls_require_client_cert=True,
    )
    context = server_context(settings)
    assert context.minimum_version == ssl.TLSVersion.TLSv1_2
    assert context.verify_mode == ssl.CERT_REQUIRED


def test_bad_environment_exits_2_with_one_line_per_bad_value(tmp_path):
    env = {
        "PATH": "/usr/bin:/bin",
        "SCP_PORT": "99999",
        "SCP_AE_TITLE": "X" * 17,
        "SCP_ALLOWED_CIDRS": "nope",
    }
    result = subprocess.run(
        [sys.executable, "-m", "scp"], cwd=REPO, env=env, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 3
    assert {line.split(":")[1].strip() for line in lines} == {"SCP_PORT", "SCP_AE_TITLE", "SCP_ALLOWED_CIDRS"}
    assert result.stdout == ""
