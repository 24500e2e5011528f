"""Study and Series Instance UID from the first bytes of a received dataset, without pydicom.

The store handler needs two values from the header to place an object in the key layout. Reading
them with pydicom (open the spooled file, build a Dataset up to Pixel Data) cost more CPU per
image than everything else the handler does. This walks element headers (tag, VR, length) in
the negotiated transfer syntax, skips values, nested sequences included, and stops at the first
top-level tag after (0020,000E): data elements are in ascending tag order (PS3.5 7.1).

It only answers when it is sure. ``None`` means "ask pydicom": the bytes ended before the UIDs
(a header longer than what was kept), or something is unusual (a non-UI value, tags out of
order, an undefined length where none may be, a broken deflate stream). Malformed datasets
therefore get exactly the status pydicom's reading gives them.
"""

from __future__ import annotations

import struct
import zlib

IMPLICIT_VR_LITTLE_ENDIAN = "1.2.840.10008.1.2"
EXPLICIT_VR_BIG_ENDIAN = "1.2.840.10008.1.2.2"
DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN = "1.2.840.10008.1.2.1.99"

STUDY_INSTANCE_UID = 0x0020000D
SERIES_INSTANCE_UID = 0x0020000E
_ITEM = 0xFFFEE000
_ITEM_END = 0xFFFEE00D
_SEQUENCE_END = 0xFFFEE0DD
_UNDEFINED = 0xFFFFFFFF
# Explicit VRs with a 2-byte reserved field and a 4-byte length (PS3.5 7.1.2, table 7.1-1).
_LONG_VRS = frozenset(b"OB OD OF OL OV OW SQ SV UC UN UR UT UV".split())
_INFLATE_LIMIT = 1024 * 1024  # of a deflated dataset, inflate at most this much for the header


class _Unsure(Exception):
    """The bytes do not allow a certain answer: pydicom decides."""


class _Walker:
    def __init__(self, data: bytes, *, implicit: bool, little: bool):
        self.data = data
        self.pos = 0
        self.implicit = implicit
        self.end_char = "<" if little else ">"

    def element(self, implicit: bool | None = None) -> tuple[int, bytes | None, int, int]:
        """(tag, VR or None, value length, value offset); advances past the header only."""
        data, pos = self.data, self.pos
        if pos + 8 > len(data):
            raise _Unsure("the bytes end inside an element header")
        group, elem = struct.unpack_from(self.end_char + "HH", data, pos)
        tag = group << 16 | elem
        implicit = self.implicit if implicit is None else implicit
        if implicit or group == 0xFFFE:  # items and delimiters have no VR in any syntax
            (length,) = struct.unpack_from(self.end_char + "L", data, pos + 4)
            vr, pos = None, pos + 8
        else:
            vr = data[pos + 4 : pos + 6]
            if vr in _LONG_VRS:
                if pos + 12 > len(data):
                    raise _Unsure("the bytes end inside an element header")
                (length,) = struct.unpack_from(self.end_char + "L", data, pos + 8)
                pos += 12
            else:
                (length,) = struct.unpack_from(self.end_char + "H", data, pos + 6)
                pos += 8
        self.pos = pos
        return tag, vr, length, pos

    def skip(self, length: int) -> None:
        if self.pos + length > len(self.data):
            raise _Unsure("the bytes end inside a value")
        self.pos += length

    def skip_undefined(self, vr: bytes | None, implicit: bool) -> None:
        """Skip a value of undefined length: a sequence of items up to its delimiter."""
        if vr not in (None, b"SQ", b"UN"):
            raise _Unsure("undefined length outside a sequence")
        # An explicit-VR UN of undefined length holds an implicit VR little endian sequence (PS3.5 6.2.2).
        inner = implicit or vr == b"UN"
        if vr == b"UN" and self.end_char == ">":
            raise _Unsure("UN of undefined length in big endian")
        while True:
            tag, _, length, _ = self.element(implicit=True)
            if tag == _SEQUENCE_END:
                return
            if tag != _ITEM:
                raise _Unsure("a sequence holds something other than items")
            if length != _UNDEFINED:
                self.skip(length)
                continue
            while True:  # an item of undefined length: a dataset up to its delimiter
                tag, item_vr, length, _ = self.element(implicit=inner)
                if tag == _ITEM_END:
                    break
                if length == _UNDEFINED:
                    self.skip_undefined(item_vr, inner)
                else:
                    self.skip(length)


def _uid_text(value: bytes) -> str:
    """A UI value without its padding, as pydicom returns it."""
    try:
        return value.decode("ascii").rstrip("\0 ")
    except UnicodeDecodeError:
        raise _Unsure("a UID that is not ASCII") from None


def study_and_series_uids(
    data: bytes, transfer_syntax: str, *, whole_dataset: bool
) -> tuple[str | None, str | None] | None:
    """(Study Instance UID, Series Instance UID) as stored, None for an absent one.

    ``data`` is the start of the dataset as received (after any file meta); ``whole_dataset``
    says whether it is all of it. Returns ``None`` (not a tuple) when pydicom should decide.
    """
    try:
        if transfer_syntax == DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN:
            inflater = zlib.decompressobj(-zlib.MAX_WBITS)
            inflated = inflater.decompress(data, _INFLATE_LIMIT)
            whole_dataset = whole_dataset and inflater.eof
            data = inflated
        walker = _Walker(
            data,
            implicit=transfer_syntax == IMPLICIT_VR_LITTLE_ENDIAN,
            little=transfer_syntax != EXPLICIT_VR_BIG_ENDIAN,
        )
        found: dict[int, str] = {}
        previous = -1
        while walker.pos < len(data):
            tag, vr, length, offset = walker.element()
            if tag <= previous or tag >> 16 == 0xFFFE:
                raise _Unsure("tags out of order")
            previous = tag
            if tag > SERIES_INSTANCE_UID:
                break
            if length == _UNDEFINED:
                walker.skip_undefined(vr, walker.implicit)
                continue
            walker.skip(length)
            if tag in (STUDY_INSTANCE_UID, SERIES_INSTANCE_UID):
                if vr not in (None, b"UI"):
                    raise _Unsure("a UID element that is not UI")
                found[tag] = _uid_text(data[offset : offset + length])
        else:
            if not whole_dataset:
                raise _Unsure("the bytes end before the Series Instance UID")
    except (_Unsure, zlib.error, struct.error):
        return None
    return found.get(STUDY_INSTANCE_UID), found.get(SERIES_INSTANCE_UID)
