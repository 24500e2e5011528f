"""Batches: the instances of one association, sealed by a manifest once all are durable.

One ``BatchWriter`` per association. A store *reserves* a place in the current batch before its
object is written (so its key carries that batch's prefix), then *commits* (listed in the batch)
or *releases* (write failed, not listed). Sealing takes the batch out of service first, so a
store that races a rollover lands in the next batch, then waits for the writes still in flight
in the sealed one: the manifest lists exactly the durable objects of its batch, and it is
written only after all of them are durable. An empty batch writes nothing.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from core.layout import (
    BatchManifest,
    ManifestInstance,
    batch_prefix,
    instance_key,
    manifest_key,
    new_batch_id,
)
from scp.storage import Storage, StorageError, with_retries

log = logging.getLogger("scp.batching")


@dataclass(frozen=True)
class BatchLimits:
    max_files: int
    max_bytes: int
    max_age_seconds: float


@dataclass(frozen=True)
class Origin:
    """Who sent the batch; recorded in the manifest (no PHI)."""

    calling_ae_title: str
    called_ae_title: str
    peer_address: str
    task_id: str


@dataclass
class Batch:
    batch_id: str
    opened_at: datetime
    prefix: str  # full import prefix as stored (storage prefix + layout prefix)
    instances: dict[str, ManifestInstance] = field(default_factory=dict)
    bytes: int = 0
    in_flight: int = 0
    sealed: bool = False

    def instance_key(self, study_uid: str, series_uid: str, sop_instance_uid: str) -> str:
        return instance_key(self.prefix, study_uid, series_uid, sop_instance_uid)


@dataclass(frozen=True)
class RetryPolicy:
    retries: int
    first_delay: float


class BatchWriter:
    def __init__(
        self,
        storage: Storage,
        origin: Origin,
        limits: BatchLimits,
        retry: RetryPolicy,
        *,
        on_sealed: Callable[[BatchManifest], None] = lambda manifest: None,
        on_manifest_failed: Callable[[str], None] = lambda batch_id: None,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        journal: Any = None,
    ):
        self.storage = storage
        self.origin = origin
        self.limits = limits
        self.retry = retry
        self.on_sealed = on_sealed
        self.on_manifest_failed = on_manifest_failed
        self.clock = clock
        self.journal = journal  # scp.journal.Journal: it writes the manifest after the uploads
        self.sealed_batch_ids: list[str] = []
        self._current: Batch | None = None
        self._cond = threading.Condition()

    def reserve(self) -> Batch:
        """The batch the next object goes into; rolls over a batch that has grown too old."""
        expired = None
        with self._cond:
            current = self._current
            if current is not None and self._age(current) >= self.limits.max_age_seconds:
                expired, self._current = current, None
                current.sealed = True
        if expired is not None:
            self._finish(expired, "rollover-age")
        with self._cond:
            if self._current is None:
                now = self.clock()
                batch_id = new_batch_id(now)
                prefix = self.storage.full_key(batch_prefix(batch_id, now))
                self._current = Batch(batch_id=batch_id, opened_at=now, prefix=prefix)
            self._current.in_flight += 1
            return self._current

    def commit(self, batch: Batch, instance: ManifestInstance) -> None:
        """The object is durable: list it, and roll over when the batch reached a limit."""
        reason = None
        with self._cond:
            previous = batch.instances.pop(instance.key, None)  # the same instance sent twice
            if previous is not None:  # the last copy is kept; the job table counts the receipts
                instance = instance.model_copy(update={"received_count": previous.received_count + 1})
            batch.bytes += instance.size - (previous.size if previous else 0)
            batch.instances[instance.key] = instance
            batch.in_flight -= 1
            self._cond.notify_all()
            if batch is self._current:
                if len(batch.instances) >= self.limits.max_files:
                    reason = "rollover-files"
                elif batch.bytes >= self.limits.max_bytes:
                    reason = "rollover-bytes"
                if reason:
                    self._current = None
                    batch.sealed = True
        if reason:
            self._finish(batch, reason)

    def release(self, batch: Batch) -> None:
        """The write failed: the object is not listed (and was not acknowledged)."""
        with self._cond:
            batch.in_flight -= 1
            self._cond.notify_all()

    def seal(self, reason: str) -> BatchManifest | None:
        """Seal the open batch (release, abort, idle, shutdown); None when there was nothing to seal."""
        with self._cond:
            batch, self._current = self._current, None
            if batch is None or batch.sealed:
                return None
            batch.sealed = True
        return self._finish(batch, reason)

    def seal_if_expired(self) -> BatchManifest | None:
        """Age rollover for an association that stays open without sending."""
        with self._cond:
            batch = self._current
            if batch is None or batch.sealed or self._age(batch) < self.limits.max_age_seconds:
                return None
            self._current = None
            batch.sealed = True
        return self._finish(batch, "rollover-age")

    def _age(self, batch: Batch) -> float:
        return (self.clock() - batch.opened_at).total_seconds()

    def _finish(self, batch: Batch, reason: str) -> BatchManifest | None:
        with self._cond:
            while batch.in_flight:
                self._cond.wait()
            instances = list(batch.instances.values())
        if not instances:
            return None
        manifest = BatchManifest(
            batch_id=batch.batch_id,
            prefix=batch.prefix,
            opened_at=batch.opened_at,
            sealed_at=self.clock(),
            seal_reason=reason,
            calling_ae_title=self.origin.calling_ae_title,
            called_ae_title=self.origin.called_ae_title,
            peer_address=self.origin.peer_address,
            task_id=self.origin.task_id,
            instances=instances,
        )
        if self.journal is not None:
            self.journal.seal(batch.batch_id, reason, manifest.sealed_at)
            self.sealed_batch_ids.append(batch.batch_id)
            return manifest
        body = manifest.to_json().encode()
        key = self.storage.full_key(manifest_key(batch.batch_id))
        try:
            with_retries(
                lambda: self.storage.put_bytes(key, body, "application/json"),
                retries=self.retry.retries,
                first_delay=self.retry.first_delay,
                what=key,
            )
        except StorageError as exc:
            # The objects are durable and acknowledged; the scheduled sweeper seals this batch.
            log.error(
                "manifest not written; the sweeper will seal the batch",
                extra={"fields": {"batchId": batch.batch_id, "reason": reason, "error": str(exc)}},
            )
            self.on_manifest_failed(batch.batch_id)
            return None
        self.sealed_batch_ids.append(batch.batch_id)
        log.info(
            "batch sealed",
            extra={
                "fields": {
                    "batchId": batch.batch_id,
                    "reason": reason,
                    "instances": len(instances),
                    "bytes": manifest.total_bytes,
                }
            },
        )
        self.on_sealed(manifest)
        return manifest
