"""SCP_WORKERS=2: two processes share the DICOM port (SO_REUSEPORT), both store, /metrics sums
them, SIGTERM stops both; SCP_WORKERS=0 is one process per CPU the task may use."""

from __future__ import annotations

import os

from pydicom import dcmread

from scp import __main__ as scp_main
from scp.metrics import combine_prometheus
from tests.scp.dicom_factory import write_instance
from tests.scp.harness import http_get, send_files
from tests.scp.manifests import wait_file_manifests


def test_two_workers_share_the_port_and_both_seal_on_sigterm(start_scp, tmp_path):
    store = tmp_path / "store"
    scp = start_scp(SCP_STORAGE_URI=f"file://{store}", SCP_WORKERS="2", SCP_DRAIN_SECONDS="1")
    files = [write_instance(tmp_path / f"{n}.dcm") for n in range(16)]
    for path in files:  # one association each: the kernel spreads them over both processes
        assert send_files(scp.port, [path]) == [0]

    manifests = wait_file_manifests(store, {str(dcmread(f).SOPInstanceUID) for f in files})
    assert len(manifests) == 16 and {m.seal_reason for m in manifests} == {"release"}
    status, metrics = http_get(scp.health_port, "/metrics")  # the first process answers for both
    assert status == 200
    assert "dicom_scp_instances_stored_total 16" in metrics.splitlines()
    assert 'dicom_scp_associations_total{outcome="release"} 16' in metrics.splitlines()
    assert "dicom_scp_ready 1" in metrics.splitlines()
    assert scp.stop() == 0
    handled_by = {line["pid"] for line in scp.logs() if line.get("event") == "association"}
    assert len(handled_by) == 2, "both processes should have received associations"
    stopped = {line["pid"] for line in scp.logs() if line.get("message") == "stopped"}
    assert stopped == handled_by | {scp.proc.pid}


def test_metrics_of_several_processes_are_summed_and_ready_only_if_all_are():
    first = '# TYPE a_total counter\na_total{k="x"} 2\n# TYPE dicom_scp_ready gauge\ndicom_scp_ready 1\n'
    second = (
        '# TYPE a_total counter\na_total{k="x"} 3\na_total{k="y"} 1\n'
        "# TYPE dicom_scp_ready gauge\ndicom_scp_ready 0\n"
    )
    assert combine_prometheus([first, second]).splitlines() == [
        "# TYPE a_total counter",
        'a_total{k="x"} 5',
        'a_total{k="y"} 1',
        "# TYPE dicom_scp_ready gauge",
        "dicom_scp_ready 0",
    ]


def test_workers_default_to_the_cpus_of_the_tasks_cgroup(tmp_path, monkeypatch):
    cpu_max = tmp_path / "cpu.max"
    monkeypatch.setattr(scp_main, "CGROUP_CPU_MAX", str(cpu_max))
    cpu_max.write_text("150000 100000\n")  # 1.5 vCPU: two processes
    assert scp_main.available_cpus() == 2
    cpu_max.write_text("max 100000\n")  # no quota: the CPUs the process may run on
    assert scp_main.available_cpus() == len(os.sched_getaffinity(0))
