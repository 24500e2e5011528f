"""After negotiation, one loop per association serves its messages itself (PS3.7 / PS3.8).

pynetdicom negotiates the association (presentation contexts, extended negotiation, role
selection, user identity) and sends the A-ASSOCIATE-AC; its DUL thread then stops before it
reads another byte (``scp/upper_layer.py``) and this loop takes the socket, in the association's
own thread: whole PDUs are read into one buffer, command sets are decoded by a small decoder
(no pydicom Dataset per message), responses are encoded straight to bytes, and each C-STORE
dataset is spooled, hashed and walked for completeness as its fragments arrive
(``scp/spool.py``). No queue, no second thread, no polling per message: per image the SCP's
CPU went from ~4.4 ms with pynetdicom's machinery to the figure in docs/benchmarks/scp.md.

Served: C-ECHO, C-STORE (through the handler bound to ``EVT_C_STORE``: ``scp/store.py``) and the
Storage Commitment N-ACTION (through the handler bound to ``EVT_N_ACTION``: ``scp/commitment.py``);
the commitment reporter's N-EVENT-REPORT goes out on the requesting association through
``send_n_event_report``, from the reporter's thread, and its response is read here. Any other
request on an accepted context gets 0x0211 (unrecognized operation) with an Error Comment, its
dataset read and dropped. PS3.8 for everything else: A-RELEASE-RQ is answered with
A-RELEASE-RP and the connection closed; an A-ABORT closes it; an unexpected or invalid PDU (a
second A-ASSOCIATE-RQ, a P-DATA longer than our maximum PDU, a PDV that runs past its PDU, a
fragment on a context that was not accepted, a dataset without its command) is answered with an
A-ABORT (source 2) and the connection closed at once; silence for ``network_timeout`` aborts.

pynetdicom's stock receive path stays behind ``DICOM_SCP_STOCK_RECEIVE=1`` for comparisons
(``make bench``), and this loop is used only with the pynetdicom version it was written against.
A TLS association that negotiated Storage Commitment stays on pynetdicom's reactor too: the report
would be written from the reporter's thread while this loop reads, and an OpenSSL connection must
not be used from two threads at once.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import ssl
import struct
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from io import BytesIO
from typing import Any

import pynetdicom
from pydicom.dataset import Dataset
from pydicom.uid import UID
from pynetdicom import evt
from pynetdicom.association import Association
from pynetdicom.dsutils import decode, encode

from core import dicom_wire
from core.commitment import STORAGE_COMMITMENT_PUSH_MODEL
from scp.admission import INVALID_PDU_PARAMETER, UNEXPECTED_PDU, UNRECOGNIZED_PDU
from scp.spool import SpoolWriter

log = logging.getLogger("scp.association_loop")

SUPPORTED_VERSION = "3.0.4"
STOCK_ENV = "DICOM_SCP_STOCK_RECEIVE"
UNLIMITED_PDU_CEILING = 256 * 1024 * 1024  # SCP_MAX_PDU=0 (unlimited) still has a ceiling
_QUICKACK = getattr(socket, "TCP_QUICKACK", None)  # Linux
_A_RELEASE_RQ, _A_RELEASE_RP, _A_ABORT = 0x05, 0x06, 0x07
_RELEASE_RP = struct.pack(">BBLL", _A_RELEASE_RP, 0, 4, 0)
_US = struct.Struct("<H")
UNRECOGNIZED_OPERATION = 0x0211
MAX_COLLECTED = 64 * 1024 * 1024  # an N-ACTION's Action Information: 500,000 references are ~60 MB
# Command elements (group 0000) read from requests and written to responses (PS3.7 E.1)
_AFFECTED_SOP_CLASS, _COMMAND_FIELD, _MESSAGE_ID, _MESSAGE_ID_RESPONDED = 0x0002, 0x0100, 0x0110, 0x0120
_DATASET_TYPE, _STATUS, _ERROR_COMMENT, _AFFECTED_SOP_INSTANCE = 0x0800, 0x0900, 0x0902, 0x1000
_REQUESTED_SOP_CLASS, _REQUESTED_SOP_INSTANCE, _EVENT_TYPE, _ACTION_TYPE = 0x0003, 0x1001, 0x1002, 0x1008


def enabled() -> bool:
    return pynetdicom.__version__ == SUPPORTED_VERSION and os.environ.get(STOCK_ENV, "") in ("", "0")


def use_loop(assoc: Association) -> bool:
    """Make a new acceptor association (not started) serve its messages with ``AssociationLoop``.

    False, leaving the association as pynetdicom made it, when the loop is switched off.
    """
    if not enabled():
        return False
    # Read by scp/upper_layer.py's state machine when it sends the A-ASSOCIATE-AC.
    assoc.dul.hand_off_when_established = lambda: loop_serves(assoc)
    assoc.__class__ = LoopAssociation
    return True


def loop_serves(assoc: Association) -> bool:
    """Every association, except a TLS one that negotiated Storage Commitment (see the module doc)."""
    if not isinstance(assoc.dul.socket.socket, ssl.SSLSocket):
        return True
    return all(str(cx.abstract_syntax) != STORAGE_COMMITMENT_PUSH_MODEL for cx in assoc._accepted_cx.values())


class LoopAssociation(Association):
    """pynetdicom's acceptor, except that an established C-ECHO/C-STORE association is served by our loop."""

    def _run_reactor(self) -> None:
        if not loop_serves(self):
            super()._run_reactor()  # pynetdicom's own reactor, DUL and DIMSE
            return
        self.dul.join(self.acse_timeout)  # it stops once the A-ASSOCIATE-AC is out
        if self.dul.is_alive():
            log.error("the DUL did not hand the association over; aborting it")
            self.abort()
            return
        AssociationLoop(self).serve()


