"""Connections before their association request: timed by ARTIM, bounded, refused with the reason.

A TCP connection is not an association until it has sent a well-formed A-ASSOCIATE-RQ (PS3.8
state Sta2). Port scanners, HTTP health probes, TLS clients on the plain port and broken peers
never get that far, yet pynetdicom starts an association for each and holds it, and its slot in
``max_associations``, until its ACSE timeout: 32 such connections refused every modality for a
minute. Here each connection reads its first PDU in its own thread, within the ARTIM timeout,
before any pynetdicom association exists:

- a well-formed A-ASSOCIATE-RQ is handed to pynetdicom already decoded (``hand_over``), as if
  its DUL had read it, so negotiation and everything after it is pynetdicom's;
- anything else is answered as PS3.8 9.2 says for Sta2: an A-ABORT for an unrecognized,
  unexpected or invalid PDU (AA-1), nothing for an A-ABORT, a closed connection or an expired
  ARTIM (AA-2, AA-5); the connection is closed at once (no wait in Sta13) and the reason logged;
- connections still waiting for their request are bounded (``max_pending``): past the bound the
  oldest waiting one is dropped, never an association;
- connections per peer address (waiting and associated) are counted for the optional per-peer
  limit, which ``scp/network.py`` applies with an A-ASSOCIATE-RJ once the request is read.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import ssl
import struct
import threading
import time
from collections import Counter, OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from pynetdicom.pdu import A_ABORT_RQ, A_ASSOCIATE_RQ

from scp.metrics import Metrics

log = logging.getLogger("scp.admission")

A_ASSOCIATE_RQ_TYPE = 0x01
A_ABORT_TYPE = 0x07
SHORTEST_REQUEST = 68  # the fixed fields of an A-ASSOCIATE-RQ (PS3.8 9.3.2)
LONGEST_REQUEST = 1024 * 1024  # 128 contexts x 30 transfer syntaxes is ~100 KB
READ_CHUNK = 64 * 1024  # memory follows the bytes that arrived, not the length a peer claims
SEND_TIMEOUT = 1.0  # for the A-ABORT we send to a peer that may not read it
# A-ABORT reasons with source 0x02, service provider (PS3.8 9.3.8)
UNRECOGNIZED_PDU = 0x01
UNEXPECTED_PDU = 0x02
INVALID_PDU_PARAMETER = 0x06
_PDU_NAMES = {
    0x02: "A-ASSOCIATE-AC",
    0x03: "A-ASSOCIATE-RJ",
    0x04: "P-DATA-TF",
    0x05: "A-RELEASE-RQ",
    0x06: "A-RELEASE-RP",
}
_HTTP_METHODS = (b"GET ", b"POST", b"HEAD", b"PUT ", b"OPTI", b"DELE", b"PATC", b"CONN", b"PRI ")


class Refused(Exception):
    """The connection sent no acceptable association request; ``abort``: the A-ABORT reason to send."""

    def __init__(self, reason: str, *, abort: int | None, quiet: bool = False, plaintext: bool = False):
        super().__init__(reason)
        self.abort = abort
        self.quiet = quiet  # the peer just went away or said nothing: INFO, not WARNING
        self.plaintext = plaintext  # a TLS socket before its handshake: the A-ABORT goes out unencrypted


def describe_first_bytes(header: bytes, *, tls_port: bool) -> Refused:
    """Why a first PDU header that is not an A-ASSOCIATE-RQ is refused, in words an operator can act on."""
    pdu_type = header[0]
    if pdu_type == 0x16 and header[1:2] == b"\x03":
        return Refused("a TLS handshake on the plain DICOM port: use the TLS port", abort=UNRECOGNIZED_PDU)
    if header[:4] in _HTTP_METHODS:
        where = "TLS" if tls_port else "DICOM"
        return Refused(f"an HTTP request on the {where} port: /healthz is on the health port", abort=None)
    if pdu_type == A_ABORT_TYPE:
        return Refused("A-ABORT before an association request", abort=None, quiet=True)
    if pdu_type in _PDU_NAMES:
        return Refused(f"{_PDU_NAMES[pdu_type]} before an association request", abort=UNEXPECTED_PDU)
    return Refused(f"unrecognized PDU type 0x{pdu_type:02X}", abort=UNRECOGNIZED_PDU)


def _read(sock: socket.socket, count: int, deadline: float, artim: float) -> bytes:
    """Exactly ``count`` bytes before ``deadline``; ``Refused`` when the peer stalls or goes away."""
    data = bytearray()
    while len(data) < count:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise Refused(f"no association request within the ARTIM timeout ({artim:g} s)", abort=None)
        try:
            sock.settimeout(remaining)
            chunk = sock.recv(min(count - len(data), READ_CHUNK))
        except TimeoutError:
            continue  # the deadline check above says so
        except (OSError, ssl.SSLError) as exc:
            raise Refused(f"connection failed: {exc}", abort=None, quiet=True) from None
        if not chunk:
            if data:
                raise Refused("closed inside its first PDU", abort=None, quiet=True)
            raise Refused("closed before sending an association request", abort=None, quiet=True)
        data += chunk
    return bytes(data)


def read_association_request(
    sock: socket.socket, deadline: float, artim: float, *, tls_port: bool
) -> A_ASSOCIATE_RQ:
    """Read and decode the first PDU, which must be an A-ASSOCIATE-RQ (PS3.8 Sta2, Evt6)."""
    header = _read(sock, 6, deadline, artim)
    pdu_type, _, length = struct.unpack(">BBL", header)
    if pdu_type != A_ASSOCIATE_RQ_TYPE:
        raise describe_first_bytes(header, tls_port=tls_port)
    if not SHORTEST_REQUEST <= length <= LONGEST_REQUEST:
        raise Refused(f"A-ASSOCIATE-RQ declares {length} bytes", abort=INVALID_PDU_PARAMETER)
    pdu = A_ASSOCIATE_RQ()
    data = header + _read(sock, length, deadline, artim)
    try:
        pdu.decode(data)
        pdu.to_primitive()  # what pynetdicom does next (AE-6): fails on items decode let through
    except Exception as exc:  # pynetdicom raises many kinds on malformed items
        reason = f"A-ASSOCIATE-RQ cannot be decoded ({type(exc).__name__})"
        raise Refused(reason, abort=INVALID_PDU_PARAMETER) from None
    return pdu


def send_abort(sock: socket.socket, reason: int, *, plaintext: bool = False) -> None:
    """A-ABORT from the service provider; best effort: the peer may not be reading."""
    pdu = A_ABORT_RQ()
    pdu.source = 0x02
    pdu.reason_diagnostic = reason
    send = socket.socket.sendall if plaintext else type(sock).sendall  # plaintext: past the TLS layer
    with contextlib.suppress(OSError, ssl.SSLError):
        sock.settimeout(SEND_TIMEOUT)
        send(sock, pdu.encode())


def close(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)
    with contextlib.suppress(OSError):
        sock.close()


def hand_over(assoc: Any, request: A_ASSOCIATE_RQ) -> None:
    """Queue the decoded request on a new association's DUL, as its own read would (Sta2 + Evt6)."""
    assoc.dul._recv_pdu.put(request)
    assoc.dul.event_queue.put("Evt6")


