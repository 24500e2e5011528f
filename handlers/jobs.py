"""Write side of the job table (layout: core/layout.py "DynamoDB job table").

Every state transition is one transaction of two writes:
- the ``~summary`` item moves to the new status, on condition that the status only moves forward
  (layout.JOB_STATES order) and never leaves a terminal state;
- an audit item ``ts = "<ISO-8601>#<STATUS>"`` records the transition with its details.
A replayed event or a retried Lambda therefore cannot move a job backwards nor write a second
audit item for the same transition: ``record`` returns False and the caller carries on.

Attribute discipline (so the sparse GSIs answer exactly their question):
- only the summary carries ``currentStatus``/``updatedAt`` (by-status) and ``callingAeTitle``
  (by-calling-ae, with ``createdAt``);
- only ``~study#<uid>`` items carry ``studyInstanceUid`` (by-study, with ``createdAt``);
- audit items carry neither.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

from boto3.dynamodb.types import TypeDeserializer, TypeSerializer
from botocore.exceptions import ClientError

from core.layout import (
    JOB_STATES,
    STUDY_SORT_KEY_PREFIX,
    SUMMARY_SORT_KEY,
    TABLE_PARTITION_KEY,
    TABLE_SORT_KEY,
    TERMINAL_STATES,
    TTL_ATTRIBUTE,
)
from handlers.errors import classify

STATUS_RANK = "statusRank"  # summary attribute: index of currentStatus in JOB_STATES
ATTEMPT = "attempt"  # summary attribute: the execution name that made the last transition
MAX_LISTED_FAILURES = 100  # per-instance failures kept on the summary (the item limit is 400 KB)

_serializer = TypeSerializer()
_deserializer = TypeDeserializer()


def now_iso(now: datetime | None = None) -> str:
    return (
        (now or datetime.now(UTC)).astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    )


def _av(value: Any) -> dict[str, Any]:
    return _serializer.serialize(_plain(value))


def _plain(value: Any) -> Any:
    """DynamoDB numbers must not be floats: store them as ints or strings."""
    if isinstance(value, float):
        return int(value) if value.is_integer() else str(value)
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items() if v is not None}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


class JobTable:
    """The job table of one deployment, with the clock and TTL policy used for every write."""

    def __init__(self, dynamodb: Any, table: str, ttl_days: int, clock=lambda: datetime.now(UTC)):
        self.dynamodb = dynamodb
        self.table = table
        self.ttl_days = ttl_days
        self.clock = clock

    def _key(self, job_id: str, sort_key: str) -> dict[str, Any]:
        return {TABLE_PARTITION_KEY: {"S": job_id}, TABLE_SORT_KEY: {"S": sort_key}}

    def record(
        self,
        job_id: str,
        status: str,
        details: Mapping[str, Any] | None = None,
        summary: Mapping[str, Any] | None = None,
        *,
        attempt: str | None = None,
        clear: tuple[str, ...] = (),
    ) -> bool:
        """Move ``job_id`` to ``status``; False when that would not move it forward (a replay).

        ``details`` go on the audit item; ``summary`` attributes are set on the summary item and
        ``clear`` ones removed from it. ``attempt`` names the execution doing the work (default:
        the job id, i.e. the original execution): within one attempt a job only moves forward; a
        new attempt (a redrive from the DLQ) may start over only from FAILED.
        """
        if status not in JOB_STATES:
            raise ValueError(f"unknown job status {status!r}; expected one of {JOB_STATES}")
        now = self.clock()
        at = now_iso(now)
        expires = int((now + timedelta(days=self.ttl_days)).timestamp())
        rank = JOB_STATES.index(status)

        names = {"#status": "currentStatus", "#rank": STATUS_RANK, "#attempt": ATTEMPT}
        values: dict[str, Any] = {
            ":status": {"S": status},
            ":rank": {"N": str(rank)},
            ":attempt": {"S": attempt or job_id},
            ":failed": {"S": "FAILED"},
            ":at": {"S": at},
            ":expires": {"N": str(expires)},
        }
        sets = [
            "#status = :status",
            "#rank = :rank",
            "#attempt = :attempt",
            "updatedAt = :at",
            "createdAt = if_not_exists(createdAt, :at)",
            f"{TTL_ATTRIBUTE} = :expires",
        ]
        for i, (name, value) in enumerate((summary or {}).items()):
            if value is None:
                continue
            names[f"#a{i}"] = name
            values[f":a{i}"] = _av(value)
            sets.append(f"#a{i} = :a{i}")
        terminal = {f":t{i}": {"S": s} for i, s in enumerate(TERMINAL_STATES)}
        values.update(terminal)
        condition = (
            "attribute_not_exists(#rank)"
            f" OR (#attempt = :attempt AND #rank < :rank AND NOT #status IN ({', '.join(terminal)}))"
            " OR (#attempt <> :attempt AND #status = :failed)"
        )
        removes = []
        for i, name in enumerate(clear):
            names[f"#c{i}"] = name
            removes.append(f"#c{i}")
        update = "SET " + ", ".join(sets) + (" REMOVE " + ", ".join(removes) if removes else "")
        audit = {
            TABLE_PARTITION_KEY: job_id,
            TABLE_SORT_KEY: f"{at}#{status}",
            "status": status,
            "at": at,
            "details": dict(details or {}),
            ATTEMPT: attempt or job_id,
            TTL_ATTRIBUTE: expires,
        }
        try:
            self.dynamodb.transact_write_items(
                TransactItems=[
                    {
                        "Update": {
                            "TableName": self.table,
                            "Key": self._key(job_id, SUMMARY_SORT_KEY),
                            "UpdateExpression": update,
                            "ConditionExpression": condition,
                            "ExpressionAttributeNames": names,
                            "ExpressionAttributeValues": values,
                        }
                    },
                    {
                        "Put": {
                            "TableName": self.table,
                            "Item": {k: _av(v) for k, v in audit.items()},
                            "ConditionExpression": "attribute_not_exists(#sk)",
                            "ExpressionAttributeNames": {"#sk": TABLE_SORT_KEY},
                        }
                    },
                ]
            )
        except ClientError as exc:
            if _condition_failed(exc):
                return False
            raise classify(exc) from exc
        return True

    def summary(self, job_id: str) -> dict[str, Any] | None:
        """The job's ``~summary`` item as plain values (None before the first transition)."""
        try:
            item = self.dynamodb.get_item(
                TableName=self.table, Key=self._key(job_id, SUMMARY_SORT_KEY), ConsistentRead=True
            ).get("Item")
        except ClientError as exc:
            raise classify(exc) from exc
        return None if item is None else {k: _deserializer.deserialize(v) for k, v in item.items()}

    def record_studies(self, job_id: str, studies: Mapping[str, int]) -> None:
        """One ``~study#<uid>`` item per study (instance count), for the by-study index. Idempotent."""
        now = self.clock()
        created = now_iso(now)
        expires = int((now + timedelta(days=self.ttl_days)).timestamp())
        for study_uid, count in studies.items():
            item = {
                TABLE_PARTITION_KEY: job_id,
                TABLE_SORT_KEY: f"{STUDY_SORT_KEY_PREFIX}{study_uid}",
                "studyInstanceUid": study_uid,
                "createdAt": created,
                "instanceCount": count,
                TTL_ATTRIBUTE: expires,
            }
            try:
                self.dynamodb.put_item(
                    TableName=self.table,
                    Item={k: _av(v) for k, v in item.items()},
                    ConditionExpression="attribute_not_exists(#sk)",
                    ExpressionAttributeNames={"#sk": TABLE_SORT_KEY},
                )
            except ClientError as exc:
                if not _condition_failed(exc):
                    raise classify(exc) from exc


def _condition_failed(exc: ClientError) -> bool:
    code = exc.response.get("Error", {}).get("Code", "")
    if code == "ConditionalCheckFailedException":
        return True
    if code == "TransactionCanceledException":
        reasons = exc.response.get("CancellationReasons") or []
        codes = {r.get("Code") for r in reasons}
        return "ConditionalCheckFailed" in codes or not reasons and "ConditionalCheckFailed" in str(exc)
    return False


def failures_for_summary(failures: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """The first MAX_LISTED_FAILURES per-instance failures (the full list lives in quarantine/)."""
    return [dict(f) for f, _ in zip(failures, range(MAX_LISTED_FAILURES), strict=False)]
