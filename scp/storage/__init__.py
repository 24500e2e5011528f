"""Storage backends behind one interface (``Storage``), chosen by the storage URI."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import unquote, urlparse

from scp.storage.base import Storage, StorageError, StoredObject, with_retries

__all__ = ["Storage", "StorageError", "StoredObject", "open_storage", "with_retries"]


def open_storage(uri: str, *, part_size: int, max_connections: int = 32) -> Storage:
    """``s3://bucket[/prefix]`` or ``file:///absolute/path`` (validated by ScpSettings)."""
    parsed = urlparse(uri)
    if parsed.scheme == "s3":
        from scp.storage.s3 import S3Storage

        return S3Storage(parsed.netloc, parsed.path, part_size=part_size, max_connections=max_connections)
    if parsed.scheme == "file":
        from scp.storage.file import FileStorage

        return FileStorage(Path(unquote(parsed.path)))
    raise ValueError(f"unsupported storage URI scheme {parsed.scheme!r}")
