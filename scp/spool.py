"""Received datasets on their way to storage: a Part 10 spool file, hashed while it is written.

The association loop (``scp/association_loop.py``) writes each C-STORE dataset with ``SpoolWriter``:
the file meta header, then the dataset bytes as they arrive. On the way it computes the SHA-256
of the whole file, keeps the first ``HEADER_BYTES`` of the dataset and walks its elements for
completeness (``scp/completeness.py``), so the store handler reads nothing back: the UIDs come
from those bytes (``scp/header.py``) and the file backend renames the spool file into place.
``Spooled`` is the finished file; ``Spooled.from_file`` builds one by reading a file pynetdicom
spooled itself (the stock receive path).

Spool files live in the process's temporary directory, which ``python -m scp`` points at
``SCP_SPOOL_DIR`` (the same filesystem as a ``file://`` store lets the rename work).
"""

from __future__ import annotations

import hashlib
import os
import struct
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pynetdicom import PYNETDICOM_IMPLEMENTATION_UID, PYNETDICOM_IMPLEMENTATION_VERSION

from scp.completeness import Completeness

HEADER_BYTES = 64 * 1024  # of each dataset kept in memory for the UIDs; typical headers are < 10 KB
READ_CHUNK = 1024 * 1024
PREAMBLE = b"\0" * 128 + b"DICM"


def _meta_element(element: int, vr: bytes, value: bytes) -> bytes:
    """One group 0002 element, Explicit VR Little Endian (PS3.10 7.1)."""
    if vr == b"OB":
        return struct.pack("<HH2s2xL", 0x0002, element, vr, len(value)) + value
    return struct.pack("<HH2sH", 0x0002, element, vr, len(value)) + value


def _padded(text: str, pad: bytes) -> bytes:
    data = text.encode("ascii")
    return data + pad if len(data) % 2 else data


def file_meta(sop_class_uid: str, sop_instance_uid: str, transfer_syntax: str) -> bytes:
    """Preamble, prefix and File Meta Information: the bytes pynetdicom writes before a spooled dataset."""
    body = b"".join(
        (
            _meta_element(0x0001, b"OB", b"\x00\x01"),
            _meta_element(0x0002, b"UI", _padded(sop_class_uid, b"\0")),
            _meta_element(0x0003, b"UI", _padded(sop_instance_uid, b"\0")),
            _meta_element(0x0010, b"UI", _padded(transfer_syntax, b"\0")),
            _meta_element(0x0012, b"UI", _padded(PYNETDICOM_IMPLEMENTATION_UID, b"\0")),
            _meta_element(0x0013, b"SH", _padded(PYNETDICOM_IMPLEMENTATION_VERSION, b" ")),
        )
    )
    return PREAMBLE + _meta_element(0x0000, b"UL", struct.pack("<L", len(body))) + body


@dataclass(frozen=True)
class Spooled:
    """A received dataset as a complete Part 10 file."""

    path: Path
    size: int  # bytes of the whole file
    sha256: str  # hex digest of the whole file
    header: bytes  # the first bytes of the dataset (after the file meta), at most HEADER_BYTES
    whole_dataset_in_header: bool
    transfer_syntax: str
    inode: tuple[int, int]  # (st_dev, st_ino): lets a retried move recognise the file it moved
    incomplete: str | None = None  # why the dataset is not whole (truncated, cannot be walked)

    def discard(self) -> None:
        """Remove the spool file if storage did not take it (no-op after a rename into the store)."""
        try:
            self.path.unlink()
        except FileNotFoundError:
            pass

    @classmethod
    def from_file(cls, path: Path, transfer_syntax: str) -> Spooled:
        """Hash a Part 10 file pynetdicom spooled and keep its header bytes (one read)."""
        digest = hashlib.sha256()
        start = bytearray()
        check = Completeness(transfer_syntax)
        offset: int | None = None
        with path.open("rb") as source:
            stat = os.fstat(source.fileno())
            while chunk := source.read(READ_CHUNK):
                digest.update(chunk)
                if len(start) < HEADER_BYTES + 1024:
                    start += chunk[: HEADER_BYTES + 1024 - len(start)]
                if offset is None:  # the file meta is far shorter than one chunk
                    offset = dataset_offset(bytes(start))
                    check.feed(memoryview(chunk)[offset:])
                else:
                    check.feed(chunk)
        offset = offset or 0
        dataset_size = stat.st_size - offset
        return cls(
            path=path,
            size=stat.st_size,
            sha256=digest.hexdigest(),
            header=bytes(start[offset : offset + HEADER_BYTES]),
            whole_dataset_in_header=dataset_size <= HEADER_BYTES,
            transfer_syntax=transfer_syntax,
            inode=(stat.st_dev, stat.st_ino),
            incomplete=check.problem(),
        )


def dataset_offset(part10: bytes) -> int:
    """Where the dataset starts in a Part 10 file: after the group length of its file meta."""
    if len(part10) < 144 or part10[128:136] != b"DICM\x02\x00\x00\x00":
        return min(len(part10), 132)  # no group length: let the header reader find out
    (group_length,) = struct.unpack_from("<L", part10, 140)
    return 144 + group_length


class SpoolWriter:
    """One dataset being received: written, hashed and its header kept as the fragments arrive."""

    def __init__(
        self, sop_class_uid: str, sop_instance_uid: str, transfer_syntax: str, directory: Path | None = None
    ):
        """``directory``: where to spool; the process's temporary directory by default."""
        self.transfer_syntax = transfer_syntax
        fd, name = tempfile.mkstemp(suffix=".dcm", dir=directory)
        self.path = Path(name)
        self._fd: int | None = fd
        self._digest = hashlib.sha256()
        self._size = 0
        self._dataset_size = 0
        self._header = bytearray()
        self._check = Completeness(transfer_syntax)
        try:
            self._write(file_meta(sop_class_uid, sop_instance_uid, transfer_syntax))
        except BaseException:
            self.abandon()
            raise

    def write(self, fragment: Any) -> None:
        """Append dataset bytes (bytes or a memoryview of a received PDV)."""
        if len(self._header) < HEADER_BYTES:
            self._header += fragment[: HEADER_BYTES - len(self._header)]
        self._dataset_size += len(fragment)
        self._check.feed(fragment)
        self._write(fragment)

    def _write(self, data: Any) -> None:
        assert self._fd is not None
        self._digest.update(data)
        self._size += len(data)
        view = memoryview(data)
        while view:
            view = view[os.write(self._fd, view) :]

    def finish(self) -> Spooled:
        assert self._fd is not None
        stat = os.fstat(self._fd)
        os.close(self._fd)
        self._fd = None
        return Spooled(
            path=self.path,
            size=self._size,
            sha256=self._digest.hexdigest(),
            header=bytes(self._header),
            whole_dataset_in_header=self._dataset_size <= HEADER_BYTES,
            transfer_syntax=self.transfer_syntax,
            inode=(stat.st_dev, stat.st_ino),
            incomplete=self._check.problem(),
        )

    def abandon(self) -> None:
        """The transfer was cut off (or failed): close and remove the partial file."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        self.path.unlink(missing_ok=True)


def received_dataset(event: Any) -> Spooled:
    """The spooled dataset of an EVT_C_STORE event, from either receive path."""
    spooled = getattr(event.request, "spooled", None)
    if isinstance(spooled, Spooled):
        return spooled
    return Spooled.from_file(event.dataset_path, str(event.context.transfer_syntax))
