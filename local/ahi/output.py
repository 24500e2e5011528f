"""The results an import job writes to S3, in the documented layout.

Source: AWS HealthImaging Developer Guide, "Understanding import jobs"
(https://docs.aws.amazon.com/healthimaging/latest/devguide/understanding-import-jobs.html), whose
samples show, under the job's folder ``<outputS3Uri>/<datastoreId>-DicomImport-<jobId>/``:
- ``job-output-manifest.json``: ``{"jobSummary": {jobId, datastoreId, inputS3Uri, outputS3Uri,
  successOutputS3Uri, failureOutputS3Uri, warningsOutputS3Uri, numberOfScannedFiles,
  numberOfImportedFiles, numberOfFilesWithCustomerError, numberOfFilesWithServerError,
  numberOfGeneratedImageSets, imageSetsSummary: [{imageSetId, numberOfMatchedSOPInstances}]}}``;
  public consumers also read ``imageSetsSummary[].isPrimary`` and ``imageSetVersion``, written here too;
- ``SUCCESS/success.ndjson``: ``{"inputFile": <key>, "importResponse": {"imageSetId", "isPrimary"}}``
  per imported file (``imageSetVersion`` added, as in the guide's ``warning.ndjson`` sample);
- ``FAILURE/failure.ndjson``: ``{"inputFile": <key>, "exception": {"exceptionType", "message"}}``.
``inputFile`` is the object key (the guide's samples show keys, not s3:// URIs). Choices where the
guide is silent are listed in docs/ahi-emulator.md.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from local.ahi.dicom_reader import ParsedInstance
from local.ahi.imagesets import ImageSetOutcome
from local.ahi.state import ImportJob

MANIFEST_NAME = "job-output-manifest.json"
SUCCESS_KEY = "SUCCESS/success.ndjson"
FAILURE_KEY = "FAILURE/failure.ndjson"
CUSTOMER_ERROR = "ValidationException"
SERVER_ERROR = "InternalServerException"


@dataclass(frozen=True)
class FileFailure:
    key: str
    message: str
    exception_type: str = CUSTOMER_ERROR


@dataclass
class ImportResult:
    """Everything one job did, per input file."""

    scanned: int = 0
    imported: list[tuple[ParsedInstance, ImageSetOutcome]] = field(default_factory=list)
    failures: list[FileFailure] = field(default_factory=list)

    def image_sets(self) -> list[ImageSetOutcome]:
        return list({outcome.image_set_id: outcome for _, outcome in self.imported}.values())


def split_s3_uri(uri: str) -> tuple[str, str]:
    """``s3://bucket/some/prefix`` -> ("bucket", "some/prefix")."""
    bucket, _, key = uri.removeprefix("s3://").partition("/")
    return bucket, key


def job_summary(job: ImportJob, result: ImportResult) -> dict[str, Any]:
    folder = job.output_s3_uri
    image_sets = result.image_sets()
    return {
        "jobId": job.id,
        "datastoreId": job.datastore_id,
        "inputS3Uri": job.input_s3_uri,
        "outputS3Uri": folder,
        "successOutputS3Uri": f"{folder}SUCCESS/",
        "failureOutputS3Uri": f"{folder}FAILURE/",
        "warningsOutputS3Uri": f"{folder}WARNING/",
        "numberOfScannedFiles": result.scanned,
        "numberOfImportedFiles": len(result.imported),
        "numberOfFilesWithCustomerError": sum(f.exception_type == CUSTOMER_ERROR for f in result.failures),
        "numberOfFilesWithServerError": sum(f.exception_type != CUSTOMER_ERROR for f in result.failures),
        "numberOfGeneratedImageSets": len(image_sets),
        "imageSetsSummary": [
            {
                "imageSetId": s.image_set_id,
                "imageSetVersion": s.version,
                "isPrimary": s.is_primary,
                "numberOfMatchedSOPInstances": len(s.matched),
            }
            for s in image_sets
        ],
    }


def success_lines(result: ImportResult) -> list[dict[str, Any]]:
    return [
        {
            "inputFile": instance.key,
            "importResponse": {
                "imageSetId": outcome.image_set_id,
                "imageSetVersion": outcome.version,
                "isPrimary": outcome.is_primary,
            },
        }
        for instance, outcome in result.imported
    ]


def failure_lines(result: ImportResult) -> list[dict[str, Any]]:
    return [
        {"inputFile": f.key, "exception": {"exceptionType": f.exception_type, "message": f.message}}
        for f in result.failures
    ]


def write_results(s3: Any, job: ImportJob, result: ImportResult) -> None:
    """Write both ndjson files, then the manifest last (readers poll for the manifest)."""
    bucket, folder = split_s3_uri(job.output_s3_uri)
    for key, lines in ((SUCCESS_KEY, success_lines(result)), (FAILURE_KEY, failure_lines(result))):
        body = "".join(json.dumps(line) + "\n" for line in lines)
        s3.put_object(Bucket=bucket, Key=folder + key, Body=body.encode(), ContentType="application/x-ndjson")
    manifest = json.dumps({"jobSummary": job_summary(job, result)}, indent=2)
    s3.put_object(
        Bucket=bucket, Key=folder + MANIFEST_NAME, Body=manifest.encode(), ContentType="application/json"
    )
