"""Record Results (state ``RecordResults``): COMPLETED is not success (DESIGN decision 4).

Reads the job's output (handlers/results.py), quarantines the instances HealthImaging rejected,
cleans up the imported ones per ``cleanup_mode``, and records the job COMPLETED (every instance
imported) or PARTIAL (some instance failed validation or import) with its image set ids and
per-instance failures.

Input: ``{"batchId", "bucket", "manifestKey", "importJobId", "datastoreId", "outputS3Uri"}``.
Output: ``{"status", "imageSetIds", "importedCount", "failedCount", "failedSopInstanceUids"}``.
"""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools.metrics import MetricUnit

from core.commitment import CommitmentTable
from core.layout import BatchManifest
from handlers import aws, objects
from handlers.jobs import JobTable, failures_for_summary
from handlers.results import read_outcome
from handlers.runtime import environment, lambda_entry_point, powertools
from handlers.validation import load_manifest

logger, metrics, tracer = powertools()


@tracer.capture_method
def record_results(
    event: dict[str, Any],
    *,
    s3: Any,
    jobs: JobTable,
    cleanup_mode: str,
    commitments: CommitmentTable | None = None,
) -> dict[str, Any]:
    batch_id, bucket = event["batchId"], event["bucket"]
    manifest = load_manifest(s3, bucket, event["manifestKey"])
    outcome = read_outcome(s3, event["outputS3Uri"], event["datastoreId"], event["importJobId"])
    by_key = {i.key: i for i in manifest.instances}

    failures: list[dict[str, Any]] = []
    for key, reason in sorted(outcome.failed.items()):
        instance = by_key.get(key)
        sop_uid = instance.sop_instance_uid if instance else ""
        objects.quarantine(
            s3,
            bucket,
            batch_id,
            manifest.prefix,
            key,
            sop_instance_uid=sop_uid,
            stage="import",
            reason=reason,
        )
        failures.append({"sopInstanceUid": sop_uid, "stage": "import", "reason": reason, "key": key})

    # Instances quarantined at validation are part of this batch's outcome too.
    not_in_output = [
        v for v in manifest.instances if v.key not in outcome.imported_keys and v.key not in outcome.failed
    ]
    for instance in not_in_output:
        earlier = objects.read_reason(s3, bucket, batch_id, manifest.prefix, instance.key)
        if earlier is not None:
            failures.append(
                {
                    "sopInstanceUid": instance.sop_instance_uid,
                    "stage": earlier.get("stage", ""),
                    "reason": earlier.get("reason", ""),
                    "key": instance.key,
                }
            )

    imported = sorted(k for k in outcome.imported_keys if k in by_key)
    due = record_commitment_outcomes(commitments, manifest, outcome.image_set_by_key, failures)
    cleaned = objects.clean_up(s3, bucket, imported, cleanup_mode)
    status = "PARTIAL" if failures else "COMPLETED"
    failed_uids = sorted({f["sopInstanceUid"] for f in failures if f["sopInstanceUid"]})
    jobs.record(
        batch_id,
        status,
        attempt=event.get("executionName"),
        details={
            "importJobId": event["importJobId"],
            "imported": len(imported),
            "failed": len(failures),
            "cleanup": cleanup_mode,
        },
        summary={
            "imageSetIds": outcome.image_set_ids,
            "nonPrimaryImageSetIds": outcome.non_primary_image_set_ids,
            "importedCount": len(imported),
            "failedCount": len(failures),
            "failures": failures_for_summary(failures),
            "cleanedUp": cleaned,
        },
    )
    metrics.add_metric(name="InstancesImported", unit=MetricUnit.Count, value=len(imported))
    metrics.add_metric(name="InstancesFailed", unit=MetricUnit.Count, value=len(failures))
    metrics.add_metric(name=f"Jobs{status.title()}", unit=MetricUnit.Count, value=1)
    logger.info(
        "import recorded",
        extra={
            "batchId": batch_id,
            "status": status,
            "imported": len(imported),
            "failed": len(failures),
            "imageSets": len(outcome.image_set_ids),
            "commitmentsDue": len(due),
        },
    )
    return {
        "status": status,
        "imageSetIds": outcome.image_set_ids,
        "importedCount": len(imported),
        "failedCount": len(failures),
        "failedSopInstanceUids": failed_uids,
    }


def record_commitment_outcomes(
    commitments: CommitmentTable | None,
    manifest: BatchManifest,
    image_sets: dict[str, str],
    failures: list[dict[str, Any]],
) -> set[str]:
    """Each instance's outcome into the commitment index; marks the transactions waiting on them due.

    COMMITTED needs an image set id from the success results (DESIGN 4b); a failure keeps its
    stage and recorded reason. Returns the transactions marked due.
    """
    if commitments is None:
        return set()
    # Only instances in the index: the SCP indexes each sealed batch when commitment is on, and a
    # commitment request links the instances it names. Without commitment this is reads only.
    indexed = commitments.items(i.sop_instance_uid for i in manifest.instances)
    failed = {f["key"]: f for f in failures}
    due: set[str] = set()
    for instance in (i for i in manifest.instances if i.sop_instance_uid in indexed):
        failure = failed.get(instance.key)
        image_set = "" if failure else image_sets.get(instance.key, "")
        due.update(
            commitments.record_outcome(
                manifest.batch_id,
                instance.sop_instance_uid,
                instance.sop_class_uid,
                image_set_id=image_set,
                stage=failure["stage"] if failure else ("" if image_set else "import"),
                reason=failure["reason"] if failure else ("" if image_set else "not in the import's results"),
            )
        )
    for transaction_uid in sorted(due):
        commitments.mark_due(transaction_uid)
    return due


@lambda_entry_point(logger, metrics, tracer)
def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    env = environment()
    return record_results(
        event,
        s3=aws.client("s3"),
        jobs=env.job_table(),
        cleanup_mode=env.settings.cleanup_mode,
        commitments=CommitmentTable(aws.client("dynamodb"), env.resources.job_table),
    )
