"""Check Import Status (state ``CheckStatus``): one ``GetDICOMImportJob`` per poll.

Input: ``{"batchId", "importJobId", "datastoreId", "attempt"}``. Output: ``{"jobStatus",
"attempt", "message"}``; the state machine's Choice routes COMPLETED to RecordResults, FAILED to
the failure path, and anything else back to the Wait until the attempts run out.
"""

from __future__ import annotations

from typing import Any

from botocore.exceptions import ClientError

from handlers import aws
from handlers.errors import classify
from handlers.jobs import JobTable
from handlers.runtime import environment, lambda_entry_point, powertools

logger, metrics, tracer = powertools()


@tracer.capture_method
def check_status(event: dict[str, Any], *, ahi: Any, jobs: JobTable) -> dict[str, Any]:
    try:
        props = ahi.get_dicom_import_job(datastoreId=event["datastoreId"], jobId=event["importJobId"])[
            "jobProperties"
        ]
    except ClientError as exc:
        raise classify(exc) from exc
    status = props["jobStatus"]
    if status == "IN_PROGRESS":
        jobs.record(
            event["batchId"],
            "IN_PROGRESS",
            attempt=event.get("executionName"),
            details={"importJobId": event["importJobId"]},
        )
    return {
        "jobStatus": status,
        "attempt": int(event.get("attempt", 0)),
        "message": props.get("message") or "",
    }


@lambda_entry_point(logger, metrics, tracer)
def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    env = environment()
    return check_status(
        event,
        ahi=aws.client("medical-imaging"),
        jobs=env.job_table(),
    )
