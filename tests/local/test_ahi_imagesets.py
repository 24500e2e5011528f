"""Image sets made by import jobs: grouping by Study/Series, primary vs non-primary, versions,
SearchImageSets and GetImageSetMetadata (gzip JSON), through boto3 with host prefixes disabled."""

from __future__ import annotations

import gzip
import json
import re
from datetime import UTC, datetime, timedelta

import pytest
from botocore.exceptions import ClientError
from pydicom.uid import generate_uid

from tests.local.ahi_support import put_instance, put_series, read_text, start_import, wait_for_job

BUCKET = "dicom-input"
OUTPUT = "s3://ahi-results/imagesets"


def run_job(ahi, datastore_id: str, token: str, prefix: str) -> dict:
    """Import ``prefix``, wait for COMPLETED, return the jobSummary of its manifest."""
    started = start_import(ahi, datastore_id, token, f"s3://{BUCKET}/{prefix}", OUTPUT)
    job, _ = wait_for_job(ahi, datastore_id, started["jobId"])
    assert job["jobStatus"] == "COMPLETED"
    return job


def summary_of(ahi_s3, job: dict) -> dict:
    return json.loads(read_text(ahi_s3, job["outputS3Uri"] + "job-output-manifest.json"))["jobSummary"]


def successes_of(ahi_s3, job: dict) -> list[dict]:
    text = read_text(ahi_s3, job["outputS3Uri"] + "SUCCESS/success.ndjson")
    return [json.loads(line) for line in text.splitlines()]


def metadata(ahi, datastore_id: str, image_set_id: str, **version) -> dict:
    response = ahi.get_image_set_metadata(datastoreId=datastore_id, imageSetId=image_set_id, **version)
    assert response["contentEncoding"] == "gzip"
    return json.loads(gzip.decompress(response["imageSetMetadataBlob"].read()))


def test_series_imported_by_two_jobs_joins_one_primary_image_set(ahi, ahi_s3, ahi_datastore):
    study = put_series(ahi_s3, BUCKET, "join/first/", count=2)
    first = summary_of(ahi_s3, run_job(ahi, ahi_datastore, "join-1", "join/first/"))
    late_sop = generate_uid()
    put_instance(
        ahi_s3, BUCKET, "join/second/", study.study_uid, study.series_uid, late_sop, instance_number=3
    )
    second_job = run_job(ahi, ahi_datastore, "join-2", "join/second/")
    second = summary_of(ahi_s3, second_job)

    (before,), (after,) = first["imageSetsSummary"], second["imageSetsSummary"]
    assert after["imageSetId"] == before["imageSetId"]
    assert (before["imageSetVersion"], after["imageSetVersion"]) == (1, 2)
    assert after["isPrimary"] is True
    assert successes_of(ahi_s3, second_job)[0]["importResponse"]["imageSetVersion"] == 2

    image_set_id = after["imageSetId"]
    assert ahi.get_image_set(datastoreId=ahi_datastore, imageSetId=image_set_id)["versionId"] == "2"
    versions = ahi.list_image_set_versions(datastoreId=ahi_datastore, imageSetId=image_set_id)
    assert [v["versionId"] for v in versions["imageSetPropertiesList"]] == ["2", "1"]
    latest = metadata(ahi, ahi_datastore, image_set_id)["Study"]["Series"][study.series_uid]["Instances"]
    assert set(latest) == {*study.sop_uids, late_sop}
    original = metadata(ahi, ahi_datastore, image_set_id, versionId="1")
    assert set(original["Study"]["Series"][study.series_uid]["Instances"]) == set(study.sop_uids)


def test_reimporting_an_instance_creates_a_new_version(ahi, ahi_s3, ahi_datastore):
    study = put_series(ahi_s3, BUCKET, "again/", count=1)
    first = summary_of(ahi_s3, run_job(ahi, ahi_datastore, "again-1", "again/"))["imageSetsSummary"][0]
    second = summary_of(ahi_s3, run_job(ahi, ahi_datastore, "again-2", "again/"))["imageSetsSummary"][0]
    assert second["imageSetId"] == first["imageSetId"]
    assert second["imageSetVersion"] == first["imageSetVersion"] + 1
    instances = metadata(ahi, ahi_datastore, first["imageSetId"])["Study"]["Series"][study.series_uid][
        "Instances"
    ]
    assert list(instances) == list(study.sop_uids)


