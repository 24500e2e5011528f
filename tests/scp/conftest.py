"""Fixtures for the SCP tests: moto in server mode, S3 buckets, SCP processes, instance files."""

from __future__ import annotations

import secrets
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from moto.server import ThreadedMotoServer

from local.credentials import local_client
from tests.scp.harness import ScpProcess


@pytest.fixture(scope="session")
def moto_endpoint() -> Iterator[str]:
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


@pytest.fixture
def s3(moto_endpoint: str):
    return local_client("s3", moto_endpoint)


@pytest.fixture
def bucket(s3) -> str:
    name = f"dicom-{secrets.token_hex(6)}"
    s3.create_bucket(Bucket=name)
    return name


@pytest.fixture
def start_scp(tmp_path: Path) -> Iterator[Callable[..., ScpProcess]]:
    """``start_scp(SCP_X=..., ...)`` -> a running ``python -m scp``; stopped after the test."""
    started: list[ScpProcess] = []

    def start(**env: str) -> ScpProcess:
        process = ScpProcess(env, tmp_path / f"scp{len(started)}")
        started.append(process)
        return process

    yield start
    for process in started:
        process.kill()
