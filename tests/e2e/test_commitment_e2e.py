"""Storage Commitment end to end on the local stack, pynetdicom as the modality (PS3.4 Annex J).

The modality stores with storescu, asks for commitment with an N-ACTION-RQ, and receives the
N-EVENT-REPORT-RQ on its own listener (the gateway proposes the SOP class as SCP), or on the
association it kept open.
"""

from __future__ import annotations

import queue
import socket
import time
from pathlib import Path

import pytest
from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.uid import generate_uid
from pynetdicom import AE, build_role, evt
from pynetdicom.sop_class import StorageCommitmentPushModel

from core.commitment import STORAGE_COMMITMENT_INSTANCE, CommitmentTable
from core.config import from_flat
from local.stack import LocalStack
from tests.e2e.conftest import storescu, wait_for

MODALITY = "MODALITY-A"
REPORT_WAIT = 30


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


LISTEN_PORT = _free_port()


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    config = from_flat(
        {
            "scpCommitmentPeers": f"{MODALITY}=127.0.0.1:{LISTEN_PORT}",
            "scpCommitmentPollSeconds": 0.2,
            "scpCommitmentRetrySeconds": 0.5,
            "scpCommitmentUnknownSeconds": 3,
            "scpCommitmentDeadlineSeconds": 40,
        },
        stack="e2e",
    )
    with LocalStack(
        config,
        scp_port=0,
        poll_seconds=1,
        ahi_job_seconds=0.2,
        data_dir=tmp_path_factory.mktemp("local-stack"),
    ) as running:
        yield running


class Modality:
    """The modality's report listener (SCU of Storage Commitment, accepting the gateway as SCP)."""

    def __init__(self, port: int = LISTEN_PORT):
        self.port = port
        self.reports: queue.Queue = queue.Queue()
        self.server = None

    def _on_report(self, event):
        self.reports.put((event.event_type, event.event_information, event.assoc.mode))
        return 0x0000, None

    def start(self) -> Modality:
        ae = AE(ae_title=MODALITY)
        ae.add_supported_context(StorageCommitmentPushModel, scu_role=False, scp_role=True)
        self.server = ae.start_server(
            ("127.0.0.1", self.port), block=False, evt_handlers=[(evt.EVT_N_EVENT_REPORT, self._on_report)]
        )
        return self

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server = None

    def report(self, timeout: float = REPORT_WAIT):
        return self.reports.get(timeout=timeout)


@pytest.fixture
def modality():
    listener = Modality().start()
    yield listener
    listener.stop()


def references(files: list[Path]) -> list[tuple[str, str]]:
    out = []
    for f in files:
        ds = dcmread(f, stop_before_pixels=True)
        out.append((str(ds.SOPClassUID), str(ds.SOPInstanceUID)))
    return out


def action_information(transaction_uid: str, refs: list[tuple[str, str]]) -> Dataset:
    ds = Dataset()
    ds.TransactionUID = transaction_uid
    items = []
    for sop_class, sop_instance in refs:
        item = Dataset()
        item.ReferencedSOPClassUID = sop_class
        item.ReferencedSOPInstanceUID = sop_instance
        items.append(item)
    ds.ReferencedSOPSequence = items
    return ds


def request(stack: LocalStack, info: Dataset | None, calling_ae: str = MODALITY, *, keep=None, action_type=1):
    """One N-ACTION-RQ; returns its status Dataset. ``keep``: a callable run with the association open."""
    ae = AE(ae_title=calling_ae)
    ae.add_requested_context(StorageCommitmentPushModel)
    handlers = []
    if keep is not None:
        handlers = [(evt.EVT_N_EVENT_REPORT, keep.on_report)]
    assoc = ae.associate(
        "127.0.0.1",
        stack.outputs["dicomPort"],
        ae_title=stack.outputs["aeTitle"],
        ext_neg=[build_role(StorageCommitmentPushModel, scu_role=True, scp_role=True)],
        evt_handlers=handlers,
    )
    assert assoc.is_established
    try:
        status, _ = assoc.send_n_action(
            info, action_type, StorageCommitmentPushModel, STORAGE_COMMITMENT_INSTANCE
        )
        if keep is not None:
            keep.wait()
    finally:
        assoc.release()
    return status


def transaction(stack: LocalStack, uid: str) -> dict:
    return CommitmentTable(stack.client("dynamodb"), stack.outputs["jobTable"]).get(uid)


def failed_reasons(info: Dataset) -> dict[str, int]:
    return {i.ReferencedSOPInstanceUID: i.FailureReason for i in info.get("FailedSOPSequence", [])}


def committed_uids(info: Dataset) -> set[str]:
    return {i.ReferencedSOPInstanceUID for i in info.get("ReferencedSOPSequence", [])}


