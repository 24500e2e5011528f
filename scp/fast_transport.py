"""An event-driven receive path for pynetdicom 3.0.4 acceptor associations.

pynetdicom runs two polling loops per association: the DUL reactor sleeps 1 ms whenever it finds
nothing to do and reads sockets 4 KB at a time; the association reactor sleeps 1 ms before each
look at its queues. Profiled here, those loops and reads were a large share of the SCP's CPU and
added latency to every C-STORE (the sender waits for each response before the next image).

``accelerate(assoc)`` is called once per accepted connection, before the association starts. It
gives the association:
- ``EventDrivenDUL``: blocks in ``select`` on the socket and on a wake-up socket that is written
  whenever a primitive is queued for sending (so a C-STORE response goes out at once), and reads a
  whole PDU with ``recv_into`` into one buffer (``BulkReadSocket``); the PDV values of a P-DATA-TF
  PDU are memoryviews into that buffer (``ReceivedPData``) instead of three more copies;
- ``EventDrivenAssociation``: waits on an event the DUL sets after every state-machine action
  instead of sleeping 1 ms per loop;
- ``SpoolingDIMSE``: writes each C-STORE dataset to its spool file itself, hashing it and keeping
  its header bytes on the way (``scp/spool.py``), so the handler reads nothing back; and encodes a
  plain C-STORE response (status only) straight to bytes instead of building and encoding a
  pydicom Dataset, which cost ~2 ms of CPU per image.
The protocol handling itself (state machine, PDU decoding, DIMSE, ACSE) is pynetdicom's, unchanged.
Timers (ARTIM, network idle) are still checked at least every ``TIMER_TICK`` seconds.

These classes override private pynetdicom internals, so they are used only with the pynetdicom
version they were written against; any other version, or ``DICOM_SCP_STOCK_RECEIVE=1`` in the
environment (for comparisons: ``make bench``), keeps pynetdicom's own loops.
"""

from __future__ import annotations

import logging
import os
import queue
import select
import socket
import ssl
import struct
import threading
from typing import Any

import pynetdicom
from pynetdicom import evt
from pynetdicom.association import Association
from pynetdicom.dimse import DIMSEServiceProvider
from pynetdicom.dimse_messages import C_STORE_RQ
from pynetdicom.dimse_primitives import C_STORE
from pynetdicom.dul import DULServiceProvider
from pynetdicom.pdu import A_ABORT_RQ
from pynetdicom.pdu_primitives import P_DATA
from pynetdicom.transport import AssociationSocket

from core import dicom_wire
from scp.spool import SpoolWriter

log = logging.getLogger("scp.fast_transport")

SUPPORTED_VERSION = "3.0.4"
STOCK_ENV = "DICOM_SCP_STOCK_RECEIVE"
TIMER_TICK = 0.05  # longest wait without an event: ARTIM and idle timers are checked this often
_QUICKACK = getattr(socket, "TCP_QUICKACK", None)  # Linux
_LONGEST_OTHER_PDU = 1024 * 1024  # association and release PDUs are a few KB
_LONGEST_UNLIMITED_PDU = 256 * 1024 * 1024  # SCP_MAX_PDU=0 (unlimited) still has a ceiling


def enabled() -> bool:
    return pynetdicom.__version__ == SUPPORTED_VERSION and os.environ.get(STOCK_ENV, "") in ("", "0")


def accelerate(assoc: Association) -> bool:
    """Switch a freshly created acceptor association (socket set, not started) to this receive path.

    Returns False, leaving the association as pynetdicom made it, when disabled.
    """
    if not enabled():
        return False
    connection = assoc.dul.socket.socket  # the accepted socket, wrapped by pynetdicom's AssociationSocket
    assoc.dul = EventDrivenDUL(assoc)
    # The timeout setters configure the DUL's ARTIM and idle timers: apply them to the new DUL.
    assoc.acse_timeout = assoc.acse_timeout
    assoc.network_timeout = assoc.network_timeout
    assoc.set_socket(BulkReadSocket(assoc, client_socket=connection))  # queues Evt5 on the new DUL
    assoc.dimse = SpoolingDIMSE(assoc)
    assoc.__class__ = EventDrivenAssociation  # only _run_reactor differs
    return True


