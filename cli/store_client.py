"""A synchronous DICOM Upper Layer client for the SCU role: C-STORE and C-ECHO on one association.

Why not pynetdicom's ``AE.associate``: its requestor runs two background threads per association
that poll every millisecond, builds every command set as a pydicom Dataset and fires an event per
PDU; that costs 4-5 ms of Python CPU per C-STORE (docs/benchmarks/sender.md). Here the calling
thread drives one socket: it writes a request's command and dataset PDUs with one ``sendmsg`` over
memoryviews of the file's bytes, then blocks in ``recv_into`` until the response arrives. No
threads, no polling, no copies of the image per PDU.

pynetdicom still does everything outside that loop: the A-ASSOCIATE-RQ is built from its
primitives and PDU classes, the AC/RJ/ABORT decoded with them, the accepted contexts matched with
``negotiate_as_requestor``, command templates encoded and responses decoded with ``dsutils``.
Command elements, UID padding and PDV parsing are the wire helpers the SCP uses too
(core/dicom_wire.py).
"""

from __future__ import annotations

import functools
import socket
import ssl
import struct
from dataclasses import dataclass
from io import BytesIO
from pathlib import Path
from typing import BinaryIO, NoReturn

from pydicom.dataset import Dataset
from pynetdicom import PYNETDICOM_IMPLEMENTATION_UID, PYNETDICOM_IMPLEMENTATION_VERSION
from pynetdicom._globals import APPLICATION_CONTEXT_NAME
from pynetdicom.dsutils import decode, encode
from pynetdicom.pdu import (
    A_ABORT_RQ,
    A_ASSOCIATE_AC,
    A_ASSOCIATE_RJ,
    A_ASSOCIATE_RQ,
    A_RELEASE_RP,
    A_RELEASE_RQ,
)
from pynetdicom.pdu_primitives import (
    A_ABORT,
    A_ASSOCIATE,
    ImplementationClassUIDNotification,
    ImplementationVersionNameNotification,
    MaximumLengthNotification,
)
from pynetdicom.presentation import PresentationContext, negotiate_as_requestor

from core.dicom_support import VERIFICATION_SOP_CLASS as VERIFICATION
from core.dicom_wire import (
    C_ECHO_RQ,
    C_ECHO_RSP,
    C_STORE_RQ,
    C_STORE_RSP,
    DATASET_PRESENT,
    ELEMENT_HEADER,
    NO_DATASET,
    P_DATA_TF,
    PDU_HEADER,
    PDU_TYPES,
    command_set,
    element,
    pad_uid,
    pdata_pdus,
    pdv_items,
)

MAX_RECEIVED_PDU = 64 * 1024  # what we announce: responses are a few hundred bytes
CHUNK = 4 * 1024 * 1024  # dataset bytes read and sent per sendmsg (bounds memory for huge files)
PROBE_TIMEOUT = 3.0  # seconds for each look at what a port that is not DICOM speaks

_A_ASSOCIATE_AC, _A_ASSOCIATE_RJ = 0x02, 0x03
_A_RELEASE_RQ, _A_RELEASE_RP, _A_ABORT = 0x05, 0x06, 0x07


@dataclass(frozen=True)
class TlsFiles:
    """DICOM TLS client settings as plain data (picklable: worker processes build their own context)."""

    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None

    def context(self) -> ssl.SSLContext:
        cafile = str(self.ca_file) if self.ca_file else None
        context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=cafile)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        if self.cert_file and self.key_file:
            context.load_cert_chain(str(self.cert_file), str(self.key_file))
        return context


@dataclass(frozen=True)
class Peer:
    host: str
    port: int
    called_aet: str
    calling_aet: str = "DICOMCTL"
    tls: TlsFiles | None = None
    acse_timeout: float = 10.0  # association request and release
    dimse_timeout: float = 60.0  # waiting for a response
    network_timeout: float = 60.0  # a send that makes no progress


