"""DICOM TLS: the SCP process serves TLS only and verifies client certificates."""

from __future__ import annotations

import socket
import ssl

import pytest
from pydicom import dcmread

from tests.scp.certificates import make_pki, tls_listener_env
from tests.scp.dicom_factory import write_instance
from tests.scp.harness import ScpProcess, associate, file_contexts, raw_sending, wait_for
from tests.scp.manifests import wait_file_manifests


@pytest.fixture(scope="module")
def tls_scp(tmp_path_factory):
    work = tmp_path_factory.mktemp("scp-tls")
    pki = make_pki(work / "pki")
    scp = ScpProcess(
        {
            "SCP_STORAGE_URI": f"file://{work / 'store'}",
            "SCP_PLAIN_ENABLED": "false",
            **tls_listener_env(pki),
            "SCP_TLS_CA_FILE": str(pki.ca_cert),
            "SCP_TLS_REQUIRE_CLIENT_CERT": "true",
        },
        work,
    )
    yield scp, pki, work / "store"
    assert scp.stop() == 0


def _client_context(pki, *, with_certificate: bool) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(pki.ca_cert))
    context.maximum_version = ssl.TLSVersion.TLSv1_2  # the minimum the SCP accepts works
    if with_certificate:
        context.load_cert_chain(str(pki.client_cert), str(pki.client_key))
    return context


def _store_over_tls(tls_scp, path) -> list:
    """Send one file over TLS with a client certificate and release; its sealed manifests."""
    scp, pki, store = tls_scp
    assoc = associate(
        scp.tls_port,
        file_contexts([path]),
        tls_args=(_client_context(pki, with_certificate=True), "localhost"),
    )
    assert assoc.is_established
    with raw_sending():
        assert assoc.send_c_store(path).Status == 0
    assoc.release()
    return wait_file_manifests(store, {str(dcmread(path).SOPInstanceUID)})


def test_tls_with_client_certificate_stores(tls_scp, tmp_path):
    scp, _, _ = tls_scp
    assert scp.port is None and scp.tls_port
    [manifest] = _store_over_tls(tls_scp, write_instance(tmp_path / "tls.dcm"))
    assert manifest.seal_reason == "release"


def test_tls_without_client_certificate_is_refused(tls_scp, tmp_path):
    scp, pki, _ = tls_scp
    path = write_instance(tmp_path / "x.dcm")
    assoc = associate(
        scp.tls_port,
        file_contexts([path]),
        tls_args=(_client_context(pki, with_certificate=False), "localhost"),
    )
    assert not assoc.is_established
    refusals = wait_for(
        lambda: [
            r
            for r in scp.logs()
            if r.get("message") == "connection refused" and r["reason"].startswith("TLS handshake failed")
        ],
        what="a log record of the refused handshake",
    )
    assert refusals[0]["level"] == "WARNING" and "certificate" in refusals[0]["reason"].lower()
    assert refusals[0]["port"] == "tls"
    assert refusals[0]["peerAddress"] == "127.0.0.1"


def test_a_client_that_never_starts_its_handshake_does_not_hold_up_the_others(tls_scp, tmp_path):
    """The handshake runs in the connection's own thread: a peer that connects to the TLS port and
    sends nothing (a stalled client, a port scan) must not stop the next modality's association."""
    scp, _, _ = tls_scp
    with socket.create_connection(("127.0.0.1", scp.tls_port), timeout=30):
        [manifest] = _store_over_tls(tls_scp, write_instance(tmp_path / "after-stall.dcm"))
    assert manifest.seal_reason == "release"
