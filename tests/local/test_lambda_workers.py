"""The local stack's Lambda execution environments (cli/local/lambda_workers.py), in real worker processes."""

from __future__ import annotations

import json

import pytest

from cli.local.lambda_workers import LambdaWorkers
from cli.local.moto_lambda import LambdaContext

FIXTURES = "tests.local.lambda_fixtures"


@pytest.fixture(scope="module")
def workers():
    pool = LambdaWorkers([f"{FIXTURES}.echo"], workers=2)
    yield pool
    pool.close()


def _context() -> LambdaContext:
    return LambdaContext("fixture-fn", "arn:aws:lambda:us-east-1:123456789012:function:fixture-fn", 128)


def test_a_handler_runs_with_its_event_context_and_function_environment(workers):
    payload, errored = workers.invoke(
        f"{FIXTURES}.echo", {"batchId": "b-1"}, _context(), {"FIXTURE_SETTING": "on"}, timeout=60
    )
    assert not errored
    assert json.loads(payload) == {"event": {"batchId": "b-1"}, "function": "fixture-fn", "setting": "on"}


def test_an_exception_becomes_the_error_payload_asl_matches_on(workers):
    payload, errored = workers.invoke(f"{FIXTURES}.raises", {}, _context(), {}, timeout=60)
    assert errored
    error = json.loads(payload)
    assert error["errorType"] == "ValueError"
    assert error["errorMessage"] == "bad input: batch-1"
    assert any("raises" in line for line in error["stackTrace"])


def test_an_invocation_over_its_timeout_is_reported_as_timed_out(workers):
    payload, errored = workers.invoke(f"{FIXTURES}.overruns", {}, _context(), {}, timeout=0.2)
    assert errored
    assert json.loads(payload)["errorType"] == "Sandbox.Timedout"


def test_a_dying_worker_is_an_error_and_the_next_invocation_gets_a_new_one(workers):
    payload, errored = workers.invoke(f"{FIXTURES}.exits", {}, _context(), {}, timeout=60)
    assert errored
    assert json.loads(payload)["errorType"] == "Runtime.ExitError"

    payload, errored = workers.invoke(f"{FIXTURES}.echo", {"again": 1}, _context(), {}, timeout=60)
    assert not errored
    assert json.loads(payload)["event"] == {"again": 1}


def test_ctrl_c_in_the_terminal_neither_interrupts_a_handler_nor_kills_its_worker():
    """SIGINT reaches the whole foreground process group; the stack stops its workers itself."""
    single = LambdaWorkers([f"{FIXTURES}.interrupted"], workers=1)
    try:
        first, errored = single.invoke(f"{FIXTURES}.interrupted", {}, _context(), {}, timeout=60)
        assert not errored, first
        again, errored = single.invoke(f"{FIXTURES}.interrupted", {}, _context(), {}, timeout=60)
        assert not errored, again
        assert json.loads(again)["pid"] == json.loads(first)["pid"]
    finally:
        single.close()
