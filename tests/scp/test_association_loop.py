"""The association loop (scp/association_loop.py) with real senders and real sockets.

The rest of tests/scp runs through the loop too (it is on by default); these tests pin what is
specific to it: that accepted associations are handed to it, that responses encoded here are the
bytes pynetdicom would send and requests are decoded as pynetdicom encodes them, that many images
over one association (dcmtk with Nagle on, several PDUs per image, interleaved C-ECHO) arrive
byte-for-byte, that release or abort in the middle of a dataset loses nothing acknowledged and
leaves no spool file, that an unsupported operation gets 0x0211, that the Storage Commitment
N-ACTION is answered here with its precise status, that timers fire without traffic, and that the
stock switch used by the benchmark still receives correctly. The commitment report sent on the
requesting association (through this loop) is tested end to end in
tests/e2e/test_commitment_e2e.py.
"""

from __future__ import annotations

import socket
import ssl
import struct
import subprocess
from io import BytesIO

import pytest
from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, ImplicitVRLittleEndian
from pynetdicom.dimse_messages import C_STORE_RQ, C_STORE_RSP
from pynetdicom.dimse_primitives import C_STORE

from core import dicom_wire
from core.commitment import STORAGE_COMMITMENT_INSTANCE, STORAGE_COMMITMENT_PUSH_MODEL
from core.scp_settings import ScpSettings
from scp.association_loop import STOCK_ENV, LoopAssociation, decode_command, response
from scp.server import StoreScp
from tests.scp.certificates import make_pki
from tests.scp.dicom_factory import _dataset_offset, dataset_bytes, write_instance
from tests.scp.harness import associate, file_contexts, raw_sending, send_files, wait_for
from tests.scp.manifests import sha256_hex, wait_file_manifests
from tests.scp.test_malformed_traffic import associate_raw, read_until_closed

VERIFICATION = "1.2.840.10008.1.1"


def _settings(tmp_path, **overrides) -> ScpSettings:
    values = dict(
        port=0,
        health_port=0,
        bind_address="127.0.0.1",
        storage_uri=f"file://{tmp_path / 'store'}",
        spool_dir=tmp_path / "spool",
    )
    values.update(overrides)
    return ScpSettings(**values)


def _stored_bytes(store, manifest) -> dict[str, bytes]:
    return {i.sop_instance_uid: (store / i.key).read_bytes() for i in manifest.instances}


def test_accepted_associations_are_served_by_the_loop(tmp_path):
    path = write_instance(tmp_path / "1.dcm")
    with StoreScp(_settings(tmp_path)) as scp:
        assoc = associate(scp.port, file_contexts([path]))
        [session] = wait_for(lambda: scp.sessions.all(), what="the session")
        wait_for(lambda: not session.assoc.dul.is_alive(), what="the DUL to hand over")
        assert isinstance(session.assoc, LoopAssociation)
        with raw_sending():
            assert assoc.send_c_store(path).Status == 0
        assoc.release()


def test_dcmtk_storescu_many_multi_pdu_images_over_one_association_arrive_byte_for_byte(start_scp, tmp_path):
    store = tmp_path / "store"
    scp = start_scp(SCP_STORAGE_URI=f"file://{store}", SCP_MAX_PDU="16384")
    # 40 KB of pixel data per image: several P-DATA PDUs each at a 16 KB maximum PDU.
    files = [write_instance(tmp_path / f"{n}.dcm", pixel_bytes=40_000) for n in range(25)]
    result = subprocess.run(
        ["storescu", "-aec", "AHI-GATEWAY", "127.0.0.1", str(scp.port), *map(str, files)],
        capture_output=True,
        timeout=60,
        env={"PATH": "/usr/bin:/bin", "TCP_NODELAY": "0"},  # dcmtk with Nagle's algorithm on
    )
    assert result.returncode == 0, result.stderr
    sources = {str(dcmread(f).SOPInstanceUID): f for f in files}
    [manifest] = wait_file_manifests(store, set(sources))
    assert manifest.seal_reason == "release" and len(manifest.instances) == 25
    for uid, stored in _stored_bytes(store, manifest).items():
        assert stored[_dataset_offset(stored) :] == dataset_bytes(sources[uid])


