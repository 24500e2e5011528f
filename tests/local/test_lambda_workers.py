"""The local stack's Lambda execution environments (local/lambda_workers.py), in real worker processes."""

from __future__ import annotations

import json
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from local.lambda_workers import LambdaWorkers
from local.moto_lambda import LambdaContext

FIXTURES = "tests.local.lambda_fixtures"
SLOW = f"{FIXTURES}.overruns"


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


def test_long_invocations_of_one_function_leave_workers_for_the_others(tmp_path):
    """Per-function concurrency: a burst of one slow function does not queue the quick ones."""
    pool = LambdaWorkers([f"{FIXTURES}.echo"], workers=2, per_function=1)
    markers = [tmp_path / "slow-0", tmp_path / "slow-1"]
    try:
        with ThreadPoolExecutor(max_workers=2) as callers:
            slow = [
                callers.submit(pool.invoke, SLOW, {"startedMarker": str(m)}, _context(), {}, 60)
                for m in markers
            ]
            deadline = time.monotonic() + 30
            while not markers[0].exists() and time.monotonic() < deadline:
                time.sleep(0.01)  # poll: the first slow invocation is running in a worker
            assert markers[0].exists()
            quick, errored = pool.invoke(f"{FIXTURES}.echo", {"quick": True}, _context(), {}, timeout=60)
            slow_running = not slow[0].done()
        assert not errored and json.loads(quick)["event"] == {"quick": True}
        assert slow_running  # the quick one ran while the slow one was still running
        assert not markers[1].exists() or slow[0].done()  # the second slow one waited for its slot
        assert all(json.loads(s.result()[0]) == {"finished": True} for s in slow)
    finally:
        pool.close()
