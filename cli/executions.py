"""``dicomctl executions list|show|tail``: the import workflow's Step Functions executions.

Executions are named after their batch id (= job id in ``dicomctl status``), so ``show BATCH_ID``
works with what ``status`` prints. ``tail --follow`` prints history events as they happen and
ends when the execution ends or on Ctrl-C.
"""

from __future__ import annotations

import time
from typing import Annotated, Any

import typer
from rich.console import Console, Group, RenderableType
from rich.markup import escape

from cli import render
from cli.commands import Command, CommandGroup
from cli.context import AppContext, JsonOption
from cli.errors import OperationFailed

app = typer.Typer(
    help="Step Functions executions of the import workflow.", no_args_is_help=True, cls=CommandGroup
)

EXECUTION_STYLES = {
    "RUNNING": "blue",
    "SUCCEEDED": "green",
    "FAILED": "red",
    "TIMED_OUT": "red",
    "ABORTED": "yellow",
}
MAX_DETAIL = 160
ExecutionArgument = Annotated[str, typer.Argument(help="Execution name (batch id) or ARN.")]


def event_style(event_type: str) -> str:
    if event_type.endswith(("Failed", "TimedOut", "Aborted")):
        return "red"
    if event_type.endswith(("Succeeded", "Exited")):
        return "green"
    if event_type.endswith(("Started", "Entered", "Scheduled")):
        return "cyan"
    return "white"


def execution_arn(app: AppContext, name_or_arn: str) -> str:
    """A batch id (execution name) -> its ARN under the stack's state machine."""
    if name_or_arn.startswith("arn:"):
        return name_or_arn
    machine = app.output("stateMachineArn")
    return machine.replace(":stateMachine:", ":execution:", 1) + ":" + name_or_arn


def event_parts(event: dict[str, Any]) -> tuple[str, str]:
    """(state name or error: short, for a table cell; the cause: free text, shown below the table)."""
    details = next((v for k, v in event.items() if k.endswith("EventDetails") and isinstance(v, dict)), {})
    short = " ".join(str(details[k]) for k in ("name", "error") if details.get(k))
    return short, str(details.get("cause") or "")


def event_detail(event: dict[str, Any]) -> str:
    """The interesting part of a history event: state name, error and the start of the cause."""
    short, cause = event_parts(event)
    return " ".join(part for part in (short, cause[:MAX_DETAIL]) if part)


def plain_event(event: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": event.get("id"),
        "timestamp": str(event.get("timestamp", "")),
        "type": event.get("type", ""),
        "detail": event_detail(event),
    }


def history(sfn: Any, arn: str) -> list[dict[str, Any]]:
    events: list[dict[str, Any]] = []
    for page in sfn.get_paginator("get_execution_history").paginate(executionArn=arn):
        events.extend(page.get("events", []))
    return events


def describe(sfn: Any, arn: str) -> dict[str, Any]:
    try:
        return sfn.describe_execution(executionArn=arn)
    except sfn.exceptions.ExecutionDoesNotExist:
        raise OperationFailed(
            f"no execution {arn.rsplit(':', 1)[-1]!r}", fix="list executions with `dicomctl executions list`"
        ) from None


def open_execution(app: AppContext, execution: str) -> tuple[Any, str, dict[str, Any]]:
    """The Step Functions client, ARN and description of a named execution (``show`` and ``tail``)."""
    sfn = app.client("stepfunctions")
    arn = execution_arn(app, execution)
    return sfn, arn, describe(sfn, arn)


def events_view(console: Console, events: list[dict[str, Any]], title: str) -> RenderableType:
    """Events as a table of short cells; causes (error messages, stack traces) below it, whole."""
    rows, causes = [], []
    for event in events:
        event_type = event.get("type", "")
        short, cause = event_parts(event)
        rows.append(
            (str(event.get("id")), str(event.get("timestamp", "")), styled(event_type), escape(short))
        )
        if cause:
            causes.append((f"#{event.get('id')} {event_type}:", cause))
    return Group(
        render.table(console, title, ["#", "Time", "Event", "State / error"], rows),
        render.notes("Causes", causes),
    )


def styled(event_type: str) -> str:
    return f"[{event_style(event_type)}]{event_type}[/]"