def test_conflicting_metadata_lands_in_a_non_primary_image_set(ahi, ahi_s3, ahi_datastore):
    study = put_series(ahi_s3, BUCKET, "conflict/a/", count=1, patient_id="PAT-A")
    primary = summary_of(ahi_s3, run_job(ahi, ahi_datastore, "conflict-a", "conflict/a/"))[
        "imageSetsSummary"
    ][0]
    put_instance(
        ahi_s3, BUCKET, "conflict/b/", study.study_uid, study.series_uid, generate_uid(), patient_id="PAT-B"
    )
    job = run_job(ahi, ahi_datastore, "conflict-b", "conflict/b/")
    (other,) = summary_of(ahi_s3, job)["imageSetsSummary"]
    assert primary["isPrimary"] is True
    assert other["imageSetId"] != primary["imageSetId"]
    assert other["isPrimary"] is False
    assert successes_of(ahi_s3, job)[0]["importResponse"]["isPrimary"] is False
    found = ahi.search_image_sets(
        datastoreId=ahi_datastore,
        searchCriteria={"filters": [{"operator": "EQUAL", "values": [{"isPrimary": False}]}]},
    )["imageSetsMetadataSummaries"]
    assert [s["imageSetId"] for s in found] == [other["imageSetId"]]


def test_one_job_with_two_series_makes_two_image_sets(ahi, ahi_s3, ahi_datastore):
    first = put_series(ahi_s3, BUCKET, "two-series/", count=2)
    put_series(ahi_s3, BUCKET, "two-series/", count=1, study_uid=first.study_uid, series_number=2)
    summary = summary_of(ahi_s3, run_job(ahi, ahi_datastore, "two-series", "two-series/"))
    assert summary["numberOfGeneratedImageSets"] == 2
    assert sorted(s["numberOfMatchedSOPInstances"] for s in summary["imageSetsSummary"]) == [1, 2]
    assert all(s["isPrimary"] for s in summary["imageSetsSummary"])
    found = ahi.search_image_sets(
        datastoreId=ahi_datastore,
        searchCriteria={
            "filters": [{"operator": "EQUAL", "values": [{"DICOMStudyInstanceUID": first.study_uid}]}]
        },
    )["imageSetsMetadataSummaries"]
    assert len(found) == 2
    assert {s["DICOMTags"]["DICOMNumberOfStudyRelatedInstances"] for s in found} == {3}
    assert {s["DICOMTags"]["DICOMNumberOfStudyRelatedSeries"] for s in found} == {2}


