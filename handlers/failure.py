"""Record Failure (state ``RecordFailure``): the end of every unrecoverable path.

Sends one DLQ message (``core.contracts.DlqMessage``) so an operator can replay the batch, and
records the job FAILED (unless it already reached a terminal state: the job table never moves
backwards). The DLQ message is sent first: if recording fails, the batch is still in the queue.

Input: ``{"batchId", "manifestKey", "failedState", "error": {"Error", "Cause"}, "executionArn"}``.
"""

from __future__ import annotations

import json
from typing import Any

from aws_lambda_powertools.metrics import MetricUnit
from botocore.exceptions import ClientError

from core.contracts import DlqMessage
from handlers import aws
from handlers.errors import classify
from handlers.jobs import JobTable, now_iso
from handlers.runtime import environment, lambda_entry_point, powertools

logger, metrics, tracer = powertools()

MAX_CAUSE = 4000  # keep the DLQ message and the audit item small


def _cause_text(cause: Any) -> str:
    """Lambda errors arrive as a JSON string with errorMessage: keep just the message."""
    text = cause if isinstance(cause, str) else json.dumps(cause)
    try:
        parsed = json.loads(text)
        if isinstance(parsed, dict) and "errorMessage" in parsed:
            text = str(parsed["errorMessage"])
    except ValueError:
        pass
    return text[:MAX_CAUSE]


@tracer.capture_method
def record_failure(event: dict[str, Any], *, sqs: Any, dlq_url: str, jobs: JobTable) -> dict[str, Any]:
    error = event.get("error") or {}
    message = DlqMessage(
        batchId=event["batchId"],
        manifestKey=event.get("manifestKey", ""),
        state=event.get("failedState", ""),
        error=str(error.get("Error", "Unknown")),
        cause=_cause_text(error.get("Cause", "")),
        executionArn=event.get("executionArn", ""),
        at=now_iso(),
    )
    try:
        sqs.send_message(
            QueueUrl=dlq_url,
            MessageBody=json.dumps(message),
            MessageAttributes={"batchId": {"DataType": "String", "StringValue": event["batchId"]}},
        )
    except ClientError as exc:
        raise classify(exc) from exc
    recorded = jobs.record(
        event["batchId"],
        "FAILED",
        attempt=event.get("executionName"),
        details={k: message[k] for k in ("state", "error", "cause", "executionArn")},
        summary={
            "failedState": message["state"],
            "error": message["error"],
            "errorCause": message["cause"],
            "executionArn": message["executionArn"] or None,
        },
    )
    metrics.add_metric(name="JobsFailed", unit=MetricUnit.Count, value=1)
    logger.warning(
        "batch failed",
        extra={"batchId": event["batchId"], "state": message["state"], "error": message["error"]},
    )
    return {"dlq": True, "recorded": recorded}


@lambda_entry_point(logger, metrics, tracer)
def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    env = environment()
    return record_failure(
        event,
        sqs=aws.client("sqs"),
        dlq_url=env.resources.dlq_url,
        jobs=env.job_table(),
    )
