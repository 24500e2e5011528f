"""A fast C-STORE sender: from the file, without decoding, over N parallel associations.

Why it is fast: each association is cli/store_client.py's synchronous client (the calling thread
drives the socket: no polling threads, command sets patched from a template, the dataset bytes
sent straight from the file), TCP_NODELAY stops Nagle from holding back the last PDU of every
request, and presentation contexts are proposed exactly as the files are encoded (one context
per SOP class + transfer syntax) so no conversion is ever needed. Scanning reads only the file
meta information. Results are collected per instance with the DIMSE status, and 0xA7xx (out of
resources: the SCP could not store durably) is retried with backoff, because the gateway promises
that such an instance was not kept; an instance whose association was lost is sent again on a
new one.
"""

from __future__ import annotations

import multiprocessing
import os
import queue
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydicom import dcmread
from pydicom.errors import InvalidDicomError
from pydicom.filereader import data_element_generator
from pydicom.uid import UID
from pynetdicom import build_context
from pynetdicom.dsutils import split_dataset
from pynetdicom.presentation import PresentationContext

from cli.store_client import VERIFICATION, Association, AssociationFailed, AssociationLost, Peer, TlsFiles

__all__ = [
    "AssociationFailed",
    "DicomFile",
    "InstanceResult",
    "Peer",
    "SendReport",
    "TlsFiles",
    "echo",
    "presentation_contexts",
    "scan",
    "send_files",
    "status_text",
]

MAX_CONTEXTS = 128  # PS3.8: presentation context ids are odd numbers 1..255
STUDY_INSTANCE_UID = 0x0020000D
WARNING_STATUSES = {0x0001, 0xB000, 0xB006, 0xB007}  # stored, with coercion or elements discarded
STATUS_NAMES = {
    0x0000: "Success",
    0x0001: "Warning: requested optional attributes not supported",
    0xB000: "Warning: coercion of data elements",
    0xB006: "Warning: elements discarded",
    0xB007: "Warning: data set does not match SOP class",
    0x0122: "Refused: SOP class not supported",
    0x0124: "Refused: not authorized",
    0x0211: "Error: unrecognized operation",
    0x0212: "Error: mistyped argument",
}


def status_text(status: int | None) -> str:
    """``0xA700`` -> ``0xA700 Refused: out of resources`` (no status = sent nothing back)."""
    if status is None:
        return "no response"
    if status in STATUS_NAMES:
        name = STATUS_NAMES[status]
    elif status & 0xFF00 == 0xA700:
        name = "Refused: out of resources"
    elif status & 0xFF00 == 0xA900:
        name = "Error: data set does not match SOP class"
    elif status & 0xF000 == 0xC000:
        name = "Error: cannot understand"
    else:
        name = "Failure"
    return f"0x{status:04X} {name}"


def is_stored(status: int | None) -> bool:
    return status is not None and (status == 0x0000 or status in WARNING_STATUSES)


def is_retryable(status: int | None) -> bool:
    return status is not None and status & 0xFF00 == 0xA700


@dataclass(frozen=True)
class DicomFile:
    """What the sender needs to know about a file, read from its meta information only."""

    path: Path
    sop_class_uid: str
    sop_instance_uid: str
    transfer_syntax_uid: str
    size: int
    dataset_offset: int  # where the dataset starts, after the file meta information
    study_instance_uid: str = ""  # for the per-study summary ("" when the header lacks it)


@dataclass
class InstanceResult:
    path: Path
    sop_instance_uid: str | None
    status: int | None = None
    error: str | None = None
    attempts: int = 0
    seconds: float = 0.0  # latency of the successful (or last) attempt
    size: int = 0
    comment: str | None = None  # the peer's Error Comment, if it sent one
    study_instance_uid: str | None = None

    @property
    def stored(self) -> bool:
        return is_stored(self.status) and self.error is None

    @property
    def reason(self) -> str:
        if self.error:
            return self.error
        return status_text(self.status) + (f" ({self.comment})" if self.comment else "")


@dataclass
class SendReport:
    results: list[InstanceResult] = field(default_factory=list)
    seconds: float = 0.0
    associations: int = 0

    @property
    def stored(self) -> list[InstanceResult]:
        return [r for r in self.results if r.stored]

    @property
    def failed(self) -> list[InstanceResult]:
        return [r for r in self.results if not r.stored]

    @property
    def bytes_stored(self) -> int:
        return sum(r.size for r in self.stored)

    @property
    def rate(self) -> float:
        return len(self.stored) / self.seconds if self.seconds > 0 else 0.0

    def studies(self) -> list[dict[str, Any]]:
        """Per StudyInstanceUID, in the order first sent: instances, stored, failed, bytes stored."""
        per: dict[str, dict[str, Any]] = {}
        for r in self.results:
            uid = r.study_instance_uid or ""
            study = per.setdefault(
                uid, {"studyInstanceUid": uid, "instances": 0, "stored": 0, "failed": 0, "bytes": 0}
            )
            study["instances"] += 1
            study["stored" if r.stored else "failed"] += 1
            study["bytes"] += r.size if r.stored else 0
        return list(per.values())

    def sent_more_than_once(self) -> dict[str, int]:
        """SOP Instance UIDs stored more than once in this run (the gateway keeps one instance each)."""
        counts = Counter(r.sop_instance_uid for r in self.stored if r.sop_instance_uid)
        return {uid: n for uid, n in sorted(counts.items()) if n > 1}


