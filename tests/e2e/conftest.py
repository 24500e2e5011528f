"""The whole pipeline through the local stack, with real senders (dcmtk storescu, pynetdicom).

One LocalStack per test module (startup costs a few seconds); tests in a module run one after
another and find their own executions by batch id.
"""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from cli.jobs_query import get_job
from cli.synthetic import write_study
from core.config import from_flat
from local.stack import LocalStack

DEADLINE_SECONDS = 40


def local_stack(tmp_path_factory, values: dict[str, Any] | None = None) -> LocalStack:
    """The e2e local stack (fast polling and imports) from flat stack-config ``values``."""
    return LocalStack(
        from_flat(values or {}, stack="e2e"),
        scp_port=0,
        poll_seconds=1,
        ahi_job_seconds=0.2,
        data_dir=tmp_path_factory.mktemp("local-stack"),
    )


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    with local_stack(tmp_path_factory) as running:
        yield running


@pytest.fixture
def make_study(tmp_path) -> Callable[..., list[Path]]:
    counter = iter(range(1000))

    def make(instances: int = 4) -> list[Path]:
        return write_study(tmp_path / f"study{next(counter)}", "CT", instances=instances, rows=16, cols=16)

    return make


def storescu(stack: LocalStack, files: list[Path], calling_ae: str = "E2E-SCU") -> None:
    """One association with dcmtk's storescu; every instance must be acknowledged."""
    result = subprocess.run(
        [
            "storescu",
            "-aet",
            calling_ae,
            "-aec",
            stack.outputs["aeTitle"],
            stack.outputs["endpointHost"],
            str(stack.outputs["dicomPort"]),
            *map(str, files),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr


def execution_names(stack: LocalStack) -> set[str]:
    sfn = stack.client("stepfunctions")
    pages = sfn.get_paginator("list_executions").paginate(stateMachineArn=stack.outputs["stateMachineArn"])
    return {e["name"] for page in pages for e in page["executions"]}


def wait_for(predicate: Callable[[], Any], what: str, timeout: float = DEADLINE_SECONDS) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)  # polling interval, not synchronization
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def new_executions(stack: LocalStack, before: set[str], count: int) -> list[str]:
    return sorted(
        wait_for(
            lambda: (
                (execution_names(stack) - before) if len(execution_names(stack) - before) >= count else None
            ),
            f"{count} new execution(s)",
        )
    )


def finished(stack: LocalStack, batch_id: str) -> dict[str, Any]:
    """Wait until the execution named ``batch_id`` ends; returns describe_execution."""
    sfn = stack.client("stepfunctions")
    arn = stack.outputs["stateMachineArn"].replace(":stateMachine:", ":execution:") + f":{batch_id}"

    def done():
        described = sfn.describe_execution(executionArn=arn)
        return described if described["status"] != "RUNNING" else None

    return wait_for(done, f"execution {batch_id} to finish")


def job(stack: LocalStack, batch_id: str) -> dict[str, Any]:
    return get_job(stack.client("dynamodb"), stack.outputs["jobTable"], batch_id)


def history(stack: LocalStack, execution_arn: str) -> list[dict[str, Any]]:
    return stack.client("stepfunctions").get_execution_history(executionArn=execution_arn)["events"]


def dlq_messages(stack: LocalStack) -> list[dict[str, Any]]:
    sqs = stack.client("sqs")
    found = sqs.receive_message(QueueUrl=stack.outputs["dlqUrl"], MaxNumberOfMessages=10).get("Messages", [])
    return [json.loads(m["Body"]) for m in found]
