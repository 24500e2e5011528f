"""``dicomctl demo``: one shot, no AWS: a synthetic CT study through the whole pipeline.

Starts the local stack (on a free DICOM port, so it never collides with a running ``dev``),
sends a synthetic CT study to the SCP with the fast sender, follows the import workflow's
execution, prints the job with its image set ids and exits 0. On any failure it exits 1 with a
diagnosis naming the step that failed. ``--json`` prints a machine-readable result.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Annotated, Any

import typer

from cli.context import AppContext, JsonOption
from cli.dev import local_stack
from cli.errors import OperationFailed
from cli.executions import history, plain_event
from cli.sender import Peer, scan, send_files
from cli.status import jobs_table
from cli.synthetic import write_study
from core.layout import TERMINAL_STATES

DEMO_AET = "DICOMCTL-DEMO"


def _jobs_for_study(ddb: Any, table: str, study_uid: str) -> list[dict[str, Any]]:
    from cli import jobs_query

    return jobs_query.list_jobs_by_study(ddb, table, study_uid)


def follow(app: AppContext, stack: Any, study_uid: str, timeout: float, quiet: bool) -> list[dict[str, Any]]:
    """Poll the job table until every job of the study is terminal; print execution events as they come."""
    ddb, sfn = stack.client("dynamodb"), stack.client("stepfunctions")
    table, machine = stack.outputs["jobTable"], stack.outputs["stateMachineArn"]
    deadline = time.monotonic() + timeout
    seen: dict[str, int] = {}
    jobs: list[dict[str, Any]] = []
    while time.monotonic() < deadline:
        jobs = _jobs_for_study(ddb, table, study_uid)
        for job in jobs:
            arn = machine.replace(":stateMachine:", ":execution:", 1) + ":" + job["jobId"]
            try:
                events = history(sfn, arn)
            except sfn.exceptions.ExecutionDoesNotExist:
                continue
            if not quiet:
                for event in events[seen.get(arn, 0) :]:
                    row = plain_event(event)
                    app.err.print(f"  {job['jobId'][-8:]} {row['type']:<28} {row['detail']}", highlight=False)
            seen[arn] = len(events)
        if jobs and all(j.get("currentStatus") in TERMINAL_STATES for j in jobs):
            return jobs
        time.sleep(0.25)
    return jobs


def diagnose(stack: Any, jobs: list[dict[str, Any]]) -> str:
    """Name the step that failed, from what the stack recorded."""
    if not jobs:
        s3 = stack.client("s3")
        sealed = s3.list_objects_v2(Bucket=stack.outputs["dicomBucket"], Prefix="batches/").get("KeyCount", 0)
        if not sealed:
            return "the SCP sealed no batch manifest (batches/*.json): check the SCP's logs above"
        return "a manifest was sealed but no job was recorded: the trigger function did not run"
    lines = []
    for job in jobs:
        state = job.get("currentStatus")
        if state not in TERMINAL_STATES:
            lines.append(f"job {job['jobId']} is still {state} (the import did not finish in time)")
        elif state == "FAILED":
            lines.append(
                f"job {job['jobId']} FAILED in {job.get('failedState', '?')}: {job.get('error', '')} "
                f"{job.get('errorCause', '')}".strip()
            )
        elif state == "PARTIAL":
            reasons = {f.get("reason", "") for f in job.get("failures") or []}
            lines.append(
                f"job {job['jobId']} PARTIAL: {job.get('failedCount')} failed ({'; '.join(reasons)})"
            )
    return "\n".join(lines)


def demo(
    ctx: typer.Context,
    instances: Annotated[int, typer.Option(min=1, max=500, help="CT slices in the synthetic study.")] = 20,
    timeout: Annotated[float, typer.Option(min=5, help="Seconds to wait for the import.")] = 120,
    json_output: JsonOption = False,
) -> None:
    """Start the local stack, send a synthetic CT study, follow the import, print image set ids."""
    app: AppContext = ctx.obj
    as_json = app.wants_json(json_output)
    started = time.monotonic()
    if not as_json:
        app.err.print("starting the local stack (moto, Lambdas, HealthImaging emulator, SCP) ...")
    with (
        app.logs_to_stderr(),
        local_stack(app, scp_port=0, publish=False) as stack,
        tempfile.TemporaryDirectory() as tmp,
    ):
        paths = write_study(Path(tmp), "CT", instances=instances, rows=256, cols=256)
        study_uid = paths[0].parent.parent.name
        files, _ = scan(paths)
        peer = Peer(
            "127.0.0.1", int(stack.outputs["dicomPort"]), stack.outputs["aeTitle"], calling_aet=DEMO_AET
        )
        if not as_json:
            app.err.print(f"sending {len(files)} CT instances to {peer.called_aet}@127.0.0.1:{peer.port} ...")
        report = send_files(files, peer)
        jobs = follow(app, stack, study_uid, timeout, quiet=as_json) if report.stored else []
        ok = (
            len(report.stored) == len(files)
            and bool(jobs)
            and all(j.get("currentStatus") == "COMPLETED" for j in jobs)
        )
        diagnosis = None if ok else diagnose(stack, jobs)
        if report.failed:
            reasons = "; ".join(sorted({r.reason for r in report.failed}))
            diagnosis = f"{len(report.failed)} instances were not acknowledged by the SCP: {reasons}"
    result = {
        "ok": ok,
        "studyInstanceUid": study_uid,
        "instancesSent": len(files),
        "instancesAcknowledged": len(report.stored),
        "jobs": [
            {
                "jobId": j["jobId"],
                "status": j.get("currentStatus"),
                "imageSetIds": j.get("imageSetIds") or [],
                "importedCount": j.get("importedCount", 0),
                "failedCount": j.get("failedCount", 0),
            }
            for j in jobs
        ],
        "seconds": round(time.monotonic() - started, 2),
        "diagnosis": diagnosis,
    }
    if as_json:
        app.print_json(result)
    else:
        app.console.print(jobs_table(app.console, jobs))
        app.console.print(
            f"{result['instancesAcknowledged']}/{result['instancesSent']} instances acknowledged, "
            f"{sum(len(j['imageSetIds']) for j in result['jobs'])} image set(s), {result['seconds']} s"
        )
    if not ok:
        raise OperationFailed(f"the demo did not complete: {diagnosis}")
