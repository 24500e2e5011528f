"""The durable journal: acknowledge at disk speed, upload to storage behind it, lose nothing.

With ``SCP_JOURNAL_DIR`` set (an EFS directory shared by the SCP tasks), a received instance is
durable once it is in the journal: the spooled file fsynced and renamed in (copied and fsynced
when the spool is on another file system), the directory fsynced. The file is the whole record:
nothing else is written before the answer (on EFS every synchronous file operation is a network
round trip; a manifest-entry sidecar cost three more per image). Then the C-STORE is answered
0x0000 and an uploader (``SCP_JOURNAL_UPLOADS`` threads) PUTs it with the SHA-256 that S3
verifies. A batch sealed by its association is recorded in the journal; its manifest is written
only once every one of its instances is in storage, so nothing is imported before it is uploaded.

Layout (one directory per process, its *owner* directory)::

    <journal>/<owner>/_heartbeat               time of the last heartbeat (rewritten every few s)
    <journal>/<owner>/<batchId>/_batch.json    batch id, import prefix, opened at, origin
    <journal>/<owner>/<batchId>/<seq>-<SOP>.dcm    the Part 10 file as received: acknowledged
    <journal>/<owner>/<batchId>/<seq>-<SOP>.uploaded  empty: that file is in storage (a hint)
    <journal>/<owner>/<batchId>/_sealed.json   seal reason and time: the batch takes no more
    <journal>/<owner>/<batchId>/_rehome.json   the new batch id of instances the sweeper missed
    <journal>/<owner>/adopted-<dead owner>/... a dead owner's directory, claimed by this owner

An entry is acknowledged if its ``.dcm`` is there (only a complete, fsynced file gets that name);
a ``.partial`` copy is a write cut off before the answer. Its manifest entry is kept in memory;
recovery rebuilds it from the file (UIDs and transfer syntax from its header, size, SHA-256), and
uploads again whatever has no ``.uploaded`` hint (harmless: the same bytes under the same key).
A batch directory is removed once its manifest is written.

Recovery: every process, at start and periodically, renames the directory of an owner whose
heartbeat is older than ``SCP_JOURNAL_STALE_SECONDS`` into its own (rename is atomic: exactly one
adopter), then uploads what it holds and seals its batches ("adopted" unless
the dead owner had sealed them already). Sealing writes the manifest with ``If-None-Match: *``:
if the sweeper sealed the batch first from what it found in S3, the instances its manifest lacks
are uploaded under a new batch id (recorded in ``_rehome.json`` before, so a crash repeats the
same id) and sealed there: no instance is in two manifests, and no batch id gets a second one.

Backpressure: past ``SCP_JOURNAL_MAX_FILES`` / ``_MAX_BYTES`` / ``_MAX_AGE_SECONDS`` of entries
not yet uploaded, or when the journal cannot be written, stores are refused 0xA700 and /readyz
says 503; uploads keep retrying, so the journal drains by itself when storage comes back.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import logging
import os
import re
import secrets
import shutil
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pydicom import dcmread

from core.layout import (
    BatchManifest,
    ManifestInstance,
    batch_prefix,
    instance_key,
    manifest_key,
    new_batch_id,
)
from scp.metrics import Metrics
from scp.spool import Spooled
from scp.storage import Storage, StorageError
from scp.storage.file import _fsync_dir

log = logging.getLogger("scp.journal")

HEARTBEAT = "_heartbeat"
BATCH_FILE = "_batch.json"
SEALED_FILE = "_sealed.json"
REHOME_FILE = "_rehome.json"
UPLOADED, DATA = ".uploaded", ".dcm"
ADOPTED_PREFIX = "adopted-"
RETRY_FIRST, RETRY_MAX = 0.5, 15.0  # seconds between upload attempts of one entry (doubling)
TICK = 0.25
COPY_CHUNK = 1024 * 1024


class JournalRefused(StorageError):
    """The journal takes no more now (a limit, or not writable): 0xA700 with this comment."""

    def __init__(self, comment: str):
        super().__init__(comment, transient=False)
        self.comment = comment


@dataclass(frozen=True)
class JournalLimits:
    max_files: int
    max_bytes: int
    max_age_seconds: float


@dataclass
class _Entry:
    name: str
    directory: Path
    instance: ManifestInstance
    written_at: float
    uploaded: bool = False
    attempts: int = 0

    @property
    def data(self) -> Path:
        return self.directory / f"{self.name}{DATA}"


@dataclass
class _Batch:
    batch_id: str
    prefix: str
    opened_at: datetime
    origin: dict[str, str]
    directory: Path
    entries: dict[str, _Entry] = field(default_factory=dict)
    busy: set[str] = field(default_factory=set)  # entries being uploaded now
    seal: tuple[str, datetime] | None = None
    finishing: bool = False

    def open_entries(self) -> list[_Entry]:
        return [e for e in self.entries.values() if not e.uploaded]


def _write_durable(path: Path, data: bytes) -> None:
    partial = path.with_name(f".{path.name}.{secrets.token_hex(4)}")
    with partial.open("wb") as out:
        out.write(data)
        out.flush()
        os.fsync(out.fileno())
    os.replace(partial, path)


def _fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _move_in(source: Path, dest: Path) -> None:
    """fsync and rename (same filesystem), or copy and fsync (the spool is on another one)."""
    _fsync_file(source)
    try:
        os.replace(source, dest)
        return
    except OSError as exc:
        if exc.errno != 18:  # EXDEV
            raise
    partial = dest.with_name(f".{dest.name}.partial")
    with source.open("rb") as src, partial.open("wb") as out:
        shutil.copyfileobj(src, out, COPY_CHUNK)
        out.flush()
        os.fsync(out.fileno())
    os.replace(partial, dest)


def recovered_instance(data: Path, prefix: str) -> ManifestInstance:
    """The manifest entry of a journal file, from the file: what ``scp/store.py`` recorded."""
    dataset = dcmread(data, stop_before_pixels=True, specific_tags=["StudyInstanceUID", "SeriesInstanceUID"])
    meta = dataset.file_meta
    study, series = str(dataset.StudyInstanceUID), str(dataset.SeriesInstanceUID)
    sop_instance_uid = str(meta.MediaStorageSOPInstanceUID)
    digest = hashlib.sha256()
    with data.open("rb") as source:
        while chunk := source.read(COPY_CHUNK):
            digest.update(chunk)
    return ManifestInstance(
        key=instance_key(prefix, study, series, sop_instance_uid),
        sop_class_uid=str(meta.MediaStorageSOPClassUID),
        sop_instance_uid=sop_instance_uid,
        study_instance_uid=study,
        series_instance_uid=series,
        transfer_syntax_uid=str(meta.TransferSyntaxUID),
        size=data.stat().st_size,
        sha256=digest.hexdigest(),
    )


def owner_name(task_id: str) -> str:
    safe = re.sub(r"[^A-Za-z0-9._-]", "_", task_id)[:40] or "scp"
    return f"{safe}-{os.getpid()}-{secrets.token_hex(3)}"


def _journal_spooled(entry: _Entry) -> Spooled:
    """The journal file as a ``Spooled`` for the storage backend's ``upload_file`` (hash known)."""
    instance = entry.instance
    return Spooled(
        path=entry.data,
        size=instance.size,
        sha256=instance.sha256,
        header=b"",
        whole_dataset_in_header=False,
        transfer_syntax=instance.transfer_syntax_uid,
        inode=(0, 0),
    )


