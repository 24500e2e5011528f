"""The state machine definition, checked as data (DESIGN decision 7)."""

import json

import pytest

from core.asl import build_definition
from core.contracts import FUNCTIONS
from core.workflow_settings import WorkflowSettings

ARNS = {f.name: f"arn:aws:lambda:us-east-1:123456789012:function:{f.name}" for f in FUNCTIONS}


@pytest.fixture
def definition():
    return build_definition(ARNS, WorkflowSettings(poll_seconds=7, max_poll_attempts=9))


def _targets(state):
    yield from (c["Next"] for c in state.get("Choices", []))
    if "Default" in state:
        yield state["Default"]
    if "Next" in state:
        yield state["Next"]
    yield from (c["Next"] for c in state.get("Catch", []))


def test_every_transition_target_exists_and_every_state_is_reachable(definition):
    states = definition["States"]
    assert definition["StartAt"] in states
    for name, state in states.items():
        for target in _targets(state):
            assert target in states, f"{name} -> {target} does not exist"
    reachable, todo = set(), [definition["StartAt"]]
    while todo:
        name = todo.pop()
        if name not in reachable:
            reachable.add(name)
            todo.extend(_targets(states[name]))
    assert reachable == set(states)


def test_every_path_ends_in_succeed_or_fail(definition):
    for name, state in definition["States"].items():
        terminal = state["Type"] in ("Succeed", "Fail") or state.get("End") is True
        assert terminal or list(_targets(state)), f"{name} is a dead end"


def test_every_task_has_retry_with_backoff_and_jitter_and_a_catch_all(definition):
    tasks = {n: s for n, s in definition["States"].items() if s["Type"] == "Task"}
    assert set(tasks) == {"StartImport", "CheckStatus", "RecordResults", "RecordFailure"}
    for name, task in tasks.items():
        assert task["Resource"] in ARNS.values()
        assert task["TimeoutSeconds"] > 0
        assert task["Retry"], name
        for retrier in task["Retry"]:
            assert retrier["BackoffRate"] > 1 and retrier["JitterStrategy"] == "FULL"
            assert 0 < retrier["MaxAttempts"] <= 10 and retrier["MaxDelaySeconds"] <= 60
        assert any("States.ALL" in c["ErrorEquals"] for c in task["Catch"]), name
        # the execution name is the attempt (batch id, or a DLQ redrive's own name)
        assert task["Parameters"]["executionName.$"] == "$$.Execution.Name", name
    throttled = [r for r in tasks["StartImport"]["Retry"] if "Throttled" in r["ErrorEquals"]]
    assert throttled, "StartDICOMImportJob throttling (1 TPS) must be retried"


def test_failure_path_records_then_fails(definition):
    states = definition["States"]
    for name in ("StartImport", "CheckStatus", "RecordResults"):
        catch_target = states[name]["Catch"][0]["Next"]
        assert states[catch_target]["Type"] == "Pass"
        assert states[catch_target]["Next"] == "RecordFailure"
    assert states["RecordFailure"]["Next"] == "Failed"
    assert states["Failed"]["Type"] == "Fail"


def test_polling_is_bounded_by_attempts_and_timeout(definition):
    states = definition["States"]
    wait = states["WaitForImport"]
    assert wait["Type"] == "Wait" and wait["SecondsPath"] == "$.pollSeconds"
    bound = [c for c in states["ImportDone?"]["Choices"] if "NumericGreaterThanEquals" in c]
    expected = {"Variable": "$.poll.attempt", "NumericGreaterThanEquals": 9, "Next": "PollingExhausted"}
    assert bound == [expected]
    assert states["CheckStatus"]["Parameters"]["attempt.$"] == "States.MathAdd($.poll.attempt, 1)"
    # the only cycle is Wait -> CheckStatus -> Choice -> Wait, and the Choice bounds it
    assert definition["TimeoutSeconds"] >= 7 * 9


def test_jsonpath_only_and_serializable(definition):
    text = json.dumps(definition)
    assert "JSONata" not in text and "QueryLanguage" not in text and "{%" not in text
    assert json.loads(text) == definition


def test_builder_is_pure_and_names_missing_functions():
    settings = WorkflowSettings()
    assert build_definition(ARNS, settings) == build_definition(dict(ARNS), settings)
    with pytest.raises(ValueError, match="record_results"):
        build_definition({k: v for k, v in ARNS.items() if k != "record_results"}, settings)