def test_pynetdicom_interleaved_echo_and_stores_get_every_response(tmp_path):
    files = [write_instance(tmp_path / f"{n}.dcm", rows=64, cols=64) for n in range(10)]
    with StoreScp(_settings(tmp_path)) as scp:
        assoc = associate(
            scp.port, [(CTImageStorage, ExplicitVRLittleEndian), (VERIFICATION, ExplicitVRLittleEndian)]
        )
        assert assoc.is_established
        statuses = []
        with raw_sending():
            for path in files:
                assert assoc.send_c_echo().Status == 0
                statuses.append(int(assoc.send_c_store(path).Status))
        assoc.release()
        [manifest] = wait_file_manifests(tmp_path / "store", {str(dcmread(f).SOPInstanceUID) for f in files})
    assert statuses == [0] * 10
    assert {i.sha256 for i in manifest.instances} == {
        sha256_hex((tmp_path / "store" / i.key).read_bytes()) for i in manifest.instances
    }


def test_an_idle_association_is_aborted_by_the_network_timeout_and_sealed_as_idle(tmp_path):
    path = write_instance(tmp_path / "1.dcm")
    with StoreScp(_settings(tmp_path, network_timeout=0.5)) as scp:
        assoc = associate(scp.port, file_contexts([path]))
        with raw_sending():
            assert assoc.send_c_store(path).Status == 0
        [manifest] = wait_file_manifests(tmp_path / "store", {str(dcmread(path).SOPInstanceUID)})
        wait_for(lambda: assoc.is_aborted, what="the SCP's A-ABORT")
    assert manifest.seal_reason == "idle"


def test_the_stock_receive_path_switch_still_stores(start_scp, tmp_path):
    store = tmp_path / "store"
    scp = start_scp(SCP_STORAGE_URI=f"file://{store}", **{STOCK_ENV: "1"})
    files = [write_instance(tmp_path / f"{n}.dcm") for n in range(3)]
    assert send_files(scp.port, files) == [0, 0, 0]
    [manifest] = wait_file_manifests(store, {str(dcmread(f).SOPInstanceUID) for f in files})
    assert len(manifest.instances) == 3


@pytest.mark.parametrize("status", [0x0000, 0xA700, 0xC210, 0xB000])
@pytest.mark.parametrize("instance_uid", ["1.2.3.4", "1.2.3.45"])  # even and odd length (padding)
@pytest.mark.parametrize("comment", [None, "dataset truncated in (7FE0,0010)", "odd"])
def test_responses_are_the_bytes_pynetdicom_would_send(status, instance_uid, comment):
    primitive = C_STORE()
    primitive.MessageIDBeingRespondedTo = 513
    primitive.AffectedSOPClassUID = CTImageStorage
    primitive.AffectedSOPInstanceUID = instance_uid
    primitive.Status = status
    primitive.ErrorComment = comment
    message = C_STORE_RSP()
    message.primitive_to_message(primitive)
    [pdata] = message.encode_msg(1, 16384)
    [(_, pynetdicom_pdv)] = pdata.presentation_data_value_list
    request = _store_request(instance_uid)
    assert pynetdicom_pdv == b"\x03" + response(decode_command(request), status, comment)


def _store_request(instance_uid: str) -> bytes:
    """A C-STORE-RQ command set as pynetdicom encodes it."""
    primitive = C_STORE()
    primitive.MessageID = 513
    primitive.AffectedSOPClassUID = CTImageStorage
    primitive.AffectedSOPInstanceUID = instance_uid
    primitive.Priority = 2
    primitive.DataSet = BytesIO(b"\0\0")
    message = C_STORE_RQ()
    message.primitive_to_message(primitive)
    [command, _] = message.encode_msg(1, 16384)
    return bytes(command.presentation_data_value_list[0][1][1:])