class _Abort(Exception):
    """The peer broke the protocol: A-ABORT (source 2) with ``reason``, then close."""

    def __init__(self, reason: int, why: str):
        super().__init__(why)
        self.reason = reason


class _Closed(Exception):
    """The connection ended (peer closed, reset, or our own abort from another thread)."""


def decode_command(data: bytes | bytearray) -> dict[int, bytes]:
    """Command set bytes (Implicit VR Little Endian, group 0000) -> {element: value}."""
    fields: dict[int, bytes] = {}
    offset, size = 0, len(data)
    while offset < size:
        if offset + 8 > size:
            raise _Abort(INVALID_PDU_PARAMETER, "a command element runs past the command set")
        group, element, length = dicom_wire.ELEMENT_HEADER.unpack_from(data, offset)
        end = offset + 8 + length
        if group != 0x0000 or end > size:
            raise _Abort(INVALID_PDU_PARAMETER, "a command set element is not of group 0000")
        fields[element] = bytes(data[offset + 8 : end])
        offset = end
    return fields


def _text(value: bytes | None) -> str:
    return (value or b"").decode("ascii", "replace").rstrip("\0 ")


def _us(value: bytes) -> int:
    if len(value) != 2:
        raise _Abort(INVALID_PDU_PARAMETER, "a US command element that is not 2 bytes")
    return _US.unpack(value)[0]


