"""``file:///path`` backend: a directory tree with the layout's keys, fsynced before success."""

from __future__ import annotations

import errno
import hashlib
import os
import secrets
from pathlib import Path

from scp.storage.base import READ_CHUNK, StorageError, StoredObject

# Errors that retrying cannot fix; anything else (EIO, ENOSPC freed later, ...) is retried.
_PERMANENT_ERRNOS = {errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOTDIR, errno.EISDIR}


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class FileStorage:
    def __init__(self, root: Path):
        self.root = root
        self.description = f"file://{root}"

    def full_key(self, key: str) -> str:
        return key

    def prepare(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)

    def put_file(self, key: str, path: Path) -> StoredObject:
        try:
            with path.open("rb") as source:
                return self._write(key, iter(lambda: source.read(READ_CHUNK), b""))
        except OSError as exc:
            raise StorageError(f"reading the spooled object failed: {exc}", transient=False) from exc

    def put_bytes(self, key: str, data: bytes, content_type: str) -> StoredObject:
        return self._write(key, iter([data]))

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
            raise StorageError(
                f"writing {key} failed: {exc.strerror or exc}", transient=exc.errno not in _PERMANENT_ERRNOS
            ) from exc
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
