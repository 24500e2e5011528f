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
from rich.console import Group
from rich.live import Live
from rich.table import Table

from cli.context import AppContext, JsonOption
from cli.errors import OperationFailed, UsageProblem
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


def jobs_table(jobs: list[dict[str, Any]]) -> Table:
    """Ids are never wrapped (operators copy them); times are in ``status JOB_ID`` and ``--json``."""
    table = Table(title=f"Jobs ({len(jobs)})", box=box.SIMPLE_HEAD, pad_edge=False, show_header=True)
    table.add_column("Job (batch id)", no_wrap=True, min_width=33)
    table.add_column("Status", no_wrap=True)
    table.add_column("Imported", no_wrap=True, justify="right")
    table.add_column("Calling AE", overflow="fold", max_width=16)
    table.add_column("Image sets", no_wrap=True, min_width=32)
    for job in jobs:
        table.add_row(
            job.get("jobId", ""),
            styled(job.get("currentStatus", "?")),
            f"{job.get('importedCount', '-')}/{job.get('instanceCount', '?')}",
            job.get("callingAeTitle", ""),
            "\n".join(job.get("imageSetIds", []) or []) or "-",
        )
    return table


def job_view(job: dict[str, Any]) -> Group:
    summary = job["summary"] or {}
    head = Table(show_header=False, title=f"Job {summary.get('jobId', '')}")
    head.add_column("field", style="bold")
    head.add_column("value", overflow="fold")
    for label, key in (
        ("Status", "currentStatus"),
        ("Calling AE", "callingAeTitle"),
        ("Called AE", "calledAeTitle"),
        ("Instances", "instanceCount"),
        ("Bytes", "totalBytes"),
        ("Imported", "importedCount"),
        ("Failed", "failedCount"),
        ("Import job", "importJobId"),
        ("Datastore", "datastoreId"),
        ("Error", "error"),
        ("Created", "createdAt"),
        ("Updated", "updatedAt"),
    ):
        if key in summary:
            value = summary[key]
            head.add_row(label, styled(value) if key == "currentStatus" else str(value))
    image_sets = summary.get("imageSetIds") or []
    head.add_row("Image sets", "\n".join(image_sets) or "-")
    head.add_row("Studies", "\n".join(s.get("studyInstanceUid", "") for s in job["studies"]) or "-")
    timeline = Table(title="Timeline", show_header=True)
    for column in ("At", "Status", "Details"):
        timeline.add_column(column, overflow="fold")
    for event in job["timeline"]:
        details = ", ".join(f"{k}={v}" for k, v in (event.get("details") or {}).items())
        timeline.add_row(event.get("at", ""), styled(event.get("status", "")), details)
    parts: list[Any] = [head, timeline]
    failures = summary.get("failures") or []
    if failures:
        table = Table(title=f"Instances not imported ({summary.get('failedCount', len(failures))})")
        for column in ("SOP Instance UID", "Stage", "Reason"):
            table.add_column(column, overflow="fold")
        for failure in failures:
            table.add_row(
                failure.get("sopInstanceUid", ""), failure.get("stage", ""), str(failure.get("reason", ""))
            )
        parts.append(table)
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
        if job_id:
            return fetch_job(ddb, table_name, job_id)
        return fetch_jobs(ddb, table_name, status_filter, study, calling_aet, since_iso, limit)

    def render(data: Any) -> Any:
        return job_view(data) if job_id else jobs_table(data)

    as_json = app.wants_json(json_output)
    if not (watch or until_done):
        if as_json:
            app.print_json(fetch())
        else:
            app.console.print(render(fetch()))
        return
    try:
        with screen(app, as_json, render) as show:
            watch_until(fetch, show, interval, until_done)
    except KeyboardInterrupt:
        app.err.print("stopped watching")