def response(request: dict[int, bytes], status: int, comment: str | None = None) -> bytes:
    """The response command set (PS3.7 9.3 / 10.3) to a request, status only (no dataset)."""
    body = bytearray()
    sop_class = request.get(_AFFECTED_SOP_CLASS, request.get(_REQUESTED_SOP_CLASS))
    if sop_class is not None:
        body += dicom_wire.element(_AFFECTED_SOP_CLASS, sop_class)
    body += dicom_wire.element(_COMMAND_FIELD, _US.pack(_us(request[_COMMAND_FIELD]) | 0x8000))
    body += dicom_wire.element(_MESSAGE_ID_RESPONDED, request[_MESSAGE_ID])
    body += dicom_wire.element(_DATASET_TYPE, _US.pack(dicom_wire.NO_DATASET))
    body += dicom_wire.element(_STATUS, _US.pack(status))
    if comment:
        text = comment.encode("ascii", "replace")[:64]
        body += dicom_wire.element(_ERROR_COMMENT, text + b" " if len(text) % 2 else text)
    sop_instance = request.get(_AFFECTED_SOP_INSTANCE, request.get(_REQUESTED_SOP_INSTANCE))
    if sop_instance is not None:
        body += dicom_wire.element(_AFFECTED_SOP_INSTANCE, sop_instance)
    if _ACTION_TYPE in request:  # N-ACTION-RSP: C(=), the request's (PS3.7 10.1.4.1.3)
        body += dicom_wire.element(_ACTION_TYPE, request[_ACTION_TYPE])
    return dicom_wire.command_set(body)


def event_report_request(message_id: int, class_uid: str, instance_uid: str, event_type: int) -> bytes:
    """The N-EVENT-REPORT-RQ command set (PS3.7 10.3.1), with a dataset (the Event Information)."""
    return dicom_wire.command_set(
        dicom_wire.element(_AFFECTED_SOP_CLASS, dicom_wire.pad_uid(class_uid))
        + dicom_wire.element(_COMMAND_FIELD, _US.pack(dicom_wire.N_EVENT_REPORT_RQ))
        + dicom_wire.element(_MESSAGE_ID, _US.pack(message_id))
        + dicom_wire.element(_DATASET_TYPE, _US.pack(dicom_wire.DATASET_PRESENT))
        + dicom_wire.element(_AFFECTED_SOP_INSTANCE, dicom_wire.pad_uid(instance_uid))
        + dicom_wire.element(_EVENT_TYPE, _US.pack(event_type))
    )


@dataclass(frozen=True)
class StoreRequest:
    """What ``scp/store.py`` reads from a C-STORE request (pynetdicom's primitive has the same names)."""

    AffectedSOPClassUID: str
    AffectedSOPInstanceUID: str
    spooled: Any


@dataclass(frozen=True)
class AcceptedContext:
    context_id: int
    abstract_syntax: str
    transfer_syntax: str

    @property
    def encoding(self) -> tuple[bool, bool, bool]:
        """(implicit VR, little endian, deflated): how pynetdicom's dsutils encode/decode its datasets."""
        syntax = UID(self.transfer_syntax)
        return syntax.is_implicit_VR, syntax.is_little_endian, syntax.is_deflated


@dataclass(frozen=True)
class StoreEvent:
    """The parts of pynetdicom's EVT_C_STORE event that ``scp/store.py`` uses."""

    assoc: Any
    request: StoreRequest
    context: AcceptedContext


@dataclass(frozen=True)
class ActionRequest:
    """What ``scp/commitment.py`` reads from an N-ACTION request (pynetdicom's names)."""

    ActionTypeID: int | None
    RequestedSOPInstanceUID: str


@dataclass(frozen=True)
class ActionEvent:
    """The parts of pynetdicom's EVT_N_ACTION event that ``scp/commitment.py`` uses."""

    assoc: Any
    request: ActionRequest
    context: AcceptedContext
    encoded_information: bytes | None

    @property
    def action_information(self) -> Dataset | None:
        """The Action Information, decoded on demand (an undecodable one raises, as in pynetdicom)."""
        if self.encoded_information is None:
            return None
        return decode(BytesIO(self.encoded_information), *self.context.encoding)


class _Discard:
    """The dataset of a message we do not use."""

    def write(self, data: Any) -> None:
        pass

    def abandon(self) -> None:
        pass


class _Collect:
    """A small dataset (the N-ACTION's Action Information) kept in memory."""

    def __init__(self) -> None:
        self.data = bytearray()

    def write(self, data: Any) -> None:
        if len(self.data) + len(data) > MAX_COLLECTED:
            raise _Abort(INVALID_PDU_PARAMETER, f"an N-ACTION dataset over {MAX_COLLECTED} bytes")
        self.data += data

    def abandon(self) -> None:
        self.data = bytearray()


