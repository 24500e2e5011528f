"""cli/store_client.py and the sender on it, against real peers: dcmtk storescp and pynetdicom SCPs."""

from __future__ import annotations

import socket
import ssl
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pydicom
import pytest
from pydicom.dataset import Dataset
from pynetdicom import AE, ALL_TRANSFER_SYNTAXES, build_context, evt
from pynetdicom.dsutils import encode, split_dataset
from pynetdicom.sop_class import CTImageStorage, Verification

from bench.sender import CALLED_AE, storescp
from cli.errors import Rejected, Unreachable
from cli.peer import explain
from cli.sender import AssociationFailed, Peer, TlsFiles, echo, presentation_contexts, scan, send_files
from cli.store_client import C_STORE_RQ, Association, command_template
from cli.synthetic import PROFILES, write_study
from tests.scp.certificates import make_pki

ABORT, RELEASE, HANG = "abort", "release", "hang"


@pytest.fixture(scope="module")
def studies(tmp_path_factory) -> list[Path]:
    """CT in explicit VR (two series), MR in RLE and CR in implicit VR: small, several contexts."""
    root = tmp_path_factory.mktemp("studies")
    return [
        *write_study(root / "ct", "CT", instances=4, rows=64, cols=64, series=2),
        *write_study(root / "mr", "MR", instances=2, rows=48, cols=48, transfer_syntax="rle"),
        *write_study(root / "cr", "CR", instances=1, rows=96, cols=80, transfer_syntax="implicit"),
    ]


def dataset_bytes(path: Path) -> bytes:
    """The file's bytes after its file meta information (what C-STORE carries)."""
    _, offset = split_dataset(path)
    return path.read_bytes()[offset:]


def sop_uid(path: Path) -> str:
    return str(pydicom.dcmread(path, stop_before_pixels=True).SOPInstanceUID)


@dataclass
class Recorder:
    """A pynetdicom C-STORE handler: keeps what arrived and plays a per-instance script.

    ``script[uid]`` lists what each attempt gets: a status (int), a response Dataset, ABORT (the SCP
    aborts the association), RELEASE (the SCP asks to release it instead of answering) or HANG
    (no response until ``release`` is set).
    """

    script: dict[str, list] = field(default_factory=dict)
    received: dict[str, bytes] = field(default_factory=dict)
    attempts: dict[str, int] = field(default_factory=dict)
    associations: set[int] = field(default_factory=set)
    release: threading.Event = field(default_factory=threading.Event)

    def __call__(self, event):
        uid = str(event.request.AffectedSOPInstanceUID)
        self.associations.add(id(event.assoc))
        self.attempts[uid] = self.attempts.get(uid, 0) + 1
        steps = self.script.get(uid, [])
        step = steps[self.attempts[uid] - 1] if self.attempts[uid] <= len(steps) else 0x0000
        if step == ABORT:
            event.assoc.abort()
            return 0x0000
        if step == RELEASE:
            event.assoc.release()
            return 0x0000
        if step == HANG:
            self.release.wait(30)
            return 0x0000
        if step == 0x0000 or (isinstance(step, int) and step & 0xF000 == 0xB000):
            self.received[uid] = event.request.DataSet.getvalue()
        return step


@contextmanager
def pynetdicom_scp(
    recorder: Recorder,
    max_pdu: int = 16382,
    sop_classes: tuple[str, ...] | None = None,
    ssl_context: ssl.SSLContext | None = None,
) -> Iterator[int]:
    """A pynetdicom Store SCP (AE title TEST-SCP, called AE title checked) on an ephemeral port."""
    ae = AE(ae_title="TEST-SCP")
    ae.require_called_aet = True
    ae.maximum_pdu_size = max_pdu
    for sop_class in sop_classes or [p.sop_class_uid for p in PROFILES.values()]:
        ae.add_supported_context(sop_class, ALL_TRANSFER_SYNTAXES)
    ae.add_supported_context(Verification)
    server = ae.start_server(
        ("127.0.0.1", 0), block=False, ssl_context=ssl_context, evt_handlers=[(evt.EVT_C_STORE, recorder)]
    )
    try:
        yield server.server_address[1]
    finally:
        recorder.release.set()
        server.shutdown()


def to_pynetdicom(port: int, **kw) -> Peer:
    return Peer("127.0.0.1", port, "TEST-SCP", **kw)