class Journal:
    def __init__(
        self,
        root: Path,
        storage: Storage,
        metrics: Metrics,
        *,
        task_id: str,
        uploads: int,
        limits: JournalLimits,
        heartbeat_seconds: float,
        stale_seconds: float,
    ):
        self.root = root
        self.storage = storage
        self.metrics = metrics
        self.limits = limits
        self.heartbeat_seconds = heartbeat_seconds
        self.stale_seconds = stale_seconds
        self.owner = owner_name(task_id)
        self.directory = root / self.owner
        self._uploads = uploads
        self._pool: ThreadPoolExecutor | None = None
        self._lock = threading.Condition()
        self._batches: dict[Path, _Batch] = {}
        self._retries: list[tuple[float, Any]] = []  # (due, callable)
        self._seq = itertools.count(1)
        self._unwritable: str | None = None
        self._stopped = threading.Event()
        self._thread: threading.Thread | None = None
        self._next_heartbeat = 0.0
        self._next_adoption = 0.0

    # --- lifecycle ------------------------------------------------------------------------
    def start(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        self.directory.mkdir()
        self._heartbeat()
        _fsync_dir(self.root)
        self._pool = ThreadPoolExecutor(self._uploads, thread_name_prefix="journal-upload")
        self.adopt_stale()
        self._thread = threading.Thread(target=self._housekeeping, name="journal", daemon=True)
        self._thread.start()
        log.info("journal ready", extra={"fields": {"directory": str(self.directory)}})

    def stop(self, drain_seconds: float) -> bool:
        """Let the uploads and seals finish within the window; True when nothing was left behind.

        What is left stays in this owner's directory; its heartbeat stops, another process (or
        this task's successor) adopts it. A manifest is written whole or not at all.
        """
        deadline = time.monotonic() + drain_seconds
        with self._lock:
            while self._batches and time.monotonic() < deadline:
                self._lock.wait(min(TICK, max(0.0, deadline - time.monotonic())))
            drained = not self._batches
        self._stopped.set()
        if self._thread:
            self._thread.join()
        if self._pool:
            self._pool.shutdown(wait=True, cancel_futures=True)
        if drained:
            shutil.rmtree(self.directory, ignore_errors=True)
        log.info(
            "journal stopped",
            extra={"fields": {"drained": drained, "batchesLeft": len(self._batches)}},
        )
        return drained

    # --- the store path -------------------------------------------------------------------
    def refusal(self) -> str | None:
        """Why the journal takes no more now (an Error Comment), or None."""
        if self._unwritable:
            return "journal not writable, retry later"
        files, size, age = self.backlog()
        if files >= self.limits.max_files:
            return "journal full (files), retry later"
        if size >= self.limits.max_bytes:
            return "journal full (bytes), retry later"
        if age >= self.limits.max_age_seconds:
            return "upload backlog too old, retry later"
        return None

    def backlog(self) -> tuple[int, int, float]:
        """Entries not yet in storage: files, bytes, age in seconds of the oldest."""
        with self._lock:
            pending = [e for b in self._batches.values() for e in b.entries.values() if not e.uploaded]
        if not pending:
            return 0, 0, 0.0
        oldest = min(e.written_at for e in pending)
        return len(pending), sum(e.instance.size for e in pending), max(0.0, time.time() - oldest)

    def write(self, batch: Any, origin: Any, spooled: Spooled, instance: ManifestInstance) -> None:
        """Make the instance durable in the journal; raises JournalRefused or StorageError."""
        reason = self.refusal()
        if reason:
            raise JournalRefused(reason)
        directory = self.directory / batch.batch_id
        try:
            with self._lock:
                known = self._batches.get(directory)
            if known is None:
                known = self._open_batch(batch, origin, directory)
            name = f"{next(self._seq):09d}-{instance.sop_instance_uid}"
            entry = _Entry(name, directory, instance, time.time())
            _move_in(spooled.path, entry.data)
            _fsync_dir(directory)
        except OSError as exc:
            self._unwritable = f"{exc.strerror or exc}"
            log.error("journal write failed", extra={"fields": {"error": str(exc)}})
            raise JournalRefused("journal not writable, retry later") from exc
        with self._lock:
            known.entries[name] = entry
        self._submit(known, entry)

    def seal(self, batch_id: str, reason: str, sealed_at: datetime) -> None:
        """The association sealed the batch: recorded now, the manifest follows its uploads."""
        directory = self.directory / batch_id
        with self._lock:
            batch = self._batches.get(directory)
        if batch is None:
            return
        self._record_seal(batch, reason, sealed_at)
        self._maybe_finish(batch)

    # --- internals ------------------------------------------------------------------------
    def _open_batch(self, batch: Any, origin: Any, directory: Path) -> _Batch:
        directory.mkdir(exist_ok=True)
        record = {
            "batchId": batch.batch_id,
            "prefix": batch.prefix,
            "openedAt": batch.opened_at.isoformat(),
            "origin": {
                "callingAeTitle": origin.calling_ae_title,
                "calledAeTitle": origin.called_ae_title,
                "peerAddress": origin.peer_address,
                "taskId": origin.task_id,
            },
        }
        _write_durable(directory / BATCH_FILE, json.dumps(record).encode())
        _fsync_dir(directory)
        _fsync_dir(self.directory)
        opened = _Batch(batch.batch_id, batch.prefix, batch.opened_at, record["origin"], directory)
        with self._lock:
            return self._batches.setdefault(directory, opened)

    def _record_seal(self, batch: _Batch, reason: str, sealed_at: datetime) -> None:
        with self._lock:
            if batch.seal is not None:
                return
            batch.seal = (reason, sealed_at)
        record = {"sealReason": reason, "sealedAt": sealed_at.isoformat()}
        try:
            _write_durable(batch.directory / SEALED_FILE, json.dumps(record).encode())
            _fsync_dir(batch.directory)
        except OSError as exc:  # kept in memory; an adopter would seal it "adopted"
            log.error("seal not recorded in the journal", extra={"fields": {"error": str(exc)}})

    def _submit(self, batch: _Batch, entry: _Entry) -> None:
        with self._lock:
            if entry.uploaded or entry.name in batch.busy or self._pool is None:
                return
            batch.busy.add(entry.name)
        try:
            self._pool.submit(self._upload, batch, entry)
        except RuntimeError:  # the pool is shut down: the entry stays for adoption
            with self._lock:
                batch.busy.discard(entry.name)

    def _later(self, attempts: int, action: Any) -> None:
        delay = min(RETRY_MAX, RETRY_FIRST * 2 ** min(attempts, 10))
        with self._lock:
            self._retries.append((time.monotonic() + delay, action))

    def _upload(self, batch: _Batch, entry: _Entry) -> None:
        started = time.perf_counter()
        try:
            self.storage.upload_file(entry.instance.key, _journal_spooled(entry))
        except StorageError as exc:
            entry.attempts += 1
            self.metrics.journal_upload_failed()
            if entry.attempts == 1 or entry.attempts % 10 == 0:
                log.warning(
                    "upload from the journal failed, will retry",
                    extra={
                        "fields": {"key": entry.instance.key, "attempts": entry.attempts, "error": str(exc)}
                    },
                )
            with self._lock:
                batch.busy.discard(entry.name)
            self._later(entry.attempts, lambda: self._submit(batch, entry))
            return
        try:
            (entry.directory / f"{entry.name}{UPLOADED}").touch()  # not fsynced: only a hint
        except OSError:  # the entry is uploaded again after a crash: harmless
            pass
        self.metrics.journal_uploaded(time.perf_counter() - started)
        with self._lock:
            entry.uploaded = True
            batch.busy.discard(entry.name)
        self._maybe_finish(batch)

    def _maybe_finish(self, batch: _Batch) -> None:
        with self._lock:
            if batch.seal is None or batch.finishing or batch.busy or batch.open_entries():
                return
            batch.finishing = True
        try:
            assert self._pool is not None
            self._pool.submit(self._finish, batch)
        except RuntimeError:
            with self._lock:
                batch.finishing = False

    def _manifest(
        self, batch: _Batch, batch_id: str, prefix: str, instances: list[ManifestInstance]
    ) -> BatchManifest:
        assert batch.seal is not None
        reason, sealed_at = batch.seal
        return BatchManifest(
            batch_id=batch_id,
            prefix=prefix,
            opened_at=batch.opened_at,
            sealed_at=sealed_at,
            seal_reason=reason,
            calling_ae_title=batch.origin.get("callingAeTitle", ""),
            called_ae_title=batch.origin.get("calledAeTitle", ""),
            peer_address=batch.origin.get("peerAddress", ""),
            task_id=batch.origin.get("taskId", ""),
            instances=instances,
        )

    def _finish(self, batch: _Batch) -> None:
        """Write the manifest (If-None-Match); on a sweeper's manifest, re-home what it lacks."""
        by_key: dict[str, ManifestInstance] = {}
        receipts: dict[str, int] = {}
        for name in sorted(batch.entries):  # a later copy of the same instance wins, all are counted
            instance = batch.entries[name].instance
            receipts[instance.key] = receipts.get(instance.key, 0) + 1
            by_key[instance.key] = instance.model_copy(update={"received_count": receipts[instance.key]})
        try:
            manifest = self._manifest(batch, batch.batch_id, batch.prefix, list(by_key.values()))
            key = self.storage.full_key(manifest_key(batch.batch_id))
            if not by_key:
                pass  # nothing was acknowledged in it: no manifest
            elif self.storage.put_bytes_if_absent(key, manifest.to_json().encode(), "application/json"):
                self._sealed(batch, manifest)
            else:
                self._rehome(batch, key, by_key)
        except (StorageError, OSError) as exc:
            log.warning(
                "batch not sealed yet, will retry",
                extra={"fields": {"batchId": batch.batch_id, "error": str(exc)}},
            )
            with self._lock:
                batch.finishing = False
            self._later(3, lambda: self._maybe_finish(batch))
            return
        shutil.rmtree(batch.directory, ignore_errors=True)
        with self._lock:
            self._batches.pop(batch.directory, None)
            self._lock.notify_all()
        self._remove_empty_adopted(batch.directory.parent)

    def _sealed(self, batch: _Batch, manifest: BatchManifest) -> None:
        self.metrics.sealed(manifest.seal_reason)
        log.info(
            "batch sealed",
            extra={
                "fields": {
                    "batchId": manifest.batch_id,
                    "reason": manifest.seal_reason,
                    "instances": len(manifest.instances),
                    "bytes": manifest.total_bytes,
                    "journal": True,
                }
            },
        )

    def _rehome(self, batch: _Batch, key: str, ours: dict[str, ManifestInstance]) -> None:
        existing = self.storage.get_bytes(key)
        listed = {i.key for i in BatchManifest.model_validate_json(existing).instances} if existing else set()
        missing = [i for k, i in ours.items() if k not in listed]
        if not missing:
            return  # our own manifest, written before a crash, or the sweeper saw everything
        record_path = batch.directory / REHOME_FILE
        if record_path.exists():
            record = json.loads(record_path.read_text())
        else:
            now = datetime.now(UTC)
            record = {"batchId": new_batch_id(now), "openedAt": now.isoformat()}
            _write_durable(record_path, json.dumps(record).encode())
            _fsync_dir(batch.directory)
        new_id = record["batchId"]
        new_prefix = self.storage.full_key(batch_prefix(new_id, datetime.fromisoformat(record["openedAt"])))
        entries = {e.instance.key: e for e in batch.entries.values()}
        moved = []
        for instance in missing:
            new_key = new_prefix + instance.key[len(batch.prefix) :]
            spooled = _journal_spooled(entries[instance.key])
            self.storage.upload_file(new_key, spooled)
            moved.append(instance.model_copy(update={"key": new_key}))
        manifest = self._manifest(batch, new_id, new_prefix, moved)
        new_key = self.storage.full_key(manifest_key(new_id))
        self.storage.put_bytes_if_absent(new_key, manifest.to_json().encode(), "application/json")
        log.warning(
            "batch was sealed by the sweeper; the instances it missed went into a new batch",
            extra={"fields": {"batchId": batch.batch_id, "newBatchId": new_id, "instances": len(moved)}},
        )
        self._sealed(batch, manifest)

    def _remove_empty_adopted(self, directory: Path) -> None:
        while directory != self.directory and directory.name.startswith(ADOPTED_PREFIX):
            (directory / HEARTBEAT).unlink(missing_ok=True)
            try:
                directory.rmdir()
            except OSError:
                return
            directory = directory.parent

    # --- heartbeat and adoption -----------------------------------------------------------
    def _heartbeat(self) -> None:
        try:
            _write_durable(self.directory / HEARTBEAT, repr(time.time()).encode())
            self._unwritable = None
        except OSError as exc:
            self._unwritable = f"{exc.strerror or exc}"
            log.error("journal heartbeat failed", extra={"fields": {"error": str(exc)}})

    def _stale(self, directory: Path) -> bool:
        try:
            beat = float((directory / HEARTBEAT).read_text())
        except FileNotFoundError:
            try:
                beat = directory.stat().st_mtime
            except FileNotFoundError:
                return False
        except (OSError, ValueError):
            return False
        return time.time() - beat >= self.stale_seconds

    def adopt_stale(self) -> list[str]:
        """Claim the directories of owners whose heartbeat is stale; returns their names."""
        adopted = []
        try:
            candidates = [d for d in self.root.iterdir() if d.is_dir() and d != self.directory]
        except OSError:
            return adopted
        for directory in candidates:
            if directory.name.startswith(".") or not self._stale(directory):
                continue
            target = self.directory / f"{ADOPTED_PREFIX}{directory.name}"
            try:
                os.rename(directory, target)  # atomic: exactly one process succeeds
            except OSError:
                continue
            _fsync_dir(self.directory)
            _fsync_dir(self.root)
            log.warning("adopted a stale journal directory", extra={"fields": {"owner": directory.name}})
            self.metrics.journal_adopted()
            self._recover(target)
            adopted.append(directory.name)
        return adopted

    def _recover(self, directory: Path) -> None:
        for record_path in sorted(directory.rglob(BATCH_FILE)):
            batch_dir = record_path.parent
            try:
                record = json.loads(record_path.read_text())
            except (OSError, ValueError):
                continue
            batch = _Batch(
                record["batchId"],
                record["prefix"],
                datetime.fromisoformat(record["openedAt"]),
                record.get("origin", {}),
                batch_dir,
            )
            for data in sorted(batch_dir.glob(f"*{DATA}")):
                name = data.name[: -len(DATA)]
                try:
                    instance = recovered_instance(data, batch.prefix)
                except Exception:  # pydicom raises many kinds; a file we renamed in is complete
                    log.exception("journal file unreadable, left in place", extra={"fields": {"file": name}})
                    continue
                batch.entries[name] = _Entry(
                    name,
                    batch_dir,
                    instance,
                    data.stat().st_mtime,
                    uploaded=(batch_dir / f"{name}{UPLOADED}").exists(),
                )
            sealed = batch_dir / SEALED_FILE
            if sealed.exists():
                content = json.loads(sealed.read_text())
                batch.seal = (content["sealReason"], datetime.fromisoformat(content["sealedAt"]))
            with self._lock:
                self._batches[batch_dir] = batch
            if batch.seal is None:
                self._record_seal(batch, "adopted", datetime.now(UTC))
            for entry in batch.open_entries():
                self._submit(batch, entry)
            self._maybe_finish(batch)
        self._remove_empty_adopted(directory)

    def _housekeeping(self) -> None:
        while not self._stopped.wait(TICK):
            now = time.monotonic()
            if now >= self._next_heartbeat:
                self._heartbeat()
                self._next_heartbeat = now + self.heartbeat_seconds
            if now >= self._next_adoption:
                self.adopt_stale()
                self._next_adoption = now + self.heartbeat_seconds
            with self._lock:
                due = [action for at, action in self._retries if at <= now]
                self._retries = [(at, action) for at, action in self._retries if at > now]
            for action in due:
                action()
            self.metrics.journal_backlog(*self.backlog())
