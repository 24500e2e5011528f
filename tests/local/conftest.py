"""Fixtures of the HealthImaging ahi_emulator tests (tests/local/test_ahi_*.py): moto S3 in server
mode, one ahi_emulator per test module, and a fresh datastore per test."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from moto.server import ThreadedMotoServer
from pydicom.uid import generate_uid

from local.ahi.emulator import AhiEmulator
from tests.local.ahi_support import FAKE_CREDENTIALS, REGION, medical_imaging


@pytest.fixture(scope="module")
def ahi_s3_url() -> Iterator[str]:
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


@pytest.fixture(scope="module")
def ahi_s3(ahi_s3_url: str) -> Any:
    client = boto3.client("s3", endpoint_url=ahi_s3_url, region_name=REGION, **FAKE_CREDENTIALS)
    for bucket in ("dicom-input", "ahi-results"):
        client.create_bucket(Bucket=bucket)
    return client


@pytest.fixture(scope="module")
def ahi_emulator(ahi_s3_url: str) -> Iterator[AhiEmulator]:
    emu = AhiEmulator(s3_endpoint_url=ahi_s3_url, region=REGION, job_seconds=0.2)
    emu.start()
    yield emu
    emu.stop()


@pytest.fixture
def ahi(ahi_emulator: AhiEmulator) -> Iterator[Any]:
    """A client of the module's ahi_emulator, with faults cleared after each test."""
    yield medical_imaging(ahi_emulator.start(), retries={"total_max_attempts": 1})
    ahi_emulator.reset_faults()


@pytest.fixture
def ahi_datastore(ahi: Any, request: pytest.FixtureRequest) -> str:
    """A fresh datastore per test, created through the real CreateDatastore API."""
    name = re.sub(r"[^A-Za-z0-9.-]", "-", request.node.name)[:60]
    return ahi.create_datastore(datastoreName=name, clientToken=generate_uid().replace(".", "")[-60:])[
        "datastoreId"
    ]