def test_search_image_sets_filters_sorts_and_pages(ahi, ahi_s3, ahi_datastore):
    window_start = datetime.now(UTC) - timedelta(seconds=1)
    one = put_series(ahi_s3, BUCKET, "search/", count=1, patient_id="PAT-SEARCH-1")
    two = put_series(ahi_s3, BUCKET, "search/", count=1, patient_id="PAT-SEARCH-2")
    summary = summary_of(ahi_s3, run_job(ahi, ahi_datastore, "search", "search/"))
    window_end = datetime.now(UTC) + timedelta(seconds=1)
    assert summary["numberOfGeneratedImageSets"] == 2

    def search(*filters, **kwargs):
        criteria = {"filters": list(filters), **kwargs} if filters else kwargs
        return ahi.search_image_sets(datastoreId=ahi_datastore, searchCriteria=criteria)

    by_series = search({"operator": "EQUAL", "values": [{"DICOMSeriesInstanceUID": two.series_uid}]})
    (hit,) = by_series["imageSetsMetadataSummaries"]
    assert hit["DICOMTags"]["DICOMSeriesInstanceUID"] == two.series_uid
    assert hit["DICOMTags"]["DICOMPatientId"] == "PAT-SEARCH-2"
    assert hit["isPrimary"] is True and hit["version"] == 1

    by_patient = search({"operator": "EQUAL", "values": [{"DICOMPatientId": "PAT-SEARCH-1"}]})
    assert [s["DICOMTags"]["DICOMStudyInstanceUID"] for s in by_patient["imageSetsMetadataSummaries"]] == [
        one.study_uid
    ]

    created = {"operator": "BETWEEN", "values": [{"createdAt": window_start}, {"createdAt": window_end}]}
    both = search(
        created,
        {"operator": "EQUAL", "values": [{"DICOMStudyInstanceUID": one.study_uid}]},
    )["imageSetsMetadataSummaries"]
    assert len(both) == 1
    future = {
        "operator": "BETWEEN",
        "values": [
            {"updatedAt": window_end + timedelta(hours=1)},
            {"updatedAt": window_end + timedelta(hours=2)},
        ],
    }
    assert search(future)["imageSetsMetadataSummaries"] == []

    ascending = search(created, sort={"sortField": "createdAt", "sortOrder": "ASC"})[
        "imageSetsMetadataSummaries"
    ]
    descending = search(created, sort={"sortField": "createdAt", "sortOrder": "DESC"})[
        "imageSetsMetadataSummaries"
    ]
    assert len(ascending) == 2
    assert [s["imageSetId"] for s in descending] == [s["imageSetId"] for s in reversed(ascending)]

    page = ahi.search_image_sets(
        datastoreId=ahi_datastore, maxResults=1, searchCriteria={"filters": [created]}
    )
    rest = ahi.search_image_sets(
        datastoreId=ahi_datastore,
        maxResults=1,
        nextToken=page["nextToken"],
        searchCriteria={"filters": [created]},
    )
    assert len(page["imageSetsMetadataSummaries"]) == len(rest["imageSetsMetadataSummaries"]) == 1
    assert "nextToken" not in rest

    with pytest.raises(ClientError) as exc:
        search({"operator": "BETWEEN", "values": [{"createdAt": window_start}]})
    assert exc.value.response["Error"]["Code"] == "ValidationException"


def test_image_set_metadata_is_gzip_json_in_the_documented_shape(ahi, ahi_s3, ahi_datastore):
    study = put_series(ahi_s3, BUCKET, "metadata/", count=2, patient_id="PAT-META")
    (image_set,) = summary_of(ahi_s3, run_job(ahi, ahi_datastore, "metadata", "metadata/"))[
        "imageSetsSummary"
    ]
    response = ahi.get_image_set_metadata(datastoreId=ahi_datastore, imageSetId=image_set["imageSetId"])
    assert response["contentType"] == "application/json"
    assert response["contentEncoding"] == "gzip"
    document = json.loads(gzip.decompress(response["imageSetMetadataBlob"].read()))

    assert document["SchemaVersion"] == "1.1"
    assert document["DatastoreID"] == ahi_datastore
    assert document["ImageSetID"] == image_set["imageSetId"]
    assert document["Patient"]["DICOM"]["PatientID"] == "PAT-META"
    assert document["Patient"]["DICOM"]["PatientName"] == "TEST^PATIENT"
    assert document["Study"]["DICOM"]["StudyInstanceUID"] == study.study_uid
    assert document["Study"]["DICOM"]["AccessionNumber"] == "ACC-1"
    series = document["Study"]["Series"][study.series_uid]
    assert series["DICOM"]["Modality"] == "CT"
    assert set(series["Instances"]) == set(study.sop_uids)
    instance = series["Instances"][study.sop_uids[0]]
    assert instance["DICOM"]["SOPInstanceUID"] == study.sop_uids[0]
    assert instance["DICOM"]["HighBit"] == 11  # US values are numbers, as in AWS's sample
    assert "PixelData" not in instance["DICOM"]
    (frame,) = instance["ImageFrames"]
    assert re.fullmatch(r"[0-9a-f]{32}", frame["ID"])
    assert frame["FrameSizeInBytes"] == 8 * 8 * 2


def test_a_datastore_with_image_sets_cannot_be_deleted(ahi, ahi_s3, ahi_datastore):
    put_series(ahi_s3, BUCKET, "keep/", count=1)
    run_job(ahi, ahi_datastore, "keep", "keep/")
    with pytest.raises(ClientError) as exc:
        ahi.delete_datastore(datastoreId=ahi_datastore)
    assert exc.value.response["Error"]["Code"] == "ConflictException"
