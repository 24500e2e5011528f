"""The C-STORE service: durable write first, then the status.

Statuses sent (PS3.4 B.2.3 / PS3.7 C); every failure carries an Error Comment (0000,0902) of
at most 64 characters that names the problem and never a value, and the same reason is logged:
- 0x0000 Success: the object is durable (S3 confirmed the checksummed PUT, or the file is
  fsynced; with a journal: fsynced into the journal, uploaded behind) and listed in its batch.
- 0xA700 Refused, out of resources: storage failed after the bounded retries (or failed
  permanently). Nothing was acknowledged; the sender keeps the image and may retry.
  With a journal: the journal is past a limit or cannot be written (``scp/journal.py``).
- 0xC210 Cannot understand: the dataset is not whole (truncated: it ends inside an element) or
  cannot be walked (``scp/completeness.py``), or its header cannot be parsed. Not stored.
- 0xC212 Cannot understand: Study/Series/SOP Instance UID missing or not a valid UID, so the
  instance has no place in the key layout.
- 0xC211 Cannot understand: an unexpected error in this handler (a bug; the log has the trace).
docs/conformance.md lists each status with its comments.

The dataset is never decoded for storage: the spooled Part 10 file (file meta + the bytes
received) is what is stored, and its SHA-256 was computed while it was spooled; the Study/Series
UIDs come from the header bytes kept while spooling (``scp/header.py``).
"""

from __future__ import annotations

import logging
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydicom import dcmread
from pydicom.dataset import Dataset

from core.layout import ManifestInstance
from scp.batching import RetryPolicy
from scp.header import study_and_series_uids
from scp.journal import Journal, JournalRefused
from scp.metrics import Metrics
from scp.sessions import Session, Sessions
from scp.spool import Spooled, received_dataset
from scp.storage import Storage, StorageError, with_retries

log = logging.getLogger("scp.store")

SUCCESS = 0x0000
OUT_OF_RESOURCES = 0xA700
HEADER_UNPARSEABLE = 0xC210  # also: the dataset is incomplete
UNEXPECTED_ERROR = 0xC211
IDENTIFIERS_INVALID = 0xC212
ERROR_COMMENT_LENGTH = 64  # Error Comment is LO (PS3.7 C.4)
STORAGE_UNAVAILABLE = "storage unavailable, retry later"
INTERNAL_ERROR = "internal error in the gateway; see its log"

_UID = re.compile(r"^[0-9]+(\.[0-9]+)*$")
_HEADER_TAGS = [0x0020000D, 0x0020000E]  # StudyInstanceUID, SeriesInstanceUID


class HeaderError(Exception):
    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


def _uid(value: Any, name: str) -> str:
    text = str(value or "").strip(" \x00")
    if not text:
        raise HeaderError(IDENTIFIERS_INVALID, f"{name} missing")
    if len(text) > 64 or not _UID.match(text):
        raise HeaderError(IDENTIFIERS_INVALID, f"{name} is not a valid UID")
    return text


def failure(status: int, comment: str) -> Dataset:
    """A C-STORE failure status with its Error Comment (pynetdicom copies both into the response)."""
    response = Dataset()
    response.Status = status
    response.ErrorComment = comment[:ERROR_COMMENT_LENGTH]
    return response


@dataclass(frozen=True)
class Identity:
    study_uid: str
    series_uid: str
    sop_class_uid: str
    sop_instance_uid: str


def read_identity(spooled: Spooled, request: Any) -> Identity:
    """Study/Series UIDs from the header bytes kept while spooling; SOP UIDs from the request.

    pydicom reads the spooled file's header only when those bytes do not settle it (a header
    longer than was kept, or anything malformed), so such datasets keep pydicom's verdict.
    """
    uids = study_and_series_uids(
        spooled.header, spooled.transfer_syntax, whole_dataset=spooled.whole_dataset_in_header
    )
    study, series = uids if uids is not None else _read_with_pydicom(spooled.path)
    return Identity(
        study_uid=_uid(study, "StudyInstanceUID"),
        series_uid=_uid(series, "SeriesInstanceUID"),
        sop_class_uid=_uid(request.AffectedSOPClassUID, "AffectedSOPClassUID"),
        sop_instance_uid=_uid(request.AffectedSOPInstanceUID, "AffectedSOPInstanceUID"),
    )


