"""``dicomctl status``: the job table, or one job's timeline, image set ids and failures.

The queries themselves live in cli/jobs_query.py (the job table's read side; the writes are the
workflow's, handlers/jobs.py); this module only picks the query for the filters and renders the
result.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

import typer
from rich import box
from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.markup import escape
from rich.table import Table

from cli import render
from cli.context import AppContext, JsonOption
from cli.errors import OperationFailed, UsageProblem
from cli.render import Column
from core.layout import JOB_STATES, TERMINAL_STATES

STATUS_STYLES = {
    "RECEIVED": "cyan",
    "VALIDATED": "cyan",
    "SUBMITTED": "blue",
    "IN_PROGRESS": "blue",
    "COMPLETED": "green",
    "PARTIAL": "yellow",
    "FAILED": "red",
}
_DURATION = re.compile(r"^(\d+)([smhd])$")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}


def parse_since(value: str | None, now: datetime | None = None) -> str | None:
    """``30m``/``2h``/``7d`` ago, or an ISO-8601 time -> the ISO UTC string the table sorts by."""
    if not value:
        return None
    match = _DURATION.match(value.strip())
    if match:
        moment = (now or datetime.now(UTC)) - timedelta(**{_UNITS[match[2]]: int(match[1])})
    else:
        try:
            moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            raise UsageProblem(
                f"--since {value!r}: use a duration like 30m, 2h, 7d or an ISO-8601 time"
            ) from None
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def styled(status: str) -> str:
    return f"[{STATUS_STYLES.get(status, 'white')}]{status}[/]"


def fetch_jobs(
    ddb: Any,
    table: str,
    status: str | None,
    study: str | None,
    calling_aet: str | None,
    since: str | None,
    limit: int,
) -> list[dict[str, Any]]:
    from cli import jobs_query

    if study:
        jobs = jobs_query.list_jobs_by_study(ddb, table, study, limit=limit)
    elif calling_aet:
        jobs = jobs_query.list_jobs_by_calling_ae(ddb, table, calling_aet, since=since, limit=limit)
    elif status:
        return jobs_query.list_jobs_by_status(ddb, table, status, since=since, limit=limit)
    else:
        return jobs_query.list_recent_jobs(ddb, table, since=since, limit=limit)
    if status:
        jobs = [j for j in jobs if j.get("currentStatus") == status]
    if since:
        jobs = [j for j in jobs if j.get("updatedAt", "") >= since]
    return jobs


def fetch_job(ddb: Any, table: str, job_id: str) -> dict[str, Any]:
    from cli import jobs_query

    job = jobs_query.get_job(ddb, table, job_id)
    if job["summary"] is None and not job["timeline"]:
        raise OperationFailed(f"no job {job_id!r} in table {table}", fix="list jobs with `dicomctl status`")
    return job


def counts(job: dict[str, Any]) -> tuple[str, str, str]:
    """(received, unique, replaced) as shown: instances acknowledged, distinct SOP Instance UIDs,
    and receipts that did not become an instance of their own (the same UID sent again)."""
    received = job.get("receivedCount", job.get("instanceCount"))
    unique, replaced = job.get("uniqueCount"), job.get("replacedCount")
    return tuple("-" if v is None else str(v) for v in (received, unique, replaced))  # type: ignore[return-value]


def jobs_table(console: Console, jobs: list[dict[str, Any]]) -> RenderableType:
    """Ids are never cut (operators copy them); times are in ``status JOB_ID`` and ``--json``."""
    rows = []
    for job in jobs:
        received, unique, replaced = counts(job)
        rows.append(
            (
                job.get("jobId", ""),
                styled(job.get("currentStatus", "?")),
                received,
                unique,
                replaced,
                f"{job.get('importedCount', '-')}/{job.get('instanceCount', '?')}",
                escape(job.get("callingAeTitle", "")),
                "\n".join(job.get("imageSetIds", []) or []) or "-",
            )
        )
    number = ("Received", "Unique", "Replaced", "Imported")
    columns = ["Job (batch id)", "Status", *(Column(n, "right") for n in number), "Calling AE", "Image sets"]
    return render.table(console, f"Jobs ({len(jobs)})", columns, rows)


SUMMARY_FIELDS = (
    ("Status", "currentStatus"),
    ("Calling AE", "callingAeTitle"),
    ("Called AE", "calledAeTitle"),
    ("Received", "receivedCount"),
    ("Unique", "uniqueCount"),
    ("Replaced", "replacedCount"),
    ("Instances", "instanceCount"),
    ("Bytes", "totalBytes"),
    ("Imported", "importedCount"),
    ("Failed", "failedCount"),
    ("Import job", "importJobId"),
    ("Datastore", "datastoreId"),
    ("Failed state", "failedState"),
    ("Error", "error"),
    ("Created", "createdAt"),
    ("Updated", "updatedAt"),
)


def job_view(console: Console, job: dict[str, Any]) -> Group:
    summary = job["summary"] or {}
    pairs = [
        (label, styled(summary[key]) if key == "currentStatus" else escape(str(summary[key])))
        for label, key in SUMMARY_FIELDS
        if key in summary
    ]
    pairs.append(("Image sets", "\n".join(summary.get("imageSetIds") or []) or "-"))
    pairs.append(("Studies", "\n".join(s.get("studyInstanceUid", "") for s in job["studies"]) or "-"))
    parts: list[Any] = [render.fields(console, f"Job {summary.get('jobId', '')}", pairs)]
    if summary.get("errorCause"):
        parts.append(render.notes("Why it failed", [("cause:", summary["errorCause"])]))
    replaced = summary.get("replacedSopInstanceUids") or []
    if replaced:
        title = (
            f"Replaced ({summary.get('replacedCount', len(replaced))}): SOP Instance UIDs received more than "
            "once; HealthImaging keeps one instance per UID"
        )
        parts.append(render.notes(title, [(uid, "") for uid in replaced]))
    timeline = [
        (
            f"{event.get('at', '')} {styled(event.get('status', ''))}",
            ", ".join(f"{k}={v}" for k, v in (event.get("details") or {}).items()),
        )
        for event in job["timeline"]
    ]
    parts.append(render.notes("Timeline", timeline))
    failures = summary.get("failures") or []
    if failures:
        parts.append(
            render.notes(
                f"Instances not imported ({summary.get('failedCount', len(failures))})",
                [
                    (
                        failure.get("sopInstanceUid", "") or "-",
                        f"{failure.get('stage', '')}: {failure.get('reason', '')}",
                    )
                    for failure in failures
                ],
            )
        )
    return Group(*parts)


def settled(data: Any) -> bool:
    """Every job shown (the list, or the one job) is COMPLETED, PARTIAL or FAILED: nothing will change."""
    jobs = [data["summary"] or {}] if isinstance(data, dict) else data
    return all(job.get("currentStatus") in TERMINAL_STATES for job in jobs)


@contextmanager
def screen(app: AppContext, as_json: bool, render: Callable[[Any], Any]) -> Iterator[Callable[[Any], None]]:
    """Where each refresh of ``--watch`` goes.

    On a terminal the view is redrawn in place (Rich Live). Anywhere else (a pipe, a log file, a
    test runner) cursor tricks would garble the output, so a rendering is printed only when the
    data changed: one table per change, or one JSON document per line with ``--json``.
    """
    console = app.console
    if not as_json and console.is_terminal and not console.is_dumb_terminal:
        with Live(console=console, auto_refresh=False) as live:
            yield lambda data: live.update(render(data), refresh=True)
        return
    last: str | None = None

    def show(data: Any) -> None:
        nonlocal last
        seen = json.dumps(data, sort_keys=True, default=str)
        if seen == last:
            return
        last = seen
        if as_json:
            app.print_json(data, lines=True)
        else:
            console.print(render(data))

    yield show


def watch_until(fetch: Callable[[], Any], show: Callable[[Any], None], interval: float, done: bool) -> None:
    """Fetch and show every ``interval`` seconds; with ``done``, return once every job shown is settled."""
    while True:
        data = fetch()
        show(data)
        if done and settled(data):
            return
        time.sleep(interval)


def fetch_commitments(ddb: Any, table: str, transaction_uid: str | None, limit: int) -> Any:
    """Storage Commitment transactions by state (GSI queries), or one with its attempts and failures."""
    from core.commitment import TRANSACTION_STATES, CommitmentTable

    commitments = CommitmentTable(ddb, table)
    if transaction_uid:
        item = commitments.get(transaction_uid)
        if item is None:
            raise OperationFailed(
                f"no commitment transaction {transaction_uid!r} in table {table}",
                fix="list them with `dicomctl status --commitments`",
            )
        return commitment_record(item, detail=True)
    found = [
        commitment_record(i) for state in TRANSACTION_STATES for i in commitments.by_state(state, limit=limit)
    ]
    return sorted(found, key=lambda r: r["requestedAt"], reverse=True)[:limit]


def commitment_record(item: dict[str, Any], detail: bool = False) -> dict[str, Any]:
    result = json.loads(item.get("result") or "{}")
    record = {
        "transactionUid": item.get("transactionUid", ""),
        "state": item.get("commitmentState", ""),
        "callingAeTitle": item.get("requestedBy", ""),
        "instances": item.get("referenceCount", 0),
        "committed": result.get("committed"),
        "failed": len(result.get("failed", [])) if result else None,
        "attempts": len(item.get("attempts", [])),
        "requestedAt": item.get("requestedAt", ""),
        "deadlineAt": item.get("deadlineAt", ""),
        "completedAt": item.get("completedAt", ""),
    }
    if detail:
        record["failures"] = result.get("failed", [])
        record["attemptLog"] = [json.loads(a) for a in item.get("attempts", [])]
    return record


def commitments_view(data: Any) -> Any:
    if isinstance(data, dict):
        head = Table(show_header=False, title=f"Commitment {data['transactionUid']}")
        for key in (
            "state",
            "callingAeTitle",
            "instances",
            "committed",
            "requestedAt",
            "deadlineAt",
            "completedAt",
        ):
            head.add_row(key, str(data.get(key) if data.get(key) is not None else "-"))
        failures = Table(title="Failed instances", box=box.SIMPLE_HEAD)
        for column in ("SOP Instance UID", "Reason", "Detail"):
            failures.add_column(column, overflow="fold")
        for f in data["failures"]:
            failures.add_row(f["sopInstanceUid"], f["reason"], f["detail"])
        attempts = Table(title="Delivery attempts", box=box.SIMPLE_HEAD)
        for column in ("#", "At", "Via", "Error"):
            attempts.add_column(column, overflow="fold")
        for a in data["attemptLog"]:
            attempts.add_row(str(a.get("attempt")), a.get("at", ""), a.get("via", ""), a.get("error", "-"))
        return Group(head, failures, attempts)
    table = Table(title=f"Commitment transactions ({len(data)})", box=box.SIMPLE_HEAD, pad_edge=False)
    for column in ("Transaction UID", "State", "Calling AE", "Committed", "Failed", "Attempts", "Requested"):
        table.add_column(column, no_wrap=column != "Transaction UID", overflow="fold")
    for r in data:
        state = r["state"]
        style = {"COMMITTED": "green", "FAILED": "yellow", "UNDELIVERED": "red"}.get(state, "cyan")
        table.add_row(
            r["transactionUid"],
            f"[{style}]{state}[/]",
            r["callingAeTitle"],
            f"{r['committed'] if r['committed'] is not None else '-'}/{r['instances']}",
            str(r["failed"] if r["failed"] is not None else "-"),
            str(r["attempts"]),
            r["requestedAt"],
        )
    return table


def status(
    ctx: typer.Context,
    job_id: Annotated[str | None, typer.Argument(help="One job (batch id): its timeline.")] = None,
    status_filter: Annotated[
        str | None, typer.Option("--status", help=f"Only jobs in this status ({', '.join(JOB_STATES)}).")
    ] = None,
    study: Annotated[str | None, typer.Option(help="Only jobs containing this StudyInstanceUID.")] = None,
    calling_aet: Annotated[str | None, typer.Option("--calling-aet", help="Only jobs from this AE.")] = None,
    since: Annotated[str | None, typer.Option(help="Changed since: 30m, 2h, 7d or an ISO time.")] = None,
    limit: Annotated[int, typer.Option(min=1, max=1000, help="Most jobs to list.")] = 50,
    watch: Annotated[bool, typer.Option(help="Refresh until Ctrl-C (or --until-done).")] = False,
    until_done: Annotated[
        bool,
        typer.Option(
            "--until-done",
            help="Watch until every job shown is COMPLETED, PARTIAL or FAILED, then exit 0 "
            "(implies --watch).",
        ),
    ] = False,
    interval: Annotated[float, typer.Option(min=0.2, help="Seconds between refreshes with --watch.")] = 2.0,
    commitments: Annotated[
        bool,
        typer.Option(
            "--commitments",
            help="Storage Commitment transactions and their state instead of jobs; with an argument, "
            "that Transaction UID's failures and delivery attempts.",
        ),
    ] = False,
    json_output: JsonOption = False,
) -> None:
    """Show import jobs from the job table, or one job's timeline with image set ids and failures."""
    app: AppContext = ctx.obj
    if status_filter and status_filter.upper() not in JOB_STATES:
        raise UsageProblem(f"--status {status_filter!r}: choose from {', '.join(JOB_STATES)}")
    status_filter = status_filter.upper() if status_filter else None
    since_iso = parse_since(since)
    table_name = app.output("jobTable")
    ddb = app.client("dynamodb")

    def fetch() -> Any:
        if commitments:
            return fetch_commitments(ddb, table_name, job_id, limit)
        if job_id:
            return fetch_job(ddb, table_name, job_id)
        return fetch_jobs(ddb, table_name, status_filter, study, calling_aet, since_iso, limit)

    def render_view(data: Any) -> Any:
        console = app.console
        if commitments:
            return commitments_view(data)
        return job_view(console, data) if job_id else jobs_table(console, data)

    as_json = app.wants_json(json_output)
    if not (watch or until_done):
        if as_json:
            app.print_json(fetch())
        else:
            app.console.print(render_view(fetch()))
        return
    try:
        with screen(app, as_json, render_view) as show:
            watch_until(fetch, show, interval, until_done)
    except KeyboardInterrupt:
        app.err.print("stopped watching")
