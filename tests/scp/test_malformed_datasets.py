"""Broken datasets on a good association: refused with the precise status and an Error Comment,
not stored, and the association goes on (a good instance sent afterwards is stored)."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from pathlib import Path

from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence
from pydicom.uid import CTImageStorage, ExplicitVRBigEndian, generate_uid

from scp.spool import file_meta
from tests.scp.dicom_factory import _dataset_offset, write_instance
from tests.scp.harness import REPO, store_results
from tests.scp.manifests import wait_file_manifests

SEED = int(os.environ.get("MALFORMED_SEED", "20261201"))
DICOMCTL = str(Path(sys.executable).with_name("dicomctl"))


def _truncated(path, fraction: float):
    raw = path.read_bytes()
    path.write_bytes(raw[: int(len(raw) * fraction)])
    return path


def _with_sequence_last(path):
    """A dataset whose last top-level element is a sequence of undefined length (items inside)."""
    ds = dcmread(path)
    item = Dataset()
    item.CodeValue, item.CodingSchemeDesignator, item.CodeMeaning = "113691", "DCM", "IHE Protocol"
    ds.add_new(0x0040A730, "SQ", Sequence([item] * 40))  # Content Sequence
    del ds.PixelData  # so that the sequence is the last element
    ds.save_as(path, enforce_file_format=True)
    return path


def test_broken_datasets_are_refused_with_the_reason_and_the_association_goes_on(start_scp, tmp_path):
    rng = random.Random(SEED)
    scp = start_scp(SCP_STORAGE_URI=f"file://{tmp_path / 'store'}")
    ct = write_instance(tmp_path / "ct.dcm", pixel_bytes=200_000)
    pixel_cut = _truncated(write_instance(tmp_path / "pixel-cut.dcm", pixel_bytes=200_000), 0.7)
    # Cut inside the sequence: the last element of this dataset is the sequence.
    sequence_file = _with_sequence_last(write_instance(tmp_path / "sequence.dcm"))
    raw = sequence_file.read_bytes()
    sequence_cut = tmp_path / "sequence-cut.dcm"
    sequence_cut.write_bytes(raw[: len(raw) - rng.randrange(20, 400)])
    # Bad file meta: it declares big endian for a little-endian body (fixed UIDs: fixed bytes).
    wrong_syntax = write_instance(
        tmp_path / "wrong-syntax.dcm",
        study_uid="1.2.3.4",
        series_uid="1.2.3.4.5",
        sop_instance_uid="1.2.3.4.5.6",
    )
    data = wrong_syntax.read_bytes()
    meta = file_meta(CTImageStorage, "1.2.3.4.5.6", ExplicitVRBigEndian)
    wrong_syntax.write_bytes(meta + data[_dataset_offset(data) :])
    no_uids = write_instance(tmp_path / "no-uids.dcm")
    ds = dcmread(no_uids)
    del ds.StudyInstanceUID, ds.SeriesInstanceUID
    ds.save_as(no_uids, enforce_file_format=True)
    garbage_body = tmp_path / "garbage.dcm"
    data = ct.read_bytes()
    garbage_body.write_bytes(data[: _dataset_offset(data)] + rng.randbytes(3000))

    results = store_results(scp.port, [pixel_cut, sequence_cut, wrong_syntax, no_uids, garbage_body, ct])

    assert results[0] == (0xC210, "dataset truncated in (7FE0,0010)")
    assert results[1] == (0xC210, "dataset truncated in (0040,A730)")
    assert results[2] == (0xC210, "dataset truncated in (0800,1600)")  # (0008,0016) read big endian
    assert results[3] == (0xC212, "StudyInstanceUID missing")
    assert results[4][0] == 0xC210 and results[4][1]
    assert results[5] == (0x0000, "")
    assert all(len(comment) <= 64 for _, comment in results)
    [manifest] = wait_file_manifests(tmp_path / "store", {str(dcmread(ct).SOPInstanceUID)})
    assert len(manifest.instances) == 1  # only the good one
    assert len(list((tmp_path / "store").rglob("*.dcm"))) == 1
    refused = [r for r in scp.logs() if r.get("message") == "instance refused"]
    assert [r["reason"] for r in refused[:4]] == [comment for _, comment in results[:4]]
    assert all(r["status"] in ("0xC210", "0xC212") for r in refused)


def test_dicomctl_send_reports_the_gateways_reason_for_a_truncated_file(start_scp, tmp_path):
    scp = start_scp(SCP_STORAGE_URI=f"file://{tmp_path / 'store'}")
    cut = _truncated(write_instance(tmp_path / "cut.dcm", study_uid=generate_uid(), pixel_bytes=100_000), 0.7)
    result = subprocess.run(
        [DICOMCTL, "--json", "send", str(cut), "--host", "127.0.0.1", "--port", str(scp.port)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 1, result.stdout + result.stderr
    report = json.loads(result.stdout)
    assert "dataset truncated in (7FE0,0010)" in json.dumps(report)
