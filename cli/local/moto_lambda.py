"""Run our real Lambda handlers in-process in place of moto's docker runner.

moto (pinned 5.2.5) executes Lambda code only in docker. Every invoke path (the Invoke API, S3
notifications, Step Functions Task states) goes through one private method,
``moto.awslambda.models.LambdaFunction._invoke_lambda(self, event) -> (payload, errored, logs)``.
Replacing it with "import the function's ``Handler`` and call it" runs our handlers in the moto
server's process. tests/local/test_moto_internals.py fails loudly if that name moves.

An exception becomes the payload ``{"errorType": <class name>, "errorMessage": ...}`` with
``errored=True``, which is what ASL Retry/Catch match on, as on AWS.
"""

from __future__ import annotations

import importlib
import json
import threading
import traceback
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from moto.awslambda.models import LambdaFunction

_ORIGINAL = LambdaFunction._invoke_lambda
_lock = threading.Lock()
_installed = 0


@dataclass
class LambdaContext:
    """The attributes of the Lambda context object our handlers and Powertools read."""

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


def resolve_handler(path: str) -> Callable[[dict, Any], Any]:
    """``"handlers.trigger.handler"`` -> the callable."""
    module_name, _, attribute = path.rpartition(".")
    return getattr(importlib.import_module(module_name), attribute)


def invoke_in_process(function: LambdaFunction, event: Any) -> tuple[str, bool, str]:
    if event is None or event == "{}":
        event = {}
    context = LambdaContext(
        function_name=function.function_name,
        invoked_function_arn=function.function_arn,
        memory_limit_in_mb=int(function.memory_size),
    )
    try:
        result = resolve_handler(function.handler)(event, context)
    except Exception as exc:  # the Lambda runtime turns any exception into an error payload
        payload = {
            "errorType": type(exc).__name__,
            "errorMessage": str(exc),
            "stackTrace": traceback.format_exception(exc)[-5:],
        }
        return json.dumps(payload), True, ""
    return json.dumps(result), False, ""


def install() -> None:
    """Patch moto (reference counted: nested local stacks in one process share the patch)."""
    global _installed
    with _lock:
        if _installed == 0:
            LambdaFunction._invoke_lambda = lambda self, event=None: invoke_in_process(self, event)
        _installed += 1


def uninstall() -> None:
    global _installed
    with _lock:
        _installed = max(0, _installed - 1)
        if _installed == 0:
            LambdaFunction._invoke_lambda = _ORIGINAL
