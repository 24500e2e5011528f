"""The Storage Commitment SCU of ``dicomctl send --commit`` (PS3.4 Annex J, pynetdicom).

``request_commitment`` starts a listener for the report (the gateway connects to it as SCP of the
SOP class, with role selection), sends the N-ACTION-RQ on an association proposing both roles
and keeps that association open, and returns the first N-EVENT-REPORT for its Transaction UID,
whichever of the two carried it.
"""

from __future__ import annotations

import queue
import time
from dataclasses import dataclass, field

from pydicom.dataset import Dataset
from pydicom.uid import generate_uid
from pynetdicom import AE, build_role, evt
from pynetdicom.sop_class import StorageCommitmentPushModel

from cli.store_client import Peer

WELL_KNOWN_INSTANCE = "1.2.840.10008.1.20.1.1"
FAILURE_REASONS = {
    0x0110: "processing failure",
    0x0112: "no such object instance",
    0x0119: "class/instance conflict",
    0x0122: "SOP class not supported",
    0x0131: "duplicate transaction UID",
}


class CommitmentFailed(Exception):
    """The gateway refused the request, or no report came within the timeout."""


@dataclass
class CommitmentReport:
    transaction_uid: str
    event_type: int
    committed: list[str] = field(default_factory=list)
    failed: dict[str, int] = field(default_factory=dict)  # SOP Instance UID -> Failure Reason
    via: str = ""  # "same association" | "new association"


def action_information(transaction_uid: str, references: list[tuple[str, str]]) -> Dataset:
    """The N-ACTION-RQ's Action Information: Transaction UID and (SOP class, instance) references."""
    ds = Dataset()
    ds.TransactionUID = transaction_uid
    items = []
    for sop_class, sop_instance in references:
        item = Dataset()
        item.ReferencedSOPClassUID = sop_class
        item.ReferencedSOPInstanceUID = sop_instance
        items.append(item)
    ds.ReferencedSOPSequence = items
    return ds


def parse_report(event_type: int, info: Dataset, via: str) -> CommitmentReport:
    return CommitmentReport(
        transaction_uid=str(info.get("TransactionUID", "")),
        event_type=event_type,
        committed=[str(i.ReferencedSOPInstanceUID) for i in info.get("ReferencedSOPSequence", [])],
        failed={
            str(i.ReferencedSOPInstanceUID): int(i.FailureReason) for i in info.get("FailedSOPSequence", [])
        },
        via=via,
    )


class ReportListener:
    """Receives N-EVENT-REPORT-RQs: a listening AE (as SCU of the SOP class) and/or an association."""

    def __init__(self) -> None:
        self.reports: queue.Queue = queue.Queue()
        self.server = None

    def handler(self, via: str):
        def on_report(event):
            self.reports.put(parse_report(event.event_type, event.event_information, via))
            return 0x0000, None

        return on_report

    def listen(self, ae_title: str, port: int, host: str = "0.0.0.0") -> ReportListener:
        ae = AE(ae_title=ae_title)
        ae.add_supported_context(StorageCommitmentPushModel, scu_role=False, scp_role=True)
        self.server = ae.start_server(
            (host, port),
            block=False,
            evt_handlers=[(evt.EVT_N_EVENT_REPORT, self.handler("new association"))],
        )
        return self

    def wait(self, transaction_uid: str, timeout: float) -> CommitmentReport | None:
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            try:
                report = self.reports.get(timeout=left)
            except queue.Empty:
                return None
            if report.transaction_uid == transaction_uid:
                return report
        return None

    def close(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server = None


def send_action(
    peer: Peer, info: Dataset, listener: ReportListener, action_type: int = 1, ae_title: str | None = None
):
    """Associate (both roles proposed), send the N-ACTION-RQ; (status Dataset, open association)."""
    ae = AE(ae_title=ae_title or peer.calling_aet)
    ae.acse_timeout, ae.dimse_timeout, ae.network_timeout = (
        peer.acse_timeout,
        peer.dimse_timeout,
        peer.network_timeout,
    )
    ae.add_requested_context(StorageCommitmentPushModel)
    assoc = ae.associate(
        peer.host,
        peer.port,
        ae_title=peer.called_aet,
        ext_neg=[build_role(StorageCommitmentPushModel, scu_role=True, scp_role=True)],
        evt_handlers=[(evt.EVT_N_EVENT_REPORT, listener.handler("same association"))],
    )
    if not assoc.is_established:
        raise CommitmentFailed(f"the gateway did not accept Storage Commitment from {ae.ae_title}")
    status, _ = assoc.send_n_action(info, action_type, StorageCommitmentPushModel, WELL_KNOWN_INSTANCE)
    return status, assoc


def request_commitment(
    peer: Peer,
    references: list[tuple[str, str]],
    *,
    listen_aet: str,
    listen_port: int,
    timeout: float,
    keep_open: bool = True,
) -> CommitmentReport:
    """Ask for commitment of ``references`` and wait for the report (see the module doc)."""
    listener = ReportListener().listen(listen_aet, listen_port)
    transaction_uid = generate_uid()
    assoc = None
    try:
        status, assoc = send_action(peer, action_information(transaction_uid, references), listener)
        code = getattr(status, "Status", None)
        if code != 0x0000:
            comment = getattr(status, "ErrorComment", "") or "no response"
            raise CommitmentFailed(f"commitment request refused: {comment} (0x{code or 0:04X})")
        if not keep_open:
            assoc.release()
        report = listener.wait(transaction_uid, timeout)
        if report is None:
            raise CommitmentFailed(
                f"no commitment report within {timeout:g} s (transaction {transaction_uid})"
            )
        return report
    finally:
        if assoc is not None and assoc.is_established:
            assoc.release()
        listener.close()
