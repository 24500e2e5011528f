"""SCP_WORKERS=2: two processes share the DICOM port (SO_REUSEPORT), both store, SIGTERM stops both."""

from __future__ import annotations

from pydicom import dcmread

from tests.scp.dicom_factory import write_instance
from tests.scp.harness import send_files
from tests.scp.manifests import wait_file_manifests


def test_two_workers_share_the_port_and_both_seal_on_sigterm(start_scp, tmp_path):
    store = tmp_path / "store"
    scp = start_scp(SCP_STORAGE_URI=f"file://{store}", SCP_WORKERS="2", SCP_DRAIN_SECONDS="1")
    files = [write_instance(tmp_path / f"{n}.dcm") for n in range(16)]
    for path in files:  # one association each: the kernel spreads them over both processes
        assert send_files(scp.port, [path]) == [0]

    manifests = wait_file_manifests(store, {str(dcmread(f).SOPInstanceUID) for f in files})
    assert len(manifests) == 16 and {m.seal_reason for m in manifests} == {"release"}
    assert scp.stop() == 0
    handled_by = {line["pid"] for line in scp.logs() if line.get("event") == "association"}
    assert len(handled_by) == 2, "both processes should have received associations"
    stopped = {line["pid"] for line in scp.logs() if line.get("message") == "stopped"}
    assert stopped == handled_by | {scp.proc.pid}