class BulkReadSocket(AssociationSocket):
    def recv(self, nr_bytes: int) -> bytearray:
        """Read exactly ``nr_bytes`` (fewer only if the peer closed) straight into one buffer.

        Before each read, ask Linux to acknowledge at once (TCP_QUICKACK): a sender that keeps
        Nagle's algorithm on otherwise holds back the tail of each PDU until our delayed ACK.
        """
        sock = self.socket
        assert sock is not None
        if _QUICKACK is not None and not isinstance(sock, ssl.SSLSocket):
            try:
                sock.setsockopt(socket.IPPROTO_TCP, _QUICKACK, 1)
            except OSError:
                pass
        buffer = bytearray(nr_bytes)
        view = memoryview(buffer)
        received = 0
        while received < nr_bytes:
            count = sock.recv_into(view[received:], nr_bytes - received)
            if not count:  # connection closed: return what arrived, as pynetdicom does
                return buffer[:received]
            received += count
        return buffer


class EventDrivenDUL(DULServiceProvider):
    def __init__(self, assoc: Association):
        super().__init__(assoc)
        # Written to when the local user queues a primitive, so select() returns at once.
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        # Set after every state-machine action: the association reactor waits on it.
        self.user_wake = threading.Event()

    def wake(self) -> None:
        try:
            self._wake_w.send(b"\0")
        except OSError:  # buffer full (a wake-up is pending anyway) or the DUL has ended
            pass

    def send_pdu(self, primitive: Any) -> None:
        super().send_pdu(primitive)
        self.wake()

    def kill_dul(self) -> None:
        super().kill_dul()
        self.wake()

    def stop_dul(self) -> bool:
        if self.state_machine.current_state != "Sta1":
            return False
        self._kill_thread = True
        self.wake()
        if threading.current_thread() is not self and self.is_alive():
            self.join()
        return True

    def run_reactor(self) -> None:
        """pynetdicom's reactor step, but waiting for the socket or a wake-up instead of sleeping."""
        self._idle_timer.start()
        self.assoc._dul_ready.set()
        try:
            while not self._kill_thread:
                if self.artim_timer.expired:
                    self.event_queue.put("Evt18")
                try:
                    if self._process_recv_primitive():  # a primitive from the local user to send
                        pass
                    elif self._is_transport_event():  # a PDU from the peer (or the connection closed)
                        self._idle_timer.restart()
                except Exception:
                    log.exception("receive path failed, aborting the association")
                    self._abort_immediately()
                    return
                try:
                    event = self.event_queue.get_nowait()
                except queue.Empty:
                    self._wait_for_work()
                    continue
                self.state_machine.do_action(event)
                self.user_wake.set()
        finally:
            self.user_wake.set()
            self._wake_r.close()
            self._wake_w.close()

    def _read_pdu_data(self) -> None:
        """pynetdicom's PDU read, but a P-DATA-TF PDU lands in one buffer and is not copied again.

        pynetdicom joins the header and body into a new buffer, copies that to ``bytes`` and
        slices each value out: three more fresh ~PDU-sized allocations, which cost ~2 ms of page
        faults and copying per 0.5 MB image. Here the values are memoryviews into the one buffer
        the body was received into. Other PDU types (small, rare) are decoded by pynetdicom.
        """
        if self.assoc.get_handlers(evt.EVT_DATA_RECV) or self.assoc.get_handlers(evt.EVT_PDU_RECV):
            super()._read_pdu_data()  # those handlers want pynetdicom's bytes and PDU objects
            return
        wrapper = self.socket
        assert wrapper is not None
        try:
            header = wrapper.recv(6)
            if len(header) < 6:
                raise ConnectionError("closed before a PDU header")
            pdu_type, length = dicom_wire.PDU_HEADER.unpack(header)
            if pdu_type not in dicom_wire.PDU_TYPES or length > self._longest_pdu(pdu_type):
                # Also what keeps a peer from making us allocate whatever length it claims.
                log.error(
                    "invalid PDU header received", extra={"fields": {"pduType": pdu_type, "length": length}}
                )
                self.event_queue.put("Evt19")
                return
            body = wrapper.recv(length)
            if len(body) < length:
                raise ConnectionError("closed inside a PDU")
        except (OSError, TimeoutError):  # ConnectionError included: the transport is gone
            self.event_queue.put("Evt17")
            return
        try:
            if pdu_type == dicom_wire.P_DATA_TF:
                pdu: Any = ReceivedPData(body)
                event = "Evt10"
            else:
                pdu, event = self._decode_pdu(header + body)
        except Exception:
            log.exception("unable to decode a received PDU")
            self.event_queue.put("Evt19")
            return
        self.event_queue.put(event)
        self._recv_pdu.put(pdu)

    def _longest_pdu(self, pdu_type: int) -> int:
        """P-DATA-TF: our maximum PDU length (PS3.8 D.1), unless unlimited; others: a fixed bound."""
        if pdu_type != dicom_wire.P_DATA_TF:
            return _LONGEST_OTHER_PDU
        return int(self.assoc.acceptor.maximum_length or _LONGEST_UNLIMITED_PDU)

    def _wait_for_work(self) -> None:
        if not self.to_provider_queue.empty():
            return
        wrapper = self.socket
        connection = wrapper.socket if wrapper is not None else None
        readable = [self._wake_r]
        if connection is not None and connection.fileno() >= 0:
            if isinstance(connection, ssl.SSLSocket) and connection.pending():
                return  # decrypted bytes already buffered: select() would not see them
            readable.append(connection)
        try:
            select.select(readable, [], [], TIMER_TICK)
        except (OSError, ValueError):  # the socket was closed meanwhile: the next step notices
            return
        try:
            while self._wake_r.recv(4096):
                pass
        except OSError:  # drained (BlockingIOError)
            pass

    def _abort_immediately(self) -> None:
        """As pynetdicom does on an exception in its reactor: A-ABORT past the state machine, stop."""
        abort = A_ABORT_RQ()
        abort.source = 0x02
        abort.reason_diagnostic = 0x00
        try:
            if self.socket is not None:
                self.socket.send(abort.encode())
        finally:
            self.assoc.is_aborted = True
            self.assoc.is_established = False
            self.assoc._kill = True
            self._kill_thread = True


