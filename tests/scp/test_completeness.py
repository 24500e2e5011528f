"""The completeness walk (scp/completeness.py) against datasets pydicom encodes, cut at seeded
points and fed in seeded fragment sizes; the expected verdict comes from pydicom's own encoding of
each top-level element, and pydicom's bundled real-world files must all pass as whole."""

from __future__ import annotations

import glob
import os
import random
import warnings
import zlib
from io import BytesIO

import pydicom.data
import pytest
from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.encaps import encapsulate
from pydicom.filebase import DicomBytesIO
from pydicom.filereader import _read_file_meta_info, read_preamble
from pydicom.filewriter import write_dataset
from pydicom.sequence import Sequence
from pydicom.uid import (
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
)

from scp.completeness import Completeness

SEED = int(os.environ.get("MALFORMED_SEED", "20261201"))
LONG_VRS = {"OB", "OD", "OF", "OL", "OV", "OW", "SQ", "SV", "UC", "UN", "UR", "UT", "UV"}


def _dataset(rng: random.Random, encapsulated: bool) -> Dataset:
    ds = Dataset()
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.2"
    ds.SOPInstanceUID = "1.2.3.4.5.6.7"
    ds.StudyDescription = "x" * rng.randrange(1, 40)
    item = Dataset()
    item.CodeValue, item.CodingSchemeDesignator = "113691", "DCM"
    inner = Dataset()
    inner.CodeMeaning = "nested"
    item.ConceptNameCodeSequence = Sequence([inner])
    ds.ProcedureCodeSequence = Sequence([item, item])
    ds.StudyInstanceUID, ds.SeriesInstanceUID = "1.2.3.4", "1.2.3.4.5"
    ds.Rows = ds.Columns = 16
    ds.add_new(0x00091010, "LO", "private")
    if encapsulated:
        ds.PixelData = encapsulate([rng.randbytes(700), rng.randbytes(300)], has_bot=True)
        ds["PixelData"].VR = "OB"
    else:
        ds.PixelData = rng.randbytes(512)
        ds["PixelData"].VR = "OW"
    return ds


def _encode(ds: Dataset, syntax: str) -> tuple[bytes, list[tuple[int, int, int, int]]]:
    """The dataset's bytes, and (start, header length, end, tag) of each top-level element."""
    little, implicit = syntax != ExplicitVRBigEndian, syntax == ImplicitVRLittleEndian
    parts, elements, offset = [], [], 0
    for element in ds:
        single = Dataset()
        single[element.tag] = element
        fp = DicomBytesIO()
        fp.is_little_endian, fp.is_implicit_VR = little, implicit
        write_dataset(fp, single)
        data = fp.getvalue()
        header = 12 if not implicit and element.VR in LONG_VRS else 8
        elements.append((offset, header, offset + len(data), int(element.tag)))
        parts.append(data)
        offset += len(data)
    return b"".join(parts), elements


def _tag(tag: int) -> str:
    return f"({tag >> 16:04X},{tag & 0xFFFF:04X})"


def expected(elements: list[tuple[int, int, int, int]], cut: int) -> str | None:
    for index, (start, header, end, tag) in enumerate(elements):
        if cut == start:
            return None  # a whole number of elements: nothing shows it is short
        if start < cut < end:
            if cut - start < header:
                return (
                    f"dataset truncated after {_tag(elements[index - 1][3])}"
                    if index
                    else "dataset truncated"
                )
            return f"dataset truncated in {_tag(tag)}"
    return None


def verdict(data: bytes, syntax: str, rng: random.Random) -> str | None:
    check = Completeness(syntax)
    view, offset = memoryview(data), 0
    while offset < len(data):
        size = rng.choice((1, 2, 5, 7, 11, 64, 1000, 16372))
        check.feed(view[offset : offset + size])
        offset += size
    return check.problem()