def test_all_committed_only_after_the_import(stack, modality, make_study):
    files = make_study(3)
    storescu(stack, files, calling_ae=MODALITY)
    refs = references(files)
    tx = generate_uid()
    assert request(stack, action_information(tx, refs)).Status == 0x0000
    event_type, info, _ = modality.report()
    assert event_type == 1
    assert info.TransactionUID == tx
    assert committed_uids(info) == {uid for _, uid in refs}
    assert "FailedSOPSequence" not in info
    # committed means in HealthImaging: each instance's index item has its image set id
    index = CommitmentTable(stack.client("dynamodb"), stack.outputs["jobTable"]).instances(u for _, u in refs)
    assert all(index[u]["outcome"] == "COMMITTED" and index[u]["imageSetId"] for _, u in refs)
    item = transaction(stack, tx)
    assert item["commitmentState"] == "COMMITTED" and len(item["attempts"]) == 1


def test_never_sent_and_wrong_class_and_duplicate(stack, modality, make_study):
    files = make_study(2)
    storescu(stack, files, calling_ae=MODALITY)
    refs = references(files)
    missing = generate_uid()
    conflict = ("1.2.840.10008.5.1.4.1.1.4", refs[1][1])  # MR Image Storage, but stored as CT
    tx = generate_uid()
    info = action_information(tx, [refs[0], conflict, (refs[0][0], missing)])
    assert request(stack, info).Status == 0x0000
    assert request(stack, info).Status == 0x0000  # the same transaction again
    event_type, report, _ = modality.report()
    assert event_type == 2
    assert committed_uids(report) == {refs[0][1]}
    assert failed_reasons(report) == {refs[1][1]: 0x0119, missing: 0x0112}
    with pytest.raises(queue.Empty):
        modality.report(timeout=2)  # one report per transaction


def test_quarantined_instance_fails_with_processing_failure(stack, modality, make_study):
    files = make_study(2)
    ds = dcmread(files[0])
    ds.StudyDescription = "x" * 300  # over HealthImaging's limit: quarantined at validation
    ds.save_as(files[0])
    storescu(stack, files, calling_ae=MODALITY)
    refs = references(files)
    tx = generate_uid()
    assert request(stack, action_information(tx, refs)).Status == 0x0000
    event_type, report, _ = modality.report()
    assert event_type == 2
    assert failed_reasons(report) == {refs[0][1]: 0x0110}
    assert committed_uids(report) == {refs[1][1]}
    failed = transaction(stack, tx)["result"]
    assert "StudyDescription" in failed or "validation" in failed


class KeepOpen:
    def __init__(self):
        self.reports: queue.Queue = queue.Queue()

    def on_report(self, event):
        self.reports.put((event.event_type, event.event_information))
        return 0x0000, None

    def wait(self):
        self.got = self.reports.get(timeout=REPORT_WAIT)


def test_report_on_the_same_association(stack, modality, make_study):
    files = make_study(1)
    storescu(stack, files, calling_ae=MODALITY)
    tx = generate_uid()
    keep = KeepOpen()
    assert request(stack, action_information(tx, references(files)), keep=keep).Status == 0x0000
    assert keep.got[0] == 1 and keep.got[1].TransactionUID == tx
    assert modality.reports.empty()
    assert '"via": "same-association"' in transaction(stack, tx)["attempts"][0]


def test_listener_down_then_up_and_gateway_restarted(stack, make_study):
    files = make_study(1)
    storescu(stack, files, calling_ae=MODALITY)
    tx = generate_uid()
    assert request(stack, action_information(tx, references(files))).Status == 0x0000
    wait_for(lambda: len(transaction(stack, tx)["attempts"]) >= 2, "two failed delivery attempts")
    stack.restart_scp()  # the transaction is durable: the new SCP's reporter carries on
    listener = Modality().start()
    try:
        event_type, info, _ = listener.report()
    finally:
        listener.stop()
    assert event_type == 1 and info.TransactionUID == tx
    attempts = transaction(stack, tx)["attempts"]
    assert len(attempts) >= 3 and "error" in attempts[0] and "error" not in attempts[-1]


def test_refusals(stack):
    refs = [("1.2.840.10008.5.1.4.1.1.2", generate_uid())]
    unknown = request(stack, action_information(generate_uid(), refs), calling_ae="NO-PEER")
    assert unknown.Status == 0x0110 and "no commitment report peer" in unknown.ErrorComment
    no_tx = action_information(generate_uid(), refs)
    del no_tx.TransactionUID
    assert request(stack, no_tx).Status == 0x0120
    bad = action_information("1.2.x", refs)
    assert request(stack, bad).Status == 0x0106
    assert request(stack, action_information(generate_uid(), refs), action_type=2).Status == 0x0123
    time.sleep(0)  # nothing was recorded for any of them
