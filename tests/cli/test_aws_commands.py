"""status / executions / dlq against moto in server mode, seeded the way the workflow writes.

Job items are written with the workflow's own writer (handlers.jobs.JobTable) into a table created
like the stack creates it; executions run for real in moto's ASL interpreter; DLQ messages carry
the failure handler's body. The CLI reaches it all through --outputs FILE + --endpoint-url.
"""

from __future__ import annotations

import json
import os
import pty
import queue
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from moto.server import ThreadedMotoServer

from cli.errors import EXIT_FAILED, EXIT_MEANINGS, EXIT_USAGE
from cli.reference import render as render_reference
from core.layout import new_batch_id
from handlers.jobs import JobTable
from local.credentials import local_client
from local.stack import create_job_table
from tests.cli.conftest import DICOMCTL, FAKE_AWS, run_dicomctl

STUDY = "1.2.826.0.1.3680043.8.498.1111"
# Wait for $.wait seconds, then fail or succeed as $.fail says: enough to see states and events.
DEFINITION = {
    "StartAt": "WaitForImport",
    "States": {
        "WaitForImport": {"Type": "Wait", "SecondsPath": "$.wait", "Next": "Outcome"},
        "Outcome": {
            "Type": "Choice",
            "Choices": [{"Variable": "$.fail", "BooleanEquals": True, "Next": "Failed"}],
            "Default": "Imported",
        },
        "Failed": {"Type": "Fail", "Error": "ImportFailed", "Cause": "the import job FAILED"},
        "Imported": {"Type": "Succeed"},
    },
}


def _moto_config(url: str, execute: bool) -> None:
    body = json.dumps({"stepfunctions": {"execute_state_machine": execute}}).encode()
    urllib.request.urlopen(urllib.request.Request(f"{url}/moto-api/config", data=body, method="POST"))


class Seeded:
    def __init__(self, url: str, tmp_path):
        self.url = url
        self.ddb = local_client("dynamodb", url)
        self.sfn = local_client("stepfunctions", url)
        self.sqs = local_client("sqs", url)
        self.table = "jobs-cli-test"
        create_job_table(self.ddb, self.table)
        self.machine = self.sfn.create_state_machine(
            name="import-cli-test",
            definition=json.dumps(DEFINITION),
            roleArn="arn:aws:iam::123456789012:role/sfn",
        )["stateMachineArn"]
        self.dlq = self.sqs.create_queue(QueueName="dlq-cli-test")["QueueUrl"]
        self.outputs = tmp_path / "outputs.json"
        self.outputs.write_text(
            json.dumps(
                {
                    "jobTable": self.table,
                    "stateMachineArn": self.machine,
                    "dlqUrl": self.dlq,
                    "dicomBucket": "dicom-cli-test",
                    "region": "us-east-1",
                }
            )
        )
        jobs = JobTable(self.ddb, self.table, ttl_days=1)
        self.completed, self.partial, self.failed = new_batch_id(), new_batch_id(), new_batch_id()
        origins = {self.completed: "CT-ROOM-1", self.partial: "MR-ROOM-2", self.failed: "CT-ROOM-1"}
        for job_id, ae in origins.items():
            jobs.record(job_id, "RECEIVED", summary={"manifestKey": f"batches/{job_id}.json"})
            jobs.record_studies(job_id, {STUDY: 3} if job_id != self.failed else {"1.2.3.999": 1})
            jobs.record(job_id, "VALIDATED", summary={"callingAeTitle": ae, "instanceCount": 3})
        jobs.record(self.completed, "SUBMITTED", details={"importJobId": "a" * 32})
        done = {"imageSetIds": ["b" * 32], "importedCount": 3, "failedCount": 0}
        jobs.record(self.completed, "COMPLETED", summary=done)
        jobs.record(
            self.partial,
            "PARTIAL",
            summary={
                "imageSetIds": ["c" * 32],
                "importedCount": 2,
                "failedCount": 1,
                "failures": [{"sopInstanceUid": "1.2.3.4.5", "stage": "import", "reason": "bad pixel data"}],
            },
        )
        jobs.record(self.failed, "FAILED", summary={"failedState": "StartImport", "error": "ImportFailed"})

    def cli(self, *args: str, outputs: Path | None = None) -> list[str]:
        where = str(outputs or self.outputs)
        return ["--outputs", where, "--endpoint-url", self.url, "--region", "us-east-1", *args]

    def run_execution(self, name: str, wait: int, fail: bool) -> str:
        document = {"wait": wait, "fail": fail, "batchId": name}
        text = json.dumps(document)
        started = self.sfn.start_execution(stateMachineArn=self.machine, name=name, input=text)
        return started["executionArn"]

    def wait_done(self, arn: str) -> str:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            status = self.sfn.describe_execution(executionArn=arn)["status"]
            if status != "RUNNING":
                return status
            time.sleep(0.05)
        raise AssertionError(f"{arn} still running")

    def dead_letter(self, batch_id: str, arn: str) -> None:
        body = {
            "batchId": batch_id,
            "manifestKey": f"batches/{batch_id}.json",
            "state": "CheckStatus",
            "error": "ImportFailed",
            "cause": "the import job FAILED",
            "executionArn": arn,
            "at": "2026-11-28T00:00:00.000Z",
        }
        self.sqs.send_message(QueueUrl=self.dlq, MessageBody=json.dumps(body))