@pytest.mark.parametrize(
    "syntax", [ExplicitVRLittleEndian, ImplicitVRLittleEndian, ExplicitVRBigEndian, JPEG2000Lossless]
)
def test_cut_anywhere_the_verdict_names_the_element(syntax):
    rng = random.Random(SEED)
    ds = _dataset(rng, encapsulated=syntax == JPEG2000Lossless)
    data, elements = _encode(ds, syntax)
    assert verdict(data, syntax, rng) is None
    boundaries = [start for start, *_ in elements]
    cuts = set(rng.sample(range(1, len(data)), 250)) | {b + d for b in boundaries for d in (-1, 0, 1, 8, 11)}
    for cut in sorted(c for c in cuts if 0 < c < len(data)):
        assert verdict(data[:cut], syntax, rng) == expected(elements, cut), f"cut at {cut} (seed {SEED})"


def test_deflated_whole_and_cut():
    rng = random.Random(SEED)
    data, _ = _encode(_dataset(rng, encapsulated=False), ExplicitVRLittleEndian)
    compressor = zlib.compressobj(wbits=-zlib.MAX_WBITS)
    deflated = compressor.compress(data) + compressor.flush()
    assert verdict(deflated, DeflatedExplicitVRLittleEndian, rng) is None
    for cut in rng.sample(range(1, len(deflated)), 40):
        assert verdict(deflated[:cut], DeflatedExplicitVRLittleEndian, rng) is not None, cut
    assert verdict(b"\xde\xad\xbe\xef" * 8, DeflatedExplicitVRLittleEndian, rng) is not None


@pytest.mark.parametrize(
    ("data", "problem"),
    [
        (b"", "empty dataset"),
        (b"\x02\x00\x10\x00UI\x04\x001.2\x00", "file meta element (0002,xxxx) in the dataset"),
        (b"\xfe\xff\x00\xe0\x00\x00\x00\x00", "item tag (FFFE,E000) outside a sequence"),
        (
            b"\x08\x00\x20\x00DA\x08\x0020260101\x08\x00\x30\x00\x01\x02\x04\x00",
            "invalid VR after (0008,0020)",
        ),
        (b"\x08\x00\x20\x00DA\xff\xff", "dataset truncated in (0008,0020)"),
        (b"\x08\x00\x20\x00UT\x00\x00\xff\xff\xff\xff", "undefined length in (0008,0020)"),
        # a sequence of undefined length holding an element instead of items
        (
            b"\x08\x00\x15\x11SQ\x00\x00\xff\xff\xff\xff\x08\x00\x50\x00SH\x00\x00",
            "sequence in (0008,1115) holds (0008,0050)",
        ),
    ],
)
def test_what_cannot_be_walked_is_named(data, problem):
    check = Completeness(ExplicitVRLittleEndian)
    check.feed(data)
    assert check.problem() == problem


def _real_files() -> list[str]:
    base = os.path.join(os.path.dirname(pydicom.data.__file__), "test_files")
    return sorted(glob.glob(os.path.join(base, "**", "*.dcm"), recursive=True))


def test_pydicoms_real_world_files_are_whole_and_its_truncated_ones_are_not():
    rng = random.Random(SEED)
    whole = truncated = 0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for path in _real_files():
            try:
                dataset = dcmread(path)
                list(dataset.iterall())  # pydicom reads all of it
                with open(path, "rb") as fp:
                    read_preamble(fp, False)
                    meta = _read_file_meta_info(fp)
                    body = fp.read()
                syntax = str(meta.TransferSyntaxUID)
            except Exception:
                continue  # pydicom's deliberately broken files
            problem = verdict(body, syntax, rng)
            if "truncated" in os.path.basename(path):
                assert problem is not None, path
                truncated += 1
            else:
                assert problem is None, (path, problem)
                whole += 1
    assert whole >= 50 and truncated == 2


def test_header_only_walk_is_not_fooled_by_an_implicit_body_under_an_explicit_syntax():
    """pydicom reads such datasets (the sender's bug), so the walk must not refuse them."""
    rng = random.Random(SEED)
    data, _ = _encode(_dataset(rng, encapsulated=False), ImplicitVRLittleEndian)
    assert verdict(data, ExplicitVRLittleEndian, rng) is None
    assert dcmread(BytesIO(data), force=True).StudyInstanceUID == "1.2.3.4"
