"""Every real sender we can run here, against the real ``python -m scp``, stored bytes compared with
the files sent: dcmtk ``storescu`` (default and largest PDUs, ``+sd``, ``-R``, each compressed
transfer syntax, several files per association) and Orthanc (Debian package) pushing a study to
the gateway as one of its DICOM modalities (``POST /modalities/<name>/store``)."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import urllib.request
from pathlib import Path

import pytest
from pydicom import dcmread
from pydicom.uid import generate_uid

from core.dicom_support import TRANSFER_SYNTAXES
from tests.scp.dicom_factory import UNCOMPRESSED, _dataset_offset, dataset_bytes, write_instance
from tests.scp.harness import send_files, wait_for
from tests.scp.manifests import wait_file_manifests

COMPRESSED = [ts for ts in TRANSFER_SYNTAXES if ts not in UNCOMPRESSED]
# storescu proposes a compressed syntax only when told to, with one option per syntax.
STORESCU_PROPOSES = {
    "1.2.840.10008.1.2.4.50": "-xy",
    "1.2.840.10008.1.2.4.51": "-xx",
    "1.2.840.10008.1.2.4.70": "-xs",
    "1.2.840.10008.1.2.4.80": "-xt",
    "1.2.840.10008.1.2.4.81": "-xu",
    "1.2.840.10008.1.2.4.90": "-xv",
    "1.2.840.10008.1.2.4.91": "-xw",
    "1.2.840.10008.1.2.5": "-xr",
}
# dcmtk 3.6.7: unknown


@pytest.fixture(scope="module")
def gateway(tmp_path_factory):
    from tests.scp.harness import ScpProcess

    work = tmp_path_factory.mktemp("interop")
    scp = ScpProcess({"SCP_STORAGE_URI": f"file://{work / 'store'}"}, work)
    scp.store = work / "store"
    yield scp
    assert scp.stop() == 0


def _assert_stored_as_sent(store: Path, files: list[Path]) -> None:
    sent = {str(dcmread(f, stop_before_pixels=True).SOPInstanceUID): f for f in files}
    manifests = wait_file_manifests(store, set(sent))
    stored = {
        i.sop_instance_uid: store / i.key
        for m in manifests
        for i in m.instances
        if i.sop_instance_uid in sent
    }
    assert set(stored) == set(sent)
    for uid, path in stored.items():
        data = path.read_bytes()
        assert data[_dataset_offset(data) :] == dataset_bytes(sent[uid]), uid


def _storescu(port: int, options: list[str], directory: Path) -> None:
    """storescu with ``options``, scanning ``directory`` (+sd) over one association."""
    result = subprocess.run(
        ["storescu", "-aec", "AHI-GATEWAY", *options, "+sd", "127.0.0.1", str(port), str(directory)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize(
    "options",
    [[], ["--max-send-pdu", "131072"], ["--max-send-pdu", "4096"], ["-R"]],
    ids=["default", "largest-pdu", "smallest-pdu", "required-contexts"],
)
def test_storescu_several_files_per_association(gateway, tmp_path, options):
    study = generate_uid()
    files = [write_instance(tmp_path / f"{n}.dcm", study_uid=study, pixel_bytes=70_000) for n in range(6)]
    _storescu(gateway.port, options, tmp_path)
    _assert_stored_as_sent(gateway.store, files)


def test_storescu_every_compressed_transfer_syntax(gateway, tmp_path):
    """One association per syntax, proposed with its own option (storescu cannot convert fake
    compressed pixel data into another syntax, so it must be accepted as it is)."""
    files = []
    for n, (syntax, option) in enumerate(STORESCU_PROPOSES.items()):
        directory = tmp_path / str(n)
        directory.mkdir()
        files += [
            write_instance(directory / f"{i}.dcm", transfer_syntax=syntax, pixel_bytes=30_000)
            for i in range(2)
        ]
        _storescu(gateway.port, [option], directory)
    _assert_stored_as_sent(gateway.store, files)


def test_pynetdicom_sends_the_compressed_syntaxes_storescu_cannot_propose(gateway, tmp_path):
    """HTJ2K (unknown to dcmtk 3.6.7), JPEG process 14 and JPEG 2000 Part 2."""
    syntaxes = [ts for ts in COMPRESSED if ts not in STORESCU_PROPOSES]
    files = [
        write_instance(tmp_path / f"{n}.dcm", transfer_syntax=syntax, pixel_bytes=30_000)
        for n, syntax in enumerate(syntaxes)
    ]
    assert len(files) >= 5 and send_files(gateway.port, files) == [0] * len(files)
    _assert_stored_as_sent(gateway.store, files)


# --- Orthanc ---------------------------------------------------------------------------------
def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _http(port: int, method: str, path: str, body: bytes | None = None) -> object:
    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=body, method=method)
    with urllib.request.urlopen(request, timeout=120) as answer:
        return json.loads(answer.read() or b"null")


@pytest.fixture
def orthanc(gateway, tmp_path):
    executable = shutil.which("Orthanc")
    assert executable, "Orthanc is missing: make test installs the Debian package orthanc"
    http_port, dicom_port = _free_port(), _free_port()
    config = {
        "Name": "interop",
        "StorageDirectory": str(tmp_path / "orthanc-storage"),
        "IndexDirectory": str(tmp_path / "orthanc-index"),
        "HttpPort": http_port,
        "DicomPort": dicom_port,
        "DicomAet": "ORTHANC",
        "RemoteAccessAllowed": False,
        "AuthenticationEnabled": False,
        "Plugins": [],
        "DicomModalities": {"gateway": ["AHI-GATEWAY", "127.0.0.1", gateway.port]},
    }
    path = tmp_path / "orthanc.json"
    path.write_text(json.dumps(config))
    log = (tmp_path / "orthanc.log").open("w")
    process = subprocess.Popen([executable, str(path)], stdout=log, stderr=subprocess.STDOUT)

    def up() -> bool:
        try:
            return bool(_http(http_port, "GET", "/system"))
        except OSError:
            return False

    try:
        wait_for(up, timeout=60, what="Orthanc's REST API")
        yield http_port
    finally:
        process.terminate()
        process.wait(30)
        log.close()


def test_orthanc_pushes_a_study_to_the_gateway(gateway, orthanc, tmp_path):
    study = generate_uid()
    series = generate_uid()
    files = [
        write_instance(tmp_path / f"{n}.dcm", study_uid=study, series_uid=series, pixel_bytes=60_000)
        for n in range(10)
    ]
    for path in files:
        _http(orthanc, "POST", "/instances", path.read_bytes())
    [study_id] = _http(orthanc, "GET", "/studies")
    job = _http(
        orthanc,
        "POST",
        "/modalities/gateway/store",
        json.dumps({"Resources": [study_id], "Synchronous": True}).encode(),
    )
    assert job["InstancesCount"] == 10 and job["FailedInstancesCount"] == 0
    _assert_stored_as_sent(gateway.store, files)
