"""pynetdicom's association server, adapted for the gateway.

- ``GatewayServer`` can share its port with other worker processes (SO_REUSEPORT), and leaves
  the TLS handshake to the connection's thread: pynetdicom does it in the accept loop, where a
  peer that connects and sends nothing (a stalled client, a port scan) blocked every later
  connection to the TLS port for good.
- ``GatewayRequestHandler`` lets ``scp/admission.py`` read the connection's association request
  (TLS handshake included, within the ARTIM timeout); only then does a pynetdicom association
  exist. It sets TCP_NODELAY on every accepted socket (senders whose stacks keep Nagle on
  otherwise stall ~45 ms per image), attaches a session to the association, runs the association
  to its end in this connection's thread, then finishes the session (seals).
- ``on_requested`` (EVT_REQUESTED) applies the access policy and the per-peer connection limit,
  and sends the A-ASSOCIATE-RJ.
"""

from __future__ import annotations

import logging
import os
import socket
from typing import Any

from pynetdicom import evt
from pynetdicom.transport import RequestHandler, ThreadedAssociationServer

from scp.access import AccessPolicy, association_limit, peer_limit
from scp.admission import Admission, hand_over
from scp.association_loop import use_loop
from scp.keepalive import KeepAlive, enable_keepalive
from scp.metrics import Metrics
from scp.sessions import Sessions
from scp.upper_layer import guard

log = logging.getLogger("scp.network")


class SharedContexts(list):
    """The supported presentation contexts, shared by every association instead of copied.

    pynetdicom deep-copies the server's contexts for each new association; with every storage
    SOP class times every transfer syntax that costs ~0.3 s per association. Negotiation only
    reads them (the results are new objects), so one shared list is safe.
    """

    def __deepcopy__(self, memo: dict) -> list:
        return list(self)


class GatewayServer(ThreadedAssociationServer):
    daemon_threads = True  # StoreScp.stop drains and aborts associations itself
    keepalive: KeepAlive | None = None  # TCP keep-alive of accepted sockets, set by StoreScp._listen

    def __init__(
        self, *args: Any, sessions: Sessions, admission: Admission, reuse_port: bool = False, **kwargs: Any
    ):
        self.sessions = sessions
        self.admission = admission
        self.reuse_port = reuse_port
        super().__init__(*args, **kwargs)

    def server_bind(self) -> None:
        if self.reuse_port and hasattr(socket, "SO_REUSEPORT"):
            self.socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        super().server_bind()

    def get_request(self) -> tuple[socket.socket, Any]:
        client, address = self.socket.accept()
        if self.ssl_context:
            client = self.ssl_context.wrap_socket(client, server_side=True, do_handshake_on_connect=False)
        return client, address


class GatewayRequestHandler(RequestHandler):
    server: GatewayServer

    def handle(self) -> None:
        admission = self.server.admission
        peer = str(self.client_address[0])
        with admission.connection(peer):
            request = admission.receive_request(
                self.request, peer, tls_port=self.server.ssl_context is not None
            )
            if request is None:  # refused, logged and closed
                return
            try:
                self.request.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                enable_keepalive(self.request, self.server.keepalive)
            except OSError:  # the peer already went away
                return
            assoc = self._create_association()
            use_loop(assoc)  # after negotiation: scp/association_loop.py
            guard(assoc)
            hand_over(assoc, request)
            sessions = self.server.sessions
            sessions.attach(assoc, peer_address=peer)
            try:
                evt.trigger(assoc, evt.EVT_CONN_OPEN, {"address": self.client_address})
                assoc.start()
                assoc.join()
            finally:
                _discard_partial_spool(assoc)
                sessions.finish(assoc)


def _discard_partial_spool(assoc: Any) -> None:
    """A C-STORE cut off mid-transfer on the stock receive path leaves its spool file behind: remove it.

    (The association loop removes its own.)"""
    message = getattr(getattr(assoc, "dimse", None), "message", None)
    spool = getattr(message, "_data_set_file", None)
    if spool is not None:
        try:
            spool.close()
            os.unlink(spool.name)
        except OSError:
            pass


def on_requested(
    event: Any, policy: AccessPolicy, admission: Admission, sessions: Sessions, metrics: Metrics
) -> None:
    """EVT_REQUESTED: reject before negotiation when the peer may not associate (pynetdicom's own
    association limit stays as a backstop; this one says why in the log)."""
    assoc = event.assoc
    request = assoc.requestor.primitive
    calling, called = str(request.calling_ae_title).strip(), str(request.called_ae_title).strip()
    rejection = policy.check(called_ae=called, calling_ae=calling, peer_address=assoc.requestor.address)
    if rejection is None and sessions.count() > assoc.ae.maximum_associations:
        rejection = association_limit(assoc.ae.maximum_associations)
    if rejection is None and admission.peer_over_limit(assoc.requestor.address):
        rejection = peer_limit(admission.max_per_peer)
    if rejection is None:
        return
    metrics.association(f"rejected-{rejection.why}")
    log.warning(
        "association rejected",
        extra={
            "fields": {
                "event": "association",
                "outcome": f"rejected-{rejection.why}",
                "callingAeTitle": calling,
                "calledAeTitle": called,
                "peerAddress": assoc.requestor.address,
                "result": rejection.result,
                "source": rejection.source,
                "reason": rejection.reason,
                "detail": rejection.detail,
            }
        },
    )
    assoc.acse.send_reject(rejection.result, rejection.source, rejection.reason)
    assoc.kill()
