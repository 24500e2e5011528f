"""StoreScp: the durable C-STORE receiver, usable in-process (local stack, tests) and by ``python -m scp``.

    scp = StoreScp(settings)
    scp.start()                  # returns once listening; scp.port / tls_port / health_port
    scp.stop(drain_seconds=None) # stop accepting, drain, abort the rest, seal every batch

The pynetdicom AE is configured from ScpSettings; handler dependencies are bound through
``evt_handlers`` argument lists. Every received dataset is spooled to a file as it arrives (memory
stays flat whatever the object size) and stored from there without decoding: by the association
loop (``scp/association_loop.py``, ``scp/spool.py``), or by pynetdicom's
``STORE_RECV_CHUNKED_DATASET`` on the stock receive path.
"""

from __future__ import annotations

import json
import logging
import socket
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import replace
from typing import Any, TextIO

from pynetdicom import AE, _config, evt

from core.commitment import STORAGE_COMMITMENT_PUSH_MODEL, CommitmentTable
from core.contracts import SCP_DIMENSIONS
from core.dicom_support import TRANSFER_SYNTAXES, VERIFICATION_SOP_CLASS, accepted_sop_classes
from core.layout import BatchManifest
from core.scp_settings import ScpSettings
from scp.access import AccessPolicy
from scp.admission import Admission
from scp.batching import BatchLimits, BatchWriter, Origin, RetryPolicy
from scp.commitment import CommitmentService, Reporter, handle_n_action
from scp.health import CachedCheck, HealthServer
from scp.journal import Journal, JournalLimits
from scp.keepalive import KeepAlive
from scp.metrics import EMF_INTERVAL_SECONDS, Metrics, combine_prometheus
from scp.network import GatewayRequestHandler, GatewayServer, SharedContexts, on_requested
from scp.sessions import Sessions
from scp.storage import Storage, open_storage
from scp.store import StoreService, handle_store
from scp.tls import server_context

log = logging.getLogger("scp.server")

READINESS_CACHE_SECONDS = 5.0
HOUSEKEEPING_TICK = 0.25
ABORT_GRACE_SECONDS = 10.0  # after aborting, how long the sessions get to seal