@pytest.mark.parametrize("uid", ["1.2.840.10008.1.2.3.4", "1.2.840.10008.1.2.3.45"])  # even, odd length
def test_command_set_is_pydicoms_encoding_of_the_whole_c_store_rq(uid):
    expected = Dataset()
    expected.CommandGroupLength = 0
    expected.AffectedSOPClassUID = CTImageStorage
    expected.CommandField = 0x0001
    expected.MessageID = 513
    expected.Priority = 0
    expected.CommandDataSetType = 0x0001
    expected.AffectedSOPInstanceUID = uid
    expected.CommandGroupLength = len(encode(expected, True, True)) - 12
    assert command_template(C_STORE_RQ, CTImageStorage).encode(513, uid) == encode(expected, True, True)


@pytest.mark.parametrize("max_pdu", [16384, 4096])
def test_storescp_writes_exactly_the_dataset_bytes_of_each_file(studies, tmp_path, max_pdu):
    files, _ = scan(studies)
    options = ("+B", "+xa", "--max-pdu", str(max_pdu))  # bit-preserving, accept RLE too
    with storescp(tmp_path, options=options) as port:
        peer = Peer("127.0.0.1", port, CALLED_AE)
        with Association.open(peer, presentation_contexts(files)) as assoc:
            assert assoc.max_pdu == max_pdu
        report = send_files(files, peer)
    assert len(report.stored) == len(files) == 7 and not report.failed
    assert {r.status for r in report.results} == {0x0000}
    written = {sop_uid(p): dataset_bytes(p) for p in tmp_path.iterdir() if p.is_file()}
    assert written == {sop_uid(p): dataset_bytes(p) for p in studies}


def test_echo_against_storescp(tmp_path):
    with storescp(tmp_path) as port:
        status, seconds = echo(Peer("127.0.0.1", port, CALLED_AE))
    assert status == 0x0000 and seconds > 0


def test_dimse_statuses_retries_and_error_comment(studies):
    """0xA7xx is retried; a failure (0xC000) is not, and is reported with its Error Comment."""
    files, _ = scan(studies[:4])
    ok, warned, flaky, refused = (f.sop_instance_uid for f in files)
    failure = Dataset()
    failure.Status = 0xC000
    failure.ErrorComment = "cannot parse"
    recorder = Recorder(script={warned: [0xB000], flaky: [0xA700], refused: [failure]})
    with pynetdicom_scp(recorder) as port:
        report = send_files(files, to_pynetdicom(port), retries=1, backoff=0.01)
    results = {r.sop_instance_uid: r for r in report.results}
    assert (results[ok].status, results[ok].attempts, results[ok].stored) == (0x0000, 1, True)
    assert (results[warned].status, results[warned].stored) == (0xB000, True)
    assert (results[flaky].status, results[flaky].attempts, results[flaky].stored) == (0x0000, 2, True)
    assert (results[refused].status, results[refused].attempts, results[refused].stored) == (0xC000, 1, False)
    assert results[refused].reason == "0xC000 Error: cannot understand (cannot parse)"
    assert recorder.attempts == {ok: 1, warned: 1, flaky: 2, refused: 1}
    assert set(recorder.received) == {ok, warned, flaky}
    assert len(recorder.associations) == 1


def test_small_maximum_pdu_fragments_the_dataset(studies):
    files, _ = scan(studies)
    recorder = Recorder()
    with pynetdicom_scp(recorder, max_pdu=4096) as port:
        report = send_files(files, to_pynetdicom(port))
    assert len(report.stored) == len(files)
    assert recorder.received == {f.sop_instance_uid: dataset_bytes(f.path) for f in files}


@pytest.mark.parametrize("ending", [ABORT, RELEASE])
def test_association_ended_by_the_peer_during_a_store_sends_the_instance_again(studies, ending):
    files, _ = scan(studies[:3])
    victim = files[1].sop_instance_uid
    recorder = Recorder(script={victim: [ending]})
    with pynetdicom_scp(recorder) as port:
        report = send_files(files, to_pynetdicom(port), backoff=0.01)
    assert len(report.stored) == 3 and not report.failed
    assert [r.attempts for r in report.results] == [1, 2, 1]
    assert recorder.received[victim] == dataset_bytes(files[1].path)
    assert len(recorder.associations) == 2


@pytest.mark.parametrize(
    ("ending", "reason"),
    [
        (ABORT, "the peer aborted the association (DUL service-user)"),
        (RELEASE, "the peer released the association"),
    ],
)
def test_association_ended_by_the_peer_is_the_reason_when_not_retried(studies, ending, reason):
    files, _ = scan(studies[:1])
    with pynetdicom_scp(Recorder(script={files[0].sop_instance_uid: [ending]})) as port:
        [result] = send_files(files, to_pynetdicom(port), retries=0).results
    assert not result.stored and result.reason == f"association lost: {reason}"


