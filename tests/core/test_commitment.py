"""Storage Commitment state: resolve() per PS3.4 J.3.3, and the table's lease and idempotency (moto)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import boto3
import pytest
from moto import mock_aws

from core.commitment import (
    CLASS_INSTANCE_CONFLICT,
    NO_SUCH_OBJECT_INSTANCE,
    PROCESSING_FAILURE,
    CommitmentTable,
    Reference,
    resolve,
)
from local.stack import create_job_table

CT = "1.2.840.10008.5.1.4.1.1.2"
NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)


def _resolve(instances, *, now=NOW, unknown_in=60, deadline_in=600, refs=None):
    refs = refs or [Reference(CT, uid) for uid in ("1.1", "1.2", "1.3", "1.4", "1.5")]
    return resolve(
        refs,
        instances,
        now=now,
        unknown_at=NOW + timedelta(seconds=unknown_in),
        deadline_at=NOW + timedelta(seconds=deadline_in),
    )


def test_each_outcome_gets_its_reason():
    result = _resolve(
        {
            "1.1": {"sopClassUid": CT, "outcome": "COMMITTED", "imageSetId": "a" * 32},
            "1.2": {
                "sopClassUid": "1.2.840.10008.5.1.4.1.1.4",
                "outcome": "COMMITTED",
                "imageSetId": "b" * 32,
            },
            "1.3": {"sopClassUid": CT, "outcome": "FAILED", "stage": "validation", "reason": "too long"},
            "1.4": {"sopClassUid": CT, "outcome": "RECEIVED"},
        },
        now=NOW + timedelta(seconds=61),
    )
    assert not result.complete  # 1.4 waits for its import until the deadline
    assert result.next_look == NOW + timedelta(seconds=600)
    assert [r.sop_instance_uid for r in result.committed] == ["1.1"]
    assert {f.reference.sop_instance_uid: (f.reason, f.detail) for f in result.failed} == {
        "1.2": (CLASS_INSTANCE_CONFLICT, "received as SOP class 1.2.840.10008.5.1.4.1.1.4"),
        "1.3": (PROCESSING_FAILURE, "validation: too long"),
        "1.5": (NO_SUCH_OBJECT_INSTANCE, "never received"),
    }


def test_committed_needs_an_image_set_id_and_the_deadline_fails_the_rest():
    waiting = {"1.1": {"sopClassUid": CT, "outcome": "COMMITTED", "imageSetId": ""}}
    refs = [Reference(CT, "1.1"), Reference(CT, "1.9")]
    early = _resolve(waiting, refs=refs)
    assert not early.complete and early.next_look == NOW + timedelta(seconds=60)
    late = _resolve(waiting, refs=refs, now=NOW + timedelta(seconds=600))
    assert late.complete and late.event_type == 2
    assert [(f.reason, f.detail) for f in late.failed] == [
        (PROCESSING_FAILURE, "not in HealthImaging by the deadline"),
        (NO_SUCH_OBJECT_INSTANCE, "never received"),
    ]


@pytest.fixture
def table():
    with mock_aws():
        ddb = boto3.client("dynamodb", region_name="us-east-1")
        create_job_table(ddb, "jobs")
        clock = {"now": NOW}
        yield CommitmentTable(ddb, "jobs", clock=lambda: clock["now"]), clock


def _request(commitments: CommitmentTable, tx: str = "1.2.3") -> bool:
    return commitments.record_request(
        tx,
        [Reference(CT, "1.1")],
        calling_ae="CT-1",
        task_id="t1",
        unknown_seconds=60,
        deadline_seconds=600,
        delivery_seconds=600,
    )


def test_a_transaction_is_recorded_once_and_leased_to_one_task(table):
    commitments, clock = table
    assert _request(commitments) is True
    assert _request(commitments) is False  # a repeated Transaction UID is the same transaction
    assert [i["transactionUid"] for i in commitments.by_state("OPEN", until=NOW)] == ["1.2.3"]
    assert commitments.claim("1.2.3", "task-a", 60) is not None
    assert commitments.claim("1.2.3", "task-b", 60) is None  # leased
    clock["now"] = NOW + timedelta(seconds=61)
    assert commitments.claim("1.2.3", "task-b", 60) is not None  # the lease expired
    commitments.finish("1.2.3", "task-b", "COMMITTED", {"eventType": 1}, {"attempt": 1})
    assert commitments.by_state("OPEN") == []
    assert commitments.get("1.2.3")["commitmentState"] == "COMMITTED"


def test_an_outcome_marks_the_linked_transactions_due(table):
    commitments, clock = table
    _request(commitments)
    claimed = commitments.claim("1.2.3", "task-a", 60)
    assert claimed is not None
    commitments.link("1.2.3", ["1.1"])
    assert commitments.instances(["1.1"]) == {}  # linked, not received yet
    commitments.release("1.2.3", "task-a", due_at=NOW + timedelta(seconds=600))
    assert commitments.by_state("OPEN", until=NOW) == []
    commitments.received("b1", [("1.1", CT)])
    assert commitments.record_outcome("b1", "1.1", CT, image_set_id="a" * 32) == ["1.2.3"]
    commitments.mark_due("1.2.3")
    assert [i["transactionUid"] for i in commitments.by_state("OPEN", until=NOW)] == ["1.2.3"]
    assert commitments.instances(["1.1"])["1.1"]["outcome"] == "COMMITTED"
