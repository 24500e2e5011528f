"""Small synthetic instances for SCP tests: any transfer syntax, fake codestreams, fake patient.

Encapsulated (compressed) syntaxes get random bytes as their single fragment: the SCP never
decodes pixel data, so what matters is that the bytes arrive and are stored unchanged.
"""

from __future__ import annotations

import os
from pathlib import Path

from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import encapsulate
from pydicom.uid import UID, CTImageStorage, ExplicitVRLittleEndian, generate_uid

UNCOMPRESSED = {
    "1.2.840.10008.1.2",
    "1.2.840.10008.1.2.1",
    "1.2.840.10008.1.2.1.99",
    "1.2.840.10008.1.2.2",
}


def write_instance(
    path: Path,
    *,
    transfer_syntax: str = ExplicitVRLittleEndian,
    sop_class: str = CTImageStorage,
    study_uid: str | None = None,
    series_uid: str | None = None,
    sop_instance_uid: str | None = None,
    rows: int = 16,
    cols: int = 16,
    pixel_bytes: int | None = None,
) -> Path:
    """Write one Part 10 file and return its path. ``pixel_bytes`` sizes the pixel data."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class
    meta.MediaStorageSOPInstanceUID = sop_instance_uid or generate_uid()
    meta.TransferSyntaxUID = UID(transfer_syntax)
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID = study_uid or generate_uid()
    ds.SeriesInstanceUID = series_uid or generate_uid()
    ds.PatientName = "SYNTHETIC^TEST"
    ds.PatientID = "SYN-0001"
    ds.Modality = "CT"
    ds.Rows, ds.Columns = rows, cols
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    size = pixel_bytes if pixel_bytes is not None else rows * cols * 2
    if str(transfer_syntax) in UNCOMPRESSED:
        ds.PixelData = os.urandom(size + size % 2)
    else:
        ds.PixelData = encapsulate([os.urandom(size + size % 2)])
        ds["PixelData"].VR = "OB"
        ds.NumberOfFrames = 1
    ds.save_as(path, enforce_file_format=True)
    return path


def dataset_bytes(path: Path) -> bytes:
    """The encoded dataset of a Part 10 file, without preamble and file meta (what goes on the wire)."""
    raw = path.read_bytes()
    return raw[_dataset_offset(raw) :]


def _dataset_offset(raw: bytes) -> int:
    """Offset of the first byte after the File Meta Information group."""
    assert raw[128:132] == b"DICM"
    offset = 132
    while raw[offset : offset + 2] == b"\x02\x00":  # group 0002, explicit VR little endian
        vr = raw[offset + 4 : offset + 6]
        if vr in (b"OB", b"OW", b"OF", b"SQ", b"UT", b"UN"):
            length = int.from_bytes(raw[offset + 8 : offset + 12], "little")
            offset += 12 + length
        else:
            length = int.from_bytes(raw[offset + 6 : offset + 8], "little")
            offset += 8 + length
    return offset
