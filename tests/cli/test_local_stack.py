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
import time
from pathlib import Path

import pytest

from cli.context import state_file
from tests.cli.conftest import FIXED_ENV

DICOMCTL = str(Path(sys.executable).parent / "dicomctl")
PROJECT = Path(__file__).resolve().parents[2]
IMAGE_SET_ID = re.compile(r"^[0-9a-z]{32}$")


def _environment() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "DICOMCTL_"))}
    return env | FIXED_ENV


def _read_ready(process: subprocess.Popen, deadline: float) -> dict:
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
    raise AssertionError(f"dicomctl dev did not become ready; stderr: {process.stderr.read()[-2000:]}")


@pytest.fixture(scope="module")
def dev_stack(tmp_path_factory):
    project = tmp_path_factory.mktemp("project")
    process = subprocess.Popen(
        [DICOMCTL, "--project-dir", str(project), "--json", "dev", "--port", "0"],
        cwd=PROJECT,
        env=_environment(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        ready = _read_ready(process, time.monotonic() + 90)
        yield project, process, ready
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def _wait_for_job(invoke, project: Path, deadline_seconds: float = 90) -> dict:
    deadline = time.monotonic() + deadline_seconds
    while time.monotonic() < deadline:
        result = invoke("--project-dir", project, "status", "--calling-aet", "CT-DEV-TEST", "--json")
        jobs = json.loads(result.stdout)
        if jobs and jobs[0]["currentStatus"] in ("COMPLETED", "PARTIAL", "FAILED"):
            return jobs[0]
        time.sleep(0.5)
    raise AssertionError("the job did not finish in time")


def test_dev_serves_every_command_until_ctrl_c(invoke, dev_stack):
    project, process, ready = dev_stack
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
