"""Storage Commitment Push Model, SCP role (PS3.4 Annex J): the N-ACTION and the report.

- ``request_commitment`` checks one N-ACTION-RQ and records it durably (``core/commitment.py``,
  conditional put: a repeated Transaction UID is the same transaction) before it answers 0x0000.
  It takes plain arguments so any receive path can call it; ``handle_n_action`` is the thin
  pynetdicom EVT_N_ACTION adapter.
- ``Reporter`` runs in every SCP task: it claims due transactions with a lease (exactly one sender
  across tasks), resolves their instances from the instance index, and sends the N-EVENT-REPORT
  (event type 1 all committed, 2 some failed): on the requesting association when it is still open
  in this task, else on a new association to the calling AE's configured peer, proposing the SOP
  class with SCP/SCU Role Selection (the gateway as SCP). A failed delivery is retried with
  backoff until the transaction's ``deliverBy``, then the transaction is UNDELIVERED and the
  ``CommitmentReportsUndelivered`` metric (alarmed) counts it. Every attempt is in ``attempts``.

N-ACTION-RSP statuses (each failure with an Error Comment): 0x0000 recorded; 0x0123 no such action
(action type not 1); 0x0117 invalid object instance (not the well-known instance); 0x0120 missing
attribute (Transaction UID, Referenced SOP Sequence); 0x0121 missing attribute value (an empty
sequence or an item without its UIDs); 0x0106 invalid attribute value (a UID that is not a UID);
0x0110 processing failure (no report peer for the calling AE, or the table unavailable).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from pydicom.dataset import Dataset
from pynetdicom import AE, build_role

from core.commitment import (
    COMMITTED,
    FAILED,
    REQUEST_COMMITMENT_ACTION,
    STORAGE_COMMITMENT_INSTANCE,
    STORAGE_COMMITMENT_PUSH_MODEL,
    UNDELIVERED,
    CommitmentTable,
    Reference,
    Resolution,
    iso,
    parse_iso,
    references_of,
    resolve,
)
from core.scp_settings import ScpSettings, parse_peers
from scp.store import HeaderError
from scp.store import _uid as checked_uid

log = logging.getLogger("scp.commitment")

SUCCESS = 0x0000
INVALID_ATTRIBUTE_VALUE = 0x0106
PROCESSING_FAILURE = 0x0110
INVALID_OBJECT_INSTANCE = 0x0117
MISSING_ATTRIBUTE = 0x0120
MISSING_ATTRIBUTE_VALUE = 0x0121
NO_SUCH_ACTION = 0x0123
ERROR_COMMENT_LENGTH = 64
LEASE_SECONDS = 180.0  # longer than one delivery can take (ACSE 30 s + DIMSE 30 s, or 60 s)
MAX_RETRY_SECONDS = 300.0


class Refused(Exception):
    def __init__(self, status: int, comment: str):
        super().__init__(comment)
        self.status = status


def _uid(value: Any, what: str) -> str:
    """The C-STORE path's UID check, with N-ACTION's statuses."""
    try:
        return checked_uid(value, what)
    except HeaderError as exc:
        status = MISSING_ATTRIBUTE_VALUE if str(exc).endswith("missing") else INVALID_ATTRIBUTE_VALUE
        raise Refused(status, str(exc)) from None


def parse_action(
    action_type: Any, requested_instance: Any, information: Dataset | None
) -> tuple[str, list[Reference]]:
    """The Transaction UID and references of an N-ACTION-RQ, or Refused with the precise status."""
    if action_type != REQUEST_COMMITMENT_ACTION:
        raise Refused(NO_SUCH_ACTION, f"action type {action_type} is not 1 (request commitment)")
    if str(requested_instance or "") != STORAGE_COMMITMENT_INSTANCE:
        raise Refused(INVALID_OBJECT_INSTANCE, "requested instance is not 1.2.840.10008.1.20.1.1")
    if information is None or "TransactionUID" not in information:
        raise Refused(MISSING_ATTRIBUTE, "Transaction UID (0008,1195) missing")
    transaction_uid = _uid(information.TransactionUID, "Transaction UID")
    if "ReferencedSOPSequence" not in information:
        raise Refused(MISSING_ATTRIBUTE, "Referenced SOP Sequence (0008,1199) missing")
    items = information.ReferencedSOPSequence
    if not items:
        raise Refused(MISSING_ATTRIBUTE_VALUE, "Referenced SOP Sequence is empty")
    references = [
        Reference(
            _uid(item.get("ReferencedSOPClassUID"), f"Referenced SOP Class UID of item {n}"),
            _uid(item.get("ReferencedSOPInstanceUID"), f"Referenced SOP Instance UID of item {n}"),
        )
        for n, item in enumerate(items, start=1)
    ]
    return transaction_uid, references


@dataclass
class CommitmentService:
    """What the N-ACTION handler and the reporter share in one SCP process."""

    table: CommitmentTable
    settings: ScpSettings
    task_id: str
    peers: dict[str, tuple[str, int]] = field(default_factory=dict)
    open_associations: dict[str, Any] = field(default_factory=dict)  # Transaction UID -> association
    lock: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self) -> None:
        self.peers = self.peers or parse_peers(self.settings.commitment_peers)


def request_commitment(
    transaction_uid: str, references: list[Reference], calling_ae: str, service: CommitmentService
) -> tuple[int, str]:
    """Record one checked request durably; (status, Error Comment). Idempotent per Transaction UID."""
    if calling_ae not in service.peers:
        return PROCESSING_FAILURE, f"no commitment report peer configured for AE {calling_ae}"[:64]
    s = service.settings
    try:
        created = service.table.record_request(
            transaction_uid,
            references,
            calling_ae=calling_ae,
            task_id=service.task_id,
            unknown_seconds=s.commitment_unknown_seconds,
            deadline_seconds=s.commitment_deadline_seconds,
            delivery_seconds=s.commitment_delivery_seconds,
        )
    except Exception:
        log.exception(
            "commitment request not recorded", extra={"fields": {"transactionUid": transaction_uid}}
        )
        return PROCESSING_FAILURE, "commitment store unavailable, retry later"
    log.info(
        "commitment requested" if created else "commitment request repeated",
        extra={
            "fields": {
                "transactionUid": transaction_uid,
                "instances": len(references),
                "callingAeTitle": calling_ae,
            }
        },
    )
    return SUCCESS, ""


def handle_n_action(event: Any, service: CommitmentService) -> tuple[Dataset, None]:
    """EVT_N_ACTION handler (bound with ``[service]``): a thin adapter over request_commitment."""
    request = event.request
    try:
        information = event.action_information
        transaction_uid, references = parse_action(
            request.ActionTypeID, request.RequestedSOPInstanceUID, information
        )
        status, comment = request_commitment(
            transaction_uid, references, event.assoc.requestor.ae_title, service
        )
    except Refused as exc:
        status, comment = exc.status, str(exc)
    except Exception:  # an undecodable Action Information dataset
        log.exception("commitment request not understood")
        status, comment = PROCESSING_FAILURE, "action information cannot be decoded"
    response = Dataset()
    response.Status = status
    if status != SUCCESS:
        response.ErrorComment = comment[:ERROR_COMMENT_LENGTH]
        log.warning("commitment refused", extra={"fields": {"status": f"0x{status:04X}", "reason": comment}})
    else:
        with service.lock:
            service.open_associations[transaction_uid] = event.assoc
    return response, None


def event_report(transaction_uid: str, resolution: Resolution) -> Dataset:
    """The Event Information of the N-EVENT-REPORT-RQ (PS3.4 J.3.3.1)."""
    ds = Dataset()
    ds.TransactionUID = transaction_uid

    def item(ref: Reference) -> Dataset:
        entry = Dataset()
        entry.ReferencedSOPClassUID = ref.sop_class_uid
        entry.ReferencedSOPInstanceUID = ref.sop_instance_uid
        return entry

    if resolution.committed:
        ds.ReferencedSOPSequence = [item(r) for r in resolution.committed]
    if resolution.failed:
        failed = []
        for f in resolution.failed:
            entry = item(f.reference)
            entry.FailureReason = f.reason
            failed.append(entry)
        ds.FailedSOPSequence = failed
    return ds


class Reporter:
    """The report sender of one SCP task (a daemon thread; see the module doc)."""

    def __init__(
        self,
        service: CommitmentService,
        *,
        on_undelivered: Callable[[], None] = lambda: None,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ):
        self.service = service
        self.on_undelivered = on_undelivered
        self.clock = clock
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="scp-commitment", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join(timeout=30)

    def _run(self) -> None:
        while not self._stop.wait(self.service.settings.commitment_poll_seconds):
            try:
                self.tick()
            except Exception:
                log.exception("commitment reporter tick failed")

    def tick(self) -> int:
        """Work on every due transaction this task can claim; returns how many were looked at."""
        table = self.service.table
        with self.service.lock:  # forget requesting associations that have ended
            for tx in [t for t, a in self.service.open_associations.items() if not a.is_established]:
                del self.service.open_associations[tx]
        due = table.by_state("OPEN", until=self.clock())
        worked = 0
        for item in due:
            claimed = table.claim(item["transactionUid"], self.service.task_id, LEASE_SECONDS)
            if claimed is not None:
                worked += 1
                self._work(claimed)
        return worked

    def _work(self, item: dict[str, Any]) -> None:
        table, owner, tx = self.service.table, self.service.task_id, item["transactionUid"]
        references = references_of(item)
        if not item.get("linked"):
            table.link(tx, [r.sop_instance_uid for r in references])
            item["linked"] = "yes"
        now = self.clock()
        resolution = resolve(
            references,
            table.instances(r.sop_instance_uid for r in references),
            now=now,
            unknown_at=parse_iso(item["unknownAt"]),
            deadline_at=parse_iso(item["deadlineAt"]),
        )
        if not resolution.complete:
            table.release(tx, owner, due_at=resolution.next_look or now)
            return
        attempt_no = len(item.get("attempts", [])) + 1
        how, error = self._deliver(item, resolution)
        attempt = {"at": iso(self.clock()), "attempt": attempt_no, "via": how, "taskId": owner}
        if error:
            attempt["error"] = error[:300]
        result = {
            "eventType": resolution.event_type,
            "committed": len(resolution.committed),
            "failed": [
                {
                    "sopInstanceUid": f.reference.sop_instance_uid,
                    "reason": f"0x{f.reason:04X}",
                    "detail": f.detail,
                }
                for f in resolution.failed[:200]
            ],
        }
        fields = {"transactionUid": tx, "eventType": resolution.event_type, "via": how, "attempt": attempt_no}
        if error is None:
            table.finish(tx, owner, FAILED if resolution.failed else COMMITTED, result, attempt)
            log.info("commitment report delivered", extra={"fields": fields})
            with self.service.lock:
                self.service.open_associations.pop(tx, None)
            return
        delay = min(MAX_RETRY_SECONDS, self.service.settings.commitment_retry_seconds * 2 ** (attempt_no - 1))
        retry_at = self.clock() + timedelta(seconds=delay)
        if retry_at > parse_iso(item["deliverBy"]):
            table.finish(tx, owner, UNDELIVERED, result, attempt)
            with self.service.lock:
                self.service.open_associations.pop(tx, None)
            log.error("commitment report undelivered", extra={"fields": {**fields, "error": error}})
            self.on_undelivered()
            return
        table.release(tx, owner, due_at=retry_at, attempt=attempt)
        log.warning(
            "commitment report not delivered, will retry", extra={"fields": {**fields, "error": error}}
        )

    def _deliver(self, item: dict[str, Any], resolution: Resolution) -> tuple[str, str | None]:
        tx = item["transactionUid"]
        report = event_report(tx, resolution)
        with self.service.lock:
            assoc = self.service.open_associations.get(tx)
        if assoc is not None and assoc.is_established:
            try:
                return "same-association", self._send(assoc, report, resolution.event_type)
            except Exception as exc:  # the association went away meanwhile: use a new one
                log.info("same-association report failed", extra={"fields": {"error": str(exc)}})
        calling_ae = item["requestedBy"]
        peer = self.service.peers.get(calling_ae)
        if peer is None:
            return "new-association", f"no report peer configured for AE {calling_ae}"
        ae = AE(ae_title=self.service.settings.ae_title)
        ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 30
        ae.add_requested_context(STORAGE_COMMITMENT_PUSH_MODEL)
        role = build_role(STORAGE_COMMITMENT_PUSH_MODEL, scu_role=False, scp_role=True)
        try:
            assoc = ae.associate(peer[0], peer[1], ae_title=calling_ae, ext_neg=[role])
        except Exception as exc:
            return "new-association", f"association failed: {exc}"
        if not assoc.is_established:
            return "new-association", f"association to {calling_ae}@{peer[0]}:{peer[1]} not established"
        try:
            return "new-association", self._send(assoc, report, resolution.event_type)
        finally:
            if assoc.is_established:
                assoc.release()

    @staticmethod
    def _send(assoc: Any, report: Dataset, event_type: int) -> str | None:
        status, _ = assoc.send_n_event_report(
            report, event_type, STORAGE_COMMITMENT_PUSH_MODEL, STORAGE_COMMITMENT_INSTANCE
        )
        code = getattr(status, "Status", None)
        if code is None:
            return "no N-EVENT-REPORT response"
        return None if code == SUCCESS else f"N-EVENT-REPORT answered 0x{code:04X}"