class ReceivedPData:
    """A received P-DATA-TF PDU (PS3.8 9.3.5) whose PDV values are memoryviews into its body.

    Stands in for pynetdicom's ``P_DATA_TF`` where the state machine uses one: ``to_primitive``.
    """

    def __init__(self, body: bytearray):
        self.values: list[tuple[int, memoryview]] = list(dicom_wire.pdv_items(body))
        if not self.values:
            raise ValueError("a P-DATA-TF PDU without PDV items")

    def to_primitive(self) -> P_DATA:
        primitive = P_DATA()
        primitive.presentation_data_value_list = []  # filled as pynetdicom does, past the bytes-only check
        primitive.presentation_data_value_list.extend(self.values)
        return primitive


class EventDrivenAssociation(Association):
    """pynetdicom's acceptor reactor, woken by the DUL instead of polling every millisecond."""

    dul: EventDrivenDUL

    def _has_work(self) -> bool:
        return (
            not self.dimse.msg_queue.empty() or not self.dul.to_user_queue.empty() or not self.dul.is_alive()
        )

    def _run_reactor(self) -> None:
        self._is_paused = False
        wake = self.dul.user_wake
        while not self._kill:
            if not self._has_work():
                wake.wait(TIMER_TICK)
            wake.clear()  # anything queued before this is seen by the checks below

            # Paused while a send_*() method on this association waits for its own responses.
            self._is_paused = True
            self._reactor_checkpoint.wait()
            self._is_paused = False

            context_id, msg = self.dimse.get_msg(block=False)
            if msg:
                self._serve_request(msg, context_id)

            if self.is_established and self.acse.is_release_requested():
                self.acse.send_release(is_response=True)
                self.is_released = True
                self.is_established = False
                evt.trigger(self, evt.EVT_RELEASED, {})
                self.kill()
                return

            if self.acse.is_aborted():
                self.dul.receive_pdu(wait=False)  # so EVT_ACSE_RECV fires for the A-ABORT
                self.is_aborted = True
                self.is_established = False
                evt.trigger(self, evt.EVT_ABORTED, {})
                self.kill()
                return

            if not self.dul.is_alive():
                self.kill()
                return

            if self.dul.idle_timer_expired():
                log.info("network timeout reached, aborting the association")
                if self.network_timeout_response == "A-RELEASE":
                    self._is_paused = True
                    self._reactor_checkpoint.wait()
                    self.release()
                    self._is_paused = False
                else:
                    self.abort()
                self.kill()
                return


