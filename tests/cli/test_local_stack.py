"""dev and demo through the real local stack (moto + in-process Lambdas + HealthImaging emulator + SCP).

``dicomctl dev`` runs as its own process, as an operator would run it; the other commands find it
through the state file it publishes. ``dicomctl demo --json`` runs exactly as ``make demo`` does.
"""

from __future__ import annotations

import json
import os
import re
import select
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pydicom
import pytest
from typer.testing import CliRunner

from cli.config_cmd import LOCAL_OVERRIDES
from cli.context import state_file
from cli.main import app
from cli.synthetic import write_study
from tests.cli.conftest import FIXED_ENV, run_dicomctl

DICOMCTL = str(Path(sys.executable).parent / "dicomctl")
PROJECT = Path(__file__).resolve().parents[2]
IMAGE_SET_ID = re.compile(r"^[0-9a-z]{32}$")


def _environment() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "DICOMCTL_"))}
    return env | FIXED_ENV


def _read_ready(process: subprocess.Popen, deadline: float, console: Console) -> dict:
    """The JSON readiness line `dicomctl --json dev` prints once the stack is up."""
    while time.monotonic() < deadline:
        ready, _, _ = select.select([process.stdout], [], [], max(0.0, deadline - time.monotonic()))
        if not ready:
            break
        line = process.stdout.readline()
        if not line:
            break
        if line.startswith("{"):
            document = json.loads(line)
            if document.get("event") == "ready":
                return document
    raise AssertionError(f"dicomctl dev did not become ready; stderr: {console.lines[-30:]}")


class Console:
    """The lines ``dicomctl dev`` prints on stderr, read by a thread; ``wait_for`` polls with a deadline."""

    def __init__(self, stream):
        self.lines: list[str] = []
        self._lock = threading.Lock()
        threading.Thread(target=self._read, args=(stream,), daemon=True).start()

    def _read(self, stream) -> None:
        for line in stream:
            with self._lock:
                self.lines.append(line.rstrip("\n"))

    def wait_for(self, *words: str, seconds: float = 30) -> str:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            with self._lock:
                found = [line for line in self.lines if all(word in line for word in words)]
            if found:
                return found[0]
            time.sleep(0.1)
        raise AssertionError(f"no line with {words} on the dev console: {self.lines[-20:]}")