@pytest.fixture(scope="module")
def aws(tmp_path_factory) -> Iterator[Seeded]:
    mp = pytest.MonkeyPatch()
    for key, value in FAKE_AWS.items():
        mp.setenv(key, value)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    url = f"http://{host}:{port}"
    _moto_config(url, True)
    try:
        yield Seeded(url, tmp_path_factory.mktemp("aws"))
    finally:
        _moto_config(url, False)
        server.stop()
        mp.undo()


def test_status_lists_jobs_newest_first_with_image_sets(invoke, aws):
    result = invoke(*aws.cli("status", "--json"))
    assert result.exit_code == 0, result.output
    jobs = json.loads(result.stdout)
    assert {j["jobId"]: j["currentStatus"] for j in jobs} == {
        aws.completed: "COMPLETED",
        aws.partial: "PARTIAL",
        aws.failed: "FAILED",
    }
    assert next(j for j in jobs if j["jobId"] == aws.completed)["imageSetIds"] == ["b" * 32]
    table = invoke(*aws.cli("status")).stdout
    assert aws.completed in table and "b" * 32 in table and "CT-ROOM-1" in table


@pytest.mark.parametrize(
    ("filters", "expected"),
    [
        (["--status", "partial"], ["partial"]),
        (["--calling-aet", "CT-ROOM-1"], ["completed", "failed"]),
        (["--study", STUDY], ["completed", "partial"]),
        (["--study", STUDY, "--status", "COMPLETED"], ["completed"]),
        (["--since", "1h"], ["completed", "partial", "failed"]),
        (["--since", "2999-01-01T00:00:00Z"], []),
    ],
)
def test_status_filters(invoke, aws, filters, expected):
    result = invoke(*aws.cli("status", *filters, "--json"))
    assert result.exit_code == 0, result.output
    assert sorted(j["jobId"] for j in json.loads(result.stdout)) == sorted(getattr(aws, e) for e in expected)


def test_status_of_one_job_shows_timeline_and_failures(invoke, aws):
    result = invoke(*aws.cli("status", aws.partial))
    assert result.exit_code == 0, result.output
    out = result.stdout
    for status in ("RECEIVED", "VALIDATED", "PARTIAL"):
        assert status in out
    assert "1.2.3.4.5" in out and "bad pixel data" in out and "c" * 32 in out
    document = json.loads(invoke(*aws.cli("status", aws.partial, "--json")).stdout)
    assert [e["status"] for e in document["timeline"]] == ["RECEIVED", "VALIDATED", "PARTIAL"]


def test_status_bad_input_is_explained(invoke, aws):
    unknown = invoke(*aws.cli("status", "20990101T000000Z-0000000000000000"))
    assert unknown.exit_code == EXIT_FAILED and "no job" in unknown.stderr
    bad = invoke(*aws.cli("status", "--status", "DONE"))
    assert bad.exit_code == EXIT_USAGE and "RECEIVED" in bad.stderr
    since = invoke(*aws.cli("status", "--since", "yesterday"))
    assert since.exit_code == EXIT_USAGE and "30m" in since.stderr


