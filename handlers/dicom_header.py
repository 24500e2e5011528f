"""Read and check the header of a stored DICOM Part 10 object, without its pixel data.

Shared by validation (start import) and the sweeper (which rebuilds a manifest from objects).
AWS HealthImaging rejects instances whose elements break its length constraints; we check them
before import so a bad instance is quarantined with a clear reason instead of failing inside
the import job. Reasons name the element and its length, never its value (no PHI).
"""

from __future__ import annotations

import io
from dataclasses import dataclass

from pydicom import dcmread
from pydicom.errors import InvalidDicomError

from core.dicom_support import is_importable_transfer_syntax, transfer_syntax_name

PREAMBLE_LENGTH = 128
MAGIC = b"DICM"
HEADER_PROBE_BYTES = 64 * 1024  # a ranged GET this long holds the header of nearly every object

# AWS HealthImaging Developer Guide, "DICOM element constraints"
# (https://docs.aws.amazon.com/healthimaging/latest/devguide/dicom-element-constraints.html) and the
# DICOMTags API reference (https://docs.aws.amazon.com/healthimaging/latest/APIReference/API_DICOMTags.html):
# keyword -> maximum length in characters.
MAX_LENGTHS: dict[str, int] = {
    "PatientName": 256,
    "PatientID": 256,
    "PatientBirthDate": 18,
    "PatientSex": 16,
    "StudyInstanceUID": 256,
    "StudyID": 16,
    "StudyDescription": 64,
    "AccessionNumber": 256,
    "StudyDate": 18,
    "StudyTime": 28,
    "SeriesInstanceUID": 256,
    "SeriesDescription": 64,
    "Modality": 16,
    "BodyPartExamined": 64,
    "SOPInstanceUID": 256,
}
# keyword -> inclusive maximum value (same sources).
MAX_VALUES: dict[str, int] = {
    "NumberOfStudyRelatedSeries": 1_000_000,
    "NumberOfStudyRelatedInstances": 10_000,
}
REQUIRED_UIDS = ("SOPClassUID", "SOPInstanceUID", "StudyInstanceUID", "SeriesInstanceUID")


class NotPart10(ValueError):
    """The bytes are not a DICOM Part 10 file (no preamble + DICM, or an unreadable header)."""


class Truncated(ValueError):
    """The probe ended inside the header: read more of the object."""


@dataclass(frozen=True)
class Header:
    sop_class_uid: str
    sop_instance_uid: str
    study_instance_uid: str
    series_instance_uid: str
    transfer_syntax_uid: str
    problems: tuple[str, ...]  # AHI constraint violations (empty = importable)


def parse_header(data: bytes, *, complete: bool) -> Header:
    """Parse a Part 10 header from ``data`` (the object's first bytes, or all of it if ``complete``)."""
    if len(data) < PREAMBLE_LENGTH + 4 or data[PREAMBLE_LENGTH : PREAMBLE_LENGTH + 4] != MAGIC:
        if not complete and len(data) < PREAMBLE_LENGTH + 4:
            raise Truncated("object shorter than the preamble probe")
        raise NotPart10("not a DICOM Part 10 file: no 128-byte preamble followed by 'DICM'")
    try:
        ds = dcmread(io.BytesIO(data), stop_before_pixels=True)
        values = {k: ds.get(k) for k in (*MAX_LENGTHS, *MAX_VALUES, *REQUIRED_UIDS)}
    except InvalidDicomError as exc:
        raise NotPart10(f"unreadable DICOM header: {exc}") from None
    except Exception as exc:  # pydicom raises assorted errors on bytes cut short
        if not complete:
            raise Truncated(str(exc)) from None
        raise NotPart10(f"unreadable DICOM header: {type(exc).__name__}") from None
    meta = ds.file_meta
    transfer_syntax = str(meta.get("TransferSyntaxUID", "") or "")
    problems = list(_constraint_problems(values))
    if not transfer_syntax:
        problems.append("file meta header has no TransferSyntaxUID")
    elif not is_importable_transfer_syntax(transfer_syntax):
        problems.append(f"{transfer_syntax_name(transfer_syntax)} is not importable by HealthImaging")
    for keyword in REQUIRED_UIDS:
        if not values.get(keyword):
            problems.append(f"{keyword} is missing")
    return Header(
        sop_class_uid=str(values.get("SOPClassUID") or meta.get("MediaStorageSOPClassUID", "") or ""),
        sop_instance_uid=str(
            values.get("SOPInstanceUID") or meta.get("MediaStorageSOPInstanceUID", "") or ""
        ),
        study_instance_uid=str(values.get("StudyInstanceUID") or ""),
        series_instance_uid=str(values.get("SeriesInstanceUID") or ""),
        transfer_syntax_uid=transfer_syntax,
        problems=tuple(problems),
    )


def _constraint_problems(values: dict) -> list[str]:
    problems = []
    for keyword, limit in MAX_LENGTHS.items():
        value = values.get(keyword)
        if value is None:
            continue
        length = len(str(value))
        if length > limit:
            problems.append(f"{keyword} is {length} characters long; HealthImaging allows at most {limit}")
    for keyword, limit in MAX_VALUES.items():
        value = values.get(keyword)
        if value is not None and str(value).strip() and int(value) > limit:
            problems.append(f"{keyword} exceeds HealthImaging's maximum of {limit}")
    return problems
