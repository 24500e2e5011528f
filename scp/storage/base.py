"""The storage interface every backend implements, and the retry policy around it.

A backend's ``put_*`` returns only once the object is durable (S3 confirmed the PUT with its
checksum; the file is fsynced and renamed into place). It raises ``StorageError`` with
``transient=True`` when trying again may help (network, 5xx, throttling) and ``False`` when it
cannot (missing bucket, access denied): the caller then stops retrying early.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol, TypeVar

if TYPE_CHECKING:
    from scp.spool import Spooled

log = logging.getLogger("scp.storage")

T = TypeVar("T")


class StorageError(Exception):
    def __init__(self, message: str, *, transient: bool):
        super().__init__(message)
        self.transient = transient


@dataclass(frozen=True)
class StoredObject:
    key: str  # as stored: relative to the bucket or the storage directory
    size: int
    sha256: str  # hex digest of the stored bytes


class Storage(Protocol):
    description: str  # for logs: scheme + location, never credentials

    def full_key(self, key: str) -> str:
        """``key`` (layout-relative) as stored, i.e. with the URI's prefix applied."""

    def prepare(self) -> None:
        """Create what the backend needs before the first write (e.g. the directory)."""

    def put_file(self, key: str, spooled: Spooled) -> StoredObject:
        """Store a spooled dataset's file under ``full_key(key)``; durable when this returns.

        The backend may take the file (move it into place); the caller discards it afterwards.
        """

    def upload_file(self, key: str, spooled: Spooled) -> StoredObject:
        """``put_file`` for a caller that retries without end (the journal's uploader): a backend
        may use a client that retries by itself and costs less CPU (S3: awscrt's)."""

    def put_bytes(self, key: str, data: bytes, content_type: str) -> StoredObject:
        """Store a small object (a manifest); durable when this returns."""

    def check(self) -> None:
        """Cheap reachability check for /readyz; raises StorageError when unusable."""

    def put_bytes_if_absent(self, key: str, data: bytes, content_type: str) -> bool:
        """Create a small object only if none exists (S3 ``If-None-Match: *``); False if one did."""

    def get_bytes(self, key: str) -> bytes | None:
        """A small object's bytes (a manifest), None when there is none."""


def with_retries(
    operation: Callable[[], T],
    *,
    retries: int,
    first_delay: float,
    what: str,
    sleep: Callable[[float], None] = time.sleep,
) -> T:
    """Run ``operation``; retry transient failures ``retries`` times with doubling delays."""
    attempt = 0
    while True:
        try:
            return operation()
        except StorageError as exc:
            if not exc.transient or attempt >= retries:
                raise
            delay = first_delay * (2**attempt)
            attempt += 1
            log.warning(
                "storage write failed, retrying",
                extra={
                    "fields": {"what": what, "attempt": attempt, "delaySeconds": delay, "error": str(exc)}
                },
            )
            sleep(delay)