def test_unreachable_aws_endpoint_is_one_clear_message(invoke, aws):
    args = aws.cli("status")
    args[args.index("--endpoint-url") + 1] = "http://127.0.0.1:9"
    result = invoke(*args)
    assert result.exit_code == 3
    assert "cannot reach the AWS endpoint" in result.stderr and "Traceback" not in result.output


class Watched:
    """``dicomctl status --watch ...`` run as an operator runs it: its own process, stdout a pipe
    (not a terminal). Lines are read by a thread so a test can wait for one with a deadline."""

    # The child installs Python's SIGINT handler itself: a shell's background job inherits SIGINT
    # ignored, and Python keeps an inherited SIG_IGN, so Ctrl-C would otherwise not reach it.
    LAUNCH = (
        "import signal; signal.signal(signal.SIGINT, signal.default_int_handler); "
        "from cli.main import app; app(prog_name='dicomctl')"
    )

    def __init__(self, args: list[str], cwd: Path):
        self.process = subprocess.Popen(
            [sys.executable, "-c", self.LAUNCH, *args],
            cwd=cwd,
            env={**os.environ, "COLUMNS": "120"},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.lines: queue.Queue[str] = queue.Queue()
        self.seen: list[str] = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in self.process.stdout:
            self.lines.put(line)
        self.lines.put("")  # end of output

    def wait_for_line(self, *words: str, seconds: float = 30) -> None:
        deadline = time.monotonic() + seconds
        while True:
            line = self.lines.get(timeout=max(deadline - time.monotonic(), 0.01))
            assert line, f"dicomctl ended before printing {words}: {''.join(self.seen)}"
            self.seen.append(line)
            if all(word in line for word in words):
                return

    def finish(self, seconds: float = 30) -> tuple[int, str, str]:
        """Exit code, everything printed on stdout and stderr."""
        code = self.process.wait(timeout=seconds)
        while (line := self.lines.get(timeout=seconds)) != "":
            self.seen.append(line)
        return code, "".join(self.seen), self.process.stderr.read()


@pytest.fixture
def watch_table(aws, tmp_path) -> tuple[JobTable, Path]:
    """A job table of the test's own (the seeded one stays as the other tests expect it), and the
    --outputs file naming it."""
    name = f"jobs-watch-{tmp_path.name}"[:255]
    create_job_table(aws.ddb, name)
    outputs = tmp_path / "outputs.json"
    outputs.write_text(json.dumps({**json.loads(aws.outputs.read_text()), "jobTable": name}))
    return JobTable(aws.ddb, name, ttl_days=1), outputs


def in_progress(jobs: JobTable, ae: str = "CT-ROOM-1") -> str:
    job_id = new_batch_id()
    jobs.record(job_id, "RECEIVED", summary={"manifestKey": f"batches/{job_id}.json"})
    jobs.record(job_id, "VALIDATED", summary={"callingAeTitle": ae, "instanceCount": 3})
    jobs.record(job_id, "SUBMITTED", details={"importJobId": "d" * 32})
    jobs.record(job_id, "IN_PROGRESS")
    return job_id


def test_status_until_done_of_settled_jobs_prints_once_and_exits(invoke, aws):
    result = invoke(*aws.cli("status", "--until-done", "--interval", "0.2"))
    assert result.exit_code == 0, result.output
    assert result.stdout.count("Jobs (3)") == 1 and "\x1b" not in result.stdout  # no terminal: no redraws
    assert aws.partial in result.stdout and "PARTIAL" in result.stdout
    lines = invoke(*aws.cli("status", "--watch", "--until-done", "--json")).stdout.splitlines()
    assert len(lines) == 1
    assert {j["jobId"] for j in json.loads(lines[0])} == {aws.completed, aws.partial, aws.failed}


def test_status_watch_shows_each_change_and_ends_when_the_job_is_done(aws, watch_table, tmp_path):
    jobs, outputs = watch_table
    job_id = in_progress(jobs)
    watched = Watched(
        aws.cli("status", job_id, "--until-done", "--interval", "0.2", outputs=outputs), tmp_path
    )
    watched.wait_for_line("Status", "IN_PROGRESS")  # the first rendering is out
    done = {"imageSetIds": ["e" * 32], "importedCount": 3, "failedCount": 0}
    assert jobs.record(job_id, "COMPLETED", summary=done)
    code, out, err = watched.finish()
    assert code == 0, err
    renderings = out.split(f"Job {job_id}")[1:]
    assert len(renderings) == 2, out  # one rendering per change, none for the unchanged refreshes
    before, after = renderings
    assert "IN_PROGRESS" in before and "COMPLETED" not in before and "e" * 32 not in before
    assert "COMPLETED" in after and "e" * 32 in after
    assert "\x1b" not in out and "Traceback" not in err


def test_status_watch_stops_cleanly_on_ctrl_c(aws, watch_table, tmp_path):
    jobs, outputs = watch_table
    job_id = in_progress(jobs, ae="MR-ROOM-9")
    watched = Watched(aws.cli("status", "--watch", "--interval", "0.2", outputs=outputs), tmp_path)
    watched.wait_for_line(job_id, "IN_PROGRESS")
    watched.process.send_signal(signal.SIGINT)
    code, out, err = watched.finish()
    assert code == 0 and "stopped watching" in err and "Traceback" not in err, err
    assert out.count("Jobs (1)") == 1 and "MR-ROOM-9" in out


def test_executions_list_show_and_tail(invoke, aws):
    ok, bad = new_batch_id(), new_batch_id()
    aws.wait_done(aws.run_execution(ok, 0, False))
    aws.wait_done(aws.run_execution(bad, 0, True))
    listing = json.loads(invoke(*aws.cli("executions", "list", "--json")).stdout)
    listed = {e["name"]: e["status"] for e in listing}
    assert listed[ok] == "SUCCEEDED" and listed[bad] == "FAILED"
    failed_only = json.loads(invoke(*aws.cli("executions", "list", "--status", "failed", "--json")).stdout)
    assert bad in {e["name"] for e in failed_only} and ok not in {e["name"] for e in failed_only}

    shown = json.loads(invoke(*aws.cli("executions", "show", bad, "--json")).stdout)
    types = [e["type"] for e in shown["events"]]
    assert types[0] == "ExecutionStarted" and types[-1] == "ExecutionFailed"
    assert any("ImportFailed" in e["detail"] for e in shown["events"])
    human = invoke(*aws.cli("executions", "show", bad)).stdout
    assert "ExecutionFailed" in human and "WaitForImport" in human

    tail = invoke(*aws.cli("executions", "tail", ok, "-n", "2")).stdout
    assert "ExecutionSucceeded" in tail and "ExecutionStarted" not in tail and "SUCCEEDED" in tail
    missing = invoke(*aws.cli("executions", "show", "no-such-batch"))
    assert missing.exit_code == EXIT_FAILED and "no execution" in missing.stderr


def test_tail_follow_prints_events_until_the_execution_ends(invoke, aws):
    name = new_batch_id()
    aws.run_execution(name, 1, False)
    result = invoke(*aws.cli("executions", "tail", name, "--follow", "--interval", "0.2", "--json"))
    assert result.exit_code == 0, result.output
    events = [json.loads(line) for line in result.stdout.strip().splitlines()]
    types = [e["type"] for e in events]
    assert types[-1] == "ExecutionSucceeded" and "WaitStateExited" in types


def test_dlq_list_and_redrive_is_idempotent(invoke, aws):
    failed = new_batch_id()
    original = aws.run_execution(failed, 0, True)
    assert aws.wait_done(original) == "FAILED"
    busy = new_batch_id()
    aws.run_execution(busy, 20, False)  # still RUNNING while we redrive
    aws.dead_letter(failed, original)
    aws.dead_letter(busy, "")

    listed = json.loads(invoke(*aws.cli("dlq", "list", "--json")).stdout)
    assert {m["batchId"] for m in listed} == {failed, busy}
    assert all(m["error"] == "ImportFailed" for m in listed)
    # listing does not consume: a second look sees the same messages
    assert len(json.loads(invoke(*aws.cli("dlq", "list", "--json")).stdout)) == 2

    result = invoke(*aws.cli("dlq", "redrive", "--all", "--json"))
    assert result.exit_code == 0, result.output
    outcomes = {o["batchId"]: o for o in json.loads(result.stdout)["redriven"]}
    assert outcomes[failed]["outcome"] == "started"
    assert outcomes[failed]["execution"] == f"{failed}-redrive-1"
    assert outcomes[busy] == {"batchId": busy, "outcome": "already-running", "execution": busy}
    rerun = aws.sfn.describe_execution(executionArn=original.replace(failed, f"{failed}-redrive-1"))
    assert json.loads(rerun["input"]) == {"wait": 0, "fail": True, "batchId": failed}
    assert json.loads(invoke(*aws.cli("dlq", "list", "--json")).stdout) == []

    again = invoke(*aws.cli("dlq", "redrive", failed))
    assert again.exit_code == EXIT_FAILED and "not in the DLQ" in again.stderr
    usage = invoke(*aws.cli("dlq", "redrive"))
    assert usage.exit_code == EXIT_USAGE


# --- as an operator runs it: its own process, output on a pipe ----------------------------------


@pytest.mark.parametrize("columns", [60, 80])
def test_piped_tables_keep_every_id_and_status_whole(aws, columns):
    listed = run_dicomctl(*aws.cli("status"), columns=columns)
    assert listed.returncode == 0, listed.stderr
    lines = listed.stdout.splitlines()
    for job_id, status, ae in (
        (aws.completed, "COMPLETED", "CT-ROOM-1"),
        (aws.partial, "PARTIAL", "MR-ROOM-2"),
        (aws.failed, "FAILED", "CT-ROOM-1"),
    ):
        row = next(line for line in lines if job_id in line)  # one row per job, never wrapped
        assert status in row.split() and ae in row.split()
    assert any("b" * 32 in line.split() for line in lines)
    one = run_dicomctl(*aws.cli("status", aws.partial), columns=columns)
    assert one.returncode == 0, one.stderr
    assert f"Job {aws.partial}" in one.stdout.splitlines()[0]
    assert any(line.split()[:2] == ["1.2.3.4.5", "import:"] for line in one.stdout.splitlines())
    assert "…" not in listed.stdout + one.stdout


def test_piped_execution_history_keeps_causes_out_of_the_table(aws):
    name = new_batch_id()
    aws.wait_done(aws.run_execution(name, 0, True))
    shown = run_dicomctl(*aws.cli("executions", "show", name), columns=60)
    assert shown.returncode == 0, shown.stderr
    lines = shown.stdout.splitlines()
    failed = next(line for line in lines if "ExecutionFailed" in line)
    assert failed.split()[-1] == "ImportFailed"  # the table cell: the error name only
    assert any(line.strip().endswith("ExecutionFailed: the import job FAILED") for line in lines)


def test_a_narrow_terminal_stacks_the_columns_instead_of_cutting(aws):
    """On a 60-column terminal (a pty) the job list does not fit: each job is a record."""
    controller, terminal = pty.openpty()
    env = {k: v for k, v in os.environ.items() if not k.startswith("DICOMCTL_")} | {"COLUMNS": "60"}
    process = subprocess.Popen(
        [DICOMCTL, *aws.cli("status")], stdin=terminal, stdout=terminal, stderr=terminal, env=env
    )
    os.close(terminal)
    output = b""
    while True:
        try:
            chunk = os.read(controller, 65536)
        except OSError:  # the terminal closed: the process ended
            break
        if not chunk:
            break
        output += chunk
    os.close(controller)
    assert process.wait(timeout=30) == 0
    text = re.sub(r"\x1b\[[0-9;?]*[a-zA-Z]", "", output.decode())
    lines = [line.strip() for line in text.splitlines()]
    for job_id in (aws.completed, aws.partial, aws.failed):
        assert job_id in lines  # the record's heading: the whole id on its own line
    assert "Status      COMPLETED" in lines and "…" not in text
    assert all(len(line) <= 60 for line in text.splitlines())


ERRORS = {
    "config": (["--stack", "nosuch", "config", "validate"], EXIT_USAGE, "ConfigProblem"),
    "usage": (["status", "--since", "yesterday"], EXIT_USAGE, "UsageProblem"),
    "bad option": (["status", "--limit", "0"], EXIT_USAGE, "UsageProblem"),
    "no such command": (["true", "status"], EXIT_USAGE, "UsageProblem"),
    "missing output": (["status"], EXIT_USAGE, "MissingOutput"),
    "not found": (["status", "20990101T000000Z-0000000000000000"], EXIT_FAILED, "OperationFailed"),
    "unreachable": (["status"], 3, "Unreachable"),
}


@pytest.mark.parametrize("kind", ERRORS)
def test_json_errors_are_one_document_on_stdout(aws, kind, tmp_path):
    args, code, error_type = ERRORS[kind]
    if kind == "missing output":
        (tmp_path / "outputs.json").write_text(json.dumps({"region": "us-east-1"}))
        cli = aws.cli(outputs=tmp_path / "outputs.json")
    else:
        cli = aws.cli()
    if kind == "unreachable":
        cli[cli.index("--endpoint-url") + 1] = "http://127.0.0.1:9"
    result = run_dicomctl("--json", *cli, *args, columns=60 if len(kind) % 2 else 80)
    assert result.returncode == code, result.stderr
    document = json.loads(result.stdout)  # one JSON document, nothing else
    error = document["error"]
    assert document["ok"] is False and error["type"] == error_type and error["exitCode"] == code
    assert error["message"] and error["meaning"] == EXIT_MEANINGS[code]
    assert "Traceback" not in result.stderr and error["message"].split(":")[0] in result.stderr


def test_help_shows_flags_as_flags():
    top = run_dicomctl("--help")
    status_help = run_dicomctl("status", "--help", columns=100)
    assert top.returncode == status_help.returncode == 0
    for text, flags in ((top.stdout, ("--json", "--verbose", "--help")), (status_help.stdout, ("--watch",))):
        for flag in flags:
            line = next(line for line in text.splitlines() if flag in line)
            assert "<" not in line, line
    assert "<bool>" not in render_reference()


def test_redrive_of_a_permanent_failure_is_refused_with_why_until_forced(aws, tmp_path):
    queue = aws.sqs.create_queue(QueueName="dlq-permanent")["QueueUrl"]
    outputs = tmp_path / "outputs.json"
    outputs.write_text(json.dumps({**json.loads(aws.outputs.read_text()), "dlqUrl": queue}))
    batch = new_batch_id()
    jobs = JobTable(aws.ddb, aws.table, ttl_days=1)
    jobs.record(batch, "RECEIVED", summary={"manifestKey": f"batches/{batch}.json"})
    reason = "not a DICOM Part 10 file"
    bad = [{"sopInstanceUid": f"1.2.3.{i}", "stage": "validation", "reason": reason} for i in (1, 2)]
    jobs.record(batch, "VALIDATED", summary={"instanceCount": 2, "validCount": 0, "failures": bad})
    cause = f"batch {batch}: all 2 instances failed validation"
    arn = aws.run_execution(batch, 0, True)
    assert aws.wait_done(arn) == "FAILED"
    body = {"batchId": batch, "state": "StartImport", "error": "NoValidInstances", "cause": cause}
    aws.sqs.send_message(QueueUrl=queue, MessageBody=json.dumps({**body, "executionArn": arn}))

    refused = run_dicomctl(*aws.cli("dlq", "redrive", batch, outputs=outputs), columns=60)
    assert refused.returncode == EXIT_FAILED, refused.stderr
    assert "failed permanently" in refused.stderr and "--force" in refused.stderr
    out = refused.stdout
    assert (
        batch in out and "refused-permanent" in out and "every instance of the batch failed validation" in out
    )
    assert "send corrected instances again" in out and "2 x not a DICOM Part 10 file" in out
    listed = json.loads(run_dicomctl(*aws.cli("dlq", "list", "--json", outputs=outputs)).stdout)
    assert [m["batchId"] for m in listed] == [batch]  # still in the DLQ, nothing was started
    names = [e["name"] for e in aws.sfn.list_executions(stateMachineArn=aws.machine)["executions"]]
    assert f"{batch}-redrive-1" not in names

    forced = run_dicomctl(*aws.cli("--json", "dlq", "redrive", batch, "--force", outputs=outputs))
    assert forced.returncode == 0, forced.stderr
    assert json.loads(forced.stdout)["redriven"][0]["outcome"] == "started"