def _expand(paths: Iterable[Path]) -> list[Path]:
    files: list[Path] = []
    for path in paths:
        path = Path(path)
        if path.is_dir():
            files.extend(sorted(p for p in path.rglob("*") if p.is_file()))
        else:
            files.append(path)
    return files


def _study_uid(path: Path, transfer_syntax: UID, offset: int) -> str:
    """The file's StudyInstanceUID, for the per-study summary: the dataset's elements are walked
    from the start (values up to it left unread; pixel data never reached). "" when it has none."""
    try:
        if transfer_syntax.is_deflated:
            header = dcmread(path, stop_before_pixels=True, specific_tags=[STUDY_INSTANCE_UID])
            return str(header.get("StudyInstanceUID", "") or "")
        with open(path, "rb") as source:
            source.seek(offset)
            implicit, little = transfer_syntax.is_implicit_VR, transfer_syntax.is_little_endian
            for element in data_element_generator(source, implicit, little, defer_size=256):
                if element.tag == STUDY_INSTANCE_UID:
                    return bytes(element.value or b"").decode("ascii", "replace").strip("\0 ")
                if element.tag > STUDY_INSTANCE_UID:
                    break
    except Exception:  # noqa: BLE001 - a header we cannot walk is still sent as it is
        pass
    return ""


def scan(paths: Iterable[Path]) -> tuple[list[DicomFile], list[InstanceResult]]:
    """Files and directories (recursive) -> sendable DICOM files, and failures for the rest."""
    found: list[DicomFile] = []
    rejected: list[InstanceResult] = []
    for path in _expand(paths):
        try:
            meta, offset = split_dataset(path)
            found.append(
                DicomFile(
                    path=path,
                    sop_class_uid=str(meta.MediaStorageSOPClassUID),
                    sop_instance_uid=str(meta.MediaStorageSOPInstanceUID),
                    transfer_syntax_uid=str(meta.TransferSyntaxUID),
                    size=path.stat().st_size,
                    dataset_offset=offset,
                    study_instance_uid=_study_uid(path, UID(str(meta.TransferSyntaxUID)), offset),
                )
            )
        except FileNotFoundError:
            rejected.append(InstanceResult(path, None, error="file not found"))
        except (InvalidDicomError, AttributeError, EOFError, ValueError, OSError):
            rejected.append(InstanceResult(path, None, error="not a DICOM Part 10 file (no valid file meta)"))
    return found, rejected


def presentation_contexts(files: Iterable[DicomFile]) -> list[PresentationContext]:
    """One context per (SOP class, transfer syntax) actually present, so each file is sent as-is."""
    pairs = sorted({(f.sop_class_uid, f.transfer_syntax_uid) for f in files})
    if len(pairs) > MAX_CONTEXTS:
        raise ValueError(
            f"the files use {len(pairs)} SOP class / transfer syntax combinations; "
            f"one association can propose at most {MAX_CONTEXTS}: send them in smaller groups"
        )
    return [build_context(sop_class, [ts]) for sop_class, ts in pairs]


class _Worker:
    """One association, fed from a shared queue; associates again whenever it loses one."""

    def __init__(self, peer: Peer, contexts, work: queue.Queue, retries: int, backoff: float, report):
        self.peer, self.contexts, self.work = peer, contexts, work
        self.retries, self.backoff, self.report = retries, backoff, report
        self.assoc: Association | None = None
        self.error: AssociationFailed | None = None

    def run(self, stop: threading.Event) -> None:
        try:
            while not stop.is_set():
                try:
                    item: DicomFile = self.work.get_nowait()
                except queue.Empty:
                    return
                self.report(self._send_one(item))
        except AssociationFailed as exc:
            self.error = exc
        finally:
            if self.assoc is not None:
                self.assoc.release()

    def _send_one(self, item: DicomFile) -> InstanceResult:
        result = InstanceResult(
            item.path, item.sop_instance_uid, size=item.size, study_instance_uid=item.study_instance_uid
        )
        while True:
            result.attempts += 1
            result.status = result.error = result.comment = None
            if self.assoc is None or not self.assoc.is_established:
                self.assoc = Association.open(self.peer, self.contexts)
            context_id = self.assoc.context_id(item.sop_class_uid, item.transfer_syntax_uid)
            if context_id is None:
                result.error = (
                    f"not accepted by the peer: SOP class {item.sop_class_uid} "
                    f"in transfer syntax {item.transfer_syntax_uid}"
                )
                return result
            started = time.perf_counter()
            try:
                with open(item.path, "rb", buffering=0) as source:
                    source.seek(item.dataset_offset)
                    length = os.fstat(source.fileno()).st_size - item.dataset_offset
                    response = self.assoc.c_store(
                        context_id, item.sop_class_uid, item.sop_instance_uid, source, length
                    )
            except AssociationLost as exc:
                result.error = f"association lost: {exc}"
            except OSError as exc:
                result.error = f"cannot read the file: {exc.strerror or exc}"
                return result
            else:
                result.status, result.comment = response.status, response.comment
            result.seconds = time.perf_counter() - started
            lost = result.status is None
            if not (lost or is_retryable(result.status)) or result.attempts > self.retries:
                return result
            time.sleep(self.backoff * 2 ** (result.attempts - 1))


