"""Shared pieces of the HealthImaging emulator tests: real peers (moto S3 in server mode, the
emulator over HTTP, boto3 clients) and real DICOM Part 10 files written by pydicom."""

from __future__ import annotations

import io
import time
from dataclasses import dataclass
from typing import Any

import boto3
import numpy as np
from botocore.config import Config
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

REGION = "us-east-1"
ROLE_ARN = "arn:aws:iam::123456789012:role/HealthImagingImport"
FAKE_CREDENTIALS = {"aws_access_key_id": "testing", "aws_secret_access_key": "testing"}
TERMINAL = ("COMPLETED", "FAILED")
STATUS_ORDER = ("SUBMITTED", "IN_PROGRESS", "COMPLETED", "FAILED")


@dataclass(frozen=True)
class Study:
    study_uid: str
    series_uid: str
    sop_uids: tuple[str, ...]


def dicom_bytes(
    study_uid: str,
    series_uid: str,
    sop_uid: str,
    patient_id: str = "PAT-0001",
    series_number: int = 1,
    instance_number: int = 1,
) -> bytes:
    """A small but complete CT image as a DICOM Part 10 file."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = CTImageStorage
    meta.MediaStorageSOPInstanceUID = sop_uid
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = CTImageStorage
    ds.SOPInstanceUID = sop_uid
    ds.StudyInstanceUID = study_uid
    ds.SeriesInstanceUID = series_uid
    ds.PatientName = "TEST^PATIENT"
    ds.PatientID = patient_id
    ds.PatientBirthDate = "19700101"
    ds.PatientSex = "O"
    ds.StudyDate = "20260102"
    ds.StudyTime = "101500"
    ds.AccessionNumber = "ACC-1"
    ds.StudyID = "1"
    ds.Modality = "CT"
    ds.SeriesNumber = series_number
    ds.InstanceNumber = instance_number
    ds.Rows = 8
    ds.Columns = 8
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated = 16
    ds.BitsStored = 12
    ds.HighBit = 11
    ds.PixelRepresentation = 0
    ds.PixelData = (np.arange(64, dtype=np.uint16) * instance_number).tobytes()
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def put_series(
    s3: Any, bucket: str, prefix: str, count: int, study_uid: str | None = None, **kwargs: Any
) -> Study:
    """Write ``count`` instances of one new series under ``prefix``<study>/<series>/<sop>.dcm."""
    study_uid = study_uid or generate_uid()
    series_uid = generate_uid()
    sop_uids = tuple(generate_uid() for _ in range(count))
    for number, sop_uid in enumerate(sop_uids, start=1):
        put_instance(s3, bucket, prefix, study_uid, series_uid, sop_uid, instance_number=number, **kwargs)
    return Study(study_uid, series_uid, sop_uids)


def put_instance(
    s3: Any, bucket: str, prefix: str, study_uid: str, series_uid: str, sop_uid: str, **kwargs: Any
) -> str:
    """Write one instance at ``prefix``<study>/<series>/<sop>.dcm; return its key."""
    key = f"{prefix}{study_uid}/{series_uid}/{sop_uid}.dcm"
    s3.put_object(Bucket=bucket, Key=key, Body=dicom_bytes(study_uid, series_uid, sop_uid, **kwargs))
    return key


def medical_imaging(url: str, **config: Any) -> Any:
    """A boto3 client as the workflow builds one for the local stack."""
    return boto3.client(
        "medical-imaging",
        endpoint_url=url,
        region_name=REGION,
        config=Config(inject_host_prefix=False, **config),
        **FAKE_CREDENTIALS,
    )


def start_import(
    client: Any, datastore_id: str, token: str, input_uri: str, output_uri: str
) -> dict[str, Any]:
    return client.start_dicom_import_job(
        datastoreId=datastore_id,
        clientToken=token,
        jobName=token,
        dataAccessRoleArn=ROLE_ARN,
        inputS3Uri=input_uri,
        outputS3Uri=output_uri,
    )


def wait_for_job(
    client: Any, datastore_id: str, job_id: str, deadline_s: float = 15.0
) -> tuple[dict, list[str]]:
    """Poll GetDICOMImportJob until the job ends; return its properties and the statuses seen."""
    seen: list[str] = []
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        props = client.get_dicom_import_job(datastoreId=datastore_id, jobId=job_id)["jobProperties"]
        if not seen or seen[-1] != props["jobStatus"]:
            seen.append(props["jobStatus"])
        if props["jobStatus"] in TERMINAL:
            return props, seen
        time.sleep(0.02)  # poll interval; the deadline above bounds the wait
    raise AssertionError(f"import job {job_id} did not end within {deadline_s}s (seen {seen})")


def read_text(s3: Any, uri: str) -> str:
    bucket, _, key = uri.removeprefix("s3://").partition("/")
    return s3.get_object(Bucket=bucket, Key=key)["Body"].read().decode()
