"""DICOM upper-layer wire helpers shared by both ends of our DIMSE traffic: the SCP's receive path
(scp/association_loop.py) and the sender (cli/store_client.py).

Command sets are encoded Implicit VR Little Endian, group 0000, led by their group length
(PS3.7 6.3.1); UIDs are padded with one NUL to an even length (PS3.5 9.1). A P-DATA-TF PDU
(PS3.8 9.3.5) carries presentation data value items: a 4-byte length, the presentation context id
and the value, which starts with the message control header (PS3.8 E.2). Pure: stdlib only.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator

# PDU types (PS3.8 9.3.1): A-ASSOCIATE-RQ (0x01) ... A-ABORT (0x07).
PDU_TYPES = frozenset(range(0x01, 0x08))
P_DATA_TF = 0x04
PDU_HEADER = struct.Struct(">BxI")  # type, reserved, length
_PDATA_HEADER = struct.Struct(">BxIIBB")  # P-DATA-TF header + one PDV item header

# DIMSE command fields (PS3.7 E.1) and the CommandDataSetType that says no dataset follows.
C_STORE_RQ, C_STORE_RSP, C_ECHO_RQ, C_ECHO_RSP = 0x0001, 0x8001, 0x0030, 0x8030
N_EVENT_REPORT_RQ, N_EVENT_REPORT_RSP, N_ACTION_RQ = 0x0100, 0x8100, 0x0130
RESPONSE_BIT = 0x8000  # set in the command field of every response
NO_DATASET = 0x0101
DATASET_PRESENT = 0x0001  # any other value says a dataset follows; this is the usual one

ELEMENT_HEADER = struct.Struct("<HHI")  # implicit VR little endian element: group, element, length


def pad_uid(uid: str) -> bytes:
    """A UID as an element value: ASCII, padded with one NUL to an even length."""
    data = str(uid).encode("ascii")
    return data + b"\0" if len(data) % 2 else data


def element(tag_element: int, value: bytes) -> bytes:
    """One command element (group 0000), Implicit VR Little Endian."""
    return ELEMENT_HEADER.pack(0x0000, tag_element, len(value)) + value


def command_set(body: bytes | bytearray) -> bytes:
    """The command set of ``body`` (its elements after (0000,0000)): CommandGroupLength, then ``body``."""
    return element(0x0000, struct.pack("<I", len(body))) + body


def pdv_items(body: bytes | bytearray | memoryview) -> Iterator[tuple[int, memoryview]]:
    """(presentation context id, value) of each PDV item of a P-DATA-TF PDU's ``body`` (the PDU
    after its 6-byte header), one by one. The value is a memoryview into ``body`` and starts with
    the message control header, as in pynetdicom's items. ValueError when an item runs past it."""
    view = memoryview(body)
    offset = 0
    while offset < len(view):
        if offset + 6 > len(view):
            raise ValueError("a PDV item header runs past the PDU")
        (item_length,) = struct.unpack_from(">L", view, offset)
        if item_length < 2 or offset + 4 + item_length > len(view):
            raise ValueError("a PDV item runs past the PDU")
        yield view[offset + 4], view[offset + 5 : offset + 4 + item_length]
        offset += 4 + item_length


def pdata_pdus(context_id: int, data: memoryview, command: bool, max_fragment: int, last: bool) -> list:
    """``data`` as P-DATA-TF PDUs of one PDV each, as [header, fragment, header, fragment, ...].

    ``last`` flags the final fragment as the end of the command or dataset.
    """
    parts: list = []
    kind = 0x01 if command else 0x00
    total = len(data)
    start = 0
    while True:
        end = min(total, start + max_fragment)
        final = last and end == total
        size = end - start
        parts.append(_PDATA_HEADER.pack(P_DATA_TF, size + 6, size + 2, context_id, kind | (0x02 * final)))
        parts.append(data[start:end])
        if end == total:
            return parts
        start = end
