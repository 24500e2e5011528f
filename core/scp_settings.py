"""Settings of the Store SCP. The container reads them from ``SCP_<SETTING>`` variables;
the Pulumi program writes those variables from the same model (``to_env("scp")``)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal
from urllib.parse import urlparse

from pydantic import Field, field_validator, model_validator

from core.config_base import Settings
from core.dicom_support import AHI_MAX_BYTES_PER_IMPORT_JOB, AHI_MAX_FILES_PER_IMPORT_JOB
from core.validators import cidr

ENV_PREFIX = "scp"


def validate_ae_title(value: str) -> str:
    """PS3.5 AE: 1-16 characters of the default repertoire, no backslash, not only spaces."""
    stripped = value.strip()
    if not stripped:
        raise ValueError("an AE title must not be empty or only spaces")
    if len(value) > 16:
        raise ValueError(f"an AE title has at most 16 characters, this one has {len(value)}")
    if "\\" in value or any(not (32 <= ord(c) < 127) for c in value):
        raise ValueError("an AE title uses printable ASCII characters without backslash")
    return stripped


def parse_peers(entries: list[str]) -> dict[str, tuple[str, int]]:
    """``["AE=host:port", ...]`` -> ``{AE: (host, port)}``; a malformed entry raises ValueError."""
    peers: dict[str, tuple[str, int]] = {}
    for entry in entries:
        ae, sep, address = entry.partition("=")
        host, colon, port = address.rpartition(":")
        if not (sep and colon and host and port.isdigit() and 0 < int(port) < 65536):
            raise ValueError(f"commitment peer {entry!r}: use AE=host:port")
        peers[validate_ae_title(ae)] = (host.strip(), int(port))
    return peers


class ScpSettings(Settings):
    ae_title: str = Field("AHI-GATEWAY", description="Called AE title the SCP answers to")
    bind_address: str = Field("0.0.0.0", description="Address the listeners bind to")
    port: int = Field(11112, ge=0, le=65535, description="Plain DICOM port (0 = pick a free port)")
    plain_enabled: bool = Field(True, description="Serve the plain (non-TLS) port")
    storage_uri: str = Field(
        "file:///var/lib/dicom-scp/store",
        description="Where instances go: s3://bucket[/prefix] or file:///absolute/path",
    )
    spool_dir: Path = Field(
        Path("/tmp/dicom-scp-spool"), description="Spool directory of received datasets (emptied at start)"
    )
    require_called_ae: bool = Field(True, description="Reject associations whose called AE differs")
    allowed_calling_aes: list[str] = Field(
        default_factory=list, description="Calling AE titles allowed (empty = any)"
    )
    allowed_cidrs: list[str] = Field(default_factory=list, description="Peer CIDRs allowed (empty = any)")
    sop_classes: list[str] = Field(
        default_factory=list, description="Storage SOP class UIDs accepted (empty = all storage classes)"
    )
    max_associations: int = Field(32, ge=1, le=1000, description="Concurrent associations per process")
    workers: int = Field(
        0,
        ge=0,
        le=64,
        description="SCP processes sharing the port (SO_REUSEPORT); 0 = one per CPU of the task",
    )
    acse_timeout: float = Field(30.0, gt=0, description="Seconds to wait for association messages")
    dimse_timeout: float = Field(60.0, gt=0, description="Seconds to wait for DIMSE messages")
    network_timeout: float = Field(60.0, gt=0, description="Idle seconds before an association is aborted")
    artim_timeout: float = Field(
        10.0, gt=0, description="Seconds a new connection has to send its association request (ARTIM)"
    )
    max_pending_connections: int = Field(
        64,
        ge=1,
        le=10000,
        description="Connections waiting for their association request; past it the oldest is dropped",
    )
    max_connections_per_peer: int = Field(
        0, ge=0, le=10000, description="Concurrent connections from one peer address (0 = no limit)"
    )
    max_pdu: int = Field(
        1024 * 1024,
        ge=0,
        description="Maximum PDU length we receive; bounds memory per association (0 = unlimited)",
    )
    batch_max_files: int = Field(
        4500, ge=1, description="Roll a batch over at this many files (at most 5000)"
    )
    batch_max_bytes: int = Field(
        9 * 10**9, ge=1, description="Roll a batch over at this many bytes (at most 10000000000 = 10 GB)"
    )
    batch_max_age_seconds: float = Field(300.0, gt=0, description="Roll a batch over at this age")
    store_retries: int = Field(3, ge=0, le=20, description="Retries of a failed storage write")
    store_retry_delay: float = Field(0.2, ge=0, description="First retry delay in seconds (doubles)")
    multipart_threshold: int = Field(
        8 * 1024**2, ge=5 * 1024**2, description="S3 objects from this size go multipart, in parts this big"
    )
    tls_enabled: bool = Field(False, description="Serve DICOM TLS")
    tls_port: int = Field(2762, ge=0, le=65535, description="DICOM TLS port")
    tls_cert_file: Path | None = Field(None, description="PEM certificate chain of the TLS listener")
    tls_key_file: Path | None = Field(None, description="PEM private key of the TLS listener")
    tls_ca_file: Path | None = Field(None, description="PEM CA bundle to verify client certificates")
    tls_require_client_cert: bool = Field(False, description="Require and verify a client certificate")
    health_port: int = Field(8080, ge=0, le=65535, description="HTTP port for /healthz /readyz /metrics")
    drain_seconds: float = Field(30.0, ge=0, description="On SIGTERM, let associations finish this long")
    task_id: str = Field("", description="Task identifier recorded in manifests (default: hostname)")
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field("INFO", description="Log level")
    journal_dir: Path | None = Field(
        None,
        description="Journal directory (EFS): acknowledge once fsynced there, upload behind (unset: off)",
    )
    journal_uploads: int = Field(16, ge=1, le=256, description="Concurrent uploads from the journal")
    journal_max_files: int = Field(
        20000, ge=1, description="Journal backlog limit: files not yet uploaded (past it: 0xA700)"
    )
    journal_max_bytes: int = Field(
        20 * 1024**3, ge=1, description="Journal backlog limit: bytes not yet uploaded (past it: 0xA700)"
    )
    journal_max_age_seconds: float = Field(
        900.0, gt=0, description="Journal backlog limit: age of the oldest entry not yet uploaded"
    )
    journal_heartbeat_seconds: float = Field(
        5.0, gt=0, description="How often a process renews the heartbeat of its journal directory"
    )
    journal_stale_seconds: float = Field(
        60.0,
        gt=0,
        description="A journal directory whose heartbeat is this old is adopted by another process",
    )
    journal: Literal["efs", "none"] = Field(
        "efs",
        description="Deployed journal: efs (EFS, SCP_JOURNAL_DIR on it) or none (ack after the S3 PUT)",
    )
    commitment_table: str = Field(
        "", description="DynamoDB table of Storage Commitment transactions (empty = commitment refused)"
    )
    commitment_peers: list[str] = Field(
        default_factory=list, description="Storage Commitment report peers, AE=host:port per calling AE"
    )
    commitment_deadline_seconds: float = Field(
        3600.0, gt=0, description="Report still-unresolved instances as failed (0x0110) after this long"
    )
    commitment_unknown_seconds: float = Field(
        600.0, gt=0, description="An instance not received this long after the request fails (0x0112)"
    )
    commitment_delivery_seconds: float = Field(
        3600.0, gt=0, description="Retry delivering a commitment report this long, then alarm"
    )
    commitment_retry_seconds: float = Field(
        10.0, gt=0, description="First delay between report delivery attempts (doubles, at most 5 min)"
    )
    commitment_poll_seconds: float = Field(
        5.0, gt=0, description="How often the reporter looks for due commitment transactions"
    )

    @field_validator("ae_title")
    @classmethod
    def _ae_title(cls, v: str) -> str:
        return validate_ae_title(v)

    @field_validator("allowed_calling_aes")
    @classmethod
    def _calling_aes(cls, v: list[str]) -> list[str]:
        return [validate_ae_title(a) for a in v]

    @field_validator("allowed_cidrs")
    @classmethod
    def _cidrs(cls, v: list[str]) -> list[str]:
        return [cidr(c, address_ok=True) for c in v]

    @field_validator("commitment_peers")
    @classmethod
    def _commitment_peers(cls, v: list[str]) -> list[str]:
        parse_peers(v)
        return v

    @field_validator("storage_uri")
    @classmethod
    def _storage_uri(cls, v: str) -> str:
        parsed = urlparse(v)
        if parsed.scheme == "s3" and parsed.netloc:
            return v
        if parsed.scheme == "file" and parsed.path.startswith("/") and not parsed.netloc:
            return v
        raise ValueError("use s3://bucket[/prefix] or file:///absolute/path")

    @model_validator(mode="after")
    def _listeners(self) -> ScpSettings:
        if not self.plain_enabled and not self.tls_enabled:
            raise ValueError("both listeners are disabled: enable plain_enabled or tls_enabled")
        if self.tls_enabled and not (self.tls_cert_file and self.tls_key_file):
            raise ValueError("tls_enabled needs tls_cert_file and tls_key_file")
        if self.tls_require_client_cert and not self.tls_ca_file:
            raise ValueError("tls_require_client_cert needs tls_ca_file")
        return self

    @classmethod
    def from_environ(cls, environ) -> ScpSettings:
        return cls.from_env(environ, ENV_PREFIX, strict=True)

    @field_validator("batch_max_files", "batch_max_bytes")
    @classmethod
    def _import_job_quota(cls, v: int, info) -> int:
        """One batch is one HealthImaging import job: its limits stay within the job's quotas."""
        quota, unit = {
            "batch_max_files": (AHI_MAX_FILES_PER_IMPORT_JOB, "files"),
            "batch_max_bytes": (AHI_MAX_BYTES_PER_IMPORT_JOB, "bytes (10 GB, not 10 GiB)"),
        }[info.field_name]
        if v > quota:
            raise ValueError(
                f"a batch is one HealthImaging import job, which takes at most {quota} {unit}; "
                f"use {quota} or less"
            )
        return v

    # TCP keep-alive of accepted DICOM connections (scp/keepalive.py). The idle time stays below the
    # NLB's TCP idle timeout (350 s by default), which the stack config checks.
    keepalive_idle_seconds: int = Field(
        120,
        ge=1,
        le=7200,
        description="TCP keep-alive: idle seconds before the first probe (below the NLB's 350 s)",
    )
    keepalive_interval_seconds: int = Field(
        30, ge=1, le=600, description="TCP keep-alive: seconds between unanswered probes"
    )
    keepalive_count: int = Field(
        4, ge=1, le=30, description="TCP keep-alive: unanswered probes before the connection is dropped"
    )

    # TLS material as text, for a container that receives it in environment variables (ECS puts
    # Secrets Manager values there; a task has no other way to get a file). At start the SCP writes
    # each PEM to its *_file path (mode 0600, directory 0700), loads it and removes the file (scp/tls.py).
    tls_cert_pem: str | None = Field(
        None,
        description="PEM certificate chain as text: written to tls_cert_file at start, removed once loaded",
    )
    tls_key_pem: str | None = Field(
        None, description="PEM private key as text: written to tls_key_file at start, removed once loaded"
    )
    tls_ca_pem: str | None = Field(
        None, description="PEM CA bundle as text: written to tls_ca_file at start, removed once loaded"
    )

    @model_validator(mode="after")
    def _pem_paths(self) -> ScpSettings:
        for kind in ("cert", "key", "ca"):
            if getattr(self, f"tls_{kind}_pem") and not getattr(self, f"tls_{kind}_file"):
                raise ValueError(
                    f"tls_{kind}_pem needs tls_{kind}_file: the path the SCP writes it to at start"
                )
        return self
