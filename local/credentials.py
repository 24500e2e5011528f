"""Credentials for everything local (moto, the HealthImaging emulator).

botocore needs some credentials to sign a request; nothing local checks them. One definition,
used by the local stack, the tests and the benchmarks.
"""

from __future__ import annotations

from typing import Any

LOCAL_REGION = "us-east-1"
FAKE_AWS_ENV = {
    "AWS_ACCESS_KEY_ID": "local",
    "AWS_SECRET_ACCESS_KEY": "local",
    "AWS_SESSION_TOKEN": "local",
}


def local_client(service: str, endpoint_url: str, region: str = LOCAL_REGION) -> Any:
    """A boto3 client for ``service`` at a local endpoint, signed with the fake credentials."""
    import boto3

    return boto3.client(
        service,
        endpoint_url=endpoint_url,
        region_name=region,
        aws_access_key_id=FAKE_AWS_ENV["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=FAKE_AWS_ENV["AWS_SECRET_ACCESS_KEY"],
    )
