"""Spooling (scp/spool.py) and the file backend's move into place (scp/storage/file.py)."""

from __future__ import annotations

import hashlib
import os
import stat
import tempfile
from pathlib import Path

import pytest
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_file_meta_info
from pynetdicom.dsutils import create_file_meta

from scp.spool import HEADER_BYTES, Spooled, SpoolWriter, file_meta
from scp.storage import StorageError
from scp.storage.file import FileStorage

CT = "1.2.840.10008.5.1.4.1.1.2"
EXPLICIT = "1.2.840.10008.1.2.1"
KEY = "incoming/2026/11/27/b1/1.2/1.3/1.4.dcm"


def _spool(directory: Path, dataset: bytes, fragment: int = 16_384) -> Spooled:
    writer = SpoolWriter(CT, "1.2.3.45", EXPLICIT, directory=directory)
    view = memoryview(dataset)
    for start in range(0, len(dataset), fragment):  # as PDV payloads arrive
        writer.write(view[start : start + fragment])
    return writer.finish()


@pytest.mark.parametrize("instance_uid", ["1.2.3.4", "1.2.3.45"])  # even and odd length (padding)
@pytest.mark.parametrize("transfer_syntax", [EXPLICIT, "1.2.840.10008.1.2", "1.2.840.10008.1.2.4.201"])
def test_file_meta_is_the_bytes_pynetdicom_writes_before_a_spooled_dataset(instance_uid, transfer_syntax):
    expected = DicomBytesIO()
    expected.write(b"\0" * 128 + b"DICM")
    write_file_meta_info(
        expected,
        create_file_meta(sop_class_uid=CT, sop_instance_uid=instance_uid, transfer_syntax=transfer_syntax),
    )
    assert file_meta(CT, instance_uid, transfer_syntax) == expected.getvalue()


@pytest.mark.parametrize("dataset_size", [1000, HEADER_BYTES, 200_001])
def test_spooled_file_hash_size_and_header_are_those_of_the_bytes_written(tmp_path, dataset_size):
    dataset = os.urandom(dataset_size)
    spooled = _spool(tmp_path, dataset)
    content = spooled.path.read_bytes()
    assert content == file_meta(CT, "1.2.3.45", EXPLICIT) + dataset
    assert spooled.size == len(content)
    assert spooled.sha256 == hashlib.sha256(content).hexdigest()
    assert spooled.header == dataset[:HEADER_BYTES]
    assert spooled.whole_dataset_in_header == (dataset_size <= HEADER_BYTES)
    assert stat.S_IMODE(spooled.path.stat().st_mode) == 0o600  # PHI: private while spooled
    # The stock receive path reads pynetdicom's spool file instead: the same result.
    assert Spooled.from_file(spooled.path, EXPLICIT) == spooled


def test_an_abandoned_spool_leaves_nothing(tmp_path):
    writer = SpoolWriter(CT, "1.2.3.4", EXPLICIT, directory=tmp_path)
    writer.write(b"partial")
    writer.abandon()
    assert list(tmp_path.iterdir()) == []


def test_file_backend_moves_the_spool_file_into_place_durably(tmp_path, monkeypatch):
    spool_dir, store = tmp_path / "spool", tmp_path / "store"
    spool_dir.mkdir()
    storage = FileStorage(store)
    storage.prepare()
    spooled = _spool(spool_dir, os.urandom(300_000))
    content = spooled.path.read_bytes()
    inode = spooled.path.stat().st_ino

    # What reaches the disk, in order: fsync of the object, the rename, fsync of its directory.
    operations: list[tuple[str, str]] = []
    real_fsync, real_replace = os.fsync, os.replace
    monkeypatch.setattr(
        os,
        "fsync",
        lambda fd: (operations.append(("fsync", os.readlink(f"/proc/self/fd/{fd}"))), real_fsync(fd)),
    )
    monkeypatch.setattr(
        os, "replace", lambda a, b: (operations.append(("rename", str(b))), real_replace(a, b))
    )
    stored = storage.put_file(KEY, spooled)
    dest = store / KEY
    assert operations[-3:] == [
        ("fsync", str(spooled.path)),
        ("rename", str(dest)),
        ("fsync", str(dest.parent)),
    ]
    assert dest.read_bytes() == content and dest.stat().st_ino == inode  # moved, not copied
    assert not spooled.path.exists()
    assert (stored.key, stored.size, stored.sha256) == (
        KEY,
        len(content),
        hashlib.sha256(content).hexdigest(),
    )

    # A stored object gets the mode a new file gets there, like the manifests (not the spool's 0600).
    storage.put_bytes("batches/b1.json", b"{}", "application/json")
    assert dest.stat().st_mode == (store / "batches/b1.json").stat().st_mode

    # A retry after the rename (say the directory fsync failed) recognises the moved file.
    operations.clear()
    assert storage.put_file(KEY, spooled) == stored
    assert operations == [("fsync", str(dest.parent))]
    spooled.discard()  # what the handler does afterwards: nothing left to remove
    assert dest.read_bytes() == content


def test_file_backend_copies_from_a_spool_on_another_filesystem(tmp_path):
    shm = Path("/dev/shm")
    assert shm.stat().st_dev != tmp_path.stat().st_dev, "needs /dev/shm on a filesystem of its own"
    storage = FileStorage(tmp_path / "store")
    storage.prepare()
    with tempfile.TemporaryDirectory(dir=shm) as spool_dir:
        spooled = _spool(Path(spool_dir), os.urandom(100_000))
        content = spooled.path.read_bytes()
        stored = storage.put_file(KEY, spooled)
        assert (tmp_path / "store" / KEY).read_bytes() == content
        assert stored.sha256 == spooled.sha256 and stored.size == spooled.size
        assert spooled.path.exists()  # the handler discards it
        spooled.discard()
        assert list(Path(spool_dir).iterdir()) == []
    assert [p.name for p in (tmp_path / "store" / KEY).parent.iterdir()] == ["1.4.dcm"]  # no partials


def test_a_vanished_spool_file_is_a_permanent_failure(tmp_path):
    storage = FileStorage(tmp_path / "store")
    storage.prepare()
    spooled = _spool(tmp_path, b"x" * 10)
    spooled.discard()
    with pytest.raises(StorageError) as failure:
        storage.put_file(KEY, spooled)
    assert not failure.value.transient