@dataclass
class _Pending:
    """A request whose dataset is arriving, and what to do once it is all here."""

    request: dict[int, bytes]
    context: AcceptedContext
    sink: Any  # write(fragment), abandon()
    complete: Callable[[dict[int, bytes], AcceptedContext, Any], None]


@dataclass
class _Awaited:
    """Our N-EVENT-REPORT-RQ, waiting for its response (read by the loop's thread)."""

    message_id: int
    done: threading.Event = field(default_factory=threading.Event)
    status: int | None = None


class AssociationLoop:
    def __init__(self, assoc: Association):
        self.assoc = assoc
        self.sock: socket.socket = assoc.dul.socket.socket
        self.contexts = {
            cid: AcceptedContext(cid, str(cx.abstract_syntax), str(cx.transfer_syntax[0]))
            for cid, cx in assoc._accepted_cx.items()
        }
        self.max_pdu = int(assoc.acceptor.maximum_length or UNLIMITED_PDU_CEILING)
        self.buffer = bytearray(self.max_pdu + 6)
        self.view = memoryview(self.buffer)
        self.waitall = not isinstance(self.sock, ssl.SSLSocket)
        self.quickack = _QUICKACK is not None and self.waitall
        peer_pdu = int(assoc.requestor.maximum_length or 0)  # 0: no limit (PS3.8 D.1)
        self.max_fragment = peer_pdu - 6 if peer_pdu > 6 else 1024 * 1024
        self._send_lock = threading.Lock()
        self._command = bytearray()
        self._command_context = 0
        self._pending: _Pending | None = None
        self._services: dict[int, Callable[[dict[int, bytes], AcceptedContext], None]] = {
            dicom_wire.C_ECHO_RQ: self._echo,
        }
        store, action = assoc.get_handlers(evt.EVT_C_STORE), assoc.get_handlers(evt.EVT_N_ACTION)
        self._store_handler: tuple[Callable, list] | None = tuple(store) if store else None  # type: ignore[assignment]
        self._action_handler: tuple[Callable, list] | None = tuple(action) if action else None  # type: ignore[assignment]
        self._report_lock = threading.Lock()  # one N-EVENT-REPORT outstanding at a time
        self._message_id = 0
        self._awaited: _Awaited | None = None

    # --- the loop -------------------------------------------------------------------------------
    def serve(self) -> None:
        """Serve until release, abort or the network timeout; leaves the association's flags set."""
        assoc = self.assoc
        assoc.abort = self.abort  # our shutdown and pynetdicom's kill() reach this loop
        assoc.send_n_event_report = self.send_n_event_report  # the commitment reporter's
        try:
            self._set_timeouts(assoc.network_timeout)
            while True:
                pdu_type, length = self._read_pdu()
                if pdu_type == dicom_wire.P_DATA_TF:
                    self._presentation_data(length)
                elif pdu_type == _A_RELEASE_RQ:
                    self._send(_RELEASE_RP)
                    assoc.is_released = True
                    return
                elif pdu_type == _A_ABORT:
                    assoc.is_aborted = True
                    return
                elif pdu_type in dicom_wire.PDU_TYPES:
                    raise _Abort(UNEXPECTED_PDU, f"unexpected PDU type 0x{pdu_type:02X}")
                else:
                    raise _Abort(UNRECOGNIZED_PDU, f"unrecognized PDU type 0x{pdu_type:02X}")
        except _Abort as exc:
            log.warning(
                "association aborted: invalid or unexpected PDU",
                extra={"fields": {"reason": str(exc), "peerAddress": assoc.requestor.address}},
            )
            self._send_abort(source=0x02, reason=exc.reason)
        except TimeoutError:
            log.info("network timeout reached, aborting the association")
            self._send_abort(source=0x00, reason=0x00)
        except _Closed:
            assoc.is_aborted = True
        finally:
            self._abandon_pending()
            assoc.is_established = False
            awaited = self._awaited
            if awaited is not None:  # a reporter waiting for a response that cannot come
                awaited.done.set()
            with contextlib.suppress(OSError):
                self.sock.shutdown(socket.SHUT_RDWR)
            with contextlib.suppress(OSError):
                self.sock.close()

    def abort(self) -> None:
        """From another thread (shutdown): A-ABORT (service user) and end the loop."""
        self._send_abort(source=0x00, reason=0x00)
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)

    # --- reading --------------------------------------------------------------------------------
    def _read_pdu(self) -> tuple[int, int]:
        """The next PDU's type and length; its body is in ``self.view[:length]``."""
        header = self._read_into(0, 6)
        pdu_type, length = dicom_wire.PDU_HEADER.unpack_from(header)
        if pdu_type == dicom_wire.P_DATA_TF and length > self.max_pdu:
            raise _Abort(INVALID_PDU_PARAMETER, f"P-DATA-TF of {length} bytes, over our maximum PDU")
        if pdu_type != dicom_wire.P_DATA_TF and length > 1024 * 1024:
            raise _Abort(INVALID_PDU_PARAMETER, f"PDU type 0x{pdu_type:02X} of {length} bytes")
        self._read_into(0, length)
        return pdu_type, length

    def _set_timeouts(self, seconds: float | None) -> None:
        """A plain socket blocks, with the network timeout as SO_RCVTIMEO/SO_SNDTIMEO: then one
        ``recv_into(..., MSG_WAITALL)`` reads a whole PDU (Python's own timeout mode polls before
        every read and returns whatever has arrived: ~12 reads and 12 polls per 0.5 MB image,
        against 5 reads). A TLS socket keeps Python's timeout (OpenSSL reads records)."""
        if not self.waitall:
            self.sock.settimeout(seconds)
            return
        self.sock.settimeout(None)
        if seconds:
            whole = int(seconds)
            timeval = struct.pack("ll", whole, int((seconds - whole) * 1_000_000))
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, timeval)
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, timeval)

    def _read_into(self, start: int, count: int) -> memoryview:
        view, sock = self.view, self.sock
        if self.quickack:  # a sender that keeps Nagle on otherwise waits for our delayed ACK
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_TCP, _QUICKACK, 1)
        flags = socket.MSG_WAITALL if self.waitall else 0
        received = start
        end = start + count
        while received < end:
            try:
                got = sock.recv_into(view[received:end], end - received, flags)
            except (ConnectionError, ssl.SSLError) as exc:
                raise _Closed() from exc
            except OSError as exc:
                if isinstance(exc, TimeoutError | BlockingIOError):  # SO_RCVTIMEO: EAGAIN
                    raise TimeoutError() from exc
                raise _Closed() from exc
            if not got:
                raise _Closed()
            received += got
        return view[start:end]

    def _presentation_data(self, length: int) -> None:
        try:
            for context_id, value in dicom_wire.pdv_items(self.view[:length]):
                if context_id not in self.contexts:
                    raise _Abort(INVALID_PDU_PARAMETER, f"presentation context {context_id} was not accepted")
                control = value[0]
                if control & 1:
                    self._command_fragment(context_id, control, value[1:])
                else:
                    self._dataset_fragment(context_id, control, value[1:])
        except ValueError as exc:  # an item that runs past its PDU
            raise _Abort(INVALID_PDU_PARAMETER, str(exc)) from None

    def _command_fragment(self, context_id: int, control: int, fragment: memoryview) -> None:
        if self._pending is not None:
            raise _Abort(UNEXPECTED_PDU, "a command where the previous request's dataset was due")
        if self._command and context_id != self._command_context:
            raise _Abort(UNEXPECTED_PDU, "a command continued on another presentation context")
        self._command_context = context_id
        self._command += fragment
        if not control & 2:
            return
        request = decode_command(self._command)
        self._command = bytearray()
        self._request(request, self.contexts[context_id])

    def _dataset_fragment(self, context_id: int, control: int, fragment: memoryview) -> None:
        pending = self._pending
        if pending is None or pending.context.context_id != context_id:
            raise _Abort(UNEXPECTED_PDU, "a dataset without its command")
        pending.sink.write(fragment)
        if control & 2:
            self._pending = None
            pending.complete(pending.request, pending.context, pending.sink)

    # --- the services ---------------------------------------------------------------------------
    def _request(self, request: dict[int, bytes], context: AcceptedContext) -> None:
        if _COMMAND_FIELD not in request or _DATASET_TYPE not in request:
            raise _Abort(INVALID_PDU_PARAMETER, "a message without its command field or data set type")
        command_field = _us(request[_COMMAND_FIELD])
        has_dataset = _us(request[_DATASET_TYPE]) != dicom_wire.NO_DATASET
        if command_field & dicom_wire.RESPONSE_BIT:
            self._response(request, command_field)
            if has_dataset:  # an Event Reply: not used
                self._pending = _Pending(request, context, _Discard(), lambda *_: None)
            return
        if _MESSAGE_ID not in request:
            raise _Abort(INVALID_PDU_PARAMETER, "a request without its message id")
        if command_field == dicom_wire.C_STORE_RQ and has_dataset and self._store_handler:
            spool = SpoolWriter(
                _text(request.get(_AFFECTED_SOP_CLASS)),
                _text(request.get(_AFFECTED_SOP_INSTANCE)),
                context.transfer_syntax,
            )
            self._pending = _Pending(request, context, spool, self._store)
            return
        if command_field == dicom_wire.N_ACTION_RQ and self._action_handler:
            if has_dataset:
                self._pending = _Pending(request, context, _Collect(), self._action)
            else:
                self._action(request, context, None)
            return
        service = self._services.get(command_field)
        if service is not None and not has_dataset:
            service(request, context)
        elif has_dataset:  # read its dataset, then answer
            self._pending = _Pending(request, context, _Discard(), self._unrecognized_reply)
        else:
            self._unrecognized_reply(request, context, None)

    def _unrecognized_reply(self, request: dict[int, bytes], context: AcceptedContext, _sink: Any) -> None:
        self._reply(request, context, UNRECOGNIZED_OPERATION, self._unrecognized(request))

    def _unrecognized(self, request: dict[int, bytes]) -> str:
        command_field = _us(request[_COMMAND_FIELD])
        if command_field == dicom_wire.C_STORE_RQ:
            return "C-STORE without a dataset"
        return f"operation 0x{command_field:04X} is not supported here"

    def _echo(self, request: dict[int, bytes], context: AcceptedContext) -> None:
        self._reply(request, context, 0x0000)

    def _store(self, request: dict[int, bytes], context: AcceptedContext, spool: SpoolWriter) -> None:
        handler, args = self._store_handler  # type: ignore[misc]
        try:
            spooled = spool.finish()
        except OSError:
            spool.abandon()
            raise
        event = StoreEvent(
            self.assoc,
            StoreRequest(
                _text(request.get(_AFFECTED_SOP_CLASS)), _text(request.get(_AFFECTED_SOP_INSTANCE)), spooled
            ),
            context,
        )
        if str(context.abstract_syntax) != event.request.AffectedSOPClassUID:
            spooled.discard()
            self._reply(request, context, 0x0122, "SOP class differs from the presentation context's")
            return
        self._reply_with(request, context, handler(event, *(args or [])))

    def _action(
        self, request: dict[int, bytes], context: AcceptedContext, collected: _Collect | None
    ) -> None:
        handler, args = self._action_handler  # type: ignore[misc]
        action_type = _us(request[_ACTION_TYPE]) if _ACTION_TYPE in request else None
        event = ActionEvent(
            self.assoc,
            ActionRequest(action_type, _text(request.get(_REQUESTED_SOP_INSTANCE))),
            context,
            bytes(collected.data) if collected is not None else None,
        )
        status, _reply = handler(event, *(args or []))  # Storage Commitment has no Action Reply
        self._reply_with(request, context, status)

    def _reply_with(self, request: dict[int, bytes], context: AcceptedContext, result: int | Dataset) -> None:
        """Answer with what a pynetdicom handler returned: a status, or a status Dataset."""
        if isinstance(result, int):
            self._reply(request, context, result)
        else:
            self._reply(request, context, int(result.Status), str(result.get("ErrorComment", "")) or None)

    # --- the N-EVENT-REPORT we send (the commitment reporter's thread) ---------------------------
    def send_n_event_report(
        self, dataset: Dataset, event_type: int, class_uid: str, instance_uid: str
    ) -> tuple[Dataset, None]:
        """pynetdicom's ``Association.send_n_event_report``: send, wait for the response (the DIMSE
        timeout), and return its status as a Dataset (empty when none came)."""
        context = next((c for c in self.contexts.values() if c.abstract_syntax == class_uid), None)
        if context is None:
            raise ValueError(f"no accepted presentation context for {class_uid}")
        information = encode(dataset, *context.encoding)
        with self._report_lock:
            if not self.assoc.is_established:
                raise RuntimeError("the association is no longer established")
            self._message_id = self._message_id % 0xFFFF + 1
            awaited = self._awaited = _Awaited(self._message_id)
            try:
                command = event_report_request(awaited.message_id, class_uid, instance_uid, event_type)
                self._send_message(context, command, information)
                answered = awaited.done.wait(self.assoc.dimse_timeout)
            finally:
                self._awaited = None
        status = Dataset()
        if answered and awaited.status is not None:
            status.Status = awaited.status
        elif not self.assoc.is_established:
            raise RuntimeError("the association ended before the N-EVENT-REPORT response")
        return status, None

    def _response(self, response_fields: dict[int, bytes], command_field: int) -> None:
        awaited = self._awaited
        responded = response_fields.get(_MESSAGE_ID_RESPONDED)
        if (
            command_field != dicom_wire.N_EVENT_REPORT_RSP
            or awaited is None
            or responded is None
            or _us(responded) != awaited.message_id
        ):
            raise _Abort(UNEXPECTED_PDU, f"a response (0x{command_field:04X}) to no request of ours")
        status = response_fields.get(_STATUS)
        awaited.status = _us(status) if status is not None else None
        awaited.done.set()

    # --- writing --------------------------------------------------------------------------------
    def _reply(
        self, request: dict[int, bytes], context: AcceptedContext, status: int, comment: str | None = None
    ) -> None:
        self._send_message(context, response(request, status, comment))

    def _send_message(self, context: AcceptedContext, command: bytes, dataset: bytes | None = None) -> None:
        """A command (and its dataset) in PDUs no larger than the peer's maximum, as one write."""
        parts = dicom_wire.pdata_pdus(context.context_id, memoryview(command), True, self.max_fragment, True)
        if dataset is not None:
            parts += dicom_wire.pdata_pdus(
                context.context_id, memoryview(dataset), False, self.max_fragment, True
            )
        self._send(b"".join(parts))

    def _send(self, data: bytes) -> None:
        with self._send_lock:
            try:
                self.sock.sendall(data)
            except OSError as exc:
                raise _Closed() from exc

    def _send_abort(self, *, source: int, reason: int) -> None:
        self.assoc._sent_abort = True
        self.assoc.is_aborted = True
        with contextlib.suppress(_Closed):
            self._send(struct.pack(">BBLBBBB", _A_ABORT, 0, 4, 0, 0, source, reason))

    def _abandon_pending(self) -> None:
        pending, self._pending = self._pending, None
        if pending is not None:
            pending.sink.abandon()
