"""Take two per-request costs and one data race out of moto (pinned 5.2.5).

1. moto server routes every request in ``DomainDispatcherApplication.get_application`` while
   holding one lock for the whole server, and in there calls ``moto.backends.list_of_moto_modules()``,
   which lists moto's package folder and stats each of its ~200 entries, on every request. Under
   the workflow's load requests queued on that lock: it was the largest single cost in the
   workflow benchmark's profile (docs/benchmarks/workflow.md). The folder does not change while
   the process runs, so the scan's result is computed once and reused.
2. The Step Functions interpreter builds a new boto3 Lambda client (loading botocore's service
   model and endpoint rules: tens of ms of CPU) for every Task it runs; with ten executions polling
   every second that was a steady share of a core. The client is thread-safe and its settings
   depend only on (region, service, moto's port), so one is kept per key. (The first version
   of this cache skipped calls that carry state credentials, which every Task call does: it
   never hit.)
3. DynamoDB ``TransactWriteItems`` deep-copies the tables it touches and, if any of its
   conditions fails, puts that copy back: every write other threads made in between is lost
   (under the workflow benchmark's load whole jobs vanished from the job table: our writes are
   conditional, so failed conditions are routine). The copy is also taken without a lock and
   failed with "dictionary changed size during iteration" (a 500) when a write landed. DynamoDB
   on AWS has neither problem, so the local stack serves one DynamoDB request at a time; each
   takes a few ms of CPU under the GIL anyway.

tests/local/test_moto_internals.py fails loudly if the names patched here move.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable
from typing import Any

from moto import backends
from moto.dynamodb.responses import DynamoHandler
from moto.settings import moto_server_port
from moto.stepfunctions.parser.asl.component.state.exec.state_task import lambda_eval_utils

_ORIGINAL = backends.list_of_moto_modules
_ORIGINAL_CLIENT = lambda_eval_utils.boto_client_for
_ORIGINAL_DYNAMODB_ACTION = DynamoHandler.call_action
_lock = threading.Lock()
_modules: tuple[str, ...] | None = None
_clients: dict[tuple[str, str, str], Any] = {}
_dynamodb_lock = threading.Lock()


def _cached_modules() -> Iterable[str]:
    global _modules
    if _modules is None:
        with _lock:
            if _modules is None:
                _modules = tuple(_ORIGINAL())
    return _modules


def _cached_client(region: str, service: str, state_credentials: Any = None) -> Any:
    # The interpreter passes the state's credentials (the state machine's role) on every call;
    # moto's boto_client_for ignores them (fixed fake keys), so they are not part of the key.
    key = (region, service, str(moto_server_port()))
    with _lock:
        if key not in _clients:
            _clients[key] = _ORIGINAL_CLIENT(region, service)
        return _clients[key]


def _serialized_dynamodb_action(self: DynamoHandler) -> Any:
    with _dynamodb_lock:
        return _ORIGINAL_DYNAMODB_ACTION(self)


def install() -> None:
    """Idempotent; never removed: the replacements answer what the originals do (the DynamoDB one
    only one request at a time)."""
    backends.list_of_moto_modules = _cached_modules
    lambda_eval_utils.boto_client_for = _cached_client
    DynamoHandler.call_action = _serialized_dynamodb_action
