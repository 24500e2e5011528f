"""Synthetic DICOM studies: realistic tags and real pixel data, obviously fake patients.

Used by ``dicomctl send --synthetic``, ``dicomctl demo``, the load generator (``StudyStream``:
a new patient and new UIDs per simulated study) and the benchmarks (the SCP and bench helpers
reuse ``write_study``). Every study gets fresh UIDs, so sending the
same synthetic study twice never collides with an earlier one. Files are written as DICOM Part 10
so the sender can send them straight from disk.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
from pydicom import uid
from pydicom.dataset import Dataset, FileMetaDataset

# Short names accepted on the command line -> transfer syntax UID written to the files.
TRANSFER_SYNTAXES: dict[str, str] = {
    "explicit": uid.ExplicitVRLittleEndian,
    "implicit": uid.ImplicitVRLittleEndian,
    "rle": uid.RLELossless,  # pydicom encodes RLE natively
    "j2k": uid.JPEG2000Lossless,  # pylibjpeg-openjpeg
}


@dataclass(frozen=True)
class ModalityProfile:
    """What a real device of this modality writes: SOP class, geometry, pixel encoding, display."""

    sop_class_uid: str
    rows: int
    cols: int
    bits_stored: int
    signed: bool
    photometric: str  # MONOCHROME2 or RGB
    pixel_spacing: float  # mm
    slice_thickness: float | None  # mm; None for projection images
    window: tuple[float, float] | None  # center, width (in output units)
    rescale: tuple[float, float] | None  # intercept, slope
    body_part: str
    description: str


PROFILES: dict[str, ModalityProfile] = {
    "CT": ModalityProfile(
        uid.CTImageStorage,
        512,
        512,
        12,
        True,
        "MONOCHROME2",
        0.7,
        1.25,
        (40, 400),
        (-1024, 1),
        "CHEST",
        "SYNTHETIC CT CHEST",
    ),
    "MR": ModalityProfile(
        uid.MRImageStorage,
        256,
        256,
        12,
        False,
        "MONOCHROME2",
        0.9,
        4.0,
        (600, 1200),
        None,
        "BRAIN",
        "SYNTHETIC MR BRAIN T1",
    ),
    "CR": ModalityProfile(
        uid.ComputedRadiographyImageStorage,
        1024,
        1024,
        12,
        False,
        "MONOCHROME2",
        0.2,
        None,
        (2048, 4096),
        None,
        "CHEST",
        "SYNTHETIC CR CHEST PA",
    ),
    "US": ModalityProfile(
        uid.UltrasoundImageStorage,
        480,
        640,
        8,
        False,
        "RGB",
        0.3,
        None,
        None,
        None,
        "ABDOMEN",
        "SYNTHETIC US ABDOMEN",
    ),
}

# (centre y, centre x, semi-axis y, semi-axis x, intensity) in unit coordinates: a Shepp-Logan-like phantom.
_ELLIPSES = (
    (0.0, 0.0, 0.92, 0.69, 1.0),
    (-0.0184, 0.0, 0.874, 0.6624, -0.8),
    (0.0, 0.22, 0.41, 0.11, -0.2),
    (0.0, -0.22, 0.31, 0.16, -0.2),
    (0.35, 0.0, 0.25, 0.21, 0.1),
    (0.1, 0.0, 0.046, 0.046, 0.1),
    (-0.605, -0.08, 0.023, 0.046, 0.1),
    (-0.605, 0.06, 0.023, 0.023, 0.1),
)


def phantom(rows: int, cols: int, z: float = 0.0) -> np.ndarray:
    """A float phantom in [0, 1]; ``z`` in [-1, 1] shrinks the ellipses like slices through a head."""
    y, x = np.ogrid[-1.0 : 1.0 : rows * 1j, -1.0 : 1.0 : cols * 1j]
    scale = max(0.2, float(np.sqrt(max(0.0, 1.0 - 0.8 * z * z))))
    image = np.zeros((rows, cols), dtype=np.float32)
    for cy, cx, ay, ax, value in _ELLIPSES:
        inside = ((y - cy) / (ay * scale)) ** 2 + ((x - cx) / (ax * scale)) ** 2 <= 1.0
        image[inside] += value
    return np.clip(image, 0.0, 1.0)


def _pixels(profile: ModalityProfile, rows: int, cols: int, z: float) -> np.ndarray:
    base = phantom(rows, cols, z)
    if profile.photometric == "RGB":
        grey = (base * 200 + 20).astype(np.uint8)
        return np.stack([grey, grey, grey], axis=-1)
    top = (1 << profile.bits_stored) - 1
    if profile.rescale:  # CT: stored value = HU - intercept; air -1000 HU, soft tissue ~40 HU
        intercept, _ = profile.rescale
        hu = -1000.0 + base * 1100.0
        return np.clip(hu - intercept, 0, top).astype(np.int16)
    return (base * top * 0.8).astype(np.uint16)


def _study_dataset(
    modality: str, profile: ModalityProfile, study_uid: str, now: datetime, index: int
) -> Dataset:
    ds = Dataset()
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.PatientName = f"SYNTHETIC^{modality}^{index:04d}"
    ds.PatientID = f"SYN-{study_uid[-8:]}"
    ds.PatientBirthDate = "19700101"
    ds.PatientSex = "O"
    ds.StudyInstanceUID = study_uid
    ds.StudyDate = now.strftime("%Y%m%d")
    ds.StudyTime = now.strftime("%H%M%S")
    ds.StudyID = f"SYN{index:04d}"
    ds.AccessionNumber = f"SYN{study_uid[-10:]}"
    ds.StudyDescription = profile.description
    ds.ReferringPhysicianName = "SYNTHETIC^REFERRER"
    ds.Modality = modality
    ds.Manufacturer = "dicomctl synthetic"
    ds.InstitutionName = "SYNTHETIC HOSPITAL"
    ds.BodyPartExamined = profile.body_part
    return ds


def write_study(
    directory: Path,
    modality: str = "CT",
    instances: int = 20,
    rows: int | None = None,
    cols: int | None = None,
    transfer_syntax: str = uid.ExplicitVRLittleEndian,
    series: int = 1,
    study_index: int = 1,
) -> list[Path]:
    """Write one synthetic study of ``instances`` images (spread over ``series``) into ``directory``.

    ``transfer_syntax`` is a UID or a short name from TRANSFER_SYNTAXES. Returns the written paths,
    ``<directory>/<StudyUID>/<SeriesUID>/<SOPInstanceUID>.dcm``.
    """
    modality = modality.upper()
    if modality not in PROFILES:
        raise ValueError(f"unknown modality {modality!r}; choose one of {', '.join(PROFILES)}")
    if instances < 1 or series < 1:
        raise ValueError("a study needs at least one instance and one series")
    ts = uid.UID(TRANSFER_SYNTAXES.get(transfer_syntax.lower(), transfer_syntax))
    if ts not in TRANSFER_SYNTAXES.values():
        raise ValueError(
            f"unsupported transfer syntax {transfer_syntax!r}; use {', '.join(TRANSFER_SYNTAXES)}"
        )
    profile = PROFILES[modality]
    rows, cols = rows or profile.rows, cols or profile.cols
    now = datetime.now(UTC)
    study_uid = uid.generate_uid()
    study = _study_dataset(modality, profile, study_uid, now, study_index)
    paths: list[Path] = []
    per_series = -(-instances // series)
    for series_number in range(1, series + 1):
        count = min(per_series, instances - len(paths))
        if count <= 0:
            break
        series_uid = uid.generate_uid()
        frame_uid = uid.generate_uid()
        folder = Path(directory) / study_uid / series_uid
        folder.mkdir(parents=True, exist_ok=True)
        for number in range(1, count + 1):
            z = (2.0 * (number - 1) / max(1, count - 1)) - 1.0 if count > 1 else 0.0
            ds = _instance(study, profile, rows, cols, series_uid, frame_uid, series_number, number, z, now)
            _encode(ds, profile, ts)
            path = folder / f"{ds.SOPInstanceUID}.dcm"
            ds.save_as(path, enforce_file_format=True)
            paths.append(path)
    return paths


def _instance(
    study: Dataset,
    profile: ModalityProfile,
    rows: int,
    cols: int,
    series_uid: str,
    frame_uid: str,
    series_number: int,
    number: int,
    z: float,
    now: datetime,
) -> Dataset:
    ds = Dataset()
    ds.update(study)
    ds.SOPClassUID = profile.sop_class_uid
    ds.SOPInstanceUID = uid.generate_uid()
    ds.SeriesInstanceUID = series_uid
    ds.SeriesNumber = series_number
    ds.SeriesDescription = f"{profile.description} SERIES {series_number}"
    ds.InstanceNumber = number
    ds.ContentDate = now.strftime("%Y%m%d")
    ds.ContentTime = now.strftime("%H%M%S")
    ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL" if profile.slice_thickness else "OTHER"]
    ds.PixelSpacing = [profile.pixel_spacing, profile.pixel_spacing]
    if profile.slice_thickness:
        ds.FrameOfReferenceUID = frame_uid
        ds.SliceThickness = profile.slice_thickness
        position = (number - 1) * profile.slice_thickness
        ds.ImagePositionPatient = [
            -cols * profile.pixel_spacing / 2,
            -rows * profile.pixel_spacing / 2,
            -position,
        ]
        ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
        ds.SliceLocation = -position
    if profile.window:
        ds.WindowCenter, ds.WindowWidth = profile.window
    if profile.rescale:
        ds.RescaleIntercept, ds.RescaleSlope = profile.rescale
        ds.RescaleType = "HU"
    if ds.Modality == "MR":
        ds.RepetitionTime, ds.EchoTime, ds.MagneticFieldStrength = 500, 15, 1.5
    if ds.Modality == "CT":
        ds.KVP, ds.ConvolutionKernel = 120, "STANDARD"
    pixels = _pixels(profile, rows, cols, z)
    ds.Rows, ds.Columns = rows, cols
    ds.PhotometricInterpretation = profile.photometric
    if profile.photometric == "RGB":
        ds.SamplesPerPixel, ds.PlanarConfiguration = 3, 0
        ds.BitsAllocated = ds.BitsStored = 8
        ds.HighBit, ds.PixelRepresentation = 7, 0
    else:
        ds.SamplesPerPixel = 1
        ds.BitsAllocated, ds.BitsStored = 16, profile.bits_stored
        ds.HighBit = profile.bits_stored - 1
        ds.PixelRepresentation = 1 if profile.signed else 0
    ds.PixelData = pixels.tobytes()
    ds["PixelData"].VR = "OB" if ds.BitsAllocated == 8 else "OW"
    return ds


def _encode(ds: Dataset, profile: ModalityProfile, ts: uid.UID) -> None:
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.file_meta.TransferSyntaxUID = uid.ExplicitVRLittleEndian
    if ts.is_compressed:
        ds.compress(ts, generate_instance_uid=False)
    else:
        ds.file_meta.TransferSyntaxUID = ts


# What one study of each modality usually holds: (series, fewest instances, most instances).
TYPICAL_STUDIES: dict[str, tuple[int, int, int]] = {
    "CT": (2, 60, 240),
    "MR": (5, 80, 160),
    "CR": (1, 1, 4),
    "US": (1, 8, 40),
}
TEMPLATE_IMAGES = 8  # distinct images a simulated study cycles through


class StudyStream:
    """One simulated modality's studies, as real traffic has them: each its own patient and
    Study, Series and SOP Instance UIDs, a size typical of the modality unless one is asked for.

    The pixel data of a few template images is made once; a new study then costs a header
    rewrite and a file write per instance (``dicomctl load`` counts that as the sender's time).
    Studies are written under ``directory``; ``discard`` removes one that was sent.
    """

    def __init__(self, directory: Path, modality: str, rows: int, seed: int = 0):
        from pydicom import dcmread

        self.directory = Path(directory)
        self.modality = modality.upper()
        self.profile = PROFILES[self.modality]
        templates = write_study(self.directory / "template", self.modality, TEMPLATE_IMAGES, rows, rows)
        self._templates = [dcmread(path) for path in templates]
        self._random = random.Random(f"{seed}-{self.modality}")
        self.studies = 0

    def typical_size(self) -> int:
        _, fewest, most = TYPICAL_STUDIES[self.modality]
        return self._random.randint(fewest, most)

    def next_study(self, instances: int | None = None) -> tuple[str, list[Path]]:
        """Write the next study (``instances``, else a typical size); returns its UID and files."""
        self.studies += 1
        count = instances or self.typical_size()
        series = min(TYPICAL_STUDIES[self.modality][0], count)
        now = datetime.now(UTC)
        study_uid = uid.generate_uid()
        study = _study_dataset(self.modality, self.profile, study_uid, now, self.studies)
        folder = self.directory / f"study-{self.studies}"
        folder.mkdir(parents=True, exist_ok=True)
        paths = []
        per_series = -(-count // series)
        for index in range(count):
            series_number, number = index // per_series + 1, index % per_series + 1
            if number == 1:
                series_uid, frame_uid = uid.generate_uid(), uid.generate_uid()
            ds = self._templates[index % TEMPLATE_IMAGES]
            ds.update(study)
            ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = uid.generate_uid()
            ds.SeriesInstanceUID, ds.SeriesNumber, ds.InstanceNumber = series_uid, series_number, number
            if "FrameOfReferenceUID" in ds:
                ds.FrameOfReferenceUID = frame_uid
                ds.SliceLocation = -(number - 1) * self.profile.slice_thickness
                ds.ImagePositionPatient = [*ds.ImagePositionPatient[:2], ds.SliceLocation]
            path = folder / f"{ds.SOPInstanceUID}.dcm"
            ds.save_as(path, enforce_file_format=True)
            paths.append(path)
        return study_uid, paths

    @staticmethod
    def discard(paths: list[Path]) -> None:
        for path in paths:
            path.unlink(missing_ok=True)
