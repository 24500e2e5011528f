"""One session per association: its batch writer, its counters, and how it ended.

The session is attached when the connection is accepted and finished when the association
thread has ended (released, aborted, idle timeout, or aborted by our shutdown), which seals its
open batch and writes the one association-summary log line.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from scp.batching import BatchWriter, Origin
from scp.metrics import Metrics

log = logging.getLogger("scp.association")


class Session:
    def __init__(
        self,
        assoc: Any,
        peer_address: str,
        make_writer: Callable[[Origin], BatchWriter],
        idle_after: float,
    ):
        self.assoc = assoc
        self.peer_address = peer_address
        self.idle_after = idle_after
        self.started = time.monotonic()
        self.last_activity = self.started
        self.instances = 0
        self.bytes = 0
        self.failures = 0
        self.shutdown_requested = False
        self._make_writer = make_writer
        self._writer: BatchWriter | None = None

    @property
    def writer(self) -> BatchWriter:
        """Created on the first store, when both AE titles are known."""
        if self._writer is None:
            self._writer = self._make_writer(
                Origin(
                    calling_ae_title=self.calling_ae_title,
                    called_ae_title=self.called_ae_title,
                    peer_address=self.peer_address,
                    task_id="",
                )
            )
        return self._writer

    @property
    def calling_ae_title(self) -> str:
        primitive = self.assoc.requestor.primitive
        return str(primitive.calling_ae_title).strip() if primitive else ""

    @property
    def called_ae_title(self) -> str:
        primitive = self.assoc.requestor.primitive
        return str(primitive.called_ae_title).strip() if primitive else ""

    @property
    def open_writer(self) -> BatchWriter | None:
        """The writer if this association stored anything, without creating one."""
        return self._writer

    def touch(self) -> None:
        self.last_activity = time.monotonic()

    def end_reason(self) -> str:
        if self.shutdown_requested and not self.assoc.is_released:
            return "shutdown"
        if self.assoc.is_released:
            return "release"
        # pynetdicom aborts from our side when the network timeout expires; it leaves no other
        # trace than having sent the A-ABORT, so tell idle from other aborts by the silence.
        silent = time.monotonic() - self.last_activity >= self.idle_after * 0.9
        if self.assoc._sent_abort and silent:
            return "idle"
        return "abort"

    def was_established(self) -> bool:
        return self.assoc.requestor.primitive is not None and not self.assoc.is_rejected


class Sessions:
    def __init__(self, make_writer: Callable[[Origin], BatchWriter], metrics: Metrics, idle_after: float):
        self._make_writer = make_writer
        self._idle_after = idle_after
        self._metrics = metrics
        self._by_assoc: dict[int, Session] = {}
        self._cond = threading.Condition()

    def attach(self, assoc: Any, peer_address: str) -> Session:
        session = Session(assoc, peer_address, self._make_writer, self._idle_after)
        with self._cond:
            self._by_assoc[id(assoc)] = session
        return session

    def get(self, assoc: Any) -> Session:
        with self._cond:
            return self._by_assoc[id(assoc)]

    def all(self) -> list[Session]:
        with self._cond:
            return list(self._by_assoc.values())

    def count(self) -> int:
        with self._cond:
            return len(self._by_assoc)

    def wait_empty(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        with self._cond:
            while self._by_assoc:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._cond.wait(remaining)
            return True

    def finish(self, assoc: Any) -> None:
        """The association thread ended: seal its batch, count it, log its summary."""
        with self._cond:
            session = self._by_assoc.get(id(assoc))
        if session is None:
            return
        try:
            reason = session.end_reason()
            sealed: list[str] = []
            if session.open_writer is not None:
                session.open_writer.seal(reason)
                sealed = session.open_writer.sealed_batch_ids
            if session.was_established():
                self._metrics.association(reason)
                log.info(
                    "association ended",
                    extra={
                        "fields": {
                            "event": "association",
                            "outcome": reason,
                            "callingAeTitle": session.calling_ae_title,
                            "calledAeTitle": session.called_ae_title,
                            "peerAddress": session.peer_address,
                            "instances": session.instances,
                            "bytes": session.bytes,
                            "failures": session.failures,
                            "batches": sealed,
                            "durationMs": round((time.monotonic() - session.started) * 1000),
                        }
                    },
                )
        finally:
            with self._cond:
                self._by_assoc.pop(id(assoc), None)
                self._cond.notify_all()
