"""Read one DICOM Part 10 object the way an import job does: accept it or say why not.

An accepted instance is reduced to what image sets need: its UIDs, the elements HealthImaging
groups by ("Understanding image sets": Study Date, Accession Number, Patient ID, Study Instance
UID, Study ID; Series Instance UID, Series Number) and its attributes split into the Patient /
Study / Series / Instance levels of the image set metadata document. Pixel data is not read.
"""

from __future__ import annotations

import io
import re
import secrets
from dataclasses import dataclass, field
from typing import Any

import pydicom
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from pydicom.multival import MultiValue

# Level of each attribute in the metadata document (registry of DICOM data elements, PS3.6;
# Patient Study module attributes such as PatientWeight sit at Study level, as in AWS's sample).
PATIENT_LEVEL = frozenset(
    {
        "PatientName", "PatientID", "IssuerOfPatientID", "TypeOfPatientID", "PatientBirthDate",
        "PatientBirthTime", "PatientSex", "OtherPatientIDsSequence", "OtherPatientNames", "EthnicGroup",
        "PatientComments", "PatientIdentityRemoved", "DeidentificationMethod",
    }
)  # fmt: skip
STUDY_LEVEL = frozenset(
    {
        "StudyInstanceUID", "StudyDate", "StudyTime", "ReferringPhysicianName", "StudyID",
        "AccessionNumber", "StudyDescription", "PatientAge", "PatientSize", "PatientWeight",
        "AdmittingDiagnosesDescription", "NameOfPhysiciansReadingStudy", "IssuerOfAccessionNumberSequence",
    }
)  # fmt: skip
SERIES_LEVEL = frozenset(
    {
        "SeriesInstanceUID", "Modality", "SeriesNumber", "SeriesDescription", "SeriesDate", "SeriesTime",
        "BodyPartExamined", "Laterality", "PatientPosition", "ProtocolName", "PerformingPhysicianName",
        "OperatorsName",
    }
)  # fmt: skip
# Attributes an instance cannot be imported without.
REQUIRED = ("SOPClassUID", "SOPInstanceUID", "StudyInstanceUID", "SeriesInstanceUID")
# UIDs the API exposes (pattern ``[0-9.]+`` in the service model).
UID_ATTRIBUTES = ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID")
_UID = re.compile(r"[0-9.]+")
# Element length limits applied at import (AWS HealthImaging "DICOM element constraints", excerpt).
MAX_LENGTH = {
    "PatientName": 256, "PatientID": 256, "PatientBirthDate": 18, "PatientSex": 16,
    "StudyInstanceUID": 256, "StudyID": 256, "StudyDescription": 256, "AccessionNumber": 256,
    "StudyDate": 18, "StudyTime": 28, "SeriesInstanceUID": 256, "SOPInstanceUID": 256,
}  # fmt: skip
# Value representations stored as JSON numbers; DS and IS stay strings, as in AWS's sample.
_NUMERIC_VRS = frozenset({"US", "SS", "UL", "SL", "UV", "SV", "FL", "FD"})
_BINARY_VRS = frozenset({"OB", "OD", "OF", "OL", "OV", "OW", "UN"})


class InstanceRejected(Exception):
    """The object cannot be imported; the message goes to FAILURE/failure.ndjson (no PHI in it)."""


@dataclass(frozen=True)
class ParsedInstance:
    key: str  # the S3 key it was read from (``inputFile`` in the output files)
    study_uid: str
    series_uid: str
    sop_uid: str
    transfer_syntax_uid: str
    study_key: tuple[str, ...]  # PatientID, StudyDate, AccessionNumber, StudyID
    series_key: tuple[str, ...]  # SeriesNumber
    patient: dict[str, Any] = field(default_factory=dict)
    study: dict[str, Any] = field(default_factory=dict)
    series: dict[str, Any] = field(default_factory=dict)
    instance: dict[str, Any] = field(default_factory=dict)
    frame_count: int = 0
    frame_size: int | None = None

    @property
    def grouping_key(self) -> tuple[str, ...]:
        """Instances with equal keys may share an image set; different keys conflict."""
        return (self.study_uid, self.series_uid, *self.study_key, *self.series_key)

    def metadata_entry(self) -> dict[str, Any]:
        """This instance under ``Study.Series[uid].Instances[sop]`` of the metadata document."""
        frames = [{"ID": secrets.token_hex(16)} for _ in range(self.frame_count)]
        if self.frame_size is not None:
            for frame in frames:
                frame["FrameSizeInBytes"] = self.frame_size
        return {
            "DICOM": dict(self.instance),
            "StoredTransferSyntaxUID": self.transfer_syntax_uid,
            "ImageFrames": frames,
        }


