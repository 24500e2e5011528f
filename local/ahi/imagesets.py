"""Image sets: how imported instances are grouped, versioned and searched.

The rules follow AWS's "Understanding import jobs" / "Understanding image sets" pages:
- instances are grouped by Study / Series and the grouping elements (Patient ID, Study Date,
  Accession Number, Study ID, Series Number);
- a series imported by several jobs ends up in one *primary* image set when nothing conflicts;
- importing an instance again overwrites it in the primary image set and increments its version;
- data that conflicts with an existing primary (or with the study it belongs to) lands in a new
  non-primary image set (``isPrimary: false``);
- each import job creates new image sets or increments the version of existing ones, once per job.
"""

from __future__ import annotations

import copy
import secrets
import threading
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from local.ahi.dicom_reader import ParsedInstance
from local.ahi.errors import NotFoundError, ValidationError

SCHEMA_VERSION = "1.1"


@dataclass
class ImageSetVersion:
    version: int
    updated_at: datetime
    document: dict[str, Any]  # the metadata document GetImageSetMetadata returns for this version


@dataclass
class ImageSet:
    id: str
    datastore_id: str
    arn: str
    grouping_key: tuple[str, ...]
    is_primary: bool
    created_at: datetime
    updated_at: datetime
    patient: dict[str, Any] = field(default_factory=dict)
    study: dict[str, Any] = field(default_factory=dict)
    series: dict[str, Any] = field(default_factory=dict)
    instances: dict[str, dict[str, Any]] = field(default_factory=dict)  # SOP Instance UID -> entry
    versions: list[ImageSetVersion] = field(default_factory=list)

    @property
    def study_uid(self) -> str:
        return self.grouping_key[0]

    @property
    def series_uid(self) -> str:
        return self.grouping_key[1]

    @property
    def version(self) -> int:
        return len(self.versions)

    def add(self, instance: ParsedInstance) -> None:
        """Add or overwrite one instance; the most recently received level attributes win."""
        self.patient.update(instance.patient)
        self.study.update(instance.study)
        self.series.update(instance.series)
        self.instances[instance.sop_uid] = instance.metadata_entry()

    def commit(self, now: datetime) -> ImageSetVersion:
        """Freeze the current content as the next version."""
        document = {
            "SchemaVersion": SCHEMA_VERSION,
            "DatastoreID": self.datastore_id,
            "ImageSetID": self.id,
            "Patient": {"DICOM": self.patient},
            "Study": {
                "DICOM": self.study,
                "Series": {self.series_uid: {"DICOM": self.series, "Instances": self.instances}},
            },
        }
        version = ImageSetVersion(self.version + 1, now, copy.deepcopy(document))
        self.versions.append(version)
        self.updated_at = now
        return version

    def get_version(self, version_id: str | None) -> ImageSetVersion:
        if version_id is None:
            return self.versions[-1]
        number = int(version_id)
        if not 1 <= number <= len(self.versions):
            raise NotFoundError(f"Image set {self.id} has no version {version_id}")
        return self.versions[number - 1]

    def dicom_tags(self, study_series: int, study_instances: int) -> dict[str, Any]:
        """The ``DICOMTags`` of a SearchImageSets summary."""
        tags = {
            "DICOMPatientId": self.patient.get("PatientID"),
            "DICOMPatientName": self.patient.get("PatientName"),
            "DICOMPatientBirthDate": self.patient.get("PatientBirthDate"),
            "DICOMPatientSex": self.patient.get("PatientSex"),
            "DICOMStudyInstanceUID": self.study_uid,
            "DICOMStudyId": self.study.get("StudyID"),
            "DICOMStudyDescription": self.study.get("StudyDescription"),
            "DICOMNumberOfStudyRelatedSeries": study_series,
            "DICOMNumberOfStudyRelatedInstances": study_instances,
            "DICOMAccessionNumber": self.study.get("AccessionNumber"),
            "DICOMSeriesInstanceUID": self.series_uid,
            "DICOMSeriesModality": self.series.get("Modality"),
            "DICOMSeriesBodyPart": self.series.get("BodyPartExamined"),
            "DICOMSeriesNumber": _int_or_none(self.series.get("SeriesNumber")),
            "DICOMStudyDate": self.study.get("StudyDate"),
            "DICOMStudyTime": self.study.get("StudyTime"),
        }
        return {k: v for k, v in tags.items() if v is not None}

    def study_date_and_time(self) -> str:
        """Sortable ``YYYYMMDDHHMMSS.FFFFFF`` of the study (missing parts sort first)."""
        date = str(self.study.get("StudyDate") or "")
        time_part = str(self.study.get("StudyTime") or "")
        return _date_time_key(date, time_part)


