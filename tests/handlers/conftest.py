"""Real peers for the handler tests: moto in server mode and the local HealthImaging emulator,
started once per test module, with fresh buckets/table/queue per module."""

from __future__ import annotations

import os
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
import pytest
from moto.server import ThreadedMotoServer

from cli.synthetic import write_study
from handlers.jobs import JobTable
from local.ahi.emulator import AhiEmulator
from local.stack import create_job_table

REGION = "us-east-1"


@dataclass
class Aws:
    moto_url: str
    ahi: AhiEmulator
    datastore_id: str
    bucket: str
    results_bucket: str
    table: str
    dlq_url: str
    import_role_arn: str

    def client(self, service: str) -> Any:
        return boto3.session.Session().client(service, region_name=REGION)

    def jobs(self, ttl_days: int = 30) -> JobTable:
        return JobTable(self.client("dynamodb"), self.table, ttl_days)

    def env(self) -> dict[str, str]:
        return {
            "WORKFLOW_DICOM_BUCKET": self.bucket,
            "WORKFLOW_RESULTS_BUCKET": self.results_bucket,
            "WORKFLOW_JOB_TABLE": self.table,
            "WORKFLOW_DATASTORE_ID": self.datastore_id,
            "WORKFLOW_IMPORT_ROLE_ARN": self.import_role_arn,
            "WORKFLOW_DLQ_URL": self.dlq_url,
            "POWERTOOLS_TRACE_DISABLED": "true",
            "POWERTOOLS_METRICS_DISABLED": "true",
        }


@pytest.fixture(scope="module")
def aws():
    saved = dict(os.environ)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    moto_url = f"http://{host}:{port}"
    ahi = AhiEmulator(s3_endpoint_url=moto_url, region=REGION, job_seconds=0.2)
    ahi_url = ahi.start()
    os.environ.update(
        {
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_DEFAULT_REGION": REGION,
            "AWS_ENDPOINT_URL": moto_url,
            "AWS_ENDPOINT_URL_MEDICAL_IMAGING": ahi_url,
            "AWS_DISABLE_HOST_PREFIX_INJECTION": "true",
        }
    )
    suffix = uuid.uuid4().hex[:8]
    s3 = boto3.client("s3", region_name=REGION)
    bucket, results = f"dicom-{suffix}", f"results-{suffix}"
    s3.create_bucket(Bucket=bucket)
    s3.create_bucket(Bucket=results)
    table = f"jobs-{suffix}"
    create_job_table(boto3.client("dynamodb", region_name=REGION), table)
    dlq_url = boto3.client("sqs", region_name=REGION).create_queue(QueueName=f"dlq-{suffix}")["QueueUrl"]
    env = Aws(
        moto_url,
        ahi,
        ahi.create_datastore(f"ds-{suffix}"),
        bucket,
        results,
        table,
        dlq_url,
        f"arn:aws:iam::123456789012:role/import-{suffix}",
    )
    os.environ.update(env.env())
    try:
        yield env
    finally:
        ahi.stop()
        server.stop()
        os.environ.clear()
        os.environ.update(saved)


@pytest.fixture
def study(tmp_path) -> list[Path]:
    """Three small CT instances (16x16) of one fresh study."""
    return write_study(tmp_path / "study", "CT", instances=3, rows=16, cols=16)
