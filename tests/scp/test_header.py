"""scp/header.py: the UIDs read from a dataset's first bytes agree with pydicom, or it defers.

Datasets are encoded by pydicom in every transfer syntax the SCP accepts, with sequences of
defined and undefined length (nested) before the UIDs; expected values are what was written.
"""

from __future__ import annotations

import zlib

import pytest
from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence
from pydicom.uid import generate_uid

from core.dicom_support import TRANSFER_SYNTAXES
from scp.header import study_and_series_uids
from tests.scp.dicom_factory import dataset_bytes, write_instance

EXPLICIT = "1.2.840.10008.1.2.1"
IMPLICIT = "1.2.840.10008.1.2"
DEFLATED = "1.2.840.10008.1.2.1.99"


def _with_sequences(path, *, undefined: bool) -> None:
    """Add nested sequences in groups 0008 and 0018 (before the UIDs) to a written instance."""
    ds = dcmread(path)
    inner = Dataset()
    inner.CodeValue, inner.CodingSchemeDesignator, inner.CodeMeaning = "113691", "DCM", "IEC Body Dosimetry"
    referenced = Dataset()
    referenced.ReferencedSOPClassUID = ds.SOPClassUID
    referenced.ReferencedSOPInstanceUID = generate_uid()
    referenced.PurposeOfReferenceCodeSequence = Sequence([inner])
    ds.ReferencedImageSequence = Sequence([referenced, Dataset()])
    ds.CTDIPhantomTypeCodeSequence = Sequence([inner])
    for keyword in ("ReferencedImageSequence", "CTDIPhantomTypeCodeSequence"):
        ds[keyword].is_undefined_length = undefined
        for item in ds[keyword].value:
            item.is_undefined_length_sequence_item = undefined
    referenced["PurposeOfReferenceCodeSequence"].is_undefined_length = undefined
    inner.is_undefined_length_sequence_item = undefined
    ds.save_as(path, enforce_file_format=True)


@pytest.mark.parametrize("transfer_syntax", TRANSFER_SYNTAXES)
@pytest.mark.parametrize("undefined", [True, False], ids=["undefined-length", "defined-length"])
def test_uids_equal_what_was_written_in_every_accepted_syntax(tmp_path, transfer_syntax, undefined):
    study, series = generate_uid(), generate_uid()
    path = write_instance(
        tmp_path / "i.dcm", transfer_syntax=transfer_syntax, study_uid=study, series_uid=series
    )
    _with_sequences(path, undefined=undefined)
    data = dataset_bytes(path)
    assert dcmread(path).StudyInstanceUID == study  # the file is what pydicom reads back
    assert study_and_series_uids(data, transfer_syntax, whole_dataset=True) == (study, series)
    # Only the start of the dataset, as kept while spooling: enough when it reaches past the UIDs.
    assert study_and_series_uids(data[:4096], transfer_syntax, whole_dataset=False) == (study, series)


def test_a_missing_uid_is_reported_absent_not_guessed(tmp_path):
    path = write_instance(tmp_path / "i.dcm")
    ds = dcmread(path)
    del ds.StudyInstanceUID
    ds.save_as(path, enforce_file_format=True)
    assert study_and_series_uids(dataset_bytes(path), EXPLICIT, whole_dataset=True) == (
        None,
        str(ds.SeriesInstanceUID),
    )


def test_a_dataset_without_either_uid_and_nothing_after_them(tmp_path):
    ds = Dataset()
    ds.PatientID = "SYN-0001"
    ds.Modality = "CT"
    meta_less = tmp_path / "short.dcm"
    ds.save_as(meta_less, implicit_vr=True, little_endian=True)
    data = meta_less.read_bytes()
    assert study_and_series_uids(data, IMPLICIT, whole_dataset=True) == (None, None)
    assert study_and_series_uids(data, IMPLICIT, whole_dataset=False) is None  # more may follow


def test_it_defers_to_pydicom_when_the_bytes_do_not_settle_it(tmp_path):
    path = write_instance(tmp_path / "i.dcm", transfer_syntax=DEFLATED)
    deflated = dataset_bytes(path)
    plain = dataset_bytes(write_instance(tmp_path / "p.dcm"))
    cut = plain.index(b"\x20\x00\x0d\x00")  # (0020,000D) Study Instance UID, explicit VR LE
    assert study_and_series_uids(plain[:cut], EXPLICIT, whole_dataset=False) is None  # ends before the UIDs
    assert study_and_series_uids(plain[: cut + 10], EXPLICIT, whole_dataset=False) is None  # inside a value
    assert study_and_series_uids(plain[: cut + 10], EXPLICIT, whole_dataset=True) is None  # truncated value
    assert study_and_series_uids(plain[: cut + 5], EXPLICIT, whole_dataset=True) is None  # truncated header
    assert study_and_series_uids(b"\xde\xad\xbe\xef" * 8, DEFLATED, whole_dataset=True) is None
    assert study_and_series_uids(deflated[:200], DEFLATED, whole_dataset=False) is None
    assert study_and_series_uids(zlib.compress(b"x")[:3], DEFLATED, whole_dataset=True) is None
    # Tags out of order, and an element with a VR other than UI for the Study Instance UID.
    swapped = b"\x20\x00\x0d\x00UI\x04\x001.2\x00" + b"\x08\x00\x60\x00CS\x02\x00CT"
    assert study_and_series_uids(swapped, EXPLICIT, whole_dataset=True) is None
    not_ui = b"\x20\x00\x0d\x00LO\x04\x001.2 "
    assert study_and_series_uids(not_ui, EXPLICIT, whole_dataset=True) is None


def test_an_undefined_length_un_element_holds_an_implicit_sequence():
    """PS3.5 6.2.2: a sequence of unknown VR in explicit VR is UN of undefined length, inside implicit."""
    item_body = b"\x08\x00\x00\x01" + (6).to_bytes(4, "little") + b"113691"  # (0008,0100) implicit
    un_sequence = (
        b"\x09\x00\x10\x10UN\x00\x00\xff\xff\xff\xff"  # private (0009,1010), UN, undefined length
        + b"\xfe\xff\x00\xe0\xff\xff\xff\xff"  # item, undefined length
        + item_body
        + b"\xfe\xff\x0d\xe0\x00\x00\x00\x00"  # item delimiter
        + b"\xfe\xff\xdd\xe0\x00\x00\x00\x00"  # sequence delimiter
    )
    study = b"\x20\x00\x0d\x00UI\x04\x001.2\x00"
    series = b"\x20\x00\x0e\x00UI\x04\x001.3\x00"
    after = b"\x20\x00\x10\x00SH\x02\x0042"
    data = un_sequence + study + series + after
    assert study_and_series_uids(data, EXPLICIT, whole_dataset=False) == ("1.2", "1.3")
