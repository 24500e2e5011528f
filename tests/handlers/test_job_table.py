"""The job table: forward-only conditional transitions, and the operator queries over the GSIs."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from cli.jobs_query import (
    get_job,
    list_jobs_by_calling_ae,
    list_jobs_by_status,
    list_jobs_by_study,
    list_recent_jobs,
)
from handlers.jobs import JobTable


class Clock:
    def __init__(self, start: datetime):
        self.now = start

    def __call__(self) -> datetime:
        self.now += timedelta(seconds=1)
        return self.now


@pytest.fixture
def table(aws):
    return JobTable(
        aws.client("dynamodb"), aws.table, ttl_days=30, clock=Clock(datetime(2026, 1, 1, tzinfo=UTC))
    )


def test_transitions_only_move_forward_and_replays_are_no_ops(aws, table):
    assert table.record("job-a", "RECEIVED")
    assert table.record("job-a", "SUBMITTED", summary={"importJobId": "abc"})
    assert not table.record("job-a", "SUBMITTED")  # replay
    assert not table.record("job-a", "VALIDATED")  # backwards
    assert table.record("job-a", "COMPLETED", summary={"imageSetIds": ["x"]})
    assert not table.record("job-a", "FAILED")  # a terminal state is final
    job = get_job(aws.client("dynamodb"), aws.table, "job-a")
    assert [t["status"] for t in job["timeline"]] == ["RECEIVED", "SUBMITTED", "COMPLETED"]
    summary = job["summary"]
    assert summary["currentStatus"] == "COMPLETED" and summary["importJobId"] == "abc"
    assert summary["createdAt"] == "2026-01-01T00:00:01.000Z"
    # the clock ticks once per call; the 5th call (COMPLETED) set the TTL: 30 days later
    assert summary["expiresAt"] == int(datetime(2026, 1, 31, 0, 0, 5, tzinfo=UTC).timestamp())


def test_unknown_status_is_refused(table):
    with pytest.raises(ValueError, match="unknown job status"):
        table.record("job-x", "DONE")


def test_queries_answer_the_operator_questions(aws):
    ddb = aws.client("dynamodb")
    table = JobTable(ddb, aws.table, ttl_days=30, clock=Clock(datetime(2027, 1, 1, tzinfo=UTC)))
    table.record("q-1", "VALIDATED", summary={"callingAeTitle": "CT-ROOM-1"})
    table.record_studies("q-1", {"1.2.840.1": 3})
    table.record("q-2", "VALIDATED", summary={"callingAeTitle": "MR-ROOM-2"})
    table.record_studies("q-2", {"1.2.840.1": 1, "1.2.840.2": 5})
    table.record("q-2", "FAILED")
    table.record("q-3", "RECEIVED")

    validated = list_jobs_by_status(ddb, aws.table, "VALIDATED")
    assert [j["jobId"] for j in validated] == ["q-1"]
    failed = list_jobs_by_status(
        ddb, aws.table, "FAILED", since="2027-01-01T00:00:00Z", until="2027-01-02T00:00:00Z"
    )
    assert [j["jobId"] for j in failed] == ["q-2"]
    assert list_jobs_by_status(ddb, aws.table, "FAILED", since="2027-01-02T00:00:00Z") == []
    assert sorted(j["jobId"] for j in list_jobs_by_study(ddb, aws.table, "1.2.840.1")) == ["q-1", "q-2"]
    assert [j["jobId"] for j in list_jobs_by_study(ddb, aws.table, "1.2.840.2")] == ["q-2"]
    assert [j["jobId"] for j in list_jobs_by_calling_ae(ddb, aws.table, "MR-ROOM-2")] == ["q-2"]
    recent = [j["jobId"] for j in list_recent_jobs(ddb, aws.table, since="2027-01-01T00:00:00Z")]
    assert recent == ["q-3", "q-2", "q-1"]
    assert get_job(ddb, aws.table, "nope") == {"summary": None, "timeline": [], "studies": []}
    with pytest.raises(ValueError, match="unknown status"):
        list_jobs_by_status(ddb, aws.table, "DONE")


def test_a_job_that_moves_on_while_the_recent_list_is_read_is_listed_once_with_its_newest_state(aws):
    ddb = aws.client("dynamodb")
    table = JobTable(ddb, aws.table, ttl_days=30, clock=Clock(datetime(2028, 1, 1, tzinfo=UTC)))
    table.record("moving", "SUBMITTED")

    reader = aws.client("dynamodb")  # its own client: the hooks below stay on it
    queried: list[str] = []

    def note_status(params, **_):
        queried.append(params["ExpressionAttributeValues"][":pk"]["S"])

    def complete_after_the_submitted_query(**_):
        if queried[-1] == "SUBMITTED":  # the job moves on between two of the per-status queries
            table.record("moving", "COMPLETED")

    reader.meta.events.register("provide-client-params.dynamodb.Query", note_status)
    reader.meta.events.register("after-call.dynamodb.Query", complete_after_the_submitted_query)

    jobs = list_recent_jobs(reader, aws.table, since="2028-01-01T00:00:00Z")
    assert [(j["jobId"], j["currentStatus"]) for j in jobs] == [("moving", "COMPLETED")]


def test_a_redrive_may_reopen_only_a_failed_job_and_then_moves_forward(aws, table):
    assert table.record("job-r", "SUBMITTED")
    assert table.record("job-r", "FAILED", summary={"error": "ImportJobFailed"})
    assert not table.record("job-r", "VALIDATED")  # same attempt: FAILED is final
    redrive = "job-r-redrive-1"
    assert table.record("job-r", "VALIDATED", attempt=redrive, clear=("error",))
    assert not table.record("job-r", "FAILED")  # a late event of the first attempt
    assert not table.record("job-r", "VALIDATED", attempt="job-r-redrive-2")  # only FAILED reopens
    assert table.record("job-r", "COMPLETED", attempt=redrive)
    job = get_job(aws.client("dynamodb"), aws.table, "job-r")
    assert job["summary"]["currentStatus"] == "COMPLETED" and job["summary"]["attempt"] == redrive
    assert "error" not in job["summary"]
    assert [(t["status"], t["attempt"]) for t in job["timeline"]] == [
        ("SUBMITTED", "job-r"),
        ("FAILED", "job-r"),
        ("VALIDATED", redrive),
        ("COMPLETED", redrive),
    ]
