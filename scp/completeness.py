"""Is a received dataset whole? Its elements walked by their lengths as the bytes arrive.

A sender that stops in the middle of a file (a truncated file on its disk, a crash while
reading it) still sends a well-formed C-STORE: the last PDV is flagged "last", the dataset just
ends early. Nothing in the upper layer notices; the broken image would be answered 0x0000,
stored and imported. Here every dataset fragment is fed, as it is spooled, to ``Completeness``,
which walks element headers (tag, VR, length) and skips their values: nested sequences and
items of undefined length (and encapsulated Pixel Data, a sequence of fragment items) are
walked too, defined-length values are skipped without looking at them. Nothing is decoded and
nothing is read twice: a 0.5 MB CT costs its ~100 header elements (docs/benchmarks/scp.md).

``problem()`` after the last fragment says what is wrong, in at most 64 characters and without
any value (so no PHI): the element a truncated dataset ends in, or where it cannot be walked.
Deflated datasets are inflated on the way (rare; the walk needs the element headers).
"""

from __future__ import annotations

import struct
import zlib
from typing import Any

IMPLICIT_VR_LITTLE_ENDIAN = "1.2.840.10008.1.2"
EXPLICIT_VR_BIG_ENDIAN = "1.2.840.10008.1.2.2"
DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN = "1.2.840.10008.1.2.1.99"

_ITEM = 0xFFFEE000
_ITEM_END = 0xFFFEE00D
_SEQUENCE_END = 0xFFFEE0DD
_UNDEFINED = 0xFFFFFFFF
# Explicit VRs with a 2-byte reserved field and a 4-byte length (PS3.5 7.1.2, table 7.1-1).
_LONG_VRS = frozenset(b"OB OD OF OL OV OW SQ SV UC UN UR UT UV".split())
_CONTAINER_VRS = frozenset((b"SQ", b"UN", b"OB", b"OW"))  # may have an undefined length
_SHORT_VRS = frozenset(
    b"AE AS AT CS DA DS DT FD FL IS LO LT PN SH SL SS ST TM UI UL US".split()
)  # the other VRs of PS3.5 table 6.2-1: a 2-byte length
_LONGEST_HEADER = 12
_SEQUENCE, _ITEM_DATASET = 0, 1  # kinds of open containers


def _tag(tag: int) -> str:
    return f"({tag >> 16:04X},{tag & 0xFFFF:04X})"


class _Stop(Exception):
    """The dataset cannot be walked further; the message is the Error Comment."""


