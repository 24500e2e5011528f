"""The emulator's API surface, driven through boto3 (and raw HTTP where the wire matters):
routes vs. botocore's model, validation, not-found, idempotency, throttling, configuration by env."""

from __future__ import annotations

import json
import re
import urllib.error
import urllib.request

import boto3
import botocore.session
import pytest
from botocore.exceptions import ClientError

from local.ahi.emulator import AhiEmulator
from local.ahi.errors import ValidationError
from tests.local.ahi_support import (
    FAKE_CREDENTIALS,
    REGION,
    ROLE_ARN,
    medical_imaging,
    start_import,
)

# The operations the brief asks for, plus ListImageSetVersions (versions are kept anyway).
CLAIMED = {
    "CreateDatastore",
    "GetDatastore",
    "ListDatastores",
    "DeleteDatastore",
    "StartDICOMImportJob",
    "GetDICOMImportJob",
    "ListDICOMImportJobs",
    "SearchImageSets",
    "GetImageSet",
    "GetImageSetMetadata",
    "ListImageSetVersions",
}
SOME_ID = "0123456789abcdef0123456789abcdef"
INPUT = "s3://dicom-input/api/"
OUTPUT = "s3://ahi-results/api/"


def raw(url: str, method: str, path: str, body: bytes | None = None) -> tuple[int, dict[str, str], bytes]:
    request = urllib.request.Request(url + path, data=body, method=method)
    try:
        with urllib.request.urlopen(request) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as error:
        return error.code, dict(error.headers), error.read()


def error_code(exc: pytest.ExceptionInfo[ClientError]) -> str:
    return exc.value.response["Error"]["Code"]


# --- routes -----------------------------------------------------------------------------------
def test_every_model_operation_is_routed_and_exactly_the_claimed_ones_are_served(ahi_emulator):
    """Each operation of botocore's model, addressed by its own method + URI template, reaches
    the emulator handler for it (claimed) or a clear NotImplementedException (the others)."""
    model = botocore.session.get_session().get_service_model("medical-imaging")
    assert CLAIMED <= set(model.operation_names)
    served, unserved = set(), set()
    for name in model.operation_names:
        http = model.operation_model(name).http
        path = re.sub(r"\{[^}]+\}", SOME_ID, http["requestUri"].split("?")[0])
        status, headers, _ = raw(
            ahi_emulator.start(), http["method"], path, b"{}" if http["method"] == "POST" else None
        )
        code = headers.get("x-amzn-ErrorType", "")
        assert code != "UnknownOperationException", f"{name}: {http['method']} {path} not routed"
        (unserved if code == "NotImplementedException" else served).add(name)
    assert served == CLAIMED
    assert unserved == set(model.operation_names) - CLAIMED


# --- datastores -------------------------------------------------------------------------------
def test_datastore_lifecycle_through_the_api(ahi, ahi_emulator):
    created = ahi.create_datastore(datastoreName="lifecycle", clientToken="create-lifecycle")
    assert re.fullmatch(r"[0-9a-z]{32}", created["datastoreId"])
    assert created["datastoreStatus"] == "ACTIVE"
    again = ahi.create_datastore(datastoreName="lifecycle", clientToken="create-lifecycle")
    assert again["datastoreId"] == created["datastoreId"]  # idempotent on clientToken

    props = ahi.get_datastore(datastoreId=created["datastoreId"])["datastoreProperties"]
    assert props["datastoreName"] == "lifecycle"
    assert props["datastoreArn"].endswith(f":datastore/{created['datastoreId']}")
    listed = ahi.list_datastores(datastoreStatus="ACTIVE")["datastoreSummaries"]
    assert created["datastoreId"] in {d["datastoreId"] for d in listed}

    with pytest.raises(ValidationError, match="datastoreName"):
        ahi_emulator.create_datastore("no spaces or_underscores")
    direct = ahi_emulator.create_datastore("direct")
    assert ahi.get_datastore(datastoreId=direct)["datastoreProperties"]["datastoreName"] == "direct"

    deleted = ahi.delete_datastore(datastoreId=created["datastoreId"])
    assert deleted["datastoreStatus"] == "DELETING"
    with pytest.raises(ClientError) as exc:
        ahi.get_datastore(datastoreId=created["datastoreId"])
    assert error_code(exc) == "ResourceNotFoundException"


def test_unknown_resources_are_resource_not_found_with_404(ahi, ahi_datastore):
    with pytest.raises(ClientError) as exc:
        ahi.get_datastore(datastoreId=SOME_ID)
    assert error_code(exc) == "ResourceNotFoundException"
    assert exc.value.response["ResponseMetadata"]["HTTPStatusCode"] == 404
    for call in (
        lambda: ahi.get_dicom_import_job(datastoreId=ahi_datastore, jobId=SOME_ID),
        lambda: ahi.get_image_set(datastoreId=ahi_datastore, imageSetId=SOME_ID),
        lambda: ahi.get_image_set_metadata(datastoreId=ahi_datastore, imageSetId=SOME_ID),
        lambda: ahi.list_dicom_import_jobs(datastoreId=SOME_ID),
        lambda: start_import(ahi, SOME_ID, "no-such-datastore", INPUT, OUTPUT),
    ):
        with pytest.raises(ClientError) as exc:
            call()
        assert error_code(exc) == "ResourceNotFoundException"


