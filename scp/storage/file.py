"""``file:///path`` backend: a directory tree with the layout's keys, fsynced before success.

Received objects are moved in from the spool directory by rename (one write of the data, no
copy); manifests are written to a temporary name, fsynced and renamed. Either way the data and
the directory entry are fsynced before ``put_*`` returns.
"""

from __future__ import annotations

import errno
import hashlib
import os
import secrets
from pathlib import Path

from scp.spool import Spooled
from scp.storage.base import StorageError, StoredObject

# Errors that retrying cannot fix; anything else (EIO, ENOSPC freed later, ...) is retried.
_PERMANENT_ERRNOS = {errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOTDIR, errno.EISDIR}


COPY_CHUNK = 1024 * 1024


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _chmod_and_fsync(path: Path, mode: int) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fchmod(fd, mode)
        os.fsync(fd)
    finally:
        os.close(fd)


def _umask() -> int:
    """The process umask, read without changing it (os.umask would race other threads)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    return 0o022


def _is_file(path: Path, inode: tuple[int, int]) -> bool:
    try:
        stat = path.stat()
    except FileNotFoundError:
        return False
    return (stat.st_dev, stat.st_ino) == inode


def _storage_error(key: str, exc: OSError) -> StorageError:
    return StorageError(
        f"writing {key} failed: {exc.strerror or exc}", transient=exc.errno not in _PERMANENT_ERRNOS
    )


class FileStorage:
    def __init__(self, root: Path):
        self.root = root
        self.description = f"file://{root}"
        # Spool files are private (0600); stored objects get the mode a new file gets here.
        self.file_mode = 0o666 & ~_umask()

    def full_key(self, key: str) -> str:
        return key

    def prepare(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)

    def put_file(self, key: str, spooled: Spooled) -> StoredObject:
        """Move the spool file into place: chmod and fsync it, rename it, fsync the directory.

        Only a spool directory on another filesystem costs a copy (fsynced the same way).
        A retry after a failed directory fsync finds the file already moved and fsyncs again.
        """
        dest = self.root / key
        try:
            self._make_parents(dest.parent)
            if not _is_file(dest, spooled.inode):
                try:
                    _chmod_and_fsync(spooled.path, self.file_mode)
                except FileNotFoundError as exc:
                    raise StorageError(f"the spooled object is gone: {exc}", transient=False) from exc
                try:
                    os.replace(spooled.path, dest)
                except OSError as exc:
                    if exc.errno != errno.EXDEV:
                        raise
                    return self._copy(key, spooled)
            _fsync_dir(dest.parent)
        except OSError as exc:
            raise _storage_error(key, exc) from exc
        return StoredObject(key=key, size=spooled.size, sha256=spooled.sha256)

    def upload_file(self, key: str, spooled: Spooled) -> StoredObject:
        return self.put_file(key, spooled)  # the journal's uploads: nothing cheaper on a disk

    def _copy(self, key: str, spooled: Spooled) -> StoredObject:
        try:
            source = spooled.path.open("rb")
        except OSError as exc:
            raise StorageError(f"reading the spooled object failed: {exc}", transient=False) from exc
        with source:
            return self._write(key, iter(lambda: source.read(COPY_CHUNK), b""))

    def put_bytes(self, key: str, data: bytes, content_type: str) -> StoredObject:
        return self._write(key, iter([data]))

    def put_bytes_if_absent(self, key: str, data: bytes, content_type: str) -> bool:
        """Written under a temporary name, then linked into place: link fails if the name exists."""
        dest = self.root / key
        partial = dest.with_name(f".{dest.name}.{secrets.token_hex(4)}.partial")
        try:
            self._make_parents(dest.parent)
            with partial.open("wb") as out:
                out.write(data)
                out.flush()
                os.fsync(out.fileno())
            try:
                os.link(partial, dest)
            except FileExistsError:
                return False
            finally:
                partial.unlink(missing_ok=True)
            _fsync_dir(dest.parent)
        except OSError as exc:
            raise _storage_error(key, exc) from exc
        return True

    def get_bytes(self, key: str) -> bytes | None:
        try:
            return (self.root / key).read_bytes()
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise _storage_error(key, exc) from exc

    def check(self) -> None:
        if not self.root.is_dir() or not os.access(self.root, os.W_OK | os.X_OK):
            raise StorageError(f"{self.root} is not a writable directory", transient=True)

    def _write(self, key: str, chunks) -> StoredObject:
        dest = self.root / key
        partial = dest.with_name(f".{dest.name}.{secrets.token_hex(4)}.partial")
        try:
            self._make_parents(dest.parent)
            digest = hashlib.sha256()
            size = 0
            with partial.open("wb") as out:
                for chunk in chunks:
                    digest.update(chunk)
                    out.write(chunk)
                    size += len(chunk)
                out.flush()
                os.fsync(out.fileno())
            os.replace(partial, dest)
            _fsync_dir(dest.parent)
        except OSError as exc:
            partial.unlink(missing_ok=True)
            raise _storage_error(key, exc) from exc
        return StoredObject(key=key, size=size, sha256=digest.hexdigest())

    def _make_parents(self, directory: Path) -> None:
        """mkdir -p, fsyncing each parent that gained an entry so the new path survives a crash."""
        missing = []
        while not directory.exists():
            missing.append(directory)
            directory = directory.parent
        for new in reversed(missing):
            try:
                new.mkdir()
            except FileExistsError:
                continue
            _fsync_dir(new.parent)