def _start_dev(project: Path) -> tuple[subprocess.Popen, dict, Console]:
    process = subprocess.Popen(
        [DICOMCTL, "--project-dir", str(project), "--json", "dev", "--port", "0"],
        cwd=PROJECT,
        env=_environment(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    console = Console(process.stderr)
    try:
        return process, _read_ready(process, time.monotonic() + 90, console), console
    except BaseException:
        process.kill()
        process.wait()
        raise


@pytest.fixture(scope="module")
def dev_stack(tmp_path_factory):
    project = tmp_path_factory.mktemp("project")
    process, ready, console = _start_dev(project)
    try:
        yield project, process, ready, console
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def _wait_for_jobs(
    invoke, project: Path, ae: str, count: int = 1, deadline_seconds: float = 90
) -> list[dict]:
    """The jobs from calling AE ``ae``, once ``count`` of them are COMPLETED, PARTIAL or FAILED."""
    deadline = time.monotonic() + deadline_seconds
    while time.monotonic() < deadline:
        result = invoke("--project-dir", project, "status", "--calling-aet", ae, "--json")
        jobs = json.loads(result.stdout)
        if len(jobs) >= count and all(j["currentStatus"] in ("COMPLETED", "PARTIAL", "FAILED") for j in jobs):
            return jobs
        time.sleep(0.5)
    raise AssertionError(f"the jobs from {ae} did not finish in time")


def _wait_for_job(invoke, project: Path) -> dict:
    return _wait_for_jobs(invoke, project, "CT-DEV-TEST")[0]


def test_dev_console_says_why_in_one_line_per_event_and_keeps_the_structured_logs(
    invoke, dev_stack, tmp_path
):
    project, _, ready, console = dev_stack
    logs = {name: Path(path) for name, path in ready["logs"].items()}
    assert all(path.parent == project / ".dicomctl" / "local" / "logs" for path in logs.values())
    rejected = invoke(
        "--project-dir", project, "echo", "--called-aet", "WRONG-AE", "--calling-aet", "ECHO-TEST"
    )
    assert rejected.exit_code == 4
    line = console.wait_for("association rejected")
    assert "called AE title not recognized" in line and "called AE WRONG-AE" in line
    assert "calling AE ECHO-TEST" in line and "from 127.0.0.1" in line and "reason 7" in line
    [path] = write_study(tmp_path, "CT", instances=1, rows=16, cols=16)
    broken = pydicom.dcmread(path)
    del broken.StudyInstanceUID  # the SCP refuses it: it cannot place it in a study
    broken.save_as(tmp_path / "no-study-uid.dcm")
    refused = invoke(
        "--project-dir", project, "send", tmp_path / "no-study-uid.dcm", "--calling-aet", "REFUSE-TEST"
    )
    assert refused.exit_code == 1
    line = console.wait_for("instance refused")
    assert "0xC212" in line and "StudyInstanceUID missing" in line and "from 127.0.0.1" in line
    records = [json.loads(line) for line in logs["stack"].read_text().splitlines()]
    assert {
        "message": "association rejected",
        "outcome": "rejected-called-ae",
        "calledAeTitle": "WRONG-AE",
    }.items() <= next(r for r in records if r["message"] == "association rejected").items()


def test_config_show_on_the_local_stack_shows_what_is_in_effect(invoke, dev_stack):
    project, _, ready, _ = dev_stack
    shown = json.loads(invoke("--project-dir", project, "config", "show", "--json").stdout)["config"]
    bucket = ready["outputs"]["dicomBucket"]
    assert shown["scpStorageUri"] == {"value": f"s3://{bucket}", "source": "local stack"}
    assert shown["scpPort"] == {"value": ready["outputs"]["dicomPort"], "source": "local stack"}
    effective = json.loads(state_file(project).read_text())["effectiveConfig"]
    assert set(effective) == LOCAL_OVERRIDES  # config show knows every key the local stack sets


@pytest.fixture(scope="module")
def duplicated(dev_stack, tmp_path_factory):
    """One send (one association, so one batch) of four files: A, A again in another series, B
    and B again (the same file twice). Two SOP Instance UIDs, four receipts. Returns the job."""
    project, *_ = dev_stack
    folder = tmp_path_factory.mktemp("duplicates")
    a, b = write_study(folder, "CT", instances=2, rows=16, cols=16)
    other_series = pydicom.dcmread(a)
    other_series.SeriesInstanceUID = pydicom.uid.generate_uid()
    other_series.save_as(folder / "a-other-series.dcm")
    sent = run_dicomctl(
        "--project-dir", project, "send", a, folder / "a-other-series.dcm", b, b, "--calling-aet", "DUP-TEST"
    )
    assert sent.returncode == 0, sent.stderr
    assert "Sent more than once (2 SOP Instance UIDs)" in sent.stdout
    runner = CliRunner(env=FIXED_ENV)
    [job] = _wait_for_jobs(lambda *a: runner.invoke(app, [str(x) for x in a]), project, "DUP-TEST")
    return project, job, str(pydicom.dcmread(a).SOPInstanceUID), str(pydicom.dcmread(b).SOPInstanceUID)


@pytest.mark.parametrize("columns", [60, 80])
def test_status_counts_received_unique_and_replaced_and_names_the_replaced_uid(duplicated, columns):
    project, job, uid_a, _ = duplicated
    listed = run_dicomctl("--project-dir", project, "status", "--calling-aet", "DUP-TEST", columns=columns)
    assert listed.returncode == 0, listed.stderr
    header = next(line for line in listed.stdout.splitlines() if "Received" in line).split()
    row = next(line for line in listed.stdout.splitlines() if job["jobId"] in line).split()
    counts = dict(zip(header[4:7], row[2:5], strict=True))  # after "Job (batch id)" and "Status"
    assert counts["Unique"] == "2" and int(counts["Replaced"]) >= 1
    assert int(counts["Received"]) == 2 + int(counts["Replaced"])
    one = run_dicomctl("--project-dir", project, "status", job["jobId"], columns=columns)
    replaced = one.stdout.split("Replaced (", 1)[1].split("Timeline")[0]
    assert uid_a in replaced.split()  # the UID sent into a second series is named, whole


def test_the_same_file_sent_twice_in_one_association_counts_as_replaced(duplicated):
    _, job, uid_a, uid_b = duplicated
    assert (job["receivedCount"], job["uniqueCount"], job["replacedCount"]) == (4, 2, 2)
    assert job["replacedSopInstanceUids"] == sorted([uid_a, uid_b])


def test_load_sends_studies_of_their_own_each_in_its_image_set(invoke, dev_stack):
    project, *_ = dev_stack
    args = ["--rate", "6", "--duration", "1", "--modalities", "2", "--study-size", "2", "--rows", "32"]
    result = run_dicomctl("--project-dir", project, "--json", "load", *args)
    assert result.returncode == 0, result.stderr
    document = json.loads(result.stdout)
    assert document["timeSpent"]["seconds"]["gatewayStoreStepSeconds"] is not None  # the stack's /metrics
    for modality in document["modalities"]:
        studies = modality["studyInstanceUids"]
        assert len(studies) == len(set(studies)) == modality["studies"] >= 1
        jobs = _wait_for_jobs(invoke, project, modality["callingAet"], count=len(studies))
        assert all(j["currentStatus"] == "COMPLETED" for j in jobs)
        assert sorted(uid for j in jobs for uid in j["studyInstanceUids"]) == sorted(studies)
        image_sets = [i for j in jobs for i in j["imageSetIds"]]  # the emulator makes one per series
        assert all(j["imageSetIds"] for j in jobs) and len(image_sets) == len(set(image_sets)) >= len(studies)


def test_dev_serves_every_command_until_ctrl_c(invoke, dev_stack):
    project, process, ready, console = dev_stack
    outputs = ready["outputs"]
    assert state_file(project).is_file()
    assert outputs["aeTitle"] and outputs["dicomPort"] > 0 and outputs["jobTable"]
    assert ready["environment"]["AWS_ENDPOINT_URL"].startswith("http://127.0.0.1:")

    echo = invoke("--project-dir", project, "echo", "--json")
    assert echo.exit_code == 0, echo.output
    sent = invoke(
        "--project-dir",
        project,
        "send",
        "--synthetic",
        "ct",
        "--instances",
        "4",
        "--calling-aet",
        "CT-DEV-TEST",
        "--json",
    )
    assert sent.exit_code == 0, sent.output
    assert json.loads(sent.stdout)["stored"] == 4

    job = _wait_for_job(invoke, project)
    assert job["currentStatus"] == "COMPLETED" and job["importedCount"] == 4
    assert all(IMAGE_SET_ID.match(i) for i in job["imageSetIds"]) and job["imageSetIds"]
    timeline = invoke("--project-dir", project, "status", job["jobId"])
    assert timeline.exit_code == 0 and job["imageSetIds"][0] in timeline.stdout
    shown = json.loads(invoke("--project-dir", project, "executions", "show", job["jobId"], "--json").stdout)
    assert shown["status"] == "SUCCEEDED" and shown["events"][-1]["type"] == "ExecutionSucceeded"
    assert json.loads(invoke("--project-dir", project, "dlq", "list", "--json").stdout) == []

    # the console has one readable line per event: no JSON log lines, no patient data
    console.wait_for("import recorded", "COMPLETED", f"batch {job['jobId']}")
    assert not [line for line in console.lines if line.startswith("{")]
    assert not [line for line in console.lines if "SYNTHETIC^" in line or "SYN-" in line]
    lambda_log = [json.loads(line) for line in Path(ready["logs"]["lambda"]).read_text().splitlines()]
    assert any(r.get("message") == "import recorded" and r.get("batchId") == job["jobId"] for r in lambda_log)

    process.send_signal(signal.SIGINT)
    assert process.wait(timeout=120) == 0
    assert not state_file(project).exists()
    stopped = invoke("--project-dir", project, "status")
    assert stopped.exit_code == 2 and "local stack is not running" in stopped.stderr


def test_demo_json_as_make_demo_runs_it(tmp_path):
    result = subprocess.run(
        [DICOMCTL, "--project-dir", str(tmp_path), "demo", "--json", "--instances", "5"],
        cwd=PROJECT,
        env=_environment(),
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    document = json.loads(result.stdout)
    assert document["ok"] is True and document["diagnosis"] is None
    assert document["instancesSent"] == document["instancesAcknowledged"] == 5
    [job] = document["jobs"]
    assert job["status"] == "COMPLETED" and job["importedCount"] == 5
    assert job["imageSetIds"] and all(IMAGE_SET_ID.match(i) for i in job["imageSetIds"])
    # the SCP's EMF lines go to a file, and status polls without metrics do not warn
    assert '"_aws"' not in result.stdout + result.stderr
    assert "No application metrics" not in result.stderr


def _children(pid: int) -> dict[int, str]:
    """The processes whose parent is ``pid``, with their command lines (Linux /proc)."""
    found = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
            if int(fields[1]) == pid:
                found[int(stat.parent.name)] = (
                    (stat.parent / "cmdline").read_bytes().replace(b"\0", b" ").decode()
                )
        except (OSError, ValueError, IndexError):
            continue
    return found


def _running(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"  # a zombie has exited; only its parent (init, here) has not reaped it yet


def test_workers_exit_when_dev_is_killed(tmp_path):
    process, _, _ = _start_dev(tmp_path)
    try:
        deadline = time.monotonic() + 60
        while not (workers := {p for p, cmd in _children(process.pid).items() if "multiprocessing" in cmd}):
            assert time.monotonic() < deadline, "dicomctl dev started no Lambda worker"
            time.sleep(0.1)
    finally:
        process.kill()  # SIGKILL: no shutdown code runs in dicomctl dev
        process.wait()
    deadline = time.monotonic() + 15
    while any(_running(pid) for pid in workers):
        assert time.monotonic() < deadline, f"workers still running after dev was killed: {workers}"
        time.sleep(0.1)