class Completeness:
    """Feed it the dataset's bytes in order (``feed``), then ask ``problem()``."""

    def __init__(self, transfer_syntax: str):
        self._implicit = transfer_syntax == IMPLICIT_VR_LITTLE_ENDIAN
        big = transfer_syntax == EXPLICIT_VR_BIG_ENDIAN
        self._short = struct.Struct(">HH2sH" if big else "<HH2sH")  # tag, VR, 2-byte length
        self._long = struct.Struct(">HHL" if big else "<HHL")  # tag, 4-byte length (implicit, items)
        self._length = struct.Struct(">L" if big else "<L")
        self._inflater = (
            zlib.decompressobj(-zlib.MAX_WBITS)
            if transfer_syntax == DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN
            else None
        )
        self._skip = 0  # bytes of the current value still to come
        self._carry = b""  # the start of an element header cut by a fragment boundary
        self._open: list[tuple[int, bool]] = []  # undefined-length containers: (kind, implicit inside)
        self._top = 0  # the top-level element being walked (for the message)
        self._seen = False
        self._little_explicit = not self._implicit and not big  # the common case has a fast loop
        self._problem: str | None = None

    def feed(self, data: Any) -> None:
        if self._problem is not None:
            return
        if self._inflater is not None:
            try:
                data = self._inflater.decompress(data)
            except zlib.error:
                self._problem = "deflated dataset cannot be inflated"
                return
        if not len(data):
            return
        self._seen = True
        try:
            self._walk(data)
        except (_Stop, struct.error) as exc:
            self._problem = str(exc) or f"dataset cannot be walked after {_tag(self._top)}"

    def problem(self) -> str | None:
        """None when the dataset ended exactly after a whole element; else what is wrong."""
        if self._problem is not None:
            return self._problem
        if not self._seen:
            return "empty dataset"
        if self._inflater is not None and not self._inflater.eof:
            return "deflated dataset truncated"
        if self._carry and not self._open:  # cut inside the next element's header
            return f"dataset truncated after {_tag(self._top)}" if self._top else "dataset truncated"
        if self._skip or self._carry or self._open:
            return f"dataset truncated in {_tag(self._top)}"
        return None

    def _walk(self, data: Any) -> None:
        size = len(data)
        pos = self._skip
        if pos >= size:
            self._skip = pos - size
            return
        self._skip = 0
        if self._carry:  # finish the cut header from the start of this fragment
            carried = len(self._carry)
            head = self._carry + bytes(data[pos : pos + _LONGEST_HEADER])
            used = self._element(head, 0)
            if used < 0:
                self._carry = head
                return
            self._carry = b""
            pos = self._after_header(pos + used - carried, size)
        while pos < size:
            if self._little_explicit and not self._open:
                pos = self._top_level(data, pos, size)
                if pos >= size:
                    return
            used = self._element(data, pos)
            if used < 0:
                self._carry = bytes(data[pos:])
                return
            pos = self._after_header(pos + used, size)

    def _top_level(self, data: Any, pos: int, size: int) -> int:
        """Top-level explicit VR little endian elements of defined length, as fast as Python goes.

        Returns where it stopped: the end (``_skip`` holds what is left of a value that runs
        past it), or an element for ``_element`` (an undefined length, an unknown VR, a cut
        header, anything unusual), which also produces the messages.
        """
        unpack = self._short.unpack_from
        unpack_length = self._length.unpack_from
        last = -1
        while pos + _LONGEST_HEADER <= size:
            group, element, vr, length = unpack(data, pos)
            if vr in _SHORT_VRS:
                end = pos + 8 + length
            elif vr in _LONG_VRS:
                (length,) = unpack_length(data, pos + 8)
                end = pos + 12 + length
            else:
                break
            if length == _UNDEFINED or group == 0x0002 or group == 0xFFFE:
                break
            last = group << 16 | element
            if end > size:
                self._top = last
                self._skip = end - size
                return size
            pos = end
        if last >= 0:
            self._top = last
        return pos

    def _after_header(self, pos: int, size: int) -> int:
        """Skip the value whose header ends at ``pos``; past the fragment, remember how much."""
        end = pos + self._skip
        if end <= size:
            self._skip = 0
            return end
        self._skip = end - size
        return size

    def _element(self, data: Any, pos: int) -> int:
        """Walk one header at ``pos``: header bytes used (its value is left in ``_skip``), -1 if cut."""
        available = len(data) - pos
        if available < 8:
            return -1
        opened = self._open
        if opened and opened[-1][0] == _SEQUENCE:  # only items and the sequence delimiter may follow
            group, element, length = self._long.unpack_from(data, pos)
            tag = group << 16 | element
            if tag == _ITEM:
                if length == _UNDEFINED:
                    opened.append((_ITEM_DATASET, opened[-1][1]))
                else:
                    self._skip = length
            elif tag == _SEQUENCE_END:
                opened.pop()
            else:
                raise _Stop(f"sequence in {_tag(self._top)} holds {_tag(tag)}")
            return 8
        implicit = opened[-1][1] if opened else self._implicit
        if implicit:
            group, element, length = self._long.unpack_from(data, pos)
            vr = None
            used = 8
        else:
            group, element, vr, length = self._short.unpack_from(data, pos)
            used = 8
            if group == 0xFFFE:  # item delimiters carry no VR in any transfer syntax
                vr = None
                (length,) = self._length.unpack_from(data, pos + 4)
            elif vr in _LONG_VRS:
                if available < 12:
                    return -1
                (length,) = self._length.unpack_from(data, pos + 8)
                used = 12
            elif not (vr.isalpha() and vr.isupper()):
                if opened or self._top:
                    raise _Stop(f"invalid VR after {_tag(self._top)}")
                # No VR in the first element: the sender encoded implicit VR under an explicit
                # transfer syntax. pydicom reads such datasets (with a warning), and so do we.
                self._implicit = True
                self._little_explicit = False
                return self._element(data, pos)
        tag = group << 16 | element
        if not opened:
            if group == 0xFFFE:
                raise _Stop(f"item tag {_tag(tag)} outside a sequence")
            if group == 0x0002:
                raise _Stop("file meta element (0002,xxxx) in the dataset")
            self._top = tag
        elif tag == _ITEM_END:
            opened.pop()
            return used
        if length == _UNDEFINED:
            if vr is not None and vr not in _CONTAINER_VRS:
                raise _Stop(f"undefined length in {_tag(tag)}")
            # An explicit-VR UN of undefined length holds implicit VR little endian (PS3.5 6.2.2).
            opened.append((_SEQUENCE, implicit or vr == b"UN"))
        else:
            self._skip = length
        return used
