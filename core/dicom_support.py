"""What AWS HealthImaging can import, and what the Store SCP accepts by default.

Pure constants and small functions (no pynetdicom, no boto3) so the SCP, the import
workflow's validator and the CLI agree on one list.

Transfer syntaxes: AWS HealthImaging Developer Guide, "Supported transfer syntaxes",
https://docs.aws.amazon.com/healthimaging/latest/devguide/supported-transfer-syntaxes.html
(read 2026-11 through the project's documentation search). Rows marked ``*`` on that page are
stored in their original encoding, the others are transcoded to HTJ2K (or JPEG 2000 lossless,
per datastore) during import. The rows from 1.2.840.10008.1.2 to 1.2.840.10008.1.2.4.92 were
read verbatim (the stored excerpt of the page ends there); the HTJ2K rows (.4.201, .4.202,
.4.203) and RLE Lossless (1.2.840.10008.1.2.5) are rows of the same table as named in the
project brief. JPEG 2000 Part 2 lossy (.4.93) and the video transfer syntaxes (MPEG-2, H.264,
HEVC: .4.100-.4.108) could not be confirmed on that page and are therefore NOT accepted: a
sender with such objects gets the presentation context refused and can fall back.
Add a UID here only after reading it on the AWS page.

Storage SOP classes: HealthImaging imports any SOP class UID, including retired and private ones
(same guide, "Supported SOP classes"). By default the SCP accepts every storage SOP class of
DICOM PS3.4 Annex B as listed by pynetdicom 3.0.4 (``pynetdicom.sop_class._STORAGE_CLASSES``;
a test keeps this list equal to it); ``SCP_SOP_CLASSES`` replaces the list, e.g. to add
private SOP classes.
"""

from __future__ import annotations

from collections.abc import Iterable

VERIFICATION_SOP_CLASS = "1.2.840.10008.1.1"

# UID -> (name, stored in original encoding by HealthImaging)
AHI_TRANSFER_SYNTAXES: dict[str, tuple[str, bool]] = {
    "1.2.840.10008.1.2": ("Implicit VR Little Endian", False),
    "1.2.840.10008.1.2.1": ("Explicit VR Little Endian", True),
    "1.2.840.10008.1.2.1.99": ("Deflated Explicit VR Little Endian", False),
    "1.2.840.10008.1.2.2": ("Explicit VR Big Endian", False),
    "1.2.840.10008.1.2.4.50": ("JPEG Baseline (Process 1)", True),
    "1.2.840.10008.1.2.4.51": ("JPEG Extended (Process 2 & 4)", False),
    "1.2.840.10008.1.2.4.57": ("JPEG Lossless, Non-Hierarchical (Process 14)", False),
    "1.2.840.10008.1.2.4.70": ("JPEG Lossless, Non-Hierarchical, First-Order Prediction (SV1)", False),
    "1.2.840.10008.1.2.4.80": ("JPEG-LS Lossless", False),
    "1.2.840.10008.1.2.4.81": ("JPEG-LS Lossy (Near-Lossless)", False),
    "1.2.840.10008.1.2.4.90": ("JPEG 2000 (Lossless Only)", False),
    "1.2.840.10008.1.2.4.91": ("JPEG 2000", True),
    "1.2.840.10008.1.2.4.92": ("JPEG 2000 Part 2 Multi-component (Lossless Only)", False),
    "1.2.840.10008.1.2.4.201": ("High-Throughput JPEG 2000 (Lossless Only)", True),
    "1.2.840.10008.1.2.4.202": ("High-Throughput JPEG 2000 with RPCL Options (Lossless Only)", True),
    "1.2.840.10008.1.2.4.203": ("High-Throughput JPEG 2000", True),
    "1.2.840.10008.1.2.5": ("RLE Lossless", False),
}

# Acceptor preference when one presentation context proposes several: pynetdicom accepts the first
# of this order that the sender proposed. Lossless before lossy (never make a sender degrade an
# image), compressed before uncompressed (what the sender already holds, smaller on the wire and
# in S3), uncompressed little endian before the rarer encodings.
TRANSFER_SYNTAXES: tuple[str, ...] = (
    "1.2.840.10008.1.2.4.201",  # HTJ2K lossless
    "1.2.840.10008.1.2.4.202",  # HTJ2K lossless RPCL (HealthImaging's storage format)
    "1.2.840.10008.1.2.4.90",  # JPEG 2000 lossless
    "1.2.840.10008.1.2.4.80",  # JPEG-LS lossless
    "1.2.840.10008.1.2.4.70",  # JPEG lossless SV1
    "1.2.840.10008.1.2.4.57",  # JPEG lossless
    "1.2.840.10008.1.2.5",  # RLE lossless
    "1.2.840.10008.1.2.4.92",  # JPEG 2000 Part 2 lossless
    "1.2.840.10008.1.2.1",  # Explicit VR little endian
    "1.2.840.10008.1.2",  # Implicit VR little endian
    "1.2.840.10008.1.2.1.99",  # Deflated explicit VR little endian
    "1.2.840.10008.1.2.2",  # Explicit VR big endian
    "1.2.840.10008.1.2.4.203",  # HTJ2K (lossless or lossy)
    "1.2.840.10008.1.2.4.91",  # JPEG 2000 (lossless or lossy)
    "1.2.840.10008.1.2.4.81",  # JPEG-LS near-lossless
    "1.2.840.10008.1.2.4.50",  # JPEG baseline
    "1.2.840.10008.1.2.4.51",  # JPEG extended
)
assert set(TRANSFER_SYNTAXES) == set(AHI_TRANSFER_SYNTAXES)

