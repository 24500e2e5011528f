"""Trigger: S3 ObjectCreated on ``batches/<batchId>.json`` -> one execution named after the batch.

At-least-once delivery and multipart uploads mean the same manifest can arrive more than once:
the execution name is the batch id, so a repeat gets ExecutionAlreadyExists and is a no-op.
Keys arrive ``quote_plus``-encoded and are decoded. Objects that are not manifests are ignored.
The execution input carries ``pollSeconds`` (the Wait between status checks) from the settings.
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import unquote_plus

from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.data_classes import S3Event, event_source
from botocore.exceptions import ClientError

from core.contracts import execution_input
from core.layout import batch_id_from_manifest_key
from handlers import aws
from handlers.errors import classify
from handlers.jobs import JobTable
from handlers.runtime import environment, lambda_entry_point, powertools

logger, metrics, tracer = powertools()


@tracer.capture_method
def start_batch(
    bucket: str, key: str, *, sfn: Any, state_machine_arn: str, jobs: JobTable, poll_seconds: int
) -> str:
    """Start the execution of one manifest; returns "started", "duplicate" or "ignored"."""
    batch_id = batch_id_from_manifest_key(key)
    if batch_id is None:
        logger.info("not a batch manifest, ignored", extra={"key": key})
        return "ignored"
    jobs.record(batch_id, "RECEIVED", details={"manifestKey": key}, summary={"manifestKey": key})
    try:
        sfn.start_execution(
            stateMachineArn=state_machine_arn,
            name=batch_id,
            input=json.dumps(execution_input(batch_id, bucket, key, poll_seconds)),
        )
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") == "ExecutionAlreadyExists":
            logger.info("duplicate manifest event, execution exists", extra={"batchId": batch_id})
            metrics.add_metric(name="DuplicateManifestEvents", unit=MetricUnit.Count, value=1)
            return "duplicate"
        raise classify(exc) from exc
    metrics.add_metric(name="ExecutionsStarted", unit=MetricUnit.Count, value=1)
    logger.info("execution started", extra={"batchId": batch_id})
    return "started"


@lambda_entry_point(logger, metrics, tracer)
@event_source(data_class=S3Event)
def handler(event: S3Event, context: Any) -> dict[str, Any]:
    env = environment()
    sfn = aws.client("stepfunctions")
    jobs = env.job_table()
    outcomes: dict[str, str] = {}
    for record in event.records:
        key = unquote_plus(record.s3.get_object.key)
        outcomes[key] = start_batch(
            record.s3.bucket.name,
            key,
            sfn=sfn,
            state_machine_arn=env.resources.state_machine_arn,
            jobs=jobs,
            poll_seconds=env.settings.poll_seconds,
        )
    return {"results": outcomes}