def _read_with_pydicom(path: Path) -> tuple[Any, Any]:
    try:
        dataset = dcmread(path, stop_before_pixels=True, specific_tags=_HEADER_TAGS)
        return dataset.get("StudyInstanceUID"), dataset.get("SeriesInstanceUID")
    except Exception as exc:  # pydicom raises many kinds (InvalidDicomError, zlib.error, ...)
        raise HeaderError(HEADER_UNPARSEABLE, f"header cannot be parsed: {type(exc).__name__}") from exc


@dataclass(frozen=True)
class StoreService:
    storage: Storage
    sessions: Sessions
    metrics: Metrics
    retry: RetryPolicy
    journal: Journal | None = None  # set: durable in the journal, uploaded behind (scp/journal.py)


def _make_durable(
    service: StoreService, batch: Any, origin: Any, key: str, spooled: Spooled, instance: ManifestInstance
) -> None:
    """The durable-write step: into the journal when there is one, else to storage itself."""
    if service.journal is not None:
        service.journal.write(batch, origin, spooled, instance)
        return
    with_retries(
        lambda: service.storage.put_file(key, spooled),
        retries=service.retry.retries,
        first_delay=service.retry.first_delay,
        what=key,
    )


def handle_store(event: Any, service: StoreService) -> int | Dataset:
    """EVT_C_STORE handler (bound with ``[service]``); runs in the association's thread."""
    started = time.perf_counter()
    session = service.sessions.get(event.assoc)
    spooled = None
    try:
        spooled = received_dataset(event)
        return _store(event, spooled, service, session, started)
    except Exception:
        log.exception(
            "instance not stored: unexpected error",
            extra={"fields": {"status": "0xC211", "sopInstanceUid": _requested_uid(event)}},
        )
        session.failures += 1
        service.metrics.store_failed("internal")
        return failure(UNEXPECTED_ERROR, INTERNAL_ERROR)
    finally:
        if spooled is not None:
            spooled.discard()  # unless storage moved it into place
        session.touch()


def _requested_uid(event: Any) -> str:
    return str(getattr(event.request, "AffectedSOPInstanceUID", "") or "")


def _refuse(event: Any, service: StoreService, session: Session, status: int, reason: str) -> Dataset:
    session.failures += 1
    service.metrics.store_failed("header")
    log.warning(
        "instance refused",
        extra={
            "fields": {
                "status": f"0x{status:04X}",
                "reason": reason,
                "sopInstanceUid": _requested_uid(event),
                "callingAeTitle": session.calling_ae_title,
                "peer": session.peer_address,
            }
        },
    )
    return failure(status, reason)


def _store(
    event: Any, spooled: Spooled, service: StoreService, session: Session, started: float
) -> int | Dataset:
    request = event.request
    if spooled.incomplete is not None:
        return _refuse(event, service, session, HEADER_UNPARSEABLE, spooled.incomplete)
    try:
        identity = read_identity(spooled, request)
    except HeaderError as exc:
        return _refuse(event, service, session, exc.status, str(exc))

    writer = session.writer
    batch = writer.reserve()
    key = batch.instance_key(identity.study_uid, identity.series_uid, identity.sop_instance_uid)
    instance = ManifestInstance(
        key=key,
        sop_class_uid=identity.sop_class_uid,
        sop_instance_uid=identity.sop_instance_uid,
        study_instance_uid=identity.study_uid,
        series_instance_uid=identity.series_uid,
        transfer_syntax_uid=str(event.context.transfer_syntax),
        size=spooled.size,  # what storage stores and S3 verifies: the spooled file and its hash
        sha256=spooled.sha256,
    )
    try:
        _make_durable(service, batch, writer.origin, key, spooled, instance)
    except StorageError as exc:
        writer.release(batch)
        session.failures += 1
        service.metrics.store_failed("journal" if isinstance(exc, JournalRefused) else "storage")
        comment = exc.comment if isinstance(exc, JournalRefused) else STORAGE_UNAVAILABLE
        log.error(
            "instance not stored",
            extra={
                "fields": {
                    "status": "0xA700",
                    "reason": comment,
                    "sopInstanceUid": identity.sop_instance_uid,
                    "batchId": batch.batch_id,
                    "error": str(exc),
                }
            },
        )
        return failure(OUT_OF_RESOURCES, comment)
    except BaseException:
        writer.release(batch)
        raise

    writer.commit(batch, instance)
    session.instances += 1
    session.bytes += instance.size
    service.metrics.stored(instance.size, time.perf_counter() - started)
    return SUCCESS