def test_no_response_within_the_dimse_timeout_aborts_and_reports(studies):
    files, _ = scan(studies[:1])
    recorder = Recorder(script={files[0].sop_instance_uid: [HANG]})
    with pynetdicom_scp(recorder) as port:
        report = send_files(files, to_pynetdicom(port, dimse_timeout=0.3), retries=0)
    [result] = report.results
    assert not result.stored and result.status is None
    assert result.reason == "association lost: no response within 0.3 s"


def test_wrong_called_ae_title_is_rejected_with_the_reason():
    with pynetdicom_scp(Recorder()) as port:
        peer = Peer("127.0.0.1", port, "NOT-IT")
        with pytest.raises(AssociationFailed) as failed:
            echo(peer)
    assert failed.value.kind == "rejected"
    assert failed.value.detail == (
        f"association rejected by 127.0.0.1:{port} (Rejected Permanent, source: Service User, "
        "reason: Called AE title not recognised)"
    )
    error = explain(failed.value, peer)
    assert isinstance(error, Rejected) and "--called-aet" in error.fix


def test_peer_that_accepts_none_of_the_contexts(studies):
    files, _ = scan(studies[:2])  # CT; the SCP supports MR only
    with pynetdicom_scp(Recorder(), sop_classes=(PROFILES["MR"].sop_class_uid,)) as port:
        with pytest.raises(AssociationFailed) as failed:
            send_files(files, to_pynetdicom(port))
    assert failed.value.kind == "no-contexts"
    assert "accepted none of the proposed" in failed.value.detail


def test_instances_of_a_context_the_peer_refused_are_listed(studies):
    files, _ = scan([studies[0], studies[4]])  # CT accepted, MR refused
    recorder = Recorder()
    with pynetdicom_scp(recorder, sop_classes=(PROFILES["CT"].sop_class_uid,)) as port:
        report = send_files(files, to_pynetdicom(port))
    assert [r.sop_instance_uid for r in report.stored] == [files[0].sop_instance_uid]
    [refused] = report.failed
    assert refused.reason.startswith("not accepted by the peer: SOP class " + PROFILES["MR"].sop_class_uid)
    assert set(recorder.received) == {files[0].sop_instance_uid}


def test_unreachable_port(studies, unused_port):
    peer = Peer("127.0.0.1", unused_port, "X")
    with pytest.raises(AssociationFailed) as failed:
        send_files(scan(studies[:1])[0], peer)
    assert failed.value.kind == "unreachable"
    assert failed.value.detail.startswith(f"cannot connect to 127.0.0.1:{unused_port}")
    assert isinstance(explain(failed.value, peer), Unreachable)


def test_a_port_that_answers_in_http_is_named_as_such():
    """An HTTP server that answers any bytes at once with a status line (Orthanc's web port did)."""
    listener = socket.create_server(("127.0.0.1", 0))

    def answer() -> None:
        connection, _ = listener.accept()
        with connection:
            connection.recv(65536)
            connection.sendall(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")

    threading.Thread(target=answer, daemon=True).start()
    peer = Peer("127.0.0.1", listener.getsockname()[1], "X")
    with listener, pytest.raises(AssociationFailed) as failed:
        echo(peer)
    assert failed.value.kind == "speaks-http"
    assert failed.value.detail == f"this port (127.0.0.1:{peer.port}) speaks HTTP, not DICOM"
    error = explain(failed.value, peer)
    assert isinstance(error, Unreachable) and "--port" in error.fix


def test_store_and_echo_over_tls_with_a_client_certificate(studies, tmp_path):
    pki = make_pki(tmp_path)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=str(pki.ca_cert))
    context.load_cert_chain(str(pki.server_cert), str(pki.server_key))
    context.verify_mode = ssl.CERT_REQUIRED
    files, _ = scan(studies)
    recorder = Recorder()
    tls = TlsFiles(pki.ca_cert, pki.client_cert, pki.client_key)
    with pynetdicom_scp(recorder, max_pdu=4096, ssl_context=context) as port:
        report = send_files(files, to_pynetdicom(port, tls=tls))
        status, _ = echo(to_pynetdicom(port, tls=tls))
        with pytest.raises(AssociationFailed) as untrusted:  # no client certificate
            echo(to_pynetdicom(port, tls=TlsFiles(pki.ca_cert)))
        with pytest.raises(AssociationFailed) as plain:  # forgot --tls
            echo(to_pynetdicom(port))
    assert len(report.stored) == len(files) and status == 0x0000
    assert recorder.received == {f.sop_instance_uid: dataset_bytes(f.path) for f in files}
    assert untrusted.value.kind == "tls"
    assert untrusted.value.detail.startswith(f"TLS with 127.0.0.1:{port} failed (")  # alert or EOF
    error = explain(untrusted.value, to_pynetdicom(port, tls=TlsFiles(pki.ca_cert)))
    assert isinstance(error, Rejected) and error.message == untrusted.value.detail
    for option in ("--port", "--ca-file", "--cert-file", "--key-file"):
        assert option in error.fix
    assert "SOP class" not in error.fix
    # forgot --tls: the TLS port dropped the plain request; a look at the port says it speaks TLS
    assert plain.value.kind == "speaks-tls" and "speaks TLS, not DICOM" in plain.value.detail
    forgot = explain(plain.value, to_pynetdicom(port))
    assert isinstance(forgot, Unreachable) and "--tls" in forgot.fix


