"""The wire helpers the SCP and the sender share: command sets as pydicom reads them, PDV items."""

from __future__ import annotations

import struct
from io import BytesIO

import pytest
from pynetdicom.dsutils import decode

from core.dicom_wire import C_ECHO_RQ, command_set, element, pad_uid, pdv_items


@pytest.mark.parametrize("uid", ["1.2.3.4", "1.2.3.45"])  # even and odd length (padding)
def test_a_command_set_decodes_as_pydicom_reads_it(uid):
    body = element(0x0002, pad_uid(uid)) + element(0x0100, struct.pack("<H", C_ECHO_RQ))
    command = decode(BytesIO(command_set(body)), True, True)
    assert command.CommandGroupLength == len(body)
    assert command.AffectedSOPClassUID == uid and command.CommandField == C_ECHO_RQ
    assert len(pad_uid(uid)) % 2 == 0


def test_pdv_items_are_read_one_by_one_and_one_that_runs_past_the_pdu_is_refused():
    items = struct.pack(">IB", 4, 1) + b"\x03ab" + struct.pack(">IB", 2, 3) + b"\x02"
    assert [(context_id, bytes(value)) for context_id, value in pdv_items(items)] == [
        (1, b"\x03ab"),
        (3, b"\x02"),
    ]
    assert list(pdv_items(b"")) == []
    for broken in (items[:-1], items[:5], struct.pack(">IB", 1, 1) + b"\x00"):
        with pytest.raises(ValueError):
            list(pdv_items(broken))
