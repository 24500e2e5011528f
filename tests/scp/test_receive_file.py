"""The SCP as its own process on the filesystem backend, with dcmtk and pynetdicom as senders."""

from __future__ import annotations

import os
import socket
import subprocess
import threading

import pytest
from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, MRImageStorage, generate_uid
from pynetdicom import evt

from core.dicom_support import TRANSFER_SYNTAXES
from scp.spool import HEADER_BYTES
from tests.scp.dicom_factory import _dataset_offset, dataset_bytes, write_instance
from tests.scp.harness import (
    ScpProcess,
    associate,
    file_contexts,
    http_get,
    raw_sending,
    send_files,
    wait_for,
)
from tests.scp.manifests import sha256_hex, wait_file_manifests

CALLING_AES = "CT1,TESTSCU,ECHOSCU,STORESCU"


@pytest.fixture(scope="module")
def scp(tmp_path_factory):
    work = tmp_path_factory.mktemp("scp-file")
    process = ScpProcess(
        {
            "SCP_STORAGE_URI": f"file://{work / 'store'}",
            "SCP_ALLOWED_CALLING_AES": CALLING_AES,
        },
        work,
    )
    process.store = work / "store"
    process.spool = work / "spool" / "worker-0"
    yield process
    assert process.stop() == 0


def test_echo_with_dcmtk(scp):
    result = subprocess.run(
        ["echoscu", "-aec", "AHI-GATEWAY", "-aet", "ECHOSCU", "127.0.0.1", str(scp.port)],
        capture_output=True,
        timeout=30,
    )
    assert result.returncode == 0, result.stderr