class AssociationFailed(Exception):
    """The peer could not be reached, rejected us, or accepted none of our contexts."""

    def __init__(self, kind: str, detail: str):
        super().__init__(detail)
        # "unreachable" | "rejected" | "aborted" | "no-contexts" | "tls", or the port does not
        # speak (plain) DICOM: "speaks-http" | "speaks-tls" | "not-tls"
        self.kind = kind
        self.detail = detail


class AssociationLost(Exception):
    """The association ended before a response arrived: peer abort or release, closed connection,
    timeout, or a protocol error (after which we aborted). The request may be sent again on a new one."""


class OtherProtocol(AssociationLost):
    """What came back is not DICOM but another protocol's answer (an HTTP response, a TLS record)."""

    def __init__(self, protocol: str):
        super().__init__(f"the peer answered in {protocol}, not DICOM")
        self.protocol = protocol


@dataclass(frozen=True)
class Response:
    status: int
    comment: str | None = None  # ErrorComment, when the peer sent one


class _CommandTemplate:
    """A request command set encoded once by pydicom; per message only the Message ID, the Affected
    SOP Instance UID (the last element) and the group length change."""

    def __init__(self, command_field: int, sop_class_uid: str, dataset_type: int):
        command = Dataset()
        command.AffectedSOPClassUID = sop_class_uid
        command.CommandField = command_field
        command.MessageID = 0
        if command_field == C_STORE_RQ:
            command.Priority = 0  # medium
        command.CommandDataSetType = dataset_type
        self.body = encode(command, True, True)  # everything after (0000,0000), before (0000,1000)
        self.message_id_at = self.body.index(ELEMENT_HEADER.pack(0x0000, 0x0110, 2)) + ELEMENT_HEADER.size

    def encode(self, message_id: int, sop_instance_uid: str | None = None) -> bytes:
        body = bytearray(self.body)
        struct.pack_into("<H", body, self.message_id_at, message_id)
        if sop_instance_uid is not None:
            body += element(0x1000, pad_uid(sop_instance_uid))
        return command_set(body)


@functools.lru_cache(maxsize=256)
def command_template(command_field: int, sop_class_uid: str) -> _CommandTemplate:
    dataset_type = DATASET_PRESENT if command_field == C_STORE_RQ else NO_DATASET
    return _CommandTemplate(command_field, sop_class_uid, dataset_type)


def _association_request(peer: Peer, contexts: list[PresentationContext]) -> bytes:
    primitive = A_ASSOCIATE()
    primitive.application_context_name = APPLICATION_CONTEXT_NAME
    primitive.calling_ae_title = peer.calling_aet
    primitive.called_ae_title = peer.called_aet
    primitive.presentation_context_definition_list = contexts
    maximum = MaximumLengthNotification()
    maximum.maximum_length_received = MAX_RECEIVED_PDU
    implementation = ImplementationClassUIDNotification()
    implementation.implementation_class_uid = PYNETDICOM_IMPLEMENTATION_UID
    version = ImplementationVersionNameNotification()
    version.implementation_version_name = PYNETDICOM_IMPLEMENTATION_VERSION
    primitive.user_information = [maximum, implementation, version]
    pdu = A_ASSOCIATE_RQ()
    pdu.from_primitive(primitive)
    return pdu.encode()


def _numbered(contexts: list[PresentationContext]) -> list[PresentationContext]:
    """Copies of ``contexts`` with presentation context ids 1, 3, 5, ... (PS3.8 9.3.2.2)."""
    numbered = []
    for index, context in enumerate(contexts):
        copy = PresentationContext()
        copy.context_id = 2 * index + 1
        copy.abstract_syntax = context.abstract_syntax
        copy.transfer_syntax = list(context.transfer_syntax)
        numbered.append(copy)
    return numbered


