"""Import jobs end to end: real DICOM files in moto S3, the emulator reading them, the documented
output layout written back, every step observed through boto3 only."""

from __future__ import annotations

import json
import re

import pytest

from local.ahi.emulator import AhiEmulator
from tests.local.ahi_support import (
    REGION,
    STATUS_ORDER,
    medical_imaging,
    put_instance,
    put_series,
    read_text,
    start_import,
    wait_for_job,
)

INPUT_BUCKET = "dicom-input"
OUTPUT = "s3://ahi-results/import-results"
MESSAGE_PATTERN = re.compile(r"[\w -:`]+")  # the model's Message pattern
ID = re.compile(r"[0-9a-z]{32}")


def job_folder(datastore_id: str, job_id: str) -> str:
    """The documented results folder: <outputS3Uri>/<datastoreId>-DicomImport-<jobId>/."""
    return f"{OUTPUT}/{datastore_id}-DicomImport-{job_id}/"


def ndjson(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def test_import_a_study_completes_with_documented_results(ahi, ahi_s3, ahi_datastore, ahi_emulator):
    prefix = "batches/study-ok/"
    study = put_series(ahi_s3, INPUT_BUCKET, prefix, count=3)
    started = start_import(ahi, ahi_datastore, "study-ok", f"s3://{INPUT_BUCKET}/{prefix}", OUTPUT)
    assert started["jobStatus"] == "SUBMITTED"
    assert started["datastoreId"] == ahi_datastore
    assert ID.fullmatch(started["jobId"])

    job, seen = wait_for_job(ahi, ahi_datastore, started["jobId"])
    assert job["jobStatus"] == "COMPLETED"
    assert seen[0] == "SUBMITTED"
    assert [STATUS_ORDER.index(s) for s in seen] == sorted(STATUS_ORDER.index(s) for s in seen)
    assert job["endedAt"] >= job["submittedAt"]
    assert job["inputS3Uri"] == f"s3://{INPUT_BUCKET}/{prefix}"
    assert job["jobName"] == "study-ok"
    folder = job_folder(ahi_datastore, started["jobId"])
    assert job["outputS3Uri"] == folder  # AWS samples read outputS3Uri + "job-output-manifest.json"

    summary = json.loads(read_text(ahi_s3, folder + "job-output-manifest.json"))["jobSummary"]
    assert summary["jobId"] == started["jobId"]
    assert summary["datastoreId"] == ahi_datastore
    assert summary["outputS3Uri"] == folder
    assert summary["successOutputS3Uri"] == folder + "SUCCESS/"
    assert summary["failureOutputS3Uri"] == folder + "FAILURE/"
    assert summary["numberOfScannedFiles"] == 3
    assert summary["numberOfImportedFiles"] == 3
    assert summary["numberOfFilesWithCustomerError"] == 0
    assert summary["numberOfFilesWithServerError"] == 0
    assert summary["numberOfGeneratedImageSets"] == 1
    (image_set,) = summary["imageSetsSummary"]
    assert ID.fullmatch(image_set["imageSetId"])
    assert image_set["isPrimary"] is True
    assert image_set["imageSetVersion"] == 1
    assert image_set["numberOfMatchedSOPInstances"] == 3

    successes = ndjson(read_text(ahi_s3, folder + "SUCCESS/success.ndjson"))
    expected_keys = {f"{prefix}{study.study_uid}/{study.series_uid}/{sop}.dcm" for sop in study.sop_uids}
    assert {line["inputFile"] for line in successes} == expected_keys
    for line in successes:
        assert line["importResponse"] == {
            "imageSetId": image_set["imageSetId"],
            "imageSetVersion": 1,
            "isPrimary": True,
        }
    assert read_text(ahi_s3, folder + "FAILURE/failure.ndjson") == ""

    fetched = ahi.get_image_set(datastoreId=ahi_datastore, imageSetId=image_set["imageSetId"])
    assert fetched["versionId"] == "1"
    assert fetched["imageSetState"] == "ACTIVE"
    assert fetched["isPrimary"] is True
    assert ahi_emulator.jobs[-1]["jobId"] == started["jobId"]
    assert ahi_emulator.jobs[-1]["jobStatus"] == "COMPLETED"


@pytest.mark.filterwarnings("ignore:Invalid value for VR UI")  # the invalid UID is the point
def test_per_file_failures_complete_the_job_with_failure_lines(ahi, ahi_s3, ahi_datastore, ahi_emulator):
    prefix = "batches/partial/"
    study = put_series(ahi_s3, INPUT_BUCKET, prefix, count=3)
    ahi_s3.put_object(Bucket=INPUT_BUCKET, Key=f"{prefix}notes/readme.txt", Body=b"not a DICOM file")
    bad_uid_key = put_instance(ahi_s3, INPUT_BUCKET, prefix, "1.2.3.not-a-uid", study.series_uid, "1.2.3.4.5")
    rejected_sop = study.sop_uids[1]
    ahi_emulator.inject(fail_instances={rejected_sop})

    started = start_import(ahi, ahi_datastore, "partial", f"s3://{INPUT_BUCKET}/{prefix}", OUTPUT)
    job, _ = wait_for_job(ahi, ahi_datastore, started["jobId"])
    assert job["jobStatus"] == "COMPLETED"  # COMPLETED is not success: read the FAILURE file
    folder = job_folder(ahi_datastore, started["jobId"])

    summary = json.loads(read_text(ahi_s3, folder + "job-output-manifest.json"))["jobSummary"]
    assert summary["numberOfScannedFiles"] == 5
    assert summary["numberOfImportedFiles"] == 2
    assert summary["numberOfFilesWithCustomerError"] == 3
    assert summary["imageSetsSummary"][0]["numberOfMatchedSOPInstances"] == 2

    failure_file = read_text(ahi_s3, folder + "FAILURE/failure.ndjson")
    failures = {line["inputFile"]: line for line in ndjson(failure_file)}
    rejected_key = f"{prefix}{study.study_uid}/{study.series_uid}/{rejected_sop}.dcm"
    assert set(failures) == {f"{prefix}notes/readme.txt", rejected_key, bad_uid_key}
    assert "StudyInstanceUID" in failures[bad_uid_key]["exception"]["message"]
    for line in failures.values():
        assert line["exception"]["exceptionType"] == "ValidationException"
        assert line["exception"]["message"]
    successes = ndjson(read_text(ahi_s3, folder + "SUCCESS/success.ndjson"))
    assert rejected_key not in {line["inputFile"] for line in successes}
    assert len(successes) == 2


def test_injected_job_failure_ends_failed_with_a_message(ahi, ahi_s3, ahi_datastore, ahi_emulator):
    prefix = "batches/doomed/"
    put_series(ahi_s3, INPUT_BUCKET, prefix, count=1)
    ahi_emulator.inject(fail_next_jobs=1)
    doomed = start_import(ahi, ahi_datastore, "doomed", f"s3://{INPUT_BUCKET}/{prefix}", OUTPUT)
    healthy = start_import(ahi, ahi_datastore, "healthy", f"s3://{INPUT_BUCKET}/{prefix}", OUTPUT)

    job, _ = wait_for_job(ahi, ahi_datastore, doomed["jobId"])
    assert job["jobStatus"] == "FAILED"
    assert job["message"] and MESSAGE_PATTERN.fullmatch(job["message"])
    assert wait_for_job(ahi, ahi_datastore, healthy["jobId"])[0]["jobStatus"] == "COMPLETED"
    failed = ahi.list_dicom_import_jobs(datastoreId=ahi_datastore, jobStatus="FAILED")["jobSummaries"]
    assert [j["jobId"] for j in failed] == [doomed["jobId"]]
    assert failed[0]["message"] == job["message"]


def test_missing_input_prefix_or_bucket_fails_the_job(ahi, ahi_datastore):
    empty = start_import(ahi, ahi_datastore, "empty", f"s3://{INPUT_BUCKET}/batches/nothing-here/", OUTPUT)
    no_bucket = start_import(ahi, ahi_datastore, "no-bucket", "s3://no-such-bucket/x/", OUTPUT)
    for started in (empty, no_bucket):
        job, _ = wait_for_job(ahi, ahi_datastore, started["jobId"])
        assert job["jobStatus"] == "FAILED"
        assert MESSAGE_PATTERN.fullmatch(job["message"])
        assert "inputS3Uri" in job["message"]


def test_more_nested_folders_than_the_quota_fails_the_job(ahi_s3_url, ahi_s3):
    prefix = "batches/too-deep/"
    for _ in range(3):  # 1 study folder + 3 series folders = 4 nested folders
        put_series(ahi_s3, INPUT_BUCKET, prefix, count=1, study_uid="1.2.3.4")
    with AhiEmulator(s3_endpoint_url=ahi_s3_url, region=REGION, job_seconds=0.1, max_nested_folders=3) as emu:
        client = medical_imaging(emu.start())
        store = emu.create_datastore("quota")
        started = start_import(client, store, "too-deep", f"s3://{INPUT_BUCKET}/{prefix}", OUTPUT)
        job, _ = wait_for_job(client, store, started["jobId"])
    assert job["jobStatus"] == "FAILED"
    assert "4 nested folders" in job["message"] and "at most 3" in job["message"]


def test_list_import_jobs_pages_and_filters(ahi, ahi_s3, ahi_datastore):
    prefix = "batches/paging/"
    put_series(ahi_s3, INPUT_BUCKET, prefix, count=1)
    job_ids = [
        start_import(ahi, ahi_datastore, f"page-{n}", f"s3://{INPUT_BUCKET}/{prefix}", OUTPUT)["jobId"]
        for n in range(3)
    ]
    for job_id in job_ids:
        wait_for_job(ahi, ahi_datastore, job_id)
    first = ahi.list_dicom_import_jobs(datastoreId=ahi_datastore, maxResults=2, jobStatus="COMPLETED")
    assert len(first["jobSummaries"]) == 2 and first["nextToken"]
    second = ahi.list_dicom_import_jobs(
        datastoreId=ahi_datastore, maxResults=2, jobStatus="COMPLETED", nextToken=first["nextToken"]
    )
    assert "nextToken" not in second
    listed = [j["jobId"] for j in first["jobSummaries"] + second["jobSummaries"]]
    assert sorted(listed) == sorted(job_ids)
    assert ahi.list_dicom_import_jobs(datastoreId=ahi_datastore, jobStatus="SUBMITTED")["jobSummaries"] == []
    with pytest.raises(Exception, match="ValidationException"):
        ahi.list_dicom_import_jobs(datastoreId=ahi_datastore, nextToken="not-a-token")