@app.command("list", cls=Command)
def list_executions(
    ctx: typer.Context,
    status_filter: Annotated[
        str | None, typer.Option("--status", help="RUNNING, SUCCEEDED, FAILED, TIMED_OUT or ABORTED.")
    ] = None,
    limit: Annotated[int, typer.Option(min=1, max=1000)] = 25,
    json_output: JsonOption = False,
) -> None:
    """List recent executions (newest first)."""
    app_ctx: AppContext = ctx.obj
    sfn = app_ctx.client("stepfunctions")
    kwargs: dict[str, Any] = {"stateMachineArn": app_ctx.output("stateMachineArn")}
    if status_filter:
        kwargs["statusFilter"] = status_filter.upper()
    executions: list[dict[str, Any]] = []
    for page in sfn.get_paginator("list_executions").paginate(**kwargs):
        executions.extend(page.get("executions", []))
        if len(executions) >= limit:
            break
    executions = sorted(executions, key=lambda e: e.get("startDate"), reverse=True)[:limit]
    rows = [
        {
            "name": e["name"],
            "status": e["status"],
            "startDate": str(e.get("startDate", "")),
            "stopDate": str(e.get("stopDate", "") or ""),
            "executionArn": e["executionArn"],
        }
        for e in executions
    ]
    if app_ctx.wants_json(json_output):
        app_ctx.print_json(rows)
        return
    console = app_ctx.console
    cells = [
        (row["name"], f"[{EXECUTION_STYLES.get(row['status'], 'white')}]{row['status']}[/]")
        + (row["startDate"], row["stopDate"])
        for row in rows
    ]
    console.print(
        render.table(
            console, f"Executions ({len(rows)})", ["Name (batch id)", "Status", "Started", "Stopped"], cells
        )
    )


@app.command("show", cls=Command)
def show(
    ctx: typer.Context,
    execution: ExecutionArgument,
    json_output: JsonOption = False,
) -> None:
    """One execution: its status, input/output and every history event."""
    app_ctx: AppContext = ctx.obj
    sfn, arn, described = open_execution(app_ctx, execution)
    events = history(sfn, arn)
    if app_ctx.wants_json(json_output):
        app_ctx.print_json(
            {
                "name": described["name"],
                "status": described["status"],
                "startDate": str(described.get("startDate", "")),
                "stopDate": str(described.get("stopDate", "") or ""),
                "input": described.get("input"),
                "output": described.get("output"),
                "events": [plain_event(e) for e in events],
            }
        )
        return
    style = EXECUTION_STYLES.get(described["status"], "white")
    app_ctx.console.print(f"[bold]{described['name']}[/]: [{style}]{described['status']}[/]")
    app_ctx.console.print(events_view(app_ctx.console, events, "History"))


@app.command("tail", cls=Command)
def tail(
    ctx: typer.Context,
    execution: ExecutionArgument,
    follow: Annotated[
        bool, typer.Option("--follow", "-f", help="Keep printing events until it ends.")
    ] = False,
    lines: Annotated[int, typer.Option("--lines", "-n", min=1, help="Events to show first.")] = 10,
    interval: Annotated[float, typer.Option(min=0.2, help="Seconds between polls with --follow.")] = 1.0,
    json_output: JsonOption = False,
) -> None:
    """The last events of an execution; with --follow, new events as they happen (JSON lines with --json)."""
    app_ctx: AppContext = ctx.obj
    sfn, arn, described = open_execution(app_ctx, execution)
    as_json = app_ctx.wants_json(json_output)

    def emit(events: list[dict[str, Any]]) -> None:
        for event in events:
            row = plain_event(event)
            if as_json:
                app_ctx.print_json(row, lines=True)
            else:
                style = event_style(row["type"])
                app_ctx.console.print(
                    f"{row['id']:>4} {row['timestamp']}  [{style}]{row['type']}[/]  {escape(row['detail'])}",
                    soft_wrap=True,
                )

    events = history(sfn, arn)
    emit(events[-lines:])
    seen = len(events)
    try:
        while follow and described["status"] == "RUNNING":
            time.sleep(interval)
            described = describe(sfn, arn)
            events = history(sfn, arn)
            emit(events[seen:])
            seen = len(events)
    except KeyboardInterrupt:
        app_ctx.err.print("stopped following")
        return
    if not as_json:
        style = EXECUTION_STYLES.get(described["status"], "white")
        app_ctx.console.print(f"execution {described['name']}: [{style}]{described['status']}[/]")