@dataclass(frozen=True)
class ImageSetOutcome:
    """What one import job did to one image set (``jobSummary.imageSetsSummary[]``)."""

    image_set_id: str
    version: int
    is_primary: bool
    matched: tuple[str, ...]  # SOP Instance UIDs this job put into the image set


class ImageSetCatalog:
    """All image sets of all datastores. Thread-safe."""

    def __init__(self, arn_prefix: str):
        self._lock = threading.RLock()
        self._arn_prefix = arn_prefix  # arn:aws:medical-imaging:<region>:<account>:datastore/
        self._sets: dict[str, ImageSet] = {}
        self._primary: dict[tuple[str, str, str], ImageSet] = {}  # (datastore, study, series)

    def import_instances(
        self, datastore_id: str, instances: Iterable[ParsedInstance], now: datetime
    ) -> dict[str, ImageSetOutcome]:
        """Place one job's instances into image sets; return SOP Instance UID -> outcome."""
        groups: dict[tuple[str, ...], list[ParsedInstance]] = {}
        for instance in instances:
            groups.setdefault(instance.grouping_key, []).append(instance)
        with self._lock:
            touched: dict[str, tuple[ImageSet, list[str]]] = {}
            for key, members in groups.items():
                target = self._target(datastore_id, key, now)
                for member in members:
                    target.add(member)
                touched.setdefault(target.id, (target, []))[1].extend(m.sop_uid for m in members)
            placed: dict[str, ImageSetOutcome] = {}
            for image_set, sop_uids in touched.values():
                version = image_set.commit(now)
                outcome = ImageSetOutcome(
                    image_set.id, version.version, image_set.is_primary, tuple(sop_uids)
                )
                placed.update(dict.fromkeys(sop_uids, outcome))
            return placed

    def _target(self, datastore_id: str, key: tuple[str, ...], now: datetime) -> ImageSet:
        study_uid, series_uid, study_key = key[0], key[1], key[2:6]
        primary = self._primary.get((datastore_id, study_uid, series_uid))
        if primary is not None and primary.grouping_key == key:
            return primary
        study_conflict = any(
            s.grouping_key[2:6] != study_key
            for (ds, study, _), s in self._primary.items()
            if ds == datastore_id and study == study_uid
        )
        image_set_id = secrets.token_hex(16)
        image_set = ImageSet(
            id=image_set_id,
            datastore_id=datastore_id,
            arn=f"{self._arn_prefix}{datastore_id}/imageset/{image_set_id}",
            grouping_key=key,
            is_primary=primary is None and not study_conflict,
            created_at=now,
            updated_at=now,
        )
        self._sets[image_set_id] = image_set
        if image_set.is_primary:
            self._primary[(datastore_id, study_uid, series_uid)] = image_set
        return image_set

    def get(self, datastore_id: str, image_set_id: str) -> ImageSet:
        with self._lock:
            image_set = self._sets.get(image_set_id)
            if image_set is None or image_set.datastore_id != datastore_id:
                raise NotFoundError(f"Image set {image_set_id} does not exist in datastore {datastore_id}")
            return image_set

    def count(self, datastore_id: str) -> int:
        with self._lock:
            return sum(1 for s in self._sets.values() if s.datastore_id == datastore_id)

    def search(
        self, datastore_id: str, filters: list[dict[str, Any]], sort: dict[str, str] | None
    ) -> list[dict[str, Any]]:
        """``ImageSetsMetadataSummary`` dicts of the image sets matching every filter, sorted."""
        with self._lock:
            candidates = [s for s in self._sets.values() if s.datastore_id == datastore_id]
            matching = [s for s in candidates if all(_matches(s, f) for f in filters)]
            field_name = (sort or {}).get("sortField", "createdAt")
            descending = (sort or {}).get("sortOrder", "ASC") == "DESC"
            matching.sort(key=lambda s: (_sort_value(s, field_name), s.created_at, s.id), reverse=descending)
            return [self._summary(s, candidates) for s in matching]

    def _summary(self, image_set: ImageSet, datastore_sets: list[ImageSet]) -> dict[str, Any]:
        study_sets = [s for s in datastore_sets if s.is_primary and s.study_uid == image_set.study_uid]
        return {
            "imageSetId": image_set.id,
            "version": image_set.version,
            "createdAt": image_set.created_at,
            "updatedAt": image_set.updated_at,
            "DICOMTags": image_set.dicom_tags(
                study_series=len(study_sets), study_instances=sum(len(s.instances) for s in study_sets)
            ),
            "isPrimary": image_set.is_primary,
            "storageTier": "FREQUENT_ACCESS",
        }