def read_instance(key: str, data: bytes) -> ParsedInstance:
    """Parse a Part 10 object (header only) or raise ``InstanceRejected``."""
    try:
        dataset = pydicom.dcmread(io.BytesIO(data), stop_before_pixels=True)
    except (InvalidDicomError, EOFError) as exc:
        raise InstanceRejected("The file is not a DICOM Part 10 object") from exc
    except Exception as exc:  # pydicom raises many types for damaged files
        raise InstanceRejected(f"The DICOM file could not be parsed: {type(exc).__name__}") from exc
    transfer_syntax = str(getattr(dataset.file_meta, "TransferSyntaxUID", "") or "")
    if not transfer_syntax:
        raise InstanceRejected("DICOM attribute TransferSyntaxUID does not exist")
    for keyword in REQUIRED:
        if not str(dataset.get(keyword, "") or ""):
            raise InstanceRejected(f"DICOM attribute {keyword} does not exist")
    for keyword in UID_ATTRIBUTES:
        if not _UID.fullmatch(str(dataset.get(keyword))):
            raise InstanceRejected(f"DICOM attribute {keyword} is not a valid UID")
    for keyword, limit in MAX_LENGTH.items():
        if len(str(dataset.get(keyword, "") or "")) > limit:
            raise InstanceRejected(f"DICOM attribute {keyword} exceeds the maximum length of {limit}")

    levels: dict[str, dict[str, Any]] = {"patient": {}, "study": {}, "series": {}, "instance": {}}
    for element in dataset:
        if element.tag.is_private or not element.keyword or element.keyword == "PixelData":
            continue
        levels[_level(element.keyword)][element.keyword] = _json_value(element)

    def text(keyword: str) -> str:
        return str(dataset.get(keyword, "") or "")

    return ParsedInstance(
        key=key,
        study_uid=text("StudyInstanceUID"),
        series_uid=text("SeriesInstanceUID"),
        sop_uid=text("SOPInstanceUID"),
        transfer_syntax_uid=transfer_syntax,
        study_key=(text("PatientID"), text("StudyDate"), text("AccessionNumber"), text("StudyID")),
        series_key=(text("SeriesNumber"),),
        frame_count=_frame_count(dataset),
        frame_size=_frame_size(dataset),
        **levels,
    )


def _level(keyword: str) -> str:
    if keyword in PATIENT_LEVEL:
        return "patient"
    if keyword in STUDY_LEVEL:
        return "study"
    if keyword in SERIES_LEVEL:
        return "series"
    return "instance"


def _json_value(element: DataElement) -> Any:
    """An element's value as the metadata document holds it (binary values become null)."""
    if element.VR == "SQ":
        return [_dataset_json(item) for item in element.value]
    if element.VR in _BINARY_VRS or element.value is None or element.value == "":
        return None
    if isinstance(element.value, MultiValue):
        return [_scalar(element.VR, v) for v in element.value]
    return _scalar(element.VR, element.value)


def _scalar(vr: str, value: Any) -> Any:
    if vr in _NUMERIC_VRS and isinstance(value, int | float):
        return value
    return str(value)


def _dataset_json(dataset: Dataset) -> dict[str, Any]:
    return {e.keyword: _json_value(e) for e in dataset if e.keyword and not e.tag.is_private}


def _frame_count(dataset: Dataset) -> int:
    if "Rows" not in dataset:
        return 0  # not an image (SR, KO, ...): no image frames
    try:
        return max(1, int(dataset.get("NumberOfFrames", 1) or 1))
    except (TypeError, ValueError):
        return 1


def _frame_size(dataset: Dataset) -> int | None:
    try:
        bits = int(dataset.BitsAllocated)
        return int(dataset.Rows) * int(dataset.Columns) * int(dataset.get("SamplesPerPixel", 1)) * bits // 8
    except (AttributeError, TypeError, ValueError):
        return None
