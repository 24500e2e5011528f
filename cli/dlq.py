"""``dicomctl dlq list|redrive``: the dead-letter queue of failed batches.

Each DLQ message is one failed batch (body: ``core.contracts.DlqMessage``), written by the
workflow's failure handler.

Redrive semantics (documented in docs/cli.md):
- a batch is re-run by starting a NEW execution of the state machine named
  ``<batchId>-redrive-<n>`` with the original execution's input (the manifest is still in S3;
  nothing is re-sent by the modality);
- idempotent: if an execution of that batch (original or redrive) is RUNNING, nothing is
  started; two operators racing get ExecutionAlreadyExists for the same name, which counts as
  started; the DLQ message is deleted only after the execution has started (or was found
  running), so an interrupted redrive can simply be run again;
- the import job keeps clientToken = batchId, so HealthImaging does not import the batch twice
  when the earlier StartDICOMImportJob had been accepted;
- a permanent failure (every instance failed validation, the manifest is gone) would fail the
  same way again: it is not re-run without ``--force``; the answer says why and what would
  change it, and the message stays in the DLQ.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass
from typing import Annotated, Any

import typer
from rich.markup import escape

from cli import render
from cli.commands import Command, CommandGroup
from cli.context import AppContext, JsonOption
from cli.errors import MissingOutput, OperationFailed, UsageProblem
from cli.render import Column
from core.contracts import DlqMessage, execution_input

app = typer.Typer(
    help="Inspect and re-drive failed batches (the dead-letter queue).",
    no_args_is_help=True,
    cls=CommandGroup,
)

REDRIVE_SUFFIX = "-redrive-"
HOLD_SECONDS = 60  # a message being redriven stays invisible this long
MAX_REASONS = 5


@dataclass(frozen=True)
class Permanent:
    """A failure a redrive cannot change: why, and what would."""

    why: str
    remedy: str  # {batch} and {bucket} are filled in


# Errors the workflow raises when re-running the same batch cannot succeed (handlers/errors.py).
PERMANENT_ERRORS = {
    "NoValidInstances": Permanent(
        why="every instance of the batch failed validation; a redrive validates the same objects "
        "again and fails the same way",
        remedy="send corrected instances again from the modality (they arrive as a new batch); the "
        "refused objects and their reasons are under s3://{bucket}/quarantine/{batch}/",
    ),
    "ManifestError": Permanent(
        why="the batch manifest is missing or unreadable, so there is nothing to re-run",
        remedy="restore s3://{bucket}/batches/{batch}.json (the SCP's sweeper seals batches left open)",
    ),
}


def read_messages(sqs: Any, queue_url: str, limit: int, hold_seconds: int = 0) -> list[dict[str, Any]]:
    """Up to ``limit`` DLQ messages; with hold 0 they stay visible (listing does not consume)."""
    found: dict[str, dict[str, Any]] = {}
    idle_rounds = 0
    while len(found) < limit and idle_rounds < 3:
        response = sqs.receive_message(
            QueueUrl=queue_url,
            MaxNumberOfMessages=min(10, limit - len(found)),
            VisibilityTimeout=hold_seconds,
            WaitTimeSeconds=0,
            MessageSystemAttributeNames=["All"],
        )
        fresh = [m for m in response.get("Messages", []) if m["MessageId"] not in found]
        idle_rounds = 0 if fresh else idle_rounds + 1
        for message in fresh:
            found[message["MessageId"]] = message
    return list(found.values())


def parse_body(message: dict[str, Any]) -> DlqMessage:
    try:
        body = json.loads(message["Body"])
    except ValueError:
        body = {}
    return body if isinstance(body, dict) else {}


def batch_executions(sfn: Any, state_machine_arn: str, batch_id: str) -> list[dict[str, Any]]:
    """The original execution of a batch and every redrive of it."""
    found = []
    for page in sfn.get_paginator("list_executions").paginate(stateMachineArn=state_machine_arn):
        found += [
            e
            for e in page.get("executions", [])
            if e["name"] == batch_id or e["name"].startswith(batch_id + REDRIVE_SUFFIX)
        ]
    return found


def original_input(sfn: Any, state_machine_arn: str, body: DlqMessage, bucket: str, poll: int) -> str:
    """The input the trigger gave the first execution; rebuilt from the message if it is gone."""
    arn = body.get("executionArn") or (
        state_machine_arn.replace(":stateMachine:", ":execution:", 1) + ":" + body["batchId"]
    )
    try:
        return sfn.describe_execution(executionArn=arn)["input"]
    except sfn.exceptions.ExecutionDoesNotExist:
        return json.dumps(execution_input(body["batchId"], bucket, body.get("manifestKey", ""), poll))


def redrive_batch(
    sfn: Any, state_machine_arn: str, body: DlqMessage, bucket: str, poll: int
) -> dict[str, Any]:
    batch_id = body["batchId"]
    executions = batch_executions(sfn, state_machine_arn, batch_id)
    running = [e["name"] for e in executions if e["status"] == "RUNNING"]
    if running:
        return {"batchId": batch_id, "outcome": "already-running", "execution": running[0]}
    redrives = sum(1 for e in executions if e["name"] != batch_id)
    name = f"{batch_id}{REDRIVE_SUFFIX}{redrives + 1}"
    try:
        sfn.start_execution(
            stateMachineArn=state_machine_arn,
            name=name,
            input=original_input(sfn, state_machine_arn, body, bucket, poll),
        )
    except sfn.exceptions.ExecutionAlreadyExists:
        return {"batchId": batch_id, "outcome": "already-started", "execution": name}
    return {"batchId": batch_id, "outcome": "started", "execution": name}


@app.command("list", cls=Command)
def list_dlq(
    ctx: typer.Context,
    limit: Annotated[int, typer.Option(min=1, max=1000, help="Most messages to show.")] = 100,
    json_output: JsonOption = False,
) -> None:
    """Show failed batches waiting in the DLQ (messages stay in the queue)."""
    app_ctx: AppContext = ctx.obj
    sqs = app_ctx.client("sqs")
    messages = read_messages(sqs, app_ctx.output("dlqUrl"), limit)
    rows = []
    for message in messages:
        body = parse_body(message)
        rows.append(
            {
                "batchId": body.get("batchId", "?"),
                "state": body.get("state", ""),
                "error": body.get("error", ""),
                "cause": body.get("cause", ""),
                "at": body.get("at", ""),
                "receiveCount": int(message.get("Attributes", {}).get("ApproximateReceiveCount", 0)),
            }
        )
    if app_ctx.wants_json(json_output):
        app_ctx.print_json(rows)
        return
    console = app_ctx.console
    cells = [
        (
            row["batchId"],
            escape(row["state"]),
            f"[red]{escape(row['error'])}[/]",
            row["at"],
            str(row["receiveCount"]),
        )
        for row in rows
    ]
    columns = ["Batch id", "Failed state", "Error", "At", Column("Receives", "right")]
    console.print(render.table(console, f"Dead-letter queue ({len(rows)} failed batches)", columns, cells))
    console.print(
        render.notes("Causes", [(f"{row['batchId']}:", row["cause"]) for row in rows if row["cause"]])
    )


def failure_reasons(app_ctx: AppContext, batch_id: str) -> dict[str, int]:
    """Why the batch's instances were refused, counted, from its job (none when the table is unknown)."""
    from cli import jobs_query

    try:
        table = app_ctx.output("jobTable")
    except MissingOutput:
        return {}
    summary = jobs_query.get_job(app_ctx.client("dynamodb"), table, batch_id)["summary"] or {}
    reasons = Counter(str(f.get("reason", "")) for f in summary.get("failures") or [])
    return dict(reasons.most_common(MAX_REASONS))


