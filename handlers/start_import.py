"""Start Import (state ``StartImport``): validate a sealed batch, quarantine what HealthImaging
would reject, and start exactly one import job for the rest (clientToken = the execution name:
the batch id, or ``<batchId>-redrive-<n>`` for a DLQ redrive).
A retry (throttling, a transient error) does not validate again once VALIDATED is recorded.

Input: ``{"batchId", "bucket", "manifestKey"}``. Output: ``{"importJobId", "datastoreId",
"outputS3Uri", "validCount", "quarantinedCount"}``. Raises ``NoValidInstances`` when nothing is
left to import, ``Throttled``/``TransientError`` when a retry can help.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from aws_lambda_powertools.metrics import MetricUnit
from botocore.exceptions import ClientError

from core.layout import JOB_STATES, BatchManifest
from handlers import aws, objects
from handlers.errors import NoValidInstances, classify
from handlers.jobs import JobTable, failures_for_summary
from handlers.runtime import environment, lambda_entry_point, powertools
from handlers.validation import load_manifest, validate_batch

logger, metrics, tracer = powertools()

MAX_LISTED_REPLACED = 100  # SOP Instance UIDs named on the summary (the item limit is 400 KB)


def output_s3_uri(results_bucket: str, attempt: str) -> str:
    return f"s3://{results_bucket}/{attempt}/"


def receipts(manifest: BatchManifest) -> dict[str, Any]:
    """Instances acknowledged (received), distinct SOP Instance UIDs (unique) and the receipts
    that did not become an instance of their own (replaced: the same UID sent again, into the
    same series, which the SCP keeps once, or into another one, which HealthImaging keeps once)."""
    per_uid: Counter[str] = Counter()
    for instance in manifest.instances:
        per_uid[instance.sop_instance_uid] += instance.received_count
    received = sum(per_uid.values())
    replaced = sorted(uid for uid, count in per_uid.items() if count > 1)
    return {
        "receivedCount": received,
        "uniqueCount": len(per_uid),
        "replacedCount": received - len(per_uid),
        "replacedSopInstanceUids": replaced[:MAX_LISTED_REPLACED],
    }


def validate_and_quarantine(
    s3: Any, bucket: str, event: dict[str, Any], jobs: JobTable, attempt: str
) -> tuple[str, int, int]:
    """Validate the batch, quarantine what fails, record VALIDATED; returns (prefix, valid, quarantined)."""
    batch_id = event["batchId"]
    manifest = load_manifest(s3, bucket, event["manifestKey"])
    verdicts = validate_batch(s3, bucket, manifest)
    invalid = [v for v in verdicts if v.reason is not None]
    for verdict in invalid:
        if not verdict.already_quarantined:
            objects.quarantine(
                s3,
                bucket,
                batch_id,
                manifest.prefix,
                verdict.instance.key,
                sop_instance_uid=verdict.instance.sop_instance_uid,
                stage="validation",
                reason=verdict.reason or "",
            )
    failures = [
        {"sopInstanceUid": v.instance.sop_instance_uid, "stage": "validation", "reason": v.reason}
        for v in invalid
    ]
    valid = len(verdicts) - len(invalid)
    studies = Counter(i.study_instance_uid for i in manifest.instances)
    counted = receipts(manifest)
    jobs.record_studies(batch_id, studies)
    jobs.record(
        batch_id,
        "VALIDATED",
        attempt=attempt,
        clear=("error", "errorCause", "failedState"),  # left by an earlier attempt, if any
        details={
            "valid": valid,
            "quarantined": len(invalid),
            "replaced": counted["replacedCount"],
        },
        summary={
            "callingAeTitle": manifest.calling_ae_title or None,
            "calledAeTitle": manifest.called_ae_title or None,
            "manifestKey": event["manifestKey"],
            "prefix": manifest.prefix,
            "instanceCount": len(manifest.instances),
            "totalBytes": manifest.total_bytes,
            "validCount": valid,
            "quarantinedCount": len(invalid),
            "studyInstanceUids": sorted(studies),
            "failures": failures_for_summary(failures),
            **counted,
        },
    )
    metrics.add_metric(name="InstancesValidated", unit=MetricUnit.Count, value=len(verdicts))
    metrics.add_metric(name="InstancesQuarantined", unit=MetricUnit.Count, value=len(invalid))
    return manifest.prefix, valid, len(invalid)


def _validated_earlier(summary: dict[str, Any] | None, attempt: str) -> tuple[str, int, int] | None:
    """A retried invocation (e.g. after throttling) reuses the recorded validation: quarantining
    happens before VALIDATED is recorded, so what is left under the prefix is the valid part."""
    if not summary or "validCount" not in summary or summary.get("attempt") != attempt:
        return None
    if JOB_STATES.index(summary["currentStatus"]) < JOB_STATES.index("VALIDATED"):
        return None
    return summary["prefix"], int(summary["validCount"]), int(summary["quarantinedCount"])


@tracer.capture_method
def start_import(
    event: dict[str, Any],
    *,
    s3: Any,
    ahi: Any,
    jobs: JobTable,
    datastore_id: str,
    import_role_arn: str,
    results_bucket: str,
) -> dict[str, Any]:
    batch_id, bucket = event["batchId"], event["bucket"]
    attempt = event.get("executionName") or batch_id  # a DLQ redrive runs under a new name
    validated = _validated_earlier(jobs.summary(batch_id), attempt) or validate_and_quarantine(
        s3, bucket, event, jobs, attempt
    )
    prefix, valid, quarantined = validated
    if not valid:
        raise NoValidInstances(f"batch {batch_id}: all {quarantined} instances failed validation")

    output_uri = output_s3_uri(results_bucket, attempt)
    try:
        started = ahi.start_dicom_import_job(
            jobName=attempt,
            clientToken=attempt,
            datastoreId=datastore_id,
            dataAccessRoleArn=import_role_arn,
            inputS3Uri=f"s3://{bucket}/{prefix}",
            outputS3Uri=output_uri,
        )
    except ClientError as exc:
        raise classify(exc) from exc
    job_id = started["jobId"]
    jobs.record(
        batch_id,
        "SUBMITTED",
        attempt=attempt,
        details={"importJobId": job_id},
        summary={"importJobId": job_id, "datastoreId": datastore_id, "outputS3Uri": output_uri},
    )
    metrics.add_metric(name="ImportJobsStarted", unit=MetricUnit.Count, value=1)
    logger.info(
        "import job started",
        extra={"batchId": batch_id, "importJobId": job_id, "valid": valid, "quarantined": quarantined},
    )
    return {
        "importJobId": job_id,
        "datastoreId": datastore_id,
        "outputS3Uri": output_uri,
        "validCount": valid,
        "quarantinedCount": quarantined,
    }


@lambda_entry_point(logger, metrics, tracer)
def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    env = environment()
    return start_import(
        event,
        s3=aws.client("s3"),
        ahi=aws.client("medical-imaging", retries=aws.NO_SDK_RETRIES),
        jobs=env.job_table(),
        datastore_id=env.resources.datastore_id,
        import_role_arn=env.resources.import_role_arn,
        results_bucket=env.resources.results_bucket,
    )