class StoreScp:
    def __init__(
        self,
        settings: ScpSettings,
        *,
        storage: Storage | None = None,
        stdout: TextIO | None = None,
        emf_interval: float = EMF_INTERVAL_SECONDS,
    ):
        self.settings = settings
        self.emf_interval = emf_interval
        self.task_id = settings.task_id or socket.gethostname()
        self.storage = storage or open_storage(
            settings.storage_uri,
            part_size=settings.multipart_threshold,
            max_connections=settings.max_associations + 4,
        )
        self.metrics = Metrics()
        self.port: int | None = None
        self.tls_port: int | None = None
        self.health_port: int | None = None
        self._stdout = stdout or sys.stdout
        self._stdout_lock = threading.Lock()
        self._retry = RetryPolicy(settings.store_retries, settings.store_retry_delay)
        self._limits = BatchLimits(
            settings.batch_max_files, settings.batch_max_bytes, settings.batch_max_age_seconds
        )
        self.sessions = Sessions(self._make_writer, self.metrics, idle_after=settings.network_timeout)
        self.admission = Admission(
            self.metrics,
            artim_timeout=settings.artim_timeout,
            max_pending=settings.max_pending_connections,
            max_per_peer=settings.max_connections_per_peer,
        )
        self._servers: list[GatewayServer] = []
        self._health: HealthServer | None = None
        self._draining = threading.Event()
        self._stopped = threading.Event()
        self._housekeeper: threading.Thread | None = None
        self._storage_ready = CachedCheck(self.storage.check, READINESS_CACHE_SECONDS)
        self.journal = (
            Journal(
                settings.journal_dir,
                self.storage,
                self.metrics,
                task_id=self.task_id,
                uploads=settings.journal_uploads,
                limits=JournalLimits(
                    settings.journal_max_files, settings.journal_max_bytes, settings.journal_max_age_seconds
                ),
                heartbeat_seconds=settings.journal_heartbeat_seconds,
                stale_seconds=settings.journal_stale_seconds,
            )
            if settings.journal_dir is not None
            else None
        )
        self._started = False
        self.commitment: CommitmentService | None = None
        self._reporter: Reporter | None = None
        if settings.commitment_table:
            import boto3  # only with Storage Commitment on (the file-storage SCP needs no AWS)

            table = CommitmentTable(boto3.client("dynamodb"), settings.commitment_table)
            self.commitment = CommitmentService(table, settings, self.task_id)
            self._reporter = Reporter(self.commitment, on_undelivered=self.metrics.commitment_undelivered)
        self._metrics_sources: list[Callable[[], str]] = []

    # --- lifecycle ------------------------------------------------------------------------
    def start(self) -> StoreScp:
        if self._started:
            return self
        # Process-wide pynetdicom switches; restored by stop() for in-process users (tests, local stack).
        self._saved_config = (_config.STORE_RECV_CHUNKED_DATASET, _config.LOG_HANDLER_LEVEL)
        # Every received dataset goes to a spool file: memory stays flat whatever the object size.
        # The association loop spools itself; pynetdicom (the stock path, and associations that
        # negotiated Storage Commitment) does it when asked.
        _config.STORE_RECV_CHUNKED_DATASET = True
        _config.LOG_HANDLER_LEVEL = "none"  # the per-PDU debug handlers cost time on every message
        self.storage.prepare()
        if self.journal is not None:
            self.journal.start()
        ae = self._make_ae()
        handlers = [
            (evt.EVT_REQUESTED, on_requested, [self._policy(), self.admission, self.sessions, self.metrics]),
            (
                evt.EVT_C_STORE,
                handle_store,
                [StoreService(self.storage, self.sessions, self.metrics, self._retry, self.journal)],
            ),
        ]
        if self.commitment is not None:
            handlers.append((evt.EVT_N_ACTION, handle_n_action, [self.commitment]))
        s = self.settings
        reuse_port = s.workers > 1
        if s.plain_enabled:
            server = self._listen(ae, s.port, None, handlers, reuse_port)
            self.port = server.server_address[1]
        if s.tls_enabled:
            server = self._listen(ae, s.tls_port, server_context(s), handlers, reuse_port)
            self.tls_port = server.server_address[1]
        self._health = HealthServer(
            (s.bind_address, s.health_port),
            alive=lambda: not self._stopped.is_set(),
            ready=self.readiness,
            metrics_text=self.metrics_text,
        )
        self.health_port = self._health.port
        self._health.start()
        self._housekeeper = threading.Thread(target=self._housekeeping, name="scp-housekeeping", daemon=True)
        self._housekeeper.start()
        if self._reporter is not None:
            self._reporter.start()
        self._started = True
        log.info(
            "listening",
            extra={
                "fields": {
                    "aeTitle": s.ae_title,
                    "port": self.port,
                    "tlsPort": self.tls_port,
                    "healthPort": self.health_port,
                    "storage": self.storage.description,
                    "taskId": self.task_id,
                }
            },
        )
        return self

    def stop(self, drain_seconds: float | None = None) -> None:
        """Stop accepting, let associations finish within the drain window, abort the rest, seal."""
        if not self._started or self._stopped.is_set():
            return
        drain = self.settings.drain_seconds if drain_seconds is None else drain_seconds
        drain_ends = time.monotonic() + drain
        self._draining.set()
        for server in self._servers:
            server.shutdown()  # stops the accept loop and closes the listening socket
        self.admission.close_waiting()  # connections that never asked for an association
        log.info("draining", extra={"fields": {"associations": self.sessions.count(), "drainSeconds": drain}})
        if not self.sessions.wait_empty(drain):
            remaining = self.sessions.all()
            log.warning("drain window over, aborting", extra={"fields": {"associations": len(remaining)}})
            for session in remaining:
                session.shutdown_requested = True
                session.assoc.abort()
            self.sessions.wait_empty(ABORT_GRACE_SECONDS)
        for session in self.sessions.all():  # only if an association thread is stuck
            if session.open_writer is not None:
                session.open_writer.seal("shutdown")
        if self.journal is not None:  # uploads and seals within what is left of the window
            self.journal.stop(max(0.0, drain_ends - time.monotonic()))
        self._stopped.set()
        if self._housekeeper:
            self._housekeeper.join()
        if self._reporter is not None:
            self._reporter.stop()
        self._emit_emf()
        if self._health:
            self._health.stop()
        _config.STORE_RECV_CHUNKED_DATASET, _config.LOG_HANDLER_LEVEL = self._saved_config
        log.info("stopped", extra={"fields": {"taskId": self.task_id}})

    def __enter__(self) -> StoreScp:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # --- status ---------------------------------------------------------------------------
    def readiness(self) -> tuple[bool, str]:
        if self._draining.is_set():
            return False, "draining"
        if self.journal is not None:  # storage being down is what the journal absorbs, to its limits
            refusal = self.journal.refusal()
            return (False, refusal) if refusal else (True, "ok")
        return self._storage_ready()

    def add_metrics_source(self, fetch: Callable[[], str]) -> None:
        """Another process's /metrics text (the workers'), summed into this one's."""
        self._metrics_sources.append(fetch)

    def metrics_text(self) -> str:
        own = self._own_metrics_text()
        if not self._metrics_sources:
            return own
        return combine_prometheus([own, *(fetch() for fetch in self._metrics_sources)])

    def _own_metrics_text(self) -> str:
        ready, _ = self.readiness()
        return self.metrics.prometheus(
            {
                "dicom_scp_active_associations": self.sessions.count(),
                "dicom_scp_pending_connections": self.admission.pending(),
                "dicom_scp_open_connections": self.admission.open_connections(),
                "dicom_scp_ready": 1 if ready else 0,
            }
        )

    def readiness_line(self) -> str:
        return json.dumps(
            {
                "event": "listening",
                "port": self.port,
                "tlsPort": self.tls_port,
                "healthPort": self.health_port,
            }
        )

    # --- internals ------------------------------------------------------------------------
    def _make_ae(self) -> AE:
        s = self.settings
        ae = AE(ae_title=s.ae_title)
        ae.maximum_associations = s.max_associations
        ae.acse_timeout = s.acse_timeout
        ae.dimse_timeout = s.dimse_timeout
        ae.network_timeout = s.network_timeout
        ae.maximum_pdu_size = s.max_pdu
        ae.require_called_aet = False  # AccessPolicy decides, with the precise reject reason
        ae.require_calling_aet = []
        ae.add_supported_context(VERIFICATION_SOP_CLASS, list(TRANSFER_SYNTAXES))
        for sop_class in accepted_sop_classes(s.sop_classes):
            ae.add_supported_context(sop_class, list(TRANSFER_SYNTAXES))
        if self.commitment is not None:
            ae.add_supported_context(STORAGE_COMMITMENT_PUSH_MODEL, scu_role=True, scp_role=True)
        return ae

    def _policy(self) -> AccessPolicy:
        s = self.settings
        return AccessPolicy(
            s.ae_title,
            require_called_ae=s.require_called_ae,
            allowed_calling_aes=s.allowed_calling_aes,
            allowed_cidrs=s.allowed_cidrs,
        )

    def _listen(self, ae: AE, port: int, ssl_context: Any, handlers: list, reuse_port: bool) -> GatewayServer:
        server = ae.make_server(
            (self.settings.bind_address, port),
            contexts=SharedContexts(ae.supported_contexts),
            ssl_context=ssl_context,
            evt_handlers=handlers,
            server_class=GatewayServer,
            request_handler=GatewayRequestHandler,
            sessions=self.sessions,
            admission=self.admission,
            reuse_port=reuse_port,
        )
        server.keepalive = KeepAlive.from_settings(self.settings)
        ae._servers.append(server)  # pynetdicom's server.shutdown() removes it from there
        name = "scp-accept-tls" if ssl_context else "scp-accept"
        threading.Thread(target=server.serve_forever, name=name, daemon=True).start()
        self._servers.append(server)
        return server

    def _make_writer(self, origin: Origin) -> BatchWriter:
        return BatchWriter(
            self.storage,
            replace(origin, task_id=self.task_id),
            self._limits,
            self._retry,
            on_sealed=self._on_sealed,
            on_manifest_failed=lambda batch_id: self.metrics.manifest_failed(),
            journal=self.journal,
        )

    def _on_sealed(self, manifest: BatchManifest) -> None:
        self.metrics.sealed(manifest.seal_reason)
        if self.commitment is not None:  # the instance index: received, waiting for the import
            try:
                self.commitment.table.received(
                    manifest.batch_id, [(i.sop_instance_uid, i.sop_class_uid) for i in manifest.instances]
                )
            except Exception:  # the workflow's result step writes the outcome anyway
                log.exception("instance index not written", extra={"fields": {"batchId": manifest.batch_id}})

    def _housekeeping(self) -> None:
        """Age rollover of idle-but-open associations, and the periodic EMF line."""
        next_emf = time.monotonic() + self.emf_interval
        while not self._stopped.wait(HOUSEKEEPING_TICK):
            for session in self.sessions.all():
                if session.open_writer is not None:
                    session.open_writer.seal_if_expired()
            if time.monotonic() >= next_emf:
                self._emit_emf()
                next_emf = time.monotonic() + self.emf_interval

    def _emit_emf(self) -> None:
        document = self.metrics.drain_emf(SCP_DIMENSIONS, {"TaskId": self.task_id})
        if document is not None:
            self.write_stdout(json.dumps(document))

    def write_stdout(self, line: str) -> None:
        with self._stdout_lock:
            self._stdout.write(line + "\n")
            self._stdout.flush()