def test_requests_are_decoded_as_pynetdicom_encodes_them():
    fields = decode_command(_store_request("1.2.3.4"))  # odd length: padded with a NUL
    assert fields[0x0002] == b"1.2.840.10008.5.1.4.1.1.2\0"
    assert fields[0x1000] == b"1.2.3.4\0"
    assert struct.unpack("<H", fields[0x0100]) == (0x0001,)
    assert struct.unpack("<H", fields[0x0110]) == (513,)
    assert struct.unpack("<H", fields[0x0800]) != (0x0101,)  # a dataset follows


def _pdata(context_id: int, control: int, value: bytes) -> bytes:
    item = struct.pack(">LBB", len(value) + 2, context_id, control) + value
    return struct.pack(">BBL", 0x04, 0, len(item)) + item


def _read_pdu(sock: socket.socket) -> tuple[int, bytes]:
    header = sock.recv(6, socket.MSG_WAITALL)
    pdu_type, _, length = struct.unpack(">BBL", header)
    return pdu_type, sock.recv(length, socket.MSG_WAITALL)


def test_an_unsupported_operation_is_answered_0x0211_with_a_comment(tmp_path):
    with StoreScp(_settings(tmp_path)) as scp:
        sock = associate_raw(scp.port)  # Verification, context 1
        with sock:
            find = dicom_wire.command_set(  # a C-FIND-RQ on the Verification context
                dicom_wire.element(0x0002, dicom_wire.pad_uid(VERIFICATION))
                + dicom_wire.element(0x0100, struct.pack("<H", 0x0020))
                + dicom_wire.element(0x0110, struct.pack("<H", 7))
                + dicom_wire.element(0x0800, struct.pack("<H", 0x0101))
            )
            sock.sendall(_pdata(1, 0x03, find))
            pdu_type, body = _read_pdu(sock)
            assert pdu_type == 0x04
            fields = decode_command(body[6:])
            assert struct.unpack("<H", fields[0x0100]) == (0x8020,)
            assert struct.unpack("<H", fields[0x0900]) == (0x0211,)
            assert fields[0x0902].rstrip() == b"operation 0x0020 is not supported here"
            assert struct.unpack("<H", fields[0x0120]) == (7,)


@pytest.mark.parametrize("ending", ["release", "abort", "close"])
def test_release_or_abort_in_the_middle_of_a_dataset_stores_nothing_and_leaves_no_spool(
    start_scp, tmp_path, ending
):
    path = write_instance(tmp_path / "1.dcm", pixel_bytes=100_000)
    data = path.read_bytes()
    scp = start_scp(SCP_STORAGE_URI=f"file://{tmp_path / 'store'}")
    spool = scp.stderr_path.parent / "spool" / "worker-0"
    sock = associate_raw(scp.port, abstract_syntax=CTImageStorage, transfer_syntax=ExplicitVRLittleEndian)
    context = 1
    sock.sendall(_pdata(context, 0x03, _store_request_for(path)))
    sock.sendall(_pdata(context, 0x00, data[_dataset_offset(data) :][:50_000]))  # not the last
    wait_for(lambda: list(spool.glob("*")), what="the spool file of the transfer")
    if ending == "release":
        sock.sendall(struct.pack(">BBLL", 0x05, 0, 4, 0))
        assert _read_pdu(sock)[0] == 0x06  # A-RELEASE-RP
    elif ending == "abort":
        sock.sendall(struct.pack(">BBLBBBB", 0x07, 0, 4, 0, 0, 0, 0))
    else:
        sock.shutdown(socket.SHUT_WR)
    read_until_closed(sock, within=5)
    wait_for(lambda: any(r.get("event") == "association" for r in scp.logs()), what="the association's end")
    assert not list(spool.glob("*"))
    assert not list((tmp_path / "store").rglob("*.dcm"))