class Association:
    """One association as requestor, driven by the calling thread (not thread-safe: one per thread).

    ``Association.open(peer, contexts)`` connects and negotiates (AssociationFailed if that fails);
    ``c_store``/``c_echo`` send one request and wait for its response (AssociationLost if the
    association ends first); ``release()`` ends it cleanly; ``abort()`` at once. Use it as a
    context manager to release on exit.
    """

    def __init__(self, sock: socket.socket, peer: Peer, accepted: list[PresentationContext], max_pdu: int):
        self._sock = sock
        self._peer = peer
        self._tls = isinstance(sock, ssl.SSLSocket)
        self._contexts = {(c.abstract_syntax, c.transfer_syntax[0]): c.context_id for c in accepted}
        self._any_syntax = {c.abstract_syntax: c.context_id for c in accepted}
        self.max_pdu = max_pdu  # the peer's maximum PDU length (0 = unlimited)
        self._max_fragment = max(max_pdu - 6, 1) if max_pdu else CHUNK
        self._chunk = max(CHUNK // self._max_fragment, 1) * self._max_fragment
        self._buffer = bytearray()  # dataset bytes of the current chunk, reused between requests
        self._received = bytearray()  # bytes received and not yet parsed
        self._receive_buffer = bytearray(MAX_RECEIVED_PDU)
        self._message_id = 0
        self.is_established = True

    # -- association establishment and end -----------------------------------------------------

    @classmethod
    def open(cls, peer: Peer, contexts: list[PresentationContext]) -> Association:
        where = f"{peer.host}:{peer.port}"
        proposed = _numbered(contexts)
        request = _association_request(peer, proposed)
        try:
            sock = socket.create_connection((peer.host, peer.port), timeout=peer.acse_timeout)
        except OSError as exc:
            raise AssociationFailed("unreachable", f"cannot connect to {where} ({_why(exc)})") from None
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            if peer.tls:
                sock = peer.tls.context().wrap_socket(sock, server_hostname=peer.host)
            sock.sendall(request)
            pdu_type, pdu = _read_pdu(sock, bytearray(), bytearray(MAX_RECEIVED_PDU))
        except ssl.SSLError as exc:
            _abort_socket(sock)
            if exc.reason == "WRONG_VERSION_NUMBER":  # the answer to our ClientHello was not TLS
                raise AssociationFailed(
                    "not-tls", f"{where} does not speak TLS (it answered in plain text)"
                ) from None
            raise AssociationFailed("tls", f"TLS with {where} failed ({_why(exc)})") from None
        except OtherProtocol as exc:
            sock.close()
            raise _wrong_service(where, exc.protocol) from None
        except (OSError, AssociationLost) as exc:
            _abort_socket(sock)
            protocol = None if peer.tls else other_protocol(peer)  # dropped, or silent: ask why
            if protocol:
                raise _wrong_service(where, protocol) from None
            raise AssociationFailed(
                "aborted", f"{where} aborted the association request ({_why(exc)})"
            ) from None
        try:
            answer = {_A_ASSOCIATE_AC: A_ASSOCIATE_AC, _A_ASSOCIATE_RJ: A_ASSOCIATE_RJ}[pdu_type]()
            answer.decode(pdu)
            rsp = answer.to_primitive()
        except Exception:  # another PDU type, or one pynetdicom cannot decode
            _abort_socket(sock)
            detail = "aborted the association request" if pdu_type == _A_ABORT else "sent an unexpected PDU"
            raise AssociationFailed("aborted", f"{where} {detail}") from None
        if pdu_type == _A_ASSOCIATE_RJ:
            sock.close()
            raise AssociationFailed(
                "rejected",
                f"association rejected by {where} ({rsp.result_str}, source: {rsp.source_str}, "
                f"reason: {rsp.reason_str})",
            )
        results = negotiate_as_requestor(proposed, rsp.presentation_context_definition_results_list)
        accepted = [c for c in results if c.result == 0x00]
        if not accepted:
            _abort_socket(sock)
            raise AssociationFailed(
                "no-contexts", f"{where} accepted none of the proposed SOP class/transfer syntaxes"
            )
        max_pdu = next(
            (
                i.maximum_length_received
                for i in rsp.user_information
                if isinstance(i, MaximumLengthNotification)
            ),
            0,
        )
        return cls(sock, peer, accepted, max_pdu)

    def release(self) -> None:
        """A-RELEASE-RQ, wait (ACSE timeout) for A-RELEASE-RP; abort if it does not come."""
        if not self.is_established:
            return
        try:
            self._sock.settimeout(self._peer.acse_timeout)
            self._sock.sendall(A_RELEASE_RQ().encode())
            while True:
                pdu_type, _ = self._read(self._peer.acse_timeout, "release response")
                if pdu_type in (_A_RELEASE_RP, _A_ABORT):
                    break
                if pdu_type == _A_RELEASE_RQ:  # release collision: answer and close
                    self._sock.sendall(A_RELEASE_RP().encode())
                    break
        except (OSError, AssociationLost):
            self.abort()
            return
        self._close()

    def abort(self) -> None:
        if self.is_established:
            _abort_socket(self._sock)
            self.is_established = False

    def __enter__(self) -> Association:
        return self

    def __exit__(self, *exc_info) -> None:
        self.release()

    def _close(self) -> None:
        self.is_established = False
        self._sock.close()

    # -- DIMSE ----------------------------------------------------------------------------------

    def context_id(self, sop_class_uid: str, transfer_syntax_uid: str) -> int | None:
        """The accepted presentation context for this SOP class sent in this transfer syntax."""
        return self._contexts.get((sop_class_uid, transfer_syntax_uid))

    def c_echo(self) -> Response:
        context_id = self._any_syntax.get(VERIFICATION)
        if context_id is None:
            raise ValueError("the peer did not accept the Verification SOP class")
        message_id = self._next_message_id()
        command = command_template(C_ECHO_RQ, VERIFICATION).encode(message_id)
        self._send(pdata_pdus(context_id, memoryview(command), True, self._max_fragment, True))
        return self._response(message_id, C_ECHO_RSP)

    def c_store(
        self, context_id: int, sop_class_uid: str, sop_instance_uid: str, source: BinaryIO, length: int
    ) -> Response:
        """Send ``length`` dataset bytes read from ``source`` (positioned after the file meta).

        OSError when ``source`` cannot be read (the association is aborted if the request was
        already on its way); AssociationLost when the association ends before the response.
        """
        message_id = self._next_message_id()
        command = command_template(C_STORE_RQ, sop_class_uid).encode(message_id, sop_instance_uid)
        parts = pdata_pdus(context_id, memoryview(command), True, self._max_fragment, True)
        remaining = length
        while True:
            view = self._read_chunk(source, min(remaining, self._chunk), started=len(parts) == 0)
            remaining -= len(view)
            parts += pdata_pdus(context_id, view, False, self._max_fragment, remaining == 0)
            self._send(parts)
            parts = []
            if remaining == 0:
                return self._response(message_id, C_STORE_RSP)

    def _next_message_id(self) -> int:
        self._message_id = self._message_id % 0xFFFF + 1
        return self._message_id

    def _read_chunk(self, source: BinaryIO, size: int, started: bool) -> memoryview:
        if len(self._buffer) < size:
            self._buffer = bytearray(size)
        view = memoryview(self._buffer)[:size]
        done = 0
        try:
            while done < size:
                count = source.readinto(view[done:])
                if not count:
                    raise OSError(f"the file ended {size - done} bytes early")
                done += count
        except OSError:
            if started:  # part of the request is out: it cannot be completed
                self.abort()
            raise
        return view

    def _send(self, parts: list) -> None:
        self._sock.settimeout(self._peer.network_timeout)
        try:
            if self._tls:  # SSLSocket has no sendmsg: one write, split into records by ssl
                self._sock.sendall(b"".join(parts))
                return
            while parts:
                sent = self._sock.sendmsg(parts[:1024])  # IOV_MAX
                while sent:
                    first = len(parts[0])
                    if sent >= first:
                        sent -= first
                        del parts[0]
                    else:
                        parts[0] = memoryview(parts[0])[sent:]
                        sent = 0
                while parts and not len(parts[0]):
                    del parts[0]
        except OSError as exc:
            self.abort()
            raise AssociationLost(f"sending failed ({_why(exc)})") from None

    def _response(self, message_id: int, command_field: int) -> Response:
        """Read P-DATA-TF PDUs until the response command is complete (and any dataset after it)."""
        command = bytearray()
        rsp: Dataset | None = None
        while True:
            pdu_type, pdu = self._read(self._peer.dimse_timeout, "response")
            if pdu_type != P_DATA_TF:
                self._association_ended(pdu_type, pdu)
            try:
                for is_command, last, fragment in _pdvs(pdu):
                    if is_command and rsp is None:
                        command += fragment
                        if last:
                            rsp = _decode_response(command, command_field, message_id)
                    elif not is_command and rsp is not None and rsp.CommandDataSetType != NO_DATASET:
                        if last:  # a dataset in a C-STORE/C-ECHO response means nothing to us
                            rsp.CommandDataSetType = NO_DATASET
                    else:
                        raise AssociationLost("protocol error: unexpected presentation data value")
            except AssociationLost:
                self.abort()
                raise
            if rsp is not None and rsp.CommandDataSetType == NO_DATASET:
                comment = rsp.get("ErrorComment")
                return Response(int(rsp.Status), str(comment) if comment else None)

    def _association_ended(self, pdu_type: int, pdu: bytes) -> NoReturn:
        if pdu_type == _A_ABORT:
            self._close()
            abort = A_ABORT_RQ()
            abort.decode(pdu)
            why = f"{abort.source_str}: {abort.reason_str}" if abort.source == 0x02 else abort.source_str
            raise AssociationLost(f"the peer aborted the association ({why})")
        if pdu_type == _A_RELEASE_RQ:
            try:
                self._sock.sendall(A_RELEASE_RP().encode())
            except OSError:
                pass
            self._close()
            raise AssociationLost("the peer released the association")
        self.abort()
        raise AssociationLost(f"protocol error: unexpected PDU type 0x{pdu_type:02X}")

    def _read(self, timeout: float, waiting_for: str) -> tuple[int, bytes]:
        """The next PDU; on a timeout, a lost connection or a malformed PDU: abort, AssociationLost."""
        self._sock.settimeout(timeout)
        try:
            return _read_pdu(self._sock, self._received, self._receive_buffer)
        except TimeoutError:
            self.abort()
            raise AssociationLost(f"no {waiting_for} within {timeout:g} s") from None
        except OSError as exc:
            self.abort()
            raise AssociationLost(f"connection lost ({_why(exc)})") from None
        except AssociationLost:
            self.abort()
            raise


def _decode_response(command: bytearray, command_field: int, message_id: int) -> Dataset:
    try:
        rsp = decode(BytesIO(bytes(command)), True, True)
    except Exception as exc:  # pydicom raises several types on garbage
        raise AssociationLost(f"protocol error: undecodable response ({exc})") from None
    if (
        rsp.get("CommandField") != command_field
        or rsp.get("MessageIDBeingRespondedTo") != message_id
        or "Status" not in rsp
    ):
        raise AssociationLost("protocol error: a response that does not answer our request")
    if "CommandDataSetType" not in rsp:
        rsp.CommandDataSetType = NO_DATASET
    return rsp


def _pdvs(pdu: bytes):
    """(is command, is last fragment, fragment) for each PDV item of a P-DATA-TF PDU."""
    try:
        for _, value in pdv_items(memoryview(pdu)[PDU_HEADER.size :]):
            yield bool(value[0] & 0x01), bool(value[0] & 0x02), value[1:]
    except ValueError:
        raise AssociationLost("protocol error: malformed presentation data value") from None


def _other_protocol(header: bytes) -> str | None:
    """An HTTP status line (a web or health port) or a TLS record (a TLS port) instead of a PDU."""
    if header.startswith(b"HTTP/"):
        return "HTTP"
    if header[0] in (0x15, 0x16) and header[1] == 0x03:  # TLS alert / handshake record, version 3.x
        return "TLS"
    return None


def _wrong_service(where: str, protocol: str) -> AssociationFailed:
    return AssociationFailed(
        f"speaks-{protocol.lower()}", f"this port ({where}) speaks {protocol}, not DICOM"
    )


def other_protocol(peer: Peer) -> str | None:
    """ "HTTP" or "TLS" when the port speaks that; asked only after a plain association request got
    no answer (an HTTP server waits for a line end, a TLS server drops the bytes), to say why."""
    if _speaks_http(peer):
        return "HTTP"
    return "TLS" if _speaks_tls(peer) else None


def _speaks_http(peer: Peer) -> bool:
    try:
        with socket.create_connection((peer.host, peer.port), timeout=PROBE_TIMEOUT) as probe:
            probe.sendall(f"HEAD / HTTP/1.0\r\nHost: {peer.host}\r\n\r\n".encode())
            return probe.recv(5) == b"HTTP/"
    except OSError:
        return False


def _speaks_tls(peer: Peer) -> bool:
    """Whether the port completes (or answers with an alert) a TLS handshake."""
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    try:
        with (
            socket.create_connection((peer.host, peer.port), timeout=PROBE_TIMEOUT) as raw,
            context.wrap_socket(raw, server_hostname=peer.host),
        ):
            return True
    except ssl.SSLError as exc:  # an alert (e.g. a client certificate required) is TLS talking
        return "ALERT" in str(exc.reason or "")
    except OSError:
        return False


def _read_pdu(sock: socket.socket, received: bytearray, buffer: bytearray) -> tuple[int, bytes]:
    """The next whole PDU (header included) from ``sock``; ``received`` keeps what follows it."""
    header = _take(sock, received, buffer, PDU_HEADER.size)
    pdu_type, length = PDU_HEADER.unpack(header)
    if pdu_type not in PDU_TYPES or length > MAX_RECEIVED_PDU:
        protocol = _other_protocol(header)
        if protocol:
            raise OtherProtocol(protocol)
        raise AssociationLost(f"protocol error: PDU type 0x{pdu_type:02X}, {length} bytes")
    return pdu_type, header + _take(sock, received, buffer, length)


def _take(sock: socket.socket, received: bytearray, buffer: bytearray, size: int) -> bytes:
    while len(received) < size:
        count = sock.recv_into(buffer)
        if not count:
            raise AssociationLost("the peer closed the connection")
        received += memoryview(buffer)[:count]
    taken = bytes(received[:size])
    del received[:size]
    return taken


def _abort_socket(sock: socket.socket) -> None:
    """A-ABORT (service user) if the socket still takes it, then close."""
    abort = A_ABORT()
    abort.abort_source = 0x00
    pdu = A_ABORT_RQ()
    pdu.from_primitive(abort)
    try:
        sock.settimeout(1.0)
        sock.sendall(pdu.encode())
    except OSError:
        pass
    finally:
        sock.close()


def _why(exc: BaseException) -> str:
    if isinstance(exc, socket.timeout):
        return "timed out"
    if isinstance(exc, ssl.SSLError):
        return str(exc.reason or exc)
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return str(exc) or type(exc).__name__


__all__ = [
    "Association",
    "AssociationFailed",
    "AssociationLost",
    "OtherProtocol",
    "Peer",
    "Response",
    "TlsFiles",
]