# --- validation (what botocore's client-side validation does not check) ---------------------
def test_bad_client_token_pattern_is_a_validation_exception(ahi, ahi_datastore, ahi_emulator):
    before = ahi_emulator.start_import_calls
    with pytest.raises(ClientError) as exc:
        start_import(ahi, ahi_datastore, "batch id with spaces!", INPUT, OUTPUT)
    assert error_code(exc) == "ValidationException"
    assert exc.value.response["ResponseMetadata"]["HTTPStatusCode"] == 400
    message = exc.value.response["Error"]["Message"]
    assert "'clientToken'" in message
    assert "Member must satisfy regular expression pattern: [A-Za-z0-9._-]+" in message
    assert ahi_emulator.start_import_calls == before


def test_max_results_out_of_range_is_a_validation_exception(ahi, ahi_datastore):
    with pytest.raises(ClientError) as exc:
        ahi.list_dicom_import_jobs(datastoreId=ahi_datastore, maxResults=51)
    assert error_code(exc) == "ValidationException"
    assert "Value '51' at 'maxResults'" in exc.value.response["Error"]["Message"]
    assert "less than or equal to 50" in exc.value.response["Error"]["Message"]
    with pytest.raises(ClientError) as exc:
        ahi.search_image_sets(datastoreId=ahi_datastore, maxResults=500)
    assert error_code(exc) == "ValidationException"


def test_unknown_enum_values_are_validation_exceptions(ahi, ahi_datastore):
    with pytest.raises(ClientError) as exc:
        ahi.list_dicom_import_jobs(datastoreId=ahi_datastore, jobStatus="DONE")
    assert error_code(exc) == "ValidationException"
    assert (
        "Member must satisfy enum value set: [SUBMITTED, IN_PROGRESS, COMPLETED, FAILED]"
        in (exc.value.response["Error"]["Message"])
    )
    with pytest.raises(ClientError) as exc:
        ahi.search_image_sets(
            datastoreId=ahi_datastore,
            searchCriteria={"filters": [{"operator": "LIKE", "values": [{"DICOMPatientId": "x"}]}]},
        )
    assert error_code(exc) == "ValidationException"
    with pytest.raises(ClientError) as exc:
        ahi.create_datastore(datastoreName="x", clientToken="enum-check", losslessStorageFormat="PNG")
    assert error_code(exc) == "ValidationException"


def test_uri_patterns_lengths_and_s3_uris_are_validated(ahi, ahi_datastore):
    with pytest.raises(ClientError) as exc:
        ahi.get_datastore(datastoreId="NOT-A-DATASTORE-ID")
    assert error_code(exc) == "ValidationException"
    with pytest.raises(ClientError) as exc:
        ahi.start_dicom_import_job(
            datastoreId=ahi_datastore,
            clientToken="x" * 65,
            dataAccessRoleArn=ROLE_ARN,
            inputS3Uri="https://not-ahi_s3/",
            outputS3Uri=OUTPUT,
        )
    assert error_code(exc) == "ValidationException"
    message = exc.value.response["Error"]["Message"]
    assert message.startswith("2 validation errors detected:")
    assert "'clientToken'" in message and "'inputS3Uri'" in message
    with pytest.raises(ClientError) as exc:
        ahi.start_dicom_import_job(
            datastoreId=ahi_datastore,
            clientToken="role-check",
            dataAccessRoleArn="arn:aws:iam::123:user/not-a-role",
            inputS3Uri=INPUT,
            outputS3Uri=OUTPUT,
        )
    assert "'dataAccessRoleArn'" in exc.value.response["Error"]["Message"]


def test_error_wire_format_is_what_boto3_parses(ahi_emulator, ahi_datastore):
    status, headers, body = raw(
        ahi_emulator.start(),
        "POST",
        f"/startDICOMImportJob/datastore/{ahi_datastore}",
        json.dumps({"clientToken": "bad token"}).encode(),
    )
    assert status == 400
    assert headers["x-amzn-ErrorType"] == "ValidationException"
    assert headers["Content-Type"] == "application/json"
    message = json.loads(body)["message"]
    assert (
        "Value null at 'dataAccessRoleArn' failed to satisfy constraint: Member must not be null" in message
    )