def _store_request_for(path) -> bytes:
    ds = dcmread(path, stop_before_pixels=True)
    primitive = C_STORE()
    primitive.MessageID = 1
    primitive.AffectedSOPClassUID = ds.SOPClassUID
    primitive.AffectedSOPInstanceUID = ds.SOPInstanceUID
    primitive.Priority = 2
    primitive.DataSet = BytesIO(b"\0\0")
    message = C_STORE_RQ()
    message.primitive_to_message(primitive)
    [command, _] = message.encode_msg(1, 1 << 20)
    return bytes(command.presentation_data_value_list[0][1][1:])


def test_a_pdu_longer_than_our_maximum_aborts_the_association_without_allocating_it(tmp_path):
    path = write_instance(tmp_path / "1.dcm")
    with StoreScp(_settings(tmp_path, max_pdu=16384)) as scp:
        liar = associate(scp.port, file_contexts([path]))
        assert liar.is_established
        # A P-DATA-TF header claiming 2 GB (16384 negotiated): the SCP must not try to read it.
        liar.dul.socket.socket.sendall(b"\x04\x00" + (2**31).to_bytes(4, "big"))
        wait_for(lambda: liar.is_aborted, what="the SCP's A-ABORT")
        wait_for(lambda: scp.sessions.count() == 0, what="the session to end")
        assert send_files(scp.port, [path]) == [0]  # and it goes on serving


@pytest.mark.parametrize("transport", ["plain", "tls"])
def test_storage_commitment_n_action_gets_its_status_on_the_loop_and_over_tls_on_pynetdicom(
    tmp_path, monkeypatch, moto_endpoint, transport
):
    # The refusals are decided before the table is touched; the table only has to be configured.
    monkeypatch.setenv("AWS_ENDPOINT_URL_DYNAMODB", moto_endpoint)
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    path = write_instance(tmp_path / "1.dcm")
    tls, tls_args = {}, None
    if transport == "tls":
        pki = make_pki(tmp_path / "pki")
        tls = dict(tls_enabled=True, tls_port=0, tls_cert_file=pki.server_cert, tls_key_file=pki.server_key)
        client = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(pki.ca_cert))
        tls_args = (client, "localhost")
    settings = _settings(
        tmp_path,
        commitment_table="commitments",
        commitment_peers=["OTHER-AE=127.0.0.1:1"],  # none for TESTSCU
        commitment_poll_seconds=3600,
        **tls,
    )
    with StoreScp(settings) as scp:
        assoc = associate(
            scp.tls_port if tls else scp.port,
            [
                *file_contexts([path]),
                (STORAGE_COMMITMENT_PUSH_MODEL, ImplicitVRLittleEndian),
                (VERIFICATION, ExplicitVRLittleEndian),
            ],
            tls_args=tls_args,
        )
        assert assoc.is_established
        [session] = wait_for(lambda: scp.sessions.all(), what="the session")
        if tls:  # the report would be written from another thread: pynetdicom's reactor keeps it
            assert session.assoc.dul.is_alive()
        else:
            wait_for(lambda: not session.assoc.dul.is_alive(), what="the DUL to hand over")
        request = Dataset()
        request.TransactionUID = "1.2.3.4.5"
        item = Dataset()
        item.ReferencedSOPClassUID = CTImageStorage
        item.ReferencedSOPInstanceUID = str(dcmread(path).SOPInstanceUID)
        request.ReferencedSOPSequence = [item]
        missing = Dataset()
        missing.ReferencedSOPSequence = [item]
        answers = []
        with raw_sending():
            assert assoc.send_c_store(path).Status == 0
            for action_type, information in [(2, request), (1, missing), (1, request)]:
                status, _ = assoc.send_n_action(
                    information, action_type, STORAGE_COMMITMENT_PUSH_MODEL, STORAGE_COMMITMENT_INSTANCE
                )
                answers.append((int(status.Status), str(status.get("ErrorComment", ""))))
            assert assoc.send_c_echo().Status == 0
        assoc.release()
    assert answers == [
        (0x0123, "action type 2 is not 1 (request commitment)"),
        (0x0120, "Transaction UID (0008,1195) missing"),
        (0x0110, "no commitment report peer configured for AE TESTSCU"),
    ]