_STORAGE_ROOT = "1.2.840.10008.5.1.4."
# pynetdicom 3.0.4's storage SOP classes, written relative to 1.2.840.10008.5.1.4.
_STORAGE_SUFFIXES = """
    1.1.1 1.1.1.1 1.1.1.1.1 1.1.1.2 1.1.1.2.1 1.1.1.3 1.1.1.3.1 1.1.2 1.1.2.1 1.1.2.2 1.1.3.1 1.1.4
    1.1.4.1 1.1.4.2 1.1.4.3 1.1.4.4 1.1.6.1 1.1.6.2 1.1.6.3 1.1.7 1.1.7.1 1.1.7.2 1.1.7.3 1.1.7.4
    1.1.9.1.1 1.1.9.1.2 1.1.9.1.3 1.1.9.1.4 1.1.9.2.1 1.1.9.3.1 1.1.9.4.1 1.1.9.4.2 1.1.9.5.1 1.1.9.6.1
    1.1.9.6.2 1.1.9.7.1 1.1.9.7.2 1.1.9.7.3 1.1.9.7.4 1.1.9.8.1 1.1.9.100.1 1.1.9.100.2 1.1.11.1
    1.1.11.2 1.1.11.3 1.1.11.4 1.1.11.5 1.1.11.6 1.1.11.7 1.1.11.8 1.1.11.9 1.1.11.10 1.1.11.11
    1.1.11.12 1.1.12.1 1.1.12.1.1 1.1.12.2 1.1.12.2.1 1.1.13.1.1 1.1.13.1.2 1.1.13.1.3 1.1.13.1.4
    1.1.13.1.5 1.1.14.1 1.1.14.2 1.1.20 1.1.30 1.1.66 1.1.66.1 1.1.66.2 1.1.66.3 1.1.66.4 1.1.66.5
    1.1.66.6 1.1.66.7 1.1.66.8 1.1.67 1.1.68.1 1.1.68.2 1.1.77.1.1 1.1.77.1.1.1 1.1.77.1.2 1.1.77.1.2.1
    1.1.77.1.3 1.1.77.1.4 1.1.77.1.4.1 1.1.77.1.5.1 1.1.77.1.5.2 1.1.77.1.5.3 1.1.77.1.5.4 1.1.77.1.5.5
    1.1.77.1.5.6 1.1.77.1.5.7 1.1.77.1.5.8 1.1.77.1.6 1.1.77.1.7 1.1.77.1.8 1.1.77.1.9 1.1.78.1 1.1.78.2
    1.1.78.3 1.1.78.4 1.1.78.5 1.1.78.6 1.1.78.7 1.1.78.8 1.1.79.1 1.1.80.1 1.1.81.1 1.1.82.1 1.1.88.11
    1.1.88.22 1.1.88.33 1.1.88.34 1.1.88.35 1.1.88.40 1.1.88.50 1.1.88.59 1.1.88.65 1.1.88.67 1.1.88.68
    1.1.88.69 1.1.88.70 1.1.88.71 1.1.88.72 1.1.88.73 1.1.88.74 1.1.88.75 1.1.88.76 1.1.88.77 1.1.90.1
    1.1.91.1 1.1.104.1 1.1.104.2 1.1.104.3 1.1.104.4 1.1.104.5 1.1.128 1.1.128.1 1.1.130 1.1.131
    1.1.200.2 1.1.200.8 1.1.481.1 1.1.481.2 1.1.481.3 1.1.481.4 1.1.481.5 1.1.481.6 1.1.481.7 1.1.481.8
    1.1.481.9 1.1.481.10 1.1.481.11 1.1.481.12 1.1.481.13 1.1.481.14 1.1.481.15 1.1.481.16 1.1.481.17
    1.1.481.18 1.1.481.19 1.1.481.20 1.1.481.21 1.1.481.22 1.1.481.23 1.1.481.24 1.1.481.25 34.7 34.10
"""

DEFAULT_STORAGE_SOP_CLASSES: tuple[str, ...] = tuple(_STORAGE_ROOT + s for s in _STORAGE_SUFFIXES.split())


def is_importable_transfer_syntax(uid: str) -> bool:
    """True when HealthImaging imports instances encoded with ``uid``."""
    return uid.strip().rstrip("\x00") in AHI_TRANSFER_SYNTAXES


def transfer_syntax_name(uid: str) -> str:
    entry = AHI_TRANSFER_SYNTAXES.get(uid)
    return entry[0] if entry else f"unsupported transfer syntax {uid}"


def accepted_sop_classes(configured: Iterable[str] = ()) -> tuple[str, ...]:
    """The SOP classes the SCP negotiates: the configured list, or every storage SOP class."""
    configured = tuple(dict.fromkeys(uid.strip() for uid in configured if uid.strip()))
    return configured or DEFAULT_STORAGE_SOP_CLASSES


# HealthImaging's quotas per import job (AWS General Reference, "AWS HealthImaging endpoints and
# quotas", as collected in the project's AHI facts): 5,000 files (adjustable) and 10 GB in total
# (fixed, decimal: 10 * 10**9 bytes, not 10 GiB), with at most 10,000 nested folders (fixed). One SCP
# batch is one import job, so the batch rollover limits (core/scp_settings.py) stay under
# these. A batch of N instances holds at most 2N folders (a study and a series each), so the file
# limit also keeps the folder quota.
AHI_MAX_FILES_PER_IMPORT_JOB = 5_000
AHI_MAX_BYTES_PER_IMPORT_JOB = 10 * 10**9
