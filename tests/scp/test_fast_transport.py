"""The event-driven receive path (scp/fast_transport.py) with real senders and real sockets.

The rest of tests/scp runs through this path too (it is on by default); these tests pin what is
specific to it: that accepted associations use it, that whole PDUs arrive through ``recv_into``,
that P-DATA values are decoded as pynetdicom decodes them, that C-STORE responses encoded here
are the bytes pynetdicom would send, that many images over one association (dcmtk with Nagle on,
several PDUs per image, interleaved C-ECHO) arrive byte-for-byte, that timers still fire without
traffic, and that the stock switch used by the benchmark still receives correctly.
"""

from __future__ import annotations

import socket
import subprocess
import threading

import pytest
from pydicom import dcmread
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian
from pynetdicom.dimse_messages import C_STORE_RSP
from pynetdicom.dimse_primitives import C_STORE
from pynetdicom.pdu import P_DATA_TF
from pynetdicom.pdu_primitives import P_DATA

from core.scp_settings import ScpSettings
from scp.fast_transport import (
    STOCK_ENV,
    BulkReadSocket,
    EventDrivenAssociation,
    EventDrivenDUL,
    ReceivedPData,
    SpoolingDIMSE,
    store_response_command,
)
from scp.server import StoreScp
from tests.scp.dicom_factory import _dataset_offset, dataset_bytes, write_instance
from tests.scp.harness import associate, file_contexts, raw_sending, send_files, wait_for
from tests.scp.manifests import sha256_hex, wait_file_manifests

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


def test_accepted_associations_run_the_event_driven_path(tmp_path):
    path = write_instance(tmp_path / "1.dcm")
    with StoreScp(_settings(tmp_path)) as scp:
        assoc = associate(scp.port, file_contexts([path]))
        assert assoc.is_established
        [session] = wait_for(scp.sessions.all, what="the session of the open association")
        assert isinstance(session.assoc, EventDrivenAssociation)
        assert isinstance(session.assoc.dul, EventDrivenDUL)
        assert isinstance(session.assoc.dul.socket, BulkReadSocket)
        assert isinstance(session.assoc.dimse, SpoolingDIMSE)
        with raw_sending():
            assert assoc.send_c_store(path).Status == 0
        assoc.release()
        assert assoc.is_released


def test_bulk_read_returns_whole_pdus_sent_in_pieces_and_the_rest_on_close():
    left, right = socket.socketpair()
    wrapper = BulkReadSocket.__new__(BulkReadSocket)  # recv() needs only the socket, no association
    wrapper.socket = right
    payload = bytes(range(256)) * 4096  # 1 MiB

    def write_in_pieces():
        for start in range(0, len(payload), 70_001):
            left.sendall(payload[start : start + 70_001])
        left.sendall(b"tail")
        left.close()

    writer = threading.Thread(target=write_in_pieces)
    writer.start()
    assert wrapper.recv(len(payload)) == payload
    assert wrapper.recv(100) == b"tail"  # the peer closed after 4 of the 100 bytes
    writer.join()
    right.close()


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


def test_a_connection_that_never_asks_for_an_association_is_closed_after_the_acse_timeout(tmp_path):
    with StoreScp(_settings(tmp_path, acse_timeout=0.5)) as scp:
        with socket.create_connection(("127.0.0.1", scp.port), timeout=30) as silent:
            assert silent.recv(1) == b""  # closed by the SCP, not by our 30 s timeout
        wait_for(lambda: scp.sessions.count() == 0, what="the session to end")


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
def test_direct_store_response_bytes_equal_pynetdicoms_encoding(status, instance_uid):
    response = _response(status, instance_uid)
    message = C_STORE_RSP()
    message.primitive_to_message(response)
    [pdata] = message.encode_msg(1, 16384)
    [(context_id, pynetdicom_pdv)] = pdata.presentation_data_value_list
    assert pynetdicom_pdv == b"\x03" + store_response_command(response)


def test_received_p_data_values_equal_pynetdicoms_decoding_and_malformed_pdus_are_refused():
    pdata = P_DATA()
    pdata.presentation_data_value_list = [
        [1, b"\x03" + store_response_command(_response(0, "1.2.3.4"))],  # a command, last fragment
        [3, b"\x00" + bytes(range(256)) * 40],  # dataset fragments
        [3, b"\x02" + b"tail"],
    ]
    pdu = P_DATA_TF()
    pdu.from_primitive(pdata)
    encoded = pdu.encode()
    pynetdicoms = P_DATA_TF()
    pynetdicoms.decode(encoded)
    expected = [(cid, bytes(value)) for cid, value in pynetdicoms.to_primitive().presentation_data_value_list]

    ours = ReceivedPData(bytearray(encoded[6:])).to_primitive().presentation_data_value_list
    assert [(cid, bytes(value)) for cid, value in ours] == expected
    for broken in (encoded[6:-1], encoded[6:10], b"\x00\x00\x00\x01\x01", b""):
        with pytest.raises(ValueError):
            ReceivedPData(bytearray(broken))


def _response(status: int, instance_uid: str) -> C_STORE:
    response = C_STORE()
    response.MessageID = response.MessageIDBeingRespondedTo = 513
    response.AffectedSOPClassUID = CTImageStorage
    response.AffectedSOPInstanceUID = instance_uid
    response.Status = status
    return response


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