def test_echo_with_a_pynetdicom_scp_and_release():
    with pynetdicom_scp(Recorder()) as port:
        with Association.open(to_pynetdicom(port), [build_context(Verification)]) as assoc:
            assert [assoc.c_echo().status for _ in range(3)] == [0x0000] * 3
        assert not assoc.is_established


@pytest.fixture
def unused_port() -> int:
    with socket.socket() as probe:  # an ephemeral port nobody listens on once closed
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class CorruptingProxy:
    """TCP proxy in front of a real SCP that replaces the first P-DATA-TF PDU the SCP sends (the
    first C-STORE response) with ``replacement``; everything else passes through unchanged."""

    def __init__(self, upstream_port: int, replacement: bytes):
        self.upstream_port = upstream_port
        self.replacement: bytes | None = replacement
        self._lock = threading.Lock()
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            upstream = socket.create_connection(("127.0.0.1", self.upstream_port))
            threading.Thread(target=self._copy, args=(client, upstream), daemon=True).start()
            threading.Thread(target=self._copy_pdus, args=(upstream, client), daemon=True).start()

    @staticmethod
    def _copy(source: socket.socket, target: socket.socket) -> None:
        with source, target:
            while data := source.recv(65536):
                target.sendall(data)

    def _copy_pdus(self, source: socket.socket, target: socket.socket) -> None:
        with source, target, source.makefile("rb") as stream:
            while len(header := stream.read(6)) == 6:
                pdu = header + stream.read(int.from_bytes(header[2:], "big"))
                with self._lock:
                    if header[0] == 0x04 and self.replacement is not None:
                        pdu, self.replacement = self.replacement, None
                target.sendall(pdu)

    def close(self) -> None:
        self._listener.close()


def _pdu(pdu_type: int, body: bytes) -> bytes:
    return bytes([pdu_type, 0]) + len(body).to_bytes(4, "big") + body


@pytest.mark.parametrize(
    ("replacement", "reason"),
    [
        (_pdu(0x09, b"\0" * 4), "protocol error: PDU type 0x09, 4 bytes"),
        (_pdu(0x01, b"\0" * 4), "protocol error: unexpected PDU type 0x01"),
        (
            _pdu(0x04, (200).to_bytes(4, "big") + b"\x01\x03"),
            "protocol error: malformed presentation data value",
        ),
    ],
    ids=["unknown PDU type", "A-ASSOCIATE-RQ mid-association", "PDV longer than its PDU"],
)
def test_a_malformed_response_loses_the_association_and_the_instance_is_sent_again(
    studies, replacement, reason
):
    files, _ = scan(studies[:2])
    recorder = Recorder()
    with pynetdicom_scp(recorder) as port:
        proxy = CorruptingProxy(port, replacement)
        try:
            [first, _] = send_files(files, to_pynetdicom(proxy.port), retries=0).results
            assert not first.stored and first.reason == f"association lost: {reason}"
            proxy.replacement = replacement
            report = send_files(files, to_pynetdicom(proxy.port), backoff=0.01)
        finally:
            proxy.close()
    assert len(report.stored) == 2 and [r.attempts for r in report.results] == [2, 1]
    assert recorder.received == {f.sop_instance_uid: dataset_bytes(f.path) for f in files}
