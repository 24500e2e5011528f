"""start_import -> check_status -> record_results against moto server and the AHI emulator."""

from __future__ import annotations

import json
import warnings

import pytest
from pydicom import dcmread
from pydicom.uid import generate_uid

from cli.jobs_query import get_job
from core.layout import QUARANTINE_PREFIX, manifest_key
from handlers import check_status, record_results, start_import
from handlers.errors import NoValidInstances, Throttled
from local.moto_lambda import LambdaContext
from tests.handlers.batches import upload_batch


def _context(name: str) -> LambdaContext:
    return LambdaContext(
        function_name=name,
        invoked_function_arn=f"arn:aws:lambda:us-east-1:1:function:{name}",
        memory_limit_in_mb=512,
    )


def _event(aws, manifest):
    return {
        "batchId": manifest.batch_id,
        "bucket": aws.bucket,
        "manifestKey": f"batches/{manifest.batch_id}.json",
    }


def _run_to_completion(aws, manifest, started):
    """Poll check_status like the state machine does (bounded), then record the results."""
    event = {
        "batchId": manifest.batch_id,
        "importJobId": started["importJobId"],
        "datastoreId": started["datastoreId"],
    }
    for attempt in range(1, 200):
        status = check_status.handler({**event, "attempt": attempt}, _context("check_status"))
        assert status["attempt"] == attempt
        if status["jobStatus"] in ("COMPLETED", "FAILED"):
            break
    assert status["jobStatus"] == "COMPLETED", status
    return record_results.handler(
        {**_event(aws, manifest), **event, "outputS3Uri": started["outputS3Uri"]}, _context("record_results")
    )


def _keys(aws, prefix):
    listed = aws.client("s3").list_objects_v2(Bucket=aws.bucket, Prefix=prefix)
    return sorted(o["Key"] for o in listed.get("Contents", []))


def test_valid_batch_is_imported_recorded_and_cleaned_up(aws, study):
    s3 = aws.client("s3")
    manifest = upload_batch(s3, aws.bucket, study)
    started = start_import.handler(_event(aws, manifest), _context("start_import"))
    assert started["validCount"] == 3 and started["quarantinedCount"] == 0
    job = next(j for j in aws.ahi.jobs if j["jobId"] == started["importJobId"])
    assert job["inputS3Uri"] == f"s3://{aws.bucket}/{manifest.prefix}"
    assert job["outputS3Uri"].startswith(f"s3://{aws.results_bucket}/{manifest.batch_id}/")

    result = _run_to_completion(aws, manifest, started)
    assert result["status"] == "COMPLETED"
    assert result["importedCount"] == 3 and result["failedCount"] == 0 and result["imageSetIds"]

    record = get_job(aws.client("dynamodb"), aws.table, manifest.batch_id)
    summary = record["summary"]
    assert summary["currentStatus"] == "COMPLETED"
    assert summary["imageSetIds"] == result["imageSetIds"]
    assert summary["callingAeTitle"] == "MODALITY1"
    assert [t["status"] for t in record["timeline"]][:2] == ["VALIDATED", "SUBMITTED"]
    assert record["timeline"][-1]["status"] == "COMPLETED"
    assert [s["studyInstanceUid"] for s in record["studies"]] == [dcmread(study[0]).StudyInstanceUID]
    assert _keys(aws, manifest.prefix) == []  # cleanup_mode "delete" (the default)


def test_replayed_start_is_one_import_job(aws, study):
    manifest = upload_batch(aws.client("s3"), aws.bucket, study)
    before = aws.ahi.start_import_calls
    first = start_import.handler(_event(aws, manifest), _context("start_import"))
    second = start_import.handler(_event(aws, manifest), _context("start_import"))
    assert first["importJobId"] == second["importJobId"]
    assert aws.ahi.start_import_calls == before + 1
    timeline = get_job(aws.client("dynamodb"), aws.table, manifest.batch_id)["timeline"]
    assert [t["status"] for t in timeline] == ["VALIDATED", "SUBMITTED"]


def test_the_same_sop_instance_uid_received_again_is_counted_as_replaced(aws, study, tmp_path):
    """A key the SCP stored more than once carries its receipts; the same UID in another series is
    another key. The job says received, unique and replaced, and names the replaced UIDs."""
    s3 = aws.client("s3")
    other_series = dcmread(study[0])
    other_series.SeriesInstanceUID = generate_uid()
    other_series.save_as(tmp_path / "other-series.dcm")
    manifest = upload_batch(s3, aws.bucket, [*study, tmp_path / "other-series.dcm"], write_manifest=False)
    manifest.instances[1].received_count = 3  # sent three times into its series, stored once
    s3.put_object(Bucket=aws.bucket, Key=manifest_key(manifest.batch_id), Body=manifest.to_json().encode())
    start_import.handler(_event(aws, manifest), _context("start_import"))
    summary = get_job(aws.client("dynamodb"), aws.table, manifest.batch_id)["summary"]
    assert (summary["receivedCount"], summary["uniqueCount"], summary["replacedCount"]) == (6, 3, 3)
    assert summary["instanceCount"] == 4
    uids = sorted({manifest.instances[0].sop_instance_uid, manifest.instances[1].sop_instance_uid})
    assert summary["replacedSopInstanceUids"] == uids