@dataclass
class _Waiting:
    sock: socket.socket
    dropped: bool = False


class Admission:
    """Every accepted connection of one process, from accept until its handler ends."""

    def __init__(self, metrics: Metrics, *, artim_timeout: float, max_pending: int, max_per_peer: int):
        self.metrics = metrics
        self.artim_timeout = artim_timeout
        self.max_pending = max_pending
        self.max_per_peer = max_per_peer  # 0: no limit
        self._lock = threading.Lock()
        self._waiting: OrderedDict[int, _Waiting] = OrderedDict()
        self._per_peer: Counter[str] = Counter()

    @contextlib.contextmanager
    def connection(self, peer: str) -> Iterator[None]:
        """Count a connection against its peer for as long as it is open."""
        with self._lock:
            self._per_peer[peer] += 1
        try:
            yield
        finally:
            with self._lock:
                self._per_peer[peer] -= 1
                if self._per_peer[peer] <= 0:
                    del self._per_peer[peer]

    def peer_over_limit(self, peer: str) -> bool:
        with self._lock:
            return bool(self.max_per_peer) and self._per_peer[peer] > self.max_per_peer

    def pending(self) -> int:
        with self._lock:
            return len(self._waiting)

    def open_connections(self) -> int:
        """Connections from accept until their handler ends (what the per-peer limit counts)."""
        with self._lock:
            return sum(self._per_peer.values())

    def receive_request(self, sock: socket.socket, peer: str, *, tls_port: bool) -> A_ASSOCIATE_RQ | None:
        """The peer's A-ASSOCIATE-RQ, or None once the connection was refused, logged and closed."""
        deadline = time.monotonic() + self.artim_timeout
        waiting = self._wait(sock)
        try:
            if isinstance(sock, ssl.SSLSocket):
                self._tls_handshake(sock, deadline)
            return read_association_request(sock, deadline, self.artim_timeout, tls_port=tls_port)
        except Refused as refused:
            reason = refused
            if waiting.dropped:
                reason = Refused(
                    f"dropped: more than {self.max_pending} connections without an association request",
                    abort=None,
                )
            self._refuse(sock, peer, reason, tls_port=tls_port)
            return None
        finally:
            with self._lock:
                self._waiting.pop(id(waiting), None)

    def close_waiting(self) -> None:
        """At shutdown: connections that never asked for an association are not waited for."""
        with self._lock:
            waiting = list(self._waiting.values())
        for entry in waiting:
            with contextlib.suppress(OSError):
                entry.sock.shutdown(socket.SHUT_RDWR)

    def _wait(self, sock: socket.socket) -> _Waiting:
        entry = _Waiting(sock)
        with self._lock:
            self._waiting[id(entry)] = entry
            oldest = None
            if len(self._waiting) > self.max_pending:
                _, oldest = self._waiting.popitem(last=False)
                oldest.dropped = True
        if oldest is not None:  # its own thread notices (its read fails) and logs why
            with contextlib.suppress(OSError):
                oldest.sock.shutdown(socket.SHUT_RDWR)
        return entry

    def _tls_handshake(self, sock: ssl.SSLSocket, deadline: float) -> None:
        """Complete the handshake within ARTIM; a plain DICOM or HTTP peer is told which port it reached."""
        try:
            sock.settimeout(max(deadline - time.monotonic(), 0.001))
            first = socket.socket.recv(sock, 6, socket.MSG_PEEK)  # the raw bytes, before TLS
        except TimeoutError:
            raise self._no_handshake() from None
        except OSError as exc:
            raise Refused(f"connection failed: {exc}", abort=None, quiet=True) from None
        if not first:
            raise Refused("closed before its TLS handshake", abort=None, quiet=True)
        if first[0] == A_ASSOCIATE_RQ_TYPE:
            raise Refused(  # it speaks DICOM: an A-ABORT it can show beats a reset
                "plain DICOM on the TLS port: use the plain port or enable TLS",
                abort=UNEXPECTED_PDU,
                plaintext=True,
            )
        if first[:4] in _HTTP_METHODS:
            raise describe_first_bytes(first, tls_port=True)
        try:
            sock.do_handshake()
        except TimeoutError:
            raise self._no_handshake() from None
        except (ssl.SSLEOFError, ConnectionError) as exc:
            raise Refused(f"closed during its TLS handshake: {exc}", abort=None, quiet=True) from None
        except (ssl.SSLError, OSError) as exc:  # e.g. no or an untrusted client certificate
            raise Refused(f"TLS handshake failed: {exc}", abort=None) from None

    def _no_handshake(self) -> Refused:
        return Refused(f"no TLS handshake within the ARTIM timeout ({self.artim_timeout:g} s)", abort=None)

    def _refuse(self, sock: socket.socket, peer: str, refused: Refused, *, tls_port: bool) -> None:
        if refused.abort is not None:
            send_abort(sock, refused.abort, plaintext=refused.plaintext)
        close(sock)
        self.metrics.connection_refused("quiet" if refused.quiet else "malformed")
        log.log(
            logging.INFO if refused.quiet else logging.WARNING,
            "connection refused",
            extra={
                "fields": {
                    "event": "connection",
                    "outcome": "refused",
                    "peerAddress": peer,
                    "port": "tls" if tls_port else "dicom",
                    "reason": str(refused),
                }
            },
        )
