"""Run our real Lambda handlers in place of moto's docker runner.

moto (pinned 5.2.5) executes Lambda code only in docker. Every invoke path (the Invoke API, S3
notifications, Step Functions Task states) goes through one private method,
``moto.awslambda.models.LambdaFunction._invoke_lambda(self, event) -> (payload, errored, logs)``.
Replacing it with "call the function's ``Handler`` in a worker process" (local/lambda_workers.py)
runs our handlers next to the moto server, with the function's environment and timeout.
tests/local/test_moto_internals.py fails loudly if that name moves.
"""

from __future__ import annotations

import threading
import uuid
from dataclasses import dataclass, field
from typing import Any

from moto.awslambda.models import LambdaFunction

from local.lambda_workers import LambdaWorkers

_ORIGINAL = LambdaFunction._invoke_lambda
_lock = threading.Lock()
_runners: list[LambdaWorkers] = []  # nested local stacks: the newest one runs the invocations


@dataclass
class LambdaContext:
    """The attributes of the Lambda context object our handlers and Powertools read (picklable)."""

    function_name: str
    invoked_function_arn: str
    memory_limit_in_mb: int
    function_version: str = "$LATEST"
    aws_request_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    log_group_name: str = ""
    log_stream_name: str = ""

    @staticmethod
    def get_remaining_time_in_millis() -> int:
        return 300_000


def invoke(function: LambdaFunction, event: Any) -> tuple[str, bool, str]:
    if event is None or event == "{}":
        event = {}
    context = LambdaContext(
        function_name=function.function_name,
        invoked_function_arn=function.function_arn,
        memory_limit_in_mb=int(function.memory_size),
    )
    with _lock:
        runner = _runners[-1]
    payload, errored = runner.invoke(
        function.handler, event, context, dict(function.environment_vars or {}), float(function.timeout)
    )
    return payload, errored, ""


def install(runner: LambdaWorkers) -> None:
    """Patch moto so invocations go to ``runner`` (nested local stacks stack their runners)."""
    with _lock:
        if not _runners:
            LambdaFunction._invoke_lambda = lambda self, event=None: invoke(self, event)
        _runners.append(runner)


def uninstall(runner: LambdaWorkers) -> None:
    with _lock:
        if runner in _runners:
            _runners.remove(runner)
        if not _runners:
            LambdaFunction._invoke_lambda = _ORIGINAL