class SpoolingDIMSE(DIMSEServiceProvider):
    """pynetdicom's DIMSE provider, except for the two per-image hot spots.

    - The dataset fragments of a C-STORE request go to a ``SpoolWriter`` (written, hashed and
      header-kept as they arrive) instead of pynetdicom's temporary file with a pydicom-encoded
      file meta; the request primitive carries the result as ``request.spooled``. Every other
      fragment (command sets, other messages) is decoded by pynetdicom as before.
    - Plain C-STORE responses are sent as bytes encoded here.
    pynetdicom's own chunked spooling (``STORE_RECV_CHUNKED_DATASET``) must be off with this
    class: it would create its spool file for the request before this class sees the dataset.
    """

    def __init__(self, assoc: Association):
        super().__init__(assoc)
        self.spool: SpoolWriter | None = None

    def receive_primitive(self, primitive: P_DATA) -> None:
        for context_id, data in primitive.presentation_data_value_list:
            spool = self.spool
            if spool is not None:
                if not data[0] & 1:  # a dataset fragment of the request being spooled
                    spool.write(memoryview(data)[1:])
                    if data[0] & 2:  # the last one
                        self._store_request_received(spool)
                    continue
                self.discard_partial_spool()  # a command inside a dataset: pynetdicom handles it
            single = P_DATA()
            single.presentation_data_value_list = [[context_id, bytes(data)]]
            super().receive_primitive(single)
            if isinstance(self.message, C_STORE_RQ):  # its command set is decoded and a dataset follows
                self.spool = self._new_spool(self.message, context_id)

    def _new_spool(self, message: C_STORE_RQ, context_id: int) -> SpoolWriter:
        # An unaccepted context id raises here, as it does in pynetdicom's own spooling (the DUL ends).
        context = self.assoc._accepted_cx[context_id]
        command = message.command_set
        return SpoolWriter(
            str(command.AffectedSOPClassUID),
            str(command.AffectedSOPInstanceUID),
            str(context.transfer_syntax[0]),
        )

    def _store_request_received(self, spool: SpoolWriter) -> None:
        """As pynetdicom does once a message is complete, with the spooled dataset attached."""
        self.spool = None
        message = self.message
        assert message is not None
        spooled = spool.finish()
        evt.trigger(self.assoc, evt.EVT_DIMSE_RECV, {"message": message})
        try:
            request = message.message_to_primitive()
        except Exception:
            log.exception("received an invalid C-STORE request, aborting the association")
            spooled.discard()
            self.dul.event_queue.put("Evt19")
            return
        request._dataset_path = spooled.path  # what event.dataset_path returns
        request.spooled = spooled
        self.msg_queue.put((message.context_id, request))
        self.message = None

    def discard_partial_spool(self) -> None:
        """Remove the spool file of a request cut off mid-transfer."""
        spool, self.spool = self.spool, None
        if spool is not None:
            spool.abandon()

    def send_msg(self, primitive: Any, context_id: int) -> None:
        if _is_plain_store_response(primitive) and not self.assoc.get_handlers(evt.EVT_DIMSE_SENT):
            pdata = P_DATA()
            # Message control header 0x03: command fragment, the last one. ~150 bytes: one PDU.
            pdata.presentation_data_value_list = [[context_id, b"\x03" + store_response_command(primitive)]]
            self.dul.send_pdu(pdata)
            return
        super().send_msg(primitive, context_id)


def _is_plain_store_response(primitive: Any) -> bool:
    return (
        isinstance(primitive, C_STORE)
        and primitive.MessageIDBeingRespondedTo is not None
        and primitive.Status is not None
        and primitive.OffendingElement is None
        and primitive.ErrorComment is None
    )


def store_response_command(primitive: Any) -> bytes:
    """The C-STORE-RSP command set (PS3.7 9.3.1.2) for a status-only response."""
    body = b"".join(
        (
            dicom_wire.element(0x0002, dicom_wire.pad_uid(primitive.AffectedSOPClassUID)),
            dicom_wire.element(0x0100, struct.pack("<H", dicom_wire.C_STORE_RSP)),  # CommandField
            dicom_wire.element(0x0120, struct.pack("<H", primitive.MessageIDBeingRespondedTo)),
            dicom_wire.element(0x0800, struct.pack("<H", dicom_wire.NO_DATASET)),  # CommandDataSetType
            dicom_wire.element(0x0900, struct.pack("<H", primitive.Status)),
            dicom_wire.element(0x1000, dicom_wire.pad_uid(primitive.AffectedSOPInstanceUID)),
        )
    )
    return dicom_wire.command_set(body)
