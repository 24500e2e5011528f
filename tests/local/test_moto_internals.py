"""Smoke test of the moto internals the local stack relies on (moto pinned to 5.2.5).

If this fails after a moto upgrade, local/moto_lambda.py or local/stack.py must follow
the new names: see DESIGN.md "The local stack".
"""

from __future__ import annotations

import inspect
import json
import urllib.request

import boto3
import moto
import pytest
from botocore.exceptions import ClientError
from moto import backends, mock_aws
from moto.awslambda.models import LambdaFunction
from moto.core.config import default_user_config
from moto.dynamodb.responses import DynamoHandler
from moto.moto_server import werkzeug_app
from moto.server import ThreadedMotoServer
from moto.stepfunctions.parser.asl.component.state.exec.state_task import lambda_eval_utils
from moto.stepfunctions.parser.asl.component.state.exec.state_task.credentials import StateCredentials

from local import moto_dispatch, moto_lambda, moto_s3
from local.credentials import FAKE_AWS_ENV, LOCAL_REGION
from local.lambda_workers import LambdaWorkers
from local.stack import LOCAL_ACCOUNT


def test_moto_is_the_pinned_version():
    assert moto.__version__ == "5.2.5"


def test_lambda_invoke_goes_through_invoke_lambda_with_the_expected_signature():
    assert "_invoke_lambda" in LambdaFunction.__dict__
    assert list(inspect.signature(moto_lambda._ORIGINAL).parameters) == ["self", "event"]
    assert "_invoke_lambda(" in inspect.getsource(LambdaFunction.invoke)


def test_patch_installs_and_uninstalls_cleanly():
    original = LambdaFunction._invoke_lambda
    outer, inner = LambdaWorkers([]), LambdaWorkers([])
    moto_lambda.install(outer)
    moto_lambda.install(inner)
    try:
        assert LambdaFunction._invoke_lambda is not original
        moto_lambda.uninstall(inner)
        assert LambdaFunction._invoke_lambda is not original  # the outer stack still runs
    finally:
        moto_lambda.uninstall(inner)
        moto_lambda.uninstall(outer)
    assert LambdaFunction._invoke_lambda is original


def test_step_functions_execution_is_switched_on_through_the_server_config_api():
    assert default_user_config["stepfunctions"] == {"execute_state_machine": False}
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        host, port = server.get_host_and_port()
        body = json.dumps({"stepfunctions": {"execute_state_machine": True}}).encode()
        request = urllib.request.Request(f"http://{host}:{port}/moto-api/config", data=body, method="POST")
        urllib.request.urlopen(request, timeout=10).read()
        assert default_user_config["stepfunctions"]["execute_state_machine"] is True
        from moto.stepfunctions.responses import get_backend

        assert type(get_backend("123456789012", "us-east-1")).__name__ == "StepFunctionsParserBackend"
    finally:
        default_user_config["stepfunctions"] = {"execute_state_machine": False}
        server.stop()


def test_the_asl_interpreter_calls_lambda_on_moto_port():
    from moto.stepfunctions.parser.asl.utils import boto_client

    assert "moto_server_port()" in inspect.getsource(boto_client.boto_client_for)
    from moto.settings import moto_server_port

    assert "MOTO_PORT" in inspect.getsource(moto_server_port)


def test_the_asl_interpreter_builds_its_lambda_client_through_the_cached_name():
    source = inspect.getsource(lambda_eval_utils)
    assert (
        "boto_client_for(" in source
        and "from moto.stepfunctions.parser.asl.utils.boto_client import" in source
    )
    assert list(inspect.signature(moto_dispatch._ORIGINAL_CLIENT).parameters) == [
        "region",
        "service",
        "state_credentials",
    ]
    # moto ignores the state's credentials (fixed fake keys), so the cache may too
    body = inspect.getsource(moto_dispatch._ORIGINAL_CLIENT).split(":", 1)[1].split("\n", 1)[1]
    assert "state_credentials" not in body and 'aws_access_key_id="ak"' in body
    moto_dispatch.install()
    assert lambda_eval_utils.boto_client_for is moto_dispatch._cached_client
    role = StateCredentials(role_arn="arn:aws:iam::123456789012:role/sfn")
    first = lambda_eval_utils.boto_client_for(region="us-east-1", service="lambda", state_credentials=role)
    assert lambda_eval_utils.boto_client_for("us-east-1", "lambda") is first
    assert lambda_eval_utils.boto_client_for("eu-west-1", "lambda", role) is not first
    assert first.meta.endpoint_url.startswith("http://localhost:")


