"""Import workflow benchmark (``python -m bench.workflow``; part of ``make bench``).

10 synthetic studies x 300 instances, each sent over its own association (dcmtk storescu) to the
SCP of the local stack. Measures:
- StartDICOMImportJob calls (target 10: one per batch; a one-job-per-file design makes 3,000);
- seconds from the last C-STORE response to every import job COMPLETED in the job table
  (target < 10 s), with the local stack's shortened waits (1 s poll, 0.5 s emulated job).
The associations arrive one after another (a modality sending its studies: the latency of the
last study) and all 10 at once (a burst: every object's validation and import happens after
the last C-STORE, so this measures the local stack's throughput on this machine); each with and
without the emulator enforcing the real StartDICOMImportJob quota (1 request/s, burst 2), so the
state machine's backoff is part of the figure.
Prints a Markdown table and writes it to docs/benchmarks/workflow.md.
"""

from __future__ import annotations

import subprocess
import tempfile
import time
from collections import Counter
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from cli.jobs_query import get_job, list_jobs_by_calling_ae
from cli.synthetic import write_study
from core.config import from_flat
from core.layout import TERMINAL_STATES
from local.stack import LocalStack

STUDIES = 10
INSTANCES = 300
ROWS = COLS = 32  # small pixel data: this measures the workflow, not the network
TIMEOUT_SECONDS = 900
QUOTA = 1.0  # StartDICOMImportJob requests/s (burst 2), as HealthImaging enforces it
ROOT = Path(__file__).resolve().parent.parent
RESULT = ROOT / "docs" / "benchmarks" / "workflow.md"
# Hand-written findings below this line survive a re-run (the table above it is regenerated).
NOTES_MARKER = "<!-- findings: kept when bench/workflow.py rewrites the table above -->"


@dataclass
class Row:
    scenario: str
    instances_sent: int
    instances_acknowledged: int
    batches: int
    start_import_calls: int
    completed: int
    seconds_to_submitted: float
    seconds_to_completed: float
    send_seconds: float
    other: dict[str, int]


def _send_all(stack: LocalStack, studies: list[Path], calling_ae: str, *, at_once: bool) -> float:
    """One dcmtk storescu association per study (separate processes, so the sender does not
    compete with the stack for this process's GIL): all at once, or one after another.

    Returns the sending seconds. The end of the last association is just after its last C-STORE
    response (plus the release), which is where the measurement starts.
    """
    command = [
        "storescu",
        "-aet",
        calling_ae,
        "-aec",
        stack.outputs["aeTitle"],
        "127.0.0.1",
        str(stack.outputs["dicomPort"]),
        "--scan-directories",
        "--recurse",
    ]
    started = time.monotonic()
    if at_once:
        processes = [subprocess.Popen([*command, str(s)], stderr=subprocess.PIPE, text=True) for s in studies]
        failed = [p.communicate()[1] for p in processes if p.wait() != 0]
    else:
        done = [subprocess.run([*command, str(s)], stderr=subprocess.PIPE, text=True) for s in studies]
        failed = [d.stderr for d in done if d.returncode != 0]
    ended = time.monotonic()
    if failed:
        raise RuntimeError(f"storescu failed: {failed[0][-500:]}")
    return ended - started


def _at(iso: str) -> float:
    return datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()


def _phase_ends(ddb, table: str, jobs: list[dict]) -> tuple[float, float]:
    """Wall-clock times the last job was SUBMITTED and the last job ended (from the audit items)."""
    submitted, ended = 0.0, 0.0
    for summary in jobs:
        for item in get_job(ddb, table, summary["jobId"])["timeline"]:
            if item["status"] == "SUBMITTED":
                submitted = max(submitted, _at(item["at"]))
            if item["status"] in TERMINAL_STATES:
                ended = max(ended, _at(item["at"]))
    return submitted, ended


