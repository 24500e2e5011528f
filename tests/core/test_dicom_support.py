"""The accepted lists: checked against independent sources (pynetdicom, pydicom's UID registry)."""

from pydicom.uid import UID
from pynetdicom import sop_class

from core import dicom_support


def test_default_storage_classes_equal_pynetdicoms_storage_classes():
    assert set(dicom_support.DEFAULT_STORAGE_SOP_CLASSES) == set(sop_class._STORAGE_CLASSES.values())
    assert len(dicom_support.DEFAULT_STORAGE_SOP_CLASSES) == len(
        set(dicom_support.DEFAULT_STORAGE_SOP_CLASSES)
    )


def test_every_accepted_transfer_syntax_is_a_registered_transfer_syntax():
    for uid in dicom_support.TRANSFER_SYNTAXES:
        assert UID(uid).is_transfer_syntax, uid
    # the families the issue names are all present
    names = {UID(uid).keyword for uid in dicom_support.TRANSFER_SYNTAXES}
    assert {
        "ImplicitVRLittleEndian",
        "ExplicitVRLittleEndian",
        "DeflatedExplicitVRLittleEndian",
        "ExplicitVRBigEndian",
        "JPEGBaseline8Bit",
        "JPEGExtended12Bit",
        "JPEGLossless",
        "JPEGLosslessSV1",
        "JPEGLSLossless",
        "JPEGLSNearLossless",
        "JPEG2000Lossless",
        "JPEG2000",
        "HTJ2KLossless",
        "HTJ2KLosslessRPCL",
        "HTJ2K",
        "RLELossless",
    } <= names


def test_unconfirmed_syntaxes_are_refused():
    assert not dicom_support.is_importable_transfer_syntax("1.2.840.10008.1.2.4.100")  # MPEG-2
    assert not dicom_support.is_importable_transfer_syntax("1.2.840.10008.1.2.4.93")
    assert dicom_support.is_importable_transfer_syntax("1.2.840.10008.1.2.4.90\x00")


def test_configured_sop_classes_replace_the_default():
    assert dicom_support.accepted_sop_classes([]) == dicom_support.DEFAULT_STORAGE_SOP_CLASSES
    private = "1.3.6.1.4.1.9590.100.1.2.1"
    assert dicom_support.accepted_sop_classes([private, " ", private]) == (private,)


def test_lossless_is_preferred_over_lossy_and_every_syntax_is_ordered():
    order = list(dicom_support.TRANSFER_SYNTAXES)
    assert sorted(order) == sorted(dicom_support.AHI_TRANSFER_SYNTAXES)
    lossy = ["1.2.840.10008.1.2.4.50", "1.2.840.10008.1.2.4.51", "1.2.840.10008.1.2.4.81"]
    lossless = ["1.2.840.10008.1.2.4.90", "1.2.840.10008.1.2.4.201", "1.2.840.10008.1.2.1"]
    assert max(order.index(uid) for uid in lossless) < min(order.index(uid) for uid in lossy)


def test_conformance_statement_lists_what_the_scp_accepts():
    import re
    from pathlib import Path

    text = (Path(__file__).resolve().parents[2] / "docs" / "conformance.md").read_text()
    table_3_1 = text[text.index("Table 3-1") : text.index("Not accepted:")]
    assert re.findall(r"`(1\.2\.840\.10008\.1\.2[0-9.]*)`", table_3_1) == list(
        dicom_support.TRANSFER_SYNTAXES
    )
    annex_a = text[text.index("### Annex A") :]
    assert re.findall(r"`([0-9.]+)`", annex_a) == list(dicom_support.DEFAULT_STORAGE_SOP_CLASSES)