def test_dispatch_scans_moto_modules_through_the_cached_name():
    assert "backends.list_of_moto_modules()" in inspect.getsource(werkzeug_app.DomainDispatcherApplication)
    moto_dispatch.install()
    assert backends.list_of_moto_modules is moto_dispatch._cached_modules
    assert list(backends.list_of_moto_modules()) == list(moto_dispatch._ORIGINAL())
    assert "s3" in backends.list_of_moto_modules() and "dynamodb" in backends.list_of_moto_modules()


def test_the_emulator_reads_what_the_s3_api_wrote_from_the_backend(monkeypatch):
    for name, value in FAKE_AWS_ENV.items():
        monkeypatch.setenv(name, value)
    with mock_aws():
        s3 = boto3.client("s3", region_name=LOCAL_REGION)
        s3.create_bucket(Bucket="internals-bucket")
        s3.put_object(Bucket="internals-bucket", Key="a/b.dcm", Body=b"DICM-bytes", ContentEncoding="gzip")
        s3.put_object(Bucket="internals-bucket", Key="a/plain.dcm", Body=b"plain")
        read = moto_s3.object_reader(LOCAL_ACCOUNT)

        assert read("internals-bucket", "a/b.dcm") == (b"DICM-bytes", "gzip")
        assert read("internals-bucket", "a/plain.dcm") == (b"plain", "")
        with pytest.raises(ClientError) as missing_key:
            read("internals-bucket", "a/missing.dcm")
        with pytest.raises(ClientError) as missing_bucket:
            read("no-such-bucket", "a/b.dcm")
    assert missing_key.value.response["Error"]["Code"] == "NoSuchKey"
    assert missing_bucket.value.response["Error"]["Code"] == "NoSuchBucket"


def test_dynamodb_requests_are_served_one_at_a_time_so_a_failed_transaction_loses_no_writes():
    """moto's TransactWriteItems restores a copy of the table when a condition fails; without
    the lock, the writes other threads made meanwhile vanished (local/moto_dispatch.py)."""
    from concurrent.futures import ThreadPoolExecutor

    from local.credentials import local_client
    from local.moto_server import MotoServer

    moto_dispatch.install()
    assert DynamoHandler.call_action is moto_dispatch._serialized_dynamodb_action
    server = MotoServer("127.0.0.1", 0, LOCAL_ACCOUNT)
    server.start()
    try:
        ddb = local_client("dynamodb", server.url)
        ddb.create_table(
            TableName="race",
            KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}],
            AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}],
            BillingMode="PAY_PER_REQUEST",
        )
        ddb.put_item(TableName="race", Item={"pk": {"S": "existing"}})

        def put(index: int) -> None:
            ddb.put_item(TableName="race", Item={"pk": {"S": f"item-{index}"}})

        def failing_transaction(index: int) -> None:
            with pytest.raises(ClientError, match="TransactionCanceled"):
                ddb.transact_write_items(
                    TransactItems=[
                        {
                            "Put": {
                                "TableName": "race",
                                "Item": {"pk": {"S": "existing"}, "n": {"N": str(index)}},
                                "ConditionExpression": "attribute_not_exists(pk)",
                            }
                        }
                    ]
                )

        with ThreadPoolExecutor(8) as pool:
            work = [pool.submit(task, i) for i in range(300) for task in (put, failing_transaction)]
            for done in work:
                done.result()
        stored = sum(page["Count"] for page in ddb.get_paginator("scan").paginate(TableName="race"))
        assert stored == 301
    finally:
        server.stop()