def refusal(app_ctx: AppContext, body: dict[str, Any], bucket: str) -> dict[str, Any] | None:
    """The outcome for a batch that failed permanently (not re-run), or None when a redrive can help."""
    permanent = PERMANENT_ERRORS.get(str(body.get("error", "")))
    if permanent is None:
        return None
    batch_id = body["batchId"]
    return {
        "batchId": batch_id,
        "outcome": "refused-permanent",
        "execution": None,
        "error": body.get("error"),
        "why": permanent.why,
        "whatWouldChangeIt": permanent.remedy.format(batch=batch_id, bucket=bucket),
        "reasons": failure_reasons(app_ctx, batch_id),
    }


@app.command("redrive", cls=Command)
def redrive(
    ctx: typer.Context,
    batch_ids: Annotated[
        list[str] | None, typer.Argument(help="Batches to re-run (default: with --all).")
    ] = None,
    all_batches: Annotated[bool, typer.Option("--all", help="Re-run every batch in the DLQ.")] = False,
    force: Annotated[
        bool,
        typer.Option(
            "--force",
            help="Re-run also batches that failed permanently (every instance invalid, no manifest).",
        ),
    ] = False,
    json_output: JsonOption = False,
) -> None:
    """Re-run failed batches: start a new execution per batch, then remove its DLQ message."""
    app_ctx: AppContext = ctx.obj
    if bool(batch_ids) == all_batches:
        raise UsageProblem("give BATCH_ID... or --all (one of the two)")
    sqs, sfn = app_ctx.client("sqs"), app_ctx.client("stepfunctions")
    queue_url, machine = app_ctx.output("dlqUrl"), app_ctx.output("stateMachineArn")
    bucket, poll = app_ctx.output("dicomBucket"), app_ctx.config.workflow.poll_seconds
    wanted = set(batch_ids or [])
    outcomes: list[dict[str, Any]] = []
    handled: set[str] = set()
    refused: dict[str, dict[str, Any]] = {}
    for message in read_messages(sqs, queue_url, 1000, hold_seconds=HOLD_SECONDS):
        body = parse_body(message)
        batch_id = body.get("batchId")
        wanted_here = batch_id and (not wanted or batch_id in wanted)
        if wanted_here and not force and batch_id not in refused:
            refused[batch_id] = refusal(app_ctx, body, bucket) or {}
        if not wanted_here or refused.get(batch_id):  # not ours, or kept in the DLQ: visible again
            sqs.change_message_visibility(
                QueueUrl=queue_url, ReceiptHandle=message["ReceiptHandle"], VisibilityTimeout=0
            )
            continue
        if batch_id not in handled:  # the same batch may sit in the DLQ twice: re-run it once
            outcomes.append(redrive_batch(sfn, machine, body, bucket, poll))
            handled.add(batch_id)
        sqs.delete_message(QueueUrl=queue_url, ReceiptHandle=message["ReceiptHandle"])
    refusals = [r for r in refused.values() if r]
    missing = sorted(wanted - handled - set(refused))
    if app_ctx.wants_json(json_output):
        app_ctx.print_json({"redriven": outcomes, "refused": refusals, "notInDlq": missing})
    else:
        console = app_ctx.console
        rows = [(o["batchId"], o["outcome"], o["execution"]) for o in outcomes]
        rows += [(r["batchId"], f"[red]{r['outcome']}[/]", "-") for r in refusals]
        console.print(render.table(console, "Redrive", ["Batch id", "Outcome", "Execution"], rows))
        for r in refusals:
            reasons = [(f"{count} x", reason) for reason, count in r["reasons"].items()]
            console.print(
                render.notes(
                    f"{r['batchId']}: not re-run, the failure ({r['error']}) is permanent",
                    [("why:", r["why"]), ("what would change it:", r["whatWouldChangeIt"])] + reasons,
                )
            )
    if refusals:
        names = ", ".join(r["batchId"] for r in refusals)
        raise OperationFailed(
            f"not re-run: {len(refusals)} batch(es) failed permanently ({names})",
            fix="fix what the answer names, or re-run anyway with --force",
        )
    if missing:
        raise OperationFailed(f"not in the DLQ: {', '.join(missing)}", fix="see `dicomctl dlq list`")
