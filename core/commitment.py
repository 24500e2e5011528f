"""Storage Commitment (PS3.4 Annex J) state in the job table: transactions and the instance index.

DESIGN decision 4b: an instance is committed once its import's success results list it with an
image set id. Two kinds of item live in the job table (``core/layout.py``), next to the jobs:

- ``jobId = "commitment#<TransactionUID>", ts = "~commitment"``: one N-ACTION, written by the SCP
  with a conditional put (a repeated Transaction UID is the same transaction). ``commitmentState``
  (OPEN, then COMMITTED / FAILED / UNDELIVERED) and ``dueAt`` key the by-commitment GSI: the
  reporter queries OPEN items due now, ``dicomctl status`` lists them by state; neither scans.
  A lease (``leaseOwner``/``leaseUntil``, set by a conditional update) makes exactly one SCP task
  work on a transaction at a time; every delivery attempt is appended to ``attempts``.
- ``jobId = "sop#<SOPInstanceUID>", ts = "~instance"``: the instance index. The SCP writes the SOP
  class and batch when it seals the batch (RECEIVED); ``record_results`` writes the outcome
  (COMMITTED with the image set id, or FAILED with the recorded reason) and marks the
  transactions listed in ``transactions`` due.

The DynamoDB client is passed in (the low-level boto3 client); this module imports no boto3.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from core.layout import BY_COMMITMENT, TABLE_PARTITION_KEY, TABLE_SORT_KEY, TTL_ATTRIBUTE

STORAGE_COMMITMENT_PUSH_MODEL = "1.2.840.10008.1.20.1"
STORAGE_COMMITMENT_INSTANCE = "1.2.840.10008.1.20.1.1"  # the well-known SOP instance
REQUEST_COMMITMENT_ACTION = 1
EVENT_ALL_COMMITTED, EVENT_SOME_FAILED = 1, 2

# Failure Reason (0008,1197) values, PS3.4 J.3.3.1.2
PROCESSING_FAILURE = 0x0110
NO_SUCH_OBJECT_INSTANCE = 0x0112
CLASS_INSTANCE_CONFLICT = 0x0119

OPEN, COMMITTED, FAILED, UNDELIVERED = "OPEN", "COMMITTED", "FAILED", "UNDELIVERED"
TRANSACTION_STATES = (OPEN, COMMITTED, FAILED, UNDELIVERED)
RECEIVED = "RECEIVED"  # instance outcomes: RECEIVED, then COMMITTED or FAILED
TRANSACTION_PREFIX, TRANSACTION_SORT_KEY = "commitment#", "~commitment"
INSTANCE_PREFIX, INSTANCE_SORT_KEY = "sop#", "~instance"
STATE, DUE_AT = "commitmentState", "dueAt"  # the by-commitment GSI's keys
TTL_DAYS = 30


def iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def parse_iso(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def _s(value: str) -> dict[str, str]:
    return {"S": value}


def _n(value: float) -> dict[str, str]:
    return {"N": str(int(value))}


def _conditional_failed(exc: Exception) -> bool:
    code = getattr(exc, "response", {}).get("Error", {}).get("Code", "")
    return code == "ConditionalCheckFailedException"


def _plain(item: dict[str, Any]) -> dict[str, Any]:
    """The few attribute types written here (S, N, SS, L of S) -> Python values."""
    out: dict[str, Any] = {}
    for name, value in item.items():
        if "S" in value:
            out[name] = value["S"]
        elif "N" in value:
            out[name] = int(value["N"])
        elif "SS" in value:
            out[name] = sorted(value["SS"])
        elif "L" in value:
            out[name] = [v.get("S", "") for v in value["L"]]
    return out


@dataclass(frozen=True)
class Reference:
    sop_class_uid: str
    sop_instance_uid: str


@dataclass(frozen=True)
class Failed:
    reference: Reference
    reason: int
    detail: str  # the recorded reason (audit trail and status view; the report carries the code)


@dataclass
class Resolution:
    complete: bool
    committed: list[Reference] = field(default_factory=list)
    failed: list[Failed] = field(default_factory=list)
    next_look: datetime | None = None  # when an unresolved instance times out

    @property
    def event_type(self) -> int:
        return EVENT_SOME_FAILED if self.failed else EVENT_ALL_COMMITTED


def resolve(
    references: Iterable[Reference],
    instances: dict[str, dict[str, Any]],
    *,
    now: datetime,
    unknown_at: datetime,
    deadline_at: datetime,
) -> Resolution:
    """Each reference: committed, failed with its reason, or still pending (until its timeout)."""
    result = Resolution(complete=True)
    for ref in references:
        item = instances.get(ref.sop_instance_uid)
        if item is None:
            if now >= min(unknown_at, deadline_at):
                result.failed.append(Failed(ref, NO_SUCH_OBJECT_INSTANCE, "never received"))
            else:
                result.complete = False
                result.next_look = min(filter(None, (result.next_look, unknown_at, deadline_at)))
        elif item.get("sopClassUid") and item["sopClassUid"] != ref.sop_class_uid:
            result.failed.append(
                Failed(ref, CLASS_INSTANCE_CONFLICT, f"received as SOP class {item['sopClassUid']}")
            )
        elif item.get("outcome") == COMMITTED and item.get("imageSetId"):
            result.committed.append(ref)
        elif item.get("outcome") == FAILED:
            detail = f"{item.get('stage') or 'import'}: {item.get('reason') or 'failed'}"
            result.failed.append(Failed(ref, PROCESSING_FAILURE, detail))
        elif now >= deadline_at:
            result.failed.append(Failed(ref, PROCESSING_FAILURE, "not in HealthImaging by the deadline"))
        else:
            result.complete = False
            result.next_look = min(filter(None, (result.next_look, deadline_at)))
    return result


class CommitmentTable:
    """Commitment transactions and the instance index in one DynamoDB table (see the module doc)."""

    def __init__(self, dynamodb: Any, table: str, clock: Callable[[], datetime] = lambda: datetime.now(UTC)):
        self.dynamodb = dynamodb
        self.table = table
        self.clock = clock

    @staticmethod
    def _tx_key(transaction_uid: str) -> dict[str, Any]:
        return {
            TABLE_PARTITION_KEY: _s(TRANSACTION_PREFIX + transaction_uid),
            TABLE_SORT_KEY: _s(TRANSACTION_SORT_KEY),
        }

    @staticmethod
    def _sop_key(sop_instance_uid: str) -> dict[str, Any]:
        return {
            TABLE_PARTITION_KEY: _s(INSTANCE_PREFIX + sop_instance_uid),
            TABLE_SORT_KEY: _s(INSTANCE_SORT_KEY),
        }

    def _expires(self) -> dict[str, str]:
        return _n((self.clock() + timedelta(days=TTL_DAYS)).timestamp())

    # --- transactions ---------------------------------------------------------------------
    def record_request(
        self,
        transaction_uid: str,
        references: list[Reference],
        *,
        calling_ae: str,
        task_id: str,
        unknown_seconds: float,
        deadline_seconds: float,
        delivery_seconds: float,
    ) -> bool:
        """Durably record one N-ACTION; False when the Transaction UID is already recorded."""
        now = self.clock()
        refs = [[r.sop_class_uid, r.sop_instance_uid] for r in references]
        item = {
            **self._tx_key(transaction_uid),
            "transactionUid": _s(transaction_uid),
            "requestedBy": _s(calling_ae),  # not callingAeTitle: that keys the jobs' by-calling-ae GSI
            "requestTaskId": _s(task_id),
            "references": _s(json.dumps(refs)),
            "referenceCount": _n(len(refs)),
            "requestedAt": _s(iso(now)),
            "unknownAt": _s(iso(now + timedelta(seconds=unknown_seconds))),
            "deadlineAt": _s(iso(now + timedelta(seconds=deadline_seconds))),
            "deliverBy": _s(iso(now + timedelta(seconds=deadline_seconds + delivery_seconds))),
            STATE: _s(OPEN),
            DUE_AT: _s(iso(now)),
            "attempts": {"L": []},
            TTL_ATTRIBUTE: self._expires(),
        }
        try:
            self.dynamodb.put_item(
                TableName=self.table, Item=item, ConditionExpression="attribute_not_exists(jobId)"
            )
        except Exception as exc:
            if _conditional_failed(exc):
                return False
            raise
        return True

    def get(self, transaction_uid: str) -> dict[str, Any] | None:
        found = self.dynamodb.get_item(
            TableName=self.table, Key=self._tx_key(transaction_uid), ConsistentRead=True
        ).get("Item")
        return _plain(found) if found else None

    def by_state(self, state: str, until: datetime | None = None, limit: int = 100) -> list[dict[str, Any]]:
        """Transactions in ``state`` (due no later than ``until``), by due time: a GSI Query."""
        condition, values = "#state = :state", {":state": _s(state)}
        if until is not None:
            condition += " AND #due <= :until"
            values[":until"] = _s(iso(until))
        response = self.dynamodb.query(
            TableName=self.table,
            IndexName=BY_COMMITMENT,
            KeyConditionExpression=condition,
            ExpressionAttributeNames={"#state": STATE, "#due": DUE_AT} if until else {"#state": STATE},
            ExpressionAttributeValues=values,
            Limit=limit,
        )
        return [_plain(i) for i in response.get("Items", [])]

    def claim(self, transaction_uid: str, owner: str, lease_seconds: float) -> dict[str, Any] | None:
        """Take the transaction's lease (OPEN, no live lease); the item, or None if another has it."""
        now = self.clock()
        try:
            response = self.dynamodb.update_item(
                TableName=self.table,
                Key=self._tx_key(transaction_uid),
                UpdateExpression="SET leaseOwner = :owner, leaseUntil = :until",
                ConditionExpression=(
                    "#state = :open AND (attribute_not_exists(leaseUntil) OR leaseUntil < :now)"
                ),
                ExpressionAttributeNames={"#state": STATE},
                ExpressionAttributeValues={
                    ":owner": _s(owner),
                    ":until": _s(iso(now + timedelta(seconds=lease_seconds))),
                    ":open": _s(OPEN),
                    ":now": _s(iso(now)),
                },
                ReturnValues="ALL_NEW",
            )
        except Exception as exc:
            if _conditional_failed(exc):
                return None
            raise
        return _plain(response["Attributes"])

    def release(
        self, transaction_uid: str, owner: str, *, due_at: datetime, attempt: dict[str, Any] | None = None
    ) -> None:
        """Give the lease back and look again at ``due_at`` (after a failed attempt: the backoff)."""
        self._update_leased(transaction_uid, owner, {DUE_AT: iso(due_at)}, attempt, remove_lease=True)

    def finish(
        self, transaction_uid: str, owner: str, state: str, result: dict[str, Any], attempt: dict[str, Any]
    ) -> None:
        """The report was delivered (COMMITTED / FAILED) or given up (UNDELIVERED)."""
        now = iso(self.clock())
        values = {STATE: state, DUE_AT: now, "completedAt": now, "result": json.dumps(result)}
        self._update_leased(transaction_uid, owner, values, attempt, remove_lease=True)

    def _update_leased(
        self,
        transaction_uid: str,
        owner: str,
        values: dict[str, str],
        attempt: dict[str, Any] | None,
        *,
        remove_lease: bool,
    ) -> None:
        names = {f"#a{i}": name for i, name in enumerate(values)}
        attrs: dict[str, Any] = {f":a{i}": _s(v) for i, v in enumerate(values.values())}
        sets = [f"#a{i} = :a{i}" for i in range(len(values))]
        if attempt is not None:
            sets.append("attempts = list_append(attempts, :attempt)")
            attrs[":attempt"] = {"L": [_s(json.dumps(attempt))]}
        attrs[":owner"] = _s(owner)
        expression = "SET " + ", ".join(sets) + (" REMOVE leaseOwner, leaseUntil" if remove_lease else "")
        self.dynamodb.update_item(
            TableName=self.table,
            Key=self._tx_key(transaction_uid),
            UpdateExpression=expression,
            ConditionExpression="leaseOwner = :owner",
            ExpressionAttributeNames=names,
            ExpressionAttributeValues=attrs,
        )

    def mark_due(self, transaction_uid: str) -> None:
        """An instance of this (OPEN) transaction was resolved: the reporter should look now."""
        try:
            self.dynamodb.update_item(
                TableName=self.table,
                Key=self._tx_key(transaction_uid),
                UpdateExpression="SET #due = :now",
                ConditionExpression="#state = :open",
                ExpressionAttributeNames={"#due": DUE_AT, "#state": STATE},
                ExpressionAttributeValues={":now": _s(iso(self.clock())), ":open": _s(OPEN)},
            )
        except Exception as exc:
            if not _conditional_failed(exc):
                raise

    # --- the instance index ---------------------------------------------------------------
    def link(self, transaction_uid: str, sop_instance_uids: Iterable[str]) -> None:
        """List the transaction on each referenced instance, so resolving one marks it due."""
        for uid in sop_instance_uids:
            self.dynamodb.update_item(
                TableName=self.table,
                Key=self._sop_key(uid),
                UpdateExpression=f"ADD transactions :tx SET {TTL_ATTRIBUTE} = :expires",
                ExpressionAttributeValues={":tx": {"SS": [transaction_uid]}, ":expires": self._expires()},
            )
        self.dynamodb.update_item(
            TableName=self.table,
            Key=self._tx_key(transaction_uid),
            UpdateExpression="SET linked = :yes",
            ExpressionAttributeValues={":yes": _s("yes")},
        )

    def received(self, batch_id: str, instances: Iterable[tuple[str, str]]) -> None:
        """(SOP Instance UID, SOP class) of a sealed batch: RECEIVED, waiting for the import."""
        for uid, sop_class in instances:
            self.dynamodb.update_item(
                TableName=self.table,
                Key=self._sop_key(uid),
                UpdateExpression=f"SET sopClassUid = :c, batchId = :b, outcome = :o, {TTL_ATTRIBUTE} = :e",
                ExpressionAttributeValues={
                    ":c": _s(sop_class),
                    ":b": _s(batch_id),
                    ":o": _s(RECEIVED),
                    ":e": self._expires(),
                },
            )

    def record_outcome(
        self,
        batch_id: str,
        sop_instance_uid: str,
        sop_class_uid: str,
        *,
        image_set_id: str = "",
        stage: str = "",
        reason: str = "",
    ) -> list[str]:
        """COMMITTED (with its image set id) or FAILED (stage, reason); returns the linked transactions."""
        values = {
            ":c": _s(sop_class_uid),
            ":b": _s(batch_id),
            ":o": _s(COMMITTED if image_set_id else FAILED),
            ":i": _s(image_set_id),
            ":s": _s(stage),
            ":r": _s(reason[:1000]),
            ":e": self._expires(),
        }
        response = self.dynamodb.update_item(
            TableName=self.table,
            Key=self._sop_key(sop_instance_uid),
            UpdateExpression=(
                "SET sopClassUid = :c, batchId = :b, outcome = :o, imageSetId = :i, stage = :s, "
                f"reason = :r, {TTL_ATTRIBUTE} = :e"
            ),
            ExpressionAttributeValues=values,
            ReturnValues="ALL_NEW",
        )
        return sorted(response["Attributes"].get("transactions", {}).get("SS", []))

    def instances(self, sop_instance_uids: Iterable[str]) -> dict[str, dict[str, Any]]:
        """The index items of these instances that were received (have an outcome)."""
        return {uid: item for uid, item in self.items(sop_instance_uids).items() if item.get("outcome")}

    def items(self, sop_instance_uids: Iterable[str]) -> dict[str, dict[str, Any]]:
        """The index items of these instances that exist (BatchGetItem, 100 keys a call)."""
        uids = sorted(set(sop_instance_uids))
        found: dict[str, dict[str, Any]] = {}
        for start in range(0, len(uids), 100):
            keys = [self._sop_key(u) for u in uids[start : start + 100]]
            while keys:
                response = self.dynamodb.batch_get_item(
                    RequestItems={self.table: {"Keys": keys, "ConsistentRead": True}}
                )
                for item in response.get("Responses", {}).get(self.table, []):
                    plain = _plain(item)
                    found[plain[TABLE_PARTITION_KEY].removeprefix(INSTANCE_PREFIX)] = plain
                keys = response.get("UnprocessedKeys", {}).get(self.table, {}).get("Keys", [])
        return found


def references_of(item: dict[str, Any]) -> list[Reference]:
    return [Reference(c, i) for c, i in json.loads(item.get("references") or "[]")]
