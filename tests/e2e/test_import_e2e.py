"""Sender -> SCP -> manifest -> trigger -> state machine -> HealthImaging emulator -> job table."""

from __future__ import annotations

import json

from pydicom import dcmread

from cli.jobs_query import list_jobs_by_study
from core.layout import QUARANTINE_PREFIX, manifest_key
from tests.e2e.conftest import execution_names, finished, job, new_executions, storescu
from tests.handlers.batches import upload_batch


def test_one_study_is_one_execution_and_one_completed_job_with_image_sets(stack, make_study):
    files = make_study(4)
    before, calls = execution_names(stack), stack.ahi.start_import_calls
    storescu(stack, files)
    [batch_id] = new_executions(stack, before, 1)
    assert finished(stack, batch_id)["status"] == "SUCCEEDED"
    summary = job(stack, batch_id)["summary"]
    assert summary["currentStatus"] == "COMPLETED"
    assert summary["importedCount"] == 4 and summary["failedCount"] == 0
    assert summary["imageSetIds"] and summary["callingAeTitle"] == "E2E-SCU"
    assert stack.ahi.start_import_calls == calls + 1
    s3 = stack.client("s3")
    assert s3.list_objects_v2(Bucket=stack.outputs["dicomBucket"], Prefix=summary["prefix"])["KeyCount"] == 0


def test_a_study_over_three_associations_is_three_batches_without_duplicate_imports(stack, make_study):
    files = make_study(6)
    study_uid = dcmread(files[0]).StudyInstanceUID
    before, calls = execution_names(stack), stack.ahi.start_import_calls
    for part in (files[:2], files[2:4], files[4:]):
        storescu(stack, part)
    batch_ids = new_executions(stack, before, 3)
    assert len(batch_ids) == 3
    for batch_id in batch_ids:
        assert finished(stack, batch_id)["status"] == "SUCCEEDED"
        assert job(stack, batch_id)["summary"]["currentStatus"] == "COMPLETED"
    assert stack.ahi.start_import_calls == calls + 3
    jobs = [j for j in stack.ahi.jobs if any(b in j["inputS3Uri"] for b in batch_ids)]
    assert sorted(j["jobName"] for j in jobs) == batch_ids  # one import job per batch
    by_study = list_jobs_by_study(stack.client("dynamodb"), stack.outputs["jobTable"], study_uid)
    assert sorted(j["jobId"] for j in by_study) == batch_ids


def test_partial_failure_is_partial_with_the_failed_sop_instance_uids(stack, make_study):
    files = make_study(4)
    failing = sorted(str(dcmread(f).SOPInstanceUID) for f in files[1:3])
    stack.ahi.inject(fail_instances=set(failing))
    try:
        before = execution_names(stack)
        storescu(stack, files)
        [batch_id] = new_executions(stack, before, 1)
        described = finished(stack, batch_id)
    finally:
        stack.ahi.reset_faults()
    assert described["status"] == "SUCCEEDED"
    assert json.loads(described["output"])["result"]["failedSopInstanceUids"] == failing
    summary = job(stack, batch_id)["summary"]
    assert summary["currentStatus"] == "PARTIAL"
    assert sorted(f["sopInstanceUid"] for f in summary["failures"]) == failing
    assert summary["importedCount"] == 2
    s3 = stack.client("s3")
    kept = s3.list_objects_v2(Bucket=stack.outputs["dicomBucket"], Prefix=f"{QUARANTINE_PREFIX}{batch_id}/")
    kept_keys = [o["Key"] for o in kept.get("Contents", [])]
    for uid in failing:
        assert any(k.endswith(f"{uid}.dcm") for k in kept_keys)
        assert any(k.endswith(f"{uid}.dcm.reason.json") for k in kept_keys)


def test_a_non_dicom_object_is_quarantined_with_its_reason(stack, make_study):
    s3 = stack.client("s3")
    bucket = stack.outputs["dicomBucket"]
    before = execution_names(stack)
    manifest = upload_batch(s3, bucket, make_study(2), extra={"scan-notes.pdf": b"%PDF-1.4 not an image"})
    assert new_executions(stack, before, 1) == [manifest.batch_id]
    assert finished(stack, manifest.batch_id)["status"] == "SUCCEEDED"
    summary = job(stack, manifest.batch_id)["summary"]
    assert summary["currentStatus"] == "PARTIAL" and summary["importedCount"] == 2
    [failure] = summary["failures"]
    assert failure["stage"] == "validation" and "not a DICOM Part 10 file" in failure["reason"]
    reason_key = f"{QUARANTINE_PREFIX}{manifest.batch_id}/scan-notes.pdf.reason.json"
    reason = json.loads(s3.get_object(Bucket=bucket, Key=reason_key)["Body"].read())
    assert reason["sourceKey"] == f"{manifest.prefix}scan-notes.pdf"
    assert "not a DICOM Part 10 file" in reason["reason"]
    assert (
        s3.get_object(Bucket=bucket, Key=f"{QUARANTINE_PREFIX}{manifest.batch_id}/scan-notes.pdf")[
            "Body"
        ].read()
        == b"%PDF-1.4 not an image"
    )


def test_the_same_s3_event_twice_is_one_import_job(stack, make_study):
    before = execution_names(stack)
    storescu(stack, make_study(2))
    [batch_id] = new_executions(stack, before, 1)
    assert finished(stack, batch_id)["status"] == "SUCCEEDED"
    calls, executions = stack.ahi.start_import_calls, execution_names(stack)
    s3 = stack.client("s3")
    bucket, key = stack.outputs["dicomBucket"], manifest_key(batch_id)
    body = s3.get_object(Bucket=bucket, Key=key)["Body"].read()
    s3.put_object(Bucket=bucket, Key=key, Body=body)  # S3 delivers ObjectCreated for it again
    summary = job(stack, batch_id)["summary"]
    assert execution_names(stack) == executions
    assert stack.ahi.start_import_calls == calls
    assert summary["currentStatus"] == "COMPLETED"
    assert [t["status"] for t in job(stack, batch_id)["timeline"]].count("RECEIVED") == 1
