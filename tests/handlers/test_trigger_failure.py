"""trigger (S3 event -> one execution per batch) and failure (DLQ + FAILED)."""

from __future__ import annotations

import json
from urllib.parse import quote_plus

import pytest

from cli.jobs_query import get_job
from core.asl import build_definition
from core.contracts import FUNCTIONS
from core.layout import manifest_key, new_batch_id
from core.workflow_settings import WorkflowSettings
from handlers import failure, trigger
from local.moto_lambda import LambdaContext

CONTEXT = LambdaContext(
    function_name="f", invoked_function_arn="arn:aws:lambda:us-east-1:1:function:f", memory_limit_in_mb=128
)


def _s3_event(bucket: str, *keys: str) -> dict:
    return {
        "Records": [
            {
                "eventSource": "aws:s3",
                "eventName": "ObjectCreated:Put",
                "s3": {
                    "bucket": {"name": bucket, "arn": f"arn:aws:s3:::{bucket}"},
                    "object": {"key": quote_plus(k), "size": 10},
                },
            }
            for k in keys
        ]
    }


@pytest.fixture(scope="module")
def state_machine(aws):
    iam = aws.client("iam")
    role = iam.create_role(RoleName="sfn-trigger-test", AssumeRolePolicyDocument="{}")["Role"]["Arn"]
    arns = {f.name: f"arn:aws:lambda:us-east-1:123456789012:function:{f.name}" for f in FUNCTIONS}
    definition = json.dumps(build_definition(arns, WorkflowSettings()))
    return aws.client("stepfunctions").create_state_machine(
        name="trigger-test", definition=definition, roleArn=role
    )["stateMachineArn"]


def test_one_execution_per_manifest_and_duplicates_are_no_ops(aws, state_machine, monkeypatch):
    monkeypatch.setenv("WORKFLOW_STATE_MACHINE_ARN", state_machine)
    monkeypatch.setenv("WORKFLOW_POLL_SECONDS", "3")
    batch_id = new_batch_id()
    event = _s3_event(
        aws.bucket, manifest_key(batch_id), "incoming/2026/01/01/x/y.dcm", "batches/not a batch.json"
    )
    first = trigger.handler(event, CONTEXT)["results"]
    assert first == {
        manifest_key(batch_id): "started",
        "incoming/2026/01/01/x/y.dcm": "ignored",
        "batches/not a batch.json": "ignored",
    }
    # AWS answers a repeat either ExecutionAlreadyExists or (same input, still running) the same
    # execution: either way no second execution exists.
    again = trigger.handler(_s3_event(aws.bucket, manifest_key(batch_id)), CONTEXT)["results"]
    assert again[manifest_key(batch_id)] in ("duplicate", "started")
    sfn = aws.client("stepfunctions")
    executions = sfn.list_executions(stateMachineArn=state_machine)["executions"]
    assert [e["name"] for e in executions] == [batch_id]
    started = json.loads(sfn.describe_execution(executionArn=executions[0]["executionArn"])["input"])
    assert started == {
        "batchId": batch_id,
        "bucket": aws.bucket,
        "manifestKey": manifest_key(batch_id),
        "pollSeconds": 3,
    }
    timeline = get_job(aws.client("dynamodb"), aws.table, batch_id)["timeline"]
    assert [t["status"] for t in timeline] == ["RECEIVED"]


def _failure_event(batch_id: str) -> dict:
    cause = json.dumps({"errorType": "NoValidInstances", "errorMessage": "all 3 instances failed validation"})
    return {
        "batchId": batch_id,
        "manifestKey": manifest_key(batch_id),
        "failedState": "StartImport",
        "error": {"Error": "NoValidInstances", "Cause": cause},
        "executionArn": "arn:exec",
    }


def _drain(aws) -> list[dict]:
    sqs = aws.client("sqs")
    messages = sqs.receive_message(QueueUrl=aws.dlq_url, MaxNumberOfMessages=10).get("Messages", [])
    for m in messages:
        sqs.delete_message(QueueUrl=aws.dlq_url, ReceiptHandle=m["ReceiptHandle"])
    return [json.loads(m["Body"]) for m in messages]


def test_failure_sends_the_batch_to_the_dlq_and_records_failed(aws):
    batch_id = new_batch_id()
    assert failure.handler(_failure_event(batch_id), CONTEXT) == {"dlq": True, "recorded": True}
    [message] = _drain(aws)
    assert message["batchId"] == batch_id and message["state"] == "StartImport"
    assert message["error"] == "NoValidInstances" and message["cause"] == "all 3 instances failed validation"
    summary = get_job(aws.client("dynamodb"), aws.table, batch_id)["summary"]
    assert summary["currentStatus"] == "FAILED" and summary["failedState"] == "StartImport"


def test_failure_after_a_terminal_state_still_reaches_the_dlq_but_keeps_the_status(aws):
    batch_id = new_batch_id()
    aws.jobs().record(batch_id, "COMPLETED")
    assert failure.handler(_failure_event(batch_id), CONTEXT) == {"dlq": True, "recorded": False}
    assert [m["batchId"] for m in _drain(aws)] == [batch_id]
    assert get_job(aws.client("dynamodb"), aws.table, batch_id)["summary"]["currentStatus"] == "COMPLETED"