# --- search filters -------------------------------------------------------------------------
_RANGE_ATTRIBUTES = frozenset({"createdAt", "updatedAt", "DICOMStudyDateAndTime"})


def _attribute(image_set: ImageSet, name: str) -> Any:
    if name == "DICOMPatientId":
        return image_set.patient.get("PatientID") or ""
    if name == "DICOMAccessionNumber":
        return image_set.study.get("AccessionNumber") or ""
    if name == "DICOMStudyId":
        return image_set.study.get("StudyID") or ""
    if name == "DICOMStudyInstanceUID":
        return image_set.study_uid
    if name == "DICOMSeriesInstanceUID":
        return image_set.series_uid
    if name == "createdAt":
        return image_set.created_at
    if name == "updatedAt":
        return image_set.updated_at
    if name == "DICOMStudyDateAndTime":
        return image_set.study_date_and_time()
    if name == "isPrimary":
        return image_set.is_primary
    raise ValidationError(f"Search attribute {name} is not supported")


def _value(attribute_value: dict[str, Any]) -> tuple[str, Any]:
    ((name, value),) = attribute_value.items()  # a union: exactly one member (checked by the model)
    if name == "DICOMStudyDateAndTime":
        return name, _date_time_key(value.get("DICOMStudyDate", ""), value.get("DICOMStudyTime", ""))
    return name, value


def check_filter(search_filter: dict[str, Any]) -> None:
    """Rules the model cannot express: EQUAL takes one value, BETWEEN two of the same attribute."""
    operator, values = search_filter["operator"], search_filter["values"]
    names = {_value(v)[0] for v in values}
    if operator == "EQUAL" and len(values) != 1:
        raise ValidationError("The EQUAL operator takes exactly one value")
    if operator == "BETWEEN":
        if len(values) != 2 or len(names) != 1:
            raise ValidationError("The BETWEEN operator takes two values of the same attribute")
        if not names <= _RANGE_ATTRIBUTES:
            raise ValidationError(f"The BETWEEN operator does not apply to {names.pop()}")


def _matches(image_set: ImageSet, search_filter: dict[str, Any]) -> bool:
    pairs = [_value(v) for v in search_filter["values"]]
    if search_filter["operator"] == "EQUAL":
        name, wanted = pairs[0]
        return _attribute(image_set, name) == wanted
    (name, low), (_, high) = pairs
    return low <= _attribute(image_set, name) <= high


def _sort_value(image_set: ImageSet, field_name: str) -> Any:
    if field_name == "DICOMStudyDateAndTime":
        return image_set.study_date_and_time()
    return image_set.updated_at if field_name == "updatedAt" else image_set.created_at


def _date_time_key(date: str, time_part: str) -> str:
    return f"{date:0<8}{time_part.replace(':', ''):0<6}"


def _int_or_none(value: Any) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None