def send_files(
    files: list[DicomFile],
    peer: Peer,
    associations: int = 1,
    retries: int = 3,
    backoff: float = 0.5,
    on_result: Callable[[InstanceResult], None] | None = None,
    stop: threading.Event | None = None,
    processes: bool = False,
) -> SendReport:
    """Send ``files`` over up to ``associations`` parallel associations; one result per file.

    Associations run in threads by default; ``processes=True`` gives each its own process (the
    GIL is shared by threads), at the cost of starting the processes; docs/benchmarks/sender.md
    has both, measured. Raises AssociationFailed when no association could be established
    (nothing was sent); a later association failure marks that worker's remaining instances as
    failed with its reason.
    """
    report = SendReport()
    if not files:
        return report
    associations = max(1, min(associations, len(files)))
    lock = threading.Lock()

    def record(result: InstanceResult) -> None:
        with lock:
            report.results.append(result)
        if on_result:
            on_result(result)

    started = time.perf_counter()
    run = _run_processes if processes and associations > 1 else _run_threads
    errors = run(files, peer, associations, retries, backoff, record, stop or threading.Event())
    report.seconds = time.perf_counter() - started
    report.associations = associations
    if errors and not report.results:
        raise errors[0]
    sent = {r.path for r in report.results}
    reason = errors[0].detail if errors else "interrupted before sending"
    for item in files:
        if item.path not in sent:
            record(
                InstanceResult(
                    item.path,
                    item.sop_instance_uid,
                    error=reason,
                    size=item.size,
                    study_instance_uid=item.study_instance_uid,
                )
            )
    return report


def _run_threads(files, peer, associations, retries, backoff, record, stop) -> list[AssociationFailed]:
    contexts = presentation_contexts(files)
    work: queue.Queue[DicomFile] = queue.Queue()
    for item in files:
        work.put(item)
    workers = [_Worker(peer, contexts, work, retries, backoff, record) for _ in range(associations)]
    threads = [threading.Thread(target=w.run, args=(stop,), daemon=True) for w in workers]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return [w.error for w in workers if w.error]


def _process_worker(files, peer, retries, backoff, results) -> None:
    """One association in its own process; streams ("result", r) and ends with ("done", error)."""
    error = None
    try:
        send_files(
            files, peer, 1, retries, backoff, on_result=lambda r: results.put(("result", r)), processes=False
        )
    except AssociationFailed as exc:
        error = (exc.kind, exc.detail)
    results.put(("done", error))


def _run_processes(files, peer, associations, retries, backoff, record, stop) -> list[AssociationFailed]:
    context = multiprocessing.get_context("spawn")  # safe whatever threads the caller runs
    results = context.Queue()
    shares = [files[i::associations] for i in range(associations)]
    workers = [
        context.Process(target=_process_worker, args=(share, peer, retries, backoff, results), daemon=True)
        for share in shares
    ]
    for worker in workers:
        worker.start()
    errors: list[AssociationFailed] = []
    running = len(workers)
    try:
        while running and not stop.is_set():
            try:
                kind, payload = results.get(timeout=0.5)
            except queue.Empty:
                if not any(w.is_alive() for w in workers):
                    break
                continue
            if kind == "result":
                record(payload)
            else:
                running -= 1
                if payload:
                    errors.append(AssociationFailed(*payload))
    finally:
        for worker in workers:
            if stop.is_set():
                worker.terminate()
            worker.join(timeout=5)
    return errors


def echo(peer: Peer) -> tuple[int, float]:
    """C-ECHO: (status, round trip seconds including association setup); status -1 if none came."""
    started = time.perf_counter()
    with Association.open(peer, [build_context(VERIFICATION)]) as assoc:
        try:
            status = assoc.c_echo().status
        except AssociationLost:
            status = -1
        return status, time.perf_counter() - started