# --- idempotency ------------------------------------------------------------------------------
def test_same_client_token_returns_the_same_job_and_counts_once(ahi, ahi_datastore, ahi_emulator):
    before_calls, before_jobs = ahi_emulator.start_import_calls, len(ahi_emulator.jobs)
    first = start_import(ahi, ahi_datastore, "batch-0001", INPUT, OUTPUT)
    second = start_import(ahi, ahi_datastore, "batch-0001", INPUT, OUTPUT)
    assert re.fullmatch(r"[0-9a-z]{32}", first["jobId"])
    assert second["jobId"] == first["jobId"]
    assert second["submittedAt"] == first["submittedAt"]
    assert ahi_emulator.start_import_calls == before_calls + 1
    assert len(ahi_emulator.jobs) == before_jobs + 1
    listed = ahi.list_dicom_import_jobs(datastoreId=ahi_datastore)["jobSummaries"]
    assert [j["jobId"] for j in listed] == [first["jobId"]]

    with pytest.raises(ClientError) as exc:  # same token, different request
        start_import(ahi, ahi_datastore, "batch-0001", "s3://dicom-input/other/", OUTPUT)
    assert error_code(exc) == "ConflictException"
    assert exc.value.response["ResponseMetadata"]["HTTPStatusCode"] == 409


# --- throttling -------------------------------------------------------------------------------
def test_injected_throttling_returns_429_throttling_exception(ahi, ahi_datastore, ahi_emulator):
    before = ahi_emulator.start_import_calls
    ahi_emulator.inject(throttle_next_starts=2)
    for _ in range(2):
        with pytest.raises(ClientError) as exc:
            start_import(ahi, ahi_datastore, "throttled-batch", INPUT, OUTPUT)
        assert error_code(exc) == "ThrottlingException"
        assert exc.value.response["ResponseMetadata"]["HTTPStatusCode"] == 429
    assert ahi_emulator.start_import_calls == before
    start_import(ahi, ahi_datastore, "throttled-batch", INPUT, OUTPUT)
    assert ahi_emulator.start_import_calls == before + 1


def test_boto3_retries_through_injected_throttling(ahi_emulator, ahi_datastore):
    retrying = medical_imaging(ahi_emulator.start(), retries={"max_attempts": 5, "mode": "standard"})
    before = ahi_emulator.start_import_calls
    ahi_emulator.inject(throttle_next_starts=1)
    response = start_import(retrying, ahi_datastore, "retried-batch", INPUT, OUTPUT)
    assert response["ResponseMetadata"]["RetryAttempts"] == 1
    assert ahi_emulator.start_import_calls == before + 1


def test_faults_can_be_injected_over_http(ahi, ahi_datastore, ahi_emulator):
    status, _, _ = raw(
        ahi_emulator.start(), "POST", "/_emulator/faults", json.dumps({"throttle_next_starts": 1}).encode()
    )
    assert status == 200
    with pytest.raises(ClientError) as exc:
        start_import(ahi, ahi_datastore, "http-fault", INPUT, OUTPUT)
    assert error_code(exc) == "ThrottlingException"
    raw(ahi_emulator.start(), "POST", "/_emulator/faults", json.dumps({"throttle_next_starts": 3}).encode())
    status, _, _ = raw(ahi_emulator.start(), "DELETE", "/_emulator/faults")
    assert status == 200
    start_import(ahi, ahi_datastore, "http-fault", INPUT, OUTPUT)


def test_optional_token_bucket_throttles_start_import_beyond_the_burst(ahi_s3_url):
    limited = AhiEmulator(s3_endpoint_url=ahi_s3_url, region=REGION, job_seconds=0.1, start_rate_limit=0.05)
    with limited as emu:
        client = medical_imaging(emu.start(), retries={"total_max_attempts": 1})
        store = emu.create_datastore("rate-limited")
        start_import(client, store, "burst-1", INPUT, OUTPUT)
        start_import(client, store, "burst-2", INPUT, OUTPUT)
        with pytest.raises(ClientError) as exc:
            start_import(client, store, "burst-3", INPUT, OUTPUT)
        assert error_code(exc) == "ThrottlingException"
        assert emu.start_import_calls == 2


# --- configuration the way the local stack hands it to handlers -------------------------------
def test_env_configured_client_reaches_runtime_operations(ahi_emulator, ahi_datastore, monkeypatch):
    monkeypatch.setenv("AWS_ENDPOINT_URL_MEDICAL_IMAGING", ahi_emulator.start())
    monkeypatch.setenv("AWS_DISABLE_HOST_PREFIX_INJECTION", "true")
    client = boto3.client("medical-imaging", region_name=REGION, **FAKE_CREDENTIALS)
    result = client.search_image_sets(datastoreId=ahi_datastore)  # a runtime- host prefix operation
    assert result["imageSetsMetadataSummaries"] == []
    assert (
        client.get_datastore(datastoreId=ahi_datastore)["datastoreProperties"]["datastoreStatus"] == "ACTIVE"
    )
