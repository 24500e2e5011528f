"""Check Import Status (state ``CheckStatus``): one ``GetDICOMImportJob`` per poll.

Input: ``{"batchId", "importJobId", "datastoreId", "attempt"}``. Output: ``{"jobStatus",
"attempt", "message"}``; the state machine's Choice routes COMPLETED to RecordResults, FAILED to
the failure path, and anything else back to the Wait until the attempts run out.
"""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools import Logger, Metrics, Tracer
from botocore.exceptions import ClientError

from handlers import aws
from handlers.errors import classify
from handlers.jobs import JobTable
from handlers.runtime import METRICS_NAMESPACE, SERVICE, environment

logger = Logger(service=SERVICE)
metrics = Metrics(namespace=METRICS_NAMESPACE, service=SERVICE)
tracer = Tracer(service=SERVICE)


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


@logger.inject_lambda_context
@metrics.log_metrics
@tracer.capture_lambda_handler
def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    env = environment()
    return check_status(
        event,
        ahi=aws.client("medical-imaging"),
        jobs=JobTable(aws.client("dynamodb"), env.resources.job_table, env.settings.job_ttl_days),
    )
