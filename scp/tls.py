"""The DICOM TLS listener's SSLContext: TLS 1.2 minimum, optional client-certificate verification.

The certificate, key and CA bundle come from files, or as PEM text in ``SCP_TLS_*_PEM`` (how an ECS
task receives them from Secrets Manager: as environment variables, never as files). PEM text is
written to the configured ``SCP_TLS_*_FILE`` path (a private file in a private directory), loaded,
and the file removed again: the key then lives only in the process's memory. A rotated secret is
picked up when the task restarts.
"""

from __future__ import annotations

import contextlib
import os
import ssl
from collections.abc import Iterator
from pathlib import Path

from core.scp_settings import ScpSettings


def server_context(settings: ScpSettings) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    with pem_files(settings):
        context.load_cert_chain(str(settings.tls_cert_file), str(settings.tls_key_file))
        if settings.tls_ca_file:
            context.load_verify_locations(cafile=str(settings.tls_ca_file))
    if settings.tls_ca_file:
        context.verify_mode = ssl.CERT_REQUIRED if settings.tls_require_client_cert else ssl.CERT_OPTIONAL
    return context


@contextlib.contextmanager
def pem_files(settings: ScpSettings) -> Iterator[list[Path]]:
    """Write each PEM text setting to its file path for the duration of the block, then remove it."""
    written: list[Path] = []
    try:
        for pem, path in (
            (settings.tls_cert_pem, settings.tls_cert_file),
            (settings.tls_key_pem, settings.tls_key_file),
            (settings.tls_ca_pem, settings.tls_ca_file),
        ):
            if pem and path:
                _write_private(Path(path), pem)
                written.append(Path(path))
        yield written
    finally:
        for path in written:
            path.unlink(missing_ok=True)


def _write_private(path: Path, text: str) -> None:
    """Owner-only file in an owner-only directory; never follows a symlink planted at ``path``."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | getattr(os, "O_NOFOLLOW", 0)
    fd = os.open(path, flags, 0o600)
    with os.fdopen(fd, "w") as file:
        file.write(text if text.endswith("\n") else text + "\n")