def test_dcmtk_storescu_instances_are_stored_and_sealed_on_release(scp, tmp_path):
    study = generate_uid()
    files = [write_instance(tmp_path / f"{n}.dcm", study_uid=study) for n in range(3)]
    result = subprocess.run(
        ["storescu", "-aec", "AHI-GATEWAY", "-aet", "CT1", "127.0.0.1", str(scp.port), *map(str, files)],
        capture_output=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    sources = {dcmread(f).SOPInstanceUID: dcmread(f) for f in files}

    [manifest] = wait_file_manifests(scp.store, set(sources))
    assert manifest.seal_reason == "release"
    assert (manifest.calling_ae_title, manifest.called_ae_title) == ("CT1", "AHI-GATEWAY")
    assert manifest.peer_address == "127.0.0.1"
    assert manifest.prefix == f"incoming/{manifest.opened_at:%Y/%m/%d}/{manifest.batch_id}/"
    assert len(manifest.instances) == 3
    for item in manifest.instances:
        source = sources[item.sop_instance_uid]
        assert item.key == (
            f"{manifest.prefix}{study}/{source.SeriesInstanceUID}/{source.SOPInstanceUID}.dcm"
        )
        stored = (scp.store / item.key).read_bytes()
        assert item.size == len(stored) and item.sha256 == sha256_hex(stored)
        assert item.sop_class_uid == CTImageStorage
        assert dcmread(scp.store / item.key).PixelData == source.PixelData


def test_every_ahi_transfer_syntax_is_negotiated_and_stored_byte_for_byte(scp, tmp_path):
    study = generate_uid()
    files = {
        ts: write_instance(tmp_path / f"{ts}.dcm", transfer_syntax=ts, study_uid=study)
        for ts in TRANSFER_SYNTAXES
    }
    statuses = send_files(scp.port, list(files.values()))
    assert statuses == [0x0000] * len(files)

    uids = {str(dcmread(path, stop_before_pixels=True).SOPInstanceUID): ts for ts, path in files.items()}
    [manifest] = wait_file_manifests(scp.store, set(uids))
    by_uid = {i.sop_instance_uid: i for i in manifest.instances}
    for uid, ts in uids.items():
        item = by_uid[uid]
        assert item.transfer_syntax_uid == ts
        stored_path = scp.store / item.key
        assert dataset_bytes(stored_path) == dataset_bytes(files[ts]), ts
        assert str(dcmread(stored_path, stop_before_pixels=True).file_meta.TransferSyntaxUID) == ts


def test_unsupported_syntax_and_sop_class_are_refused_at_negotiation(scp):
    mpeg2 = "1.2.840.10008.1.2.4.100"
    private_sop_class = "1.3.6.1.4.1.9590.100.1.2.1"
    assoc = associate(
        scp.port,
        [
            (MRImageStorage, mpeg2),
            (CTImageStorage, ExplicitVRLittleEndian),
            (private_sop_class, ExplicitVRLittleEndian),
        ],
    )
    assert assoc.is_established
    accepted = {(str(cx.abstract_syntax), cx.transfer_syntax[0]) for cx in assoc.accepted_contexts}
    refused = {str(cx.abstract_syntax): cx.result for cx in assoc.rejected_contexts}
    assoc.release()
    assert accepted == {(CTImageStorage, ExplicitVRLittleEndian)}
    assert refused == {MRImageStorage: 0x04, private_sop_class: 0x03}  # PS3.8 transfer syntax / abstract


def test_unparseable_header_and_missing_identifiers_fail_with_c2xx(scp, tmp_path):
    good = write_instance(tmp_path / "good.dcm")
    no_study = write_instance(tmp_path / "nostudy.dcm")
    ds = dcmread(no_study)
    del ds.StudyInstanceUID
    ds.save_as(no_study, enforce_file_format=True)
    deflated = write_instance(tmp_path / "deflated.dcm", transfer_syntax="1.2.840.10008.1.2.1.99")
    raw = deflated.read_bytes()
    broken = tmp_path / "broken.dcm"
    broken.write_bytes(raw[: _dataset_offset(raw)] + b"\xde\xad\xbe\xef" * 8)  # not a deflate stream

    assert send_files(scp.port, [broken, no_study, good]) == [0xC210, 0xC212, 0x0000]


def test_called_and_calling_ae_are_checked_with_precise_reject_reasons(scp):
    wrong_called = associate(scp.port, [(CTImageStorage, ExplicitVRLittleEndian)], called_ae="NOT-US")
    unknown_calling = associate(scp.port, [(CTImageStorage, ExplicitVRLittleEndian)], calling_ae="STRANGER")
    for assoc, reason in ((wrong_called, 0x07), (unknown_calling, 0x03)):
        assert assoc.is_rejected
        reject = assoc.acceptor.primitive
        assert (reject.result, reject.result_source, reject.diagnostic) == (0x01, 0x01, reason)


def test_health_and_metrics(scp, tmp_path):
    assert http_get(scp.health_port, "/healthz")[0] == 200
    status, body = http_get(scp.health_port, "/readyz")
    assert status == 200 and '"ok": true' in body
    assert send_files(scp.port, [write_instance(tmp_path / "m.dcm")]) == [0]
    status, text = http_get(scp.health_port, "/metrics")
    assert status == 200
    assert "dicom_scp_instances_stored_total" in text and "dicom_scp_store_latency_seconds_count" in text


def test_no_phi_in_logs_or_metrics(scp):
    logs = scp.stderr() + "\n".join(scp.stdout_lines)
    assert "SYNTHETIC^TEST" not in logs and "SYN-0001" not in logs
    assert any(line.get("event") == "association" and line.get("outcome") == "release" for line in scp.logs())


def test_lossless_compressed_is_chosen_when_a_context_offers_several(scp):
    from pynetdicom import AE

    ae = AE(ae_title="TESTSCU")
    ae.add_requested_context(
        CTImageStorage,
        ["1.2.840.10008.1.2", "1.2.840.10008.1.2.4.50", "1.2.840.10008.1.2.4.90", ExplicitVRLittleEndian],
    )
    assoc = ae.associate("127.0.0.1", scp.port, ae_title="AHI-GATEWAY")
    assert assoc.is_established
    [context] = assoc.accepted_contexts
    assoc.release()
    assert context.transfer_syntax[0] == "1.2.840.10008.1.2.4.90"


def test_long_headers_and_nested_sequences_are_placed_by_their_uids(scp, tmp_path):
    """UIDs after a header longer than what is kept while spooling (pydicom reads those), and
    after nested sequences of undefined length (read from the kept bytes): right keys, same bytes."""
    study = generate_uid()
    long_header = write_instance(tmp_path / "long.dcm", study_uid=study)
    ds = dcmread(long_header)
    ds.private_block(0x0009, "SYNTHETIC TEST", create=True).add_new(
        0x10, "OB", os.urandom(HEADER_BYTES + 4096)
    )
    ds.save_as(long_header, enforce_file_format=True)
    nested = write_instance(tmp_path / "nested.dcm", study_uid=study)
    ds = dcmread(nested)
    code = Dataset()
    code.CodeValue, code.CodingSchemeDesignator, code.CodeMeaning = "113691", "DCM", "IEC Body Dosimetry"
    ds.CTDIPhantomTypeCodeSequence = Sequence([code])
    ds["CTDIPhantomTypeCodeSequence"].is_undefined_length = True
    code.is_undefined_length_sequence_item = True
    ds.save_as(nested, enforce_file_format=True)
    files = [long_header, nested]

    assert send_files(scp.port, files) == [0, 0]  # as encoded here (dcmtk would re-encode sequences)
    sources = {str(dcmread(f).SOPInstanceUID): dcmread(f, stop_before_pixels=True) for f in files}
    [manifest] = wait_file_manifests(scp.store, set(sources))
    by_uid = {i.sop_instance_uid: i for i in manifest.instances}
    for path in files:
        source = sources[str(dcmread(path, stop_before_pixels=True).SOPInstanceUID)]
        item = by_uid[source.SOPInstanceUID]
        assert item.key == f"{manifest.prefix}{study}/{source.SeriesInstanceUID}/{source.SOPInstanceUID}.dcm"
        assert dataset_bytes(scp.store / item.key) == dataset_bytes(path)
    assert list(scp.spool.iterdir()) == []  # moved into the store, nothing left behind


def test_a_transfer_cut_off_mid_dataset_leaves_no_spool_file_and_stores_nothing(scp, tmp_path):
    big = write_instance(tmp_path / "big.dcm", rows=1024, cols=2048)  # 4 MB: several 1 MiB PDUs
    uid = str(dcmread(big, stop_before_pixels=True).SOPInstanceUID)
    gate, data_pdus = threading.Event(), []

    def hold_after_some_data(event):
        """Runs in the sender's DUL thread: stall the transfer once part of the dataset is out."""
        if type(event.pdu).__name__ == "P_DATA_TF":
            data_pdus.append(1)
            if len(data_pdus) == 3:
                gate.wait(30)

    assoc = associate(scp.port, file_contexts([big]), evt_handlers=[(evt.EVT_PDU_SENT, hold_after_some_data)])
    assert assoc.is_established
    sender = threading.Thread(target=lambda: _send_ignoring_failure(assoc, big))
    with raw_sending():
        sender.start()
        wait_for(lambda: list(scp.spool.iterdir()), what="the partial dataset in the spool directory")
        assoc.dul.socket.socket.shutdown(socket.SHUT_RDWR)  # the sender vanishes mid-transfer
        gate.set()
        sender.join(30)
    wait_for(lambda: not list(scp.spool.iterdir()), what="the partial spool file to be removed")
    assert not list(scp.store.rglob(f"{uid}.dcm"))


def _send_ignoring_failure(assoc, path) -> None:
    try:
        assoc.send_c_store(path)
    except Exception:  # the connection is gone mid-transfer: that is the point
        pass