def test_invalid_instances_are_quarantined_with_reasons(aws, study, tmp_path):
    s3 = aws.client("s3")
    too_long = dcmread(study[1])
    with warnings.catch_warnings():  # pydicom warns about the VR length we break on purpose
        warnings.simplefilter("ignore", UserWarning)
        too_long.StudyDescription = "X" * 65  # HealthImaging allows 64 characters
        too_long.save_as(tmp_path / "long.dcm")
    files = [study[0], tmp_path / "long.dcm"]
    manifest = upload_batch(s3, aws.bucket, files, extra={"notes.txt": b"not dicom at all"})
    # a checksum mismatch: the object is replaced after the manifest recorded its sha256
    tampered = manifest.instances[0]
    s3.put_object(
        Bucket=aws.bucket, Key=tampered.key, Body=study[0].read_bytes(), Metadata={"sha256": "0" * 64}
    )

    with pytest.raises(NoValidInstances):
        start_import.handler(_event(aws, manifest), _context("start_import"))

    quarantined = _keys(aws, f"{QUARANTINE_PREFIX}{manifest.batch_id}/")
    reasons = {}
    for key in quarantined:
        if key.endswith(".reason.json"):
            doc = json.loads(s3.get_object(Bucket=aws.bucket, Key=key)["Body"].read())
            reasons[doc["sopInstanceUid"]] = doc["reason"]
            assert doc["stage"] == "validation" and doc["sourceKey"].startswith(manifest.prefix)
    assert len(quarantined) == 6  # three objects + three reasons
    assert "sha256" in reasons[tampered.sop_instance_uid]
    assert "StudyDescription is 65 characters" in reasons[too_long.SOPInstanceUID]
    assert "not a DICOM Part 10 file" in reasons["notes.txt"]
    assert _keys(aws, manifest.prefix) == []
    summary = get_job(aws.client("dynamodb"), aws.table, manifest.batch_id)["summary"]
    assert summary["currentStatus"] == "VALIDATED" and summary["quarantinedCount"] == 3
    assert aws.ahi.jobs == [j for j in aws.ahi.jobs if manifest.batch_id not in j["inputS3Uri"]]


def test_partial_import_keeps_failed_instances_and_records_their_uids(aws, study):
    s3 = aws.client("s3")
    manifest = upload_batch(s3, aws.bucket, study)
    failing = manifest.instances[1]
    aws.ahi.inject(fail_instances={failing.sop_instance_uid})
    try:
        started = start_import.handler(_event(aws, manifest), _context("start_import"))
        result = _run_to_completion(aws, manifest, started)
    finally:
        aws.ahi.reset_faults()
    assert result["status"] == "PARTIAL"
    assert result["failedSopInstanceUids"] == [failing.sop_instance_uid]
    assert result["importedCount"] == 2
    quarantined = _keys(aws, f"{QUARANTINE_PREFIX}{manifest.batch_id}/")
    assert any(k.endswith(f"{failing.sop_instance_uid}.dcm") for k in quarantined)
    summary = get_job(aws.client("dynamodb"), aws.table, manifest.batch_id)["summary"]
    assert summary["currentStatus"] == "PARTIAL"
    assert [f["sopInstanceUid"] for f in summary["failures"]] == [failing.sop_instance_uid]


def test_throttled_start_raises_the_retryable_error_and_the_retry_does_not_validate_again(aws, study):
    s3 = aws.client("s3")
    manifest = upload_batch(s3, aws.bucket, study)
    aws.ahi.inject(throttle_next_starts=1)
    try:
        with pytest.raises(Throttled):
            start_import.handler(_event(aws, manifest), _context("start_import"))
        # the retry works from the recorded validation: it no longer needs the manifest
        s3.delete_object(Bucket=aws.bucket, Key=f"batches/{manifest.batch_id}.json")
        started = start_import.handler(_event(aws, manifest), _context("start_import"))
    finally:
        aws.ahi.reset_faults()
    assert started["importJobId"] and started["validCount"] == 3
    job = next(j for j in aws.ahi.jobs if j["jobId"] == started["importJobId"])
    assert job["inputS3Uri"] == f"s3://{aws.bucket}/{manifest.prefix}"


def test_cleanup_mode_tag_marks_imported_objects(aws, study, monkeypatch):
    monkeypatch.setenv("WORKFLOW_CLEANUP_MODE", "tag")
    s3 = aws.client("s3")
    manifest = upload_batch(s3, aws.bucket, study)
    started = start_import.handler(_event(aws, manifest), _context("start_import"))
    _run_to_completion(aws, manifest, started)
    for instance in manifest.instances:
        tags = s3.get_object_tagging(Bucket=aws.bucket, Key=instance.key)["TagSet"]
        assert {"Key": "ahi-imported", "Value": "true"} in tags