def run(scenario: str, studies: list[Path], start_rate_limit: float | None, *, at_once: bool) -> Row:
    config = from_flat({}, stack="bench")
    with LocalStack(
        config, scp_port=0, poll_seconds=1, ahi_job_seconds=0.5, ahi_start_rate_limit=start_rate_limit
    ) as stack:
        calling_ae = "BENCH-SCU"
        send_seconds = _send_all(stack, studies, calling_ae, at_once=at_once)
        last_response = time.time()
        ddb, table = stack.client("dynamodb"), stack.outputs["jobTable"]
        deadline = time.monotonic() + TIMEOUT_SECONDS
        jobs: list[dict] = []
        while time.monotonic() < deadline:
            jobs = list_jobs_by_calling_ae(ddb, table, calling_ae, limit=1000)
            if len(jobs) >= STUDIES and all(j["currentStatus"] in TERMINAL_STATES for j in jobs):
                break
            time.sleep(0.2)  # polling interval of the measurement
        submitted, ended = _phase_ends(ddb, table, jobs)
        return Row(
            scenario=scenario,
            instances_sent=STUDIES * INSTANCES,
            instances_acknowledged=sum(j.get("instanceCount", 0) for j in jobs),  # in sealed manifests
            batches=len(jobs),
            start_import_calls=stack.ahi.start_import_calls,
            completed=sum(j["currentStatus"] == "COMPLETED" for j in jobs),
            other=dict(
                Counter(
                    f"{j['currentStatus']} {j.get('error', '')}".strip()
                    for j in jobs
                    if j["currentStatus"] != "COMPLETED"
                )
            ),
            seconds_to_submitted=submitted - last_response,
            seconds_to_completed=ended - last_response,
            send_seconds=send_seconds,
        )


def table(rows: list[Row]) -> str:
    lines = [
        "## Import workflow",
        "",
        f"{STUDIES} studies x {INSTANCES} instances ({ROWS}x{COLS} CT), one dcmtk storescu association "
        "per study, either one after another (a modality sending its studies) or all 10 at once (a "
        "burst), through the local stack (moto + handlers in Lambda worker processes + HealthImaging "
        "emulator; 1 s poll, 0.5 s emulated import job); *quota 1/s*: the emulator enforces "
        "StartDICOMImportJob's quota (1 request/s, burst 2). Targets: 10 StartDICOMImportJob calls, "
        "< 10 s from the last C-STORE response to every job COMPLETED.",
        "",
        "| associations | sent | acknowledged | batches | StartDICOMImportJob calls | jobs COMPLETED "
        "| last association ended -> all SUBMITTED (s) | -> all jobs ended (s) | sending (s) "
        "| other outcomes |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r.scenario} | {r.instances_sent} | {r.instances_acknowledged} | {r.batches} "
            f"| {r.start_import_calls} | {r.completed} | {r.seconds_to_submitted:.1f} "
            f"| {r.seconds_to_completed:.1f} "
            f"| {r.send_seconds:.1f} | {', '.join(f'{k}: {v}' for k, v in r.other.items()) or '-'} |"
        )
    lines += [
        "",
        "Columns: *all SUBMITTED* is when the last StartDICOMImportJob was accepted (our validation of "
        "every object + the start call, with the state machine's backoff under the quota); *all jobs "
        "ended* adds the emulated import (the emulator parses every object; up to 4 jobs at a time) "
        "and RecordResults. moto, the emulator and the SCP share one Python process; the handlers run "
        "in up to 6 worker processes (the local Lambda execution environments); all on this 2-core "
        "machine, where validating one object costs 7-10 ms of Python CPU in the worker (a ranged "
        "GetObject through botocore + reading the header) and ~2 ms in moto's process. One after "
        "another, the earlier batches are validated and imported while later studies arrive; at "
        "once, all 3,000 validations come after the last C-STORE. On AWS the same steps are "
        "network-bound and run in separate Lambdas and in HealthImaging.",
    ]
    return "\n".join(lines) + "\n"


def _kept_findings() -> str:
    old = RESULT.read_text() if RESULT.exists() else ""
    return f"\n{NOTES_MARKER}{old.split(NOTES_MARKER, 1)[1]}" if NOTES_MARKER in old else ""


def main() -> int:
    with tempfile.TemporaryDirectory(prefix="bench-workflow-") as tmp:
        studies = []
        for index in range(STUDIES):
            directory = Path(tmp) / f"study{index}"
            write_study(directory, "CT", instances=INSTANCES, rows=ROWS, cols=COLS, study_index=index + 1)
            studies.append(directory)
        rows = [
            run("one after another", studies, None, at_once=False),
            run("one after another, quota 1/s", studies, QUOTA, at_once=False),
            run("10 at once", studies, None, at_once=True),
            run("10 at once, quota 1/s", studies, QUOTA, at_once=True),
        ]
    text = table(rows)
    print(text)
    RESULT.parent.mkdir(parents=True, exist_ok=True)
    RESULT.write_text(text + _kept_findings())
    ok = all(r.start_import_calls == STUDIES and r.completed == STUDIES for r in rows)
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
