"""Storage Commitment end to end on the local stack, pynetdicom as the modality (PS3.4 Annex J).

The modality stores with storescu, asks for commitment with an N-ACTION-RQ, and receives the
N-EVENT-REPORT-RQ on its own listener (the gateway proposes the SOP class as SCP), or on the
association it kept open.
"""

from __future__ import annotations

import json
import queue
import socket
from pathlib import Path

import pytest
from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.uid import generate_uid
from typer.testing import CliRunner

from cli.commitment import CommitmentReport, ReportListener, action_information, send_action
from cli.main import app
from cli.sender import scan
from cli.store_client import Peer
from core.commitment import CommitmentTable
from local.stack import LocalStack
from tests.e2e.conftest import local_stack, storescu, wait_for

MODALITY = "MODALITY-A"
REPORT_WAIT = 30


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


LISTEN_PORT = _free_port()


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    values = {
        "scpCommitmentPeers": f"{MODALITY}=127.0.0.1:{LISTEN_PORT}",
        "scpCommitmentPollSeconds": 0.2,
        "scpCommitmentRetrySeconds": 0.5,
        "scpCommitmentUnknownSeconds": 10,  # the index is written at seal: after the journal uploads
        "scpCommitmentDeadlineSeconds": 40,
    }
    with local_stack(tmp_path_factory, values) as running:
        yield running


class Modality:
    """The modality's report listener (SCU of Storage Commitment, accepting the gateway as SCP)."""

    def __init__(self, port: int = LISTEN_PORT):
        self.listener = ReportListener()
        self.port = port

    def start(self) -> Modality:
        self.listener.listen(MODALITY, self.port, host="127.0.0.1")
        return self

    def stop(self) -> None:
        self.listener.close()

    def report(self, timeout: float = REPORT_WAIT) -> CommitmentReport:
        return self.listener.reports.get(timeout=timeout)


@pytest.fixture
def modality():
    listener = Modality().start()
    yield listener
    listener.stop()


def references(files: list[Path]) -> list[tuple[str, str]]:
    found, _ = scan(files)
    return [(f.sop_class_uid, f.sop_instance_uid) for f in found]


def gateway(stack: LocalStack, calling_ae: str = MODALITY) -> Peer:
    return Peer("127.0.0.1", stack.outputs["dicomPort"], stack.outputs["aeTitle"], calling_ae)


def request(
    stack: LocalStack,
    info: Dataset,
    calling_ae: str = MODALITY,
    *,
    keep: ReportListener | None = None,
    action_type=1,
):
    """One N-ACTION-RQ on its own association; its status. ``keep``: wait there for the report."""
    status, assoc = send_action(gateway(stack, calling_ae), info, keep or ReportListener(), action_type)
    try:
        if keep is not None:
            keep.got = keep.reports.get(timeout=REPORT_WAIT)
    finally:
        assoc.release()
    return status


def transaction(stack: LocalStack, uid: str) -> dict:
    return CommitmentTable(stack.client("dynamodb"), stack.outputs["jobTable"]).get(uid)


def test_all_committed_only_after_the_import(stack, modality, make_study):
    files = make_study(3)
    storescu(stack, files, calling_ae=MODALITY)
    refs = references(files)
    tx = generate_uid()
    assert request(stack, action_information(tx, refs)).Status == 0x0000
    report = modality.report()
    assert (report.event_type, report.transaction_uid, report.via) == (1, tx, "new association")
    assert set(report.committed) == {uid for _, uid in refs}
    assert report.failed == {}
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
    report = modality.report()
    assert report.event_type == 2
    assert report.committed == [refs[0][1]]
    assert report.failed == {refs[1][1]: 0x0119, missing: 0x0112}
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
    report = modality.report()
    assert report.event_type == 2
    assert report.failed == {refs[0][1]: 0x0110}
    assert report.committed == [refs[1][1]]
    failed = transaction(stack, tx)["result"]
    assert "StudyDescription" in failed or "validation" in failed


def test_report_on_the_same_association(stack, modality, make_study):
    files = make_study(1)
    storescu(stack, files, calling_ae=MODALITY)
    tx = generate_uid()
    keep = ReportListener()
    assert request(stack, action_information(tx, references(files)), keep=keep).Status == 0x0000
    assert keep.got.event_type == 1 and keep.got.transaction_uid == tx and keep.got.via == "same association"
    assert modality.listener.reports.empty()
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
        report = listener.report()
    finally:
        listener.stop()
    assert report.event_type == 1 and report.transaction_uid == tx
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


def test_dicomctl_send_commit_and_status(stack, make_study, tmp_path):
    files = make_study(2)
    outputs = tmp_path / "outputs.json"
    outputs.write_text(json.dumps(stack.outputs))
    runner = CliRunner(env={"COLUMNS": "200", "NO_COLOR": "1"})
    sent = runner.invoke(
        app,
        [
            "send",
            *map(str, files),
            "--host",
            "127.0.0.1",
            "--port",
            str(stack.outputs["dicomPort"]),
            "--called-aet",
            stack.outputs["aeTitle"],
            "--calling-aet",
            MODALITY,
            "--commit",
            "--commit-port",
            str(LISTEN_PORT),
            "--commit-timeout",
            "40",
            "--json",
        ],
        catch_exceptions=False,
    )
    assert sent.exit_code == 0, sent.output
    document = json.loads(sent.stdout)
    commitment = document["commitment"]
    assert commitment["eventType"] == 1 and len(commitment["committed"]) == 2
    listed = runner.invoke(app, ["--outputs", str(outputs), "status", "--commitments", "--json"])
    assert listed.exit_code == 0, listed.output
    rows = {r["transactionUid"]: r for r in json.loads(listed.stdout)}
    assert rows[commitment["transactionUid"]]["state"] == "COMMITTED"
    one = runner.invoke(
        app, ["--outputs", str(outputs), "status", "--commitments", commitment["transactionUid"], "--json"]
    )
    assert json.loads(one.stdout)["attemptLog"][0]["via"] == "same-association"
