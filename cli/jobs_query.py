"""Read side of the job table: the questions operators ask (``dicomctl status``, ``demo``, the
workflow benchmark). No Lambda function reads the table this way, so it is not in their package.

Every function takes a DynamoDB *client* and the table name and returns plain dicts (DynamoDB
types removed). Times are ISO-8601 UTC strings as written by handlers/jobs.py, so string
comparison is time order. Results are newest first where a time order applies.

- ``list_jobs_by_status(ddb, table, status, since=None, until=None, limit=50)``: by-status GSI
- ``list_jobs_by_study(ddb, table, study_uid, limit=50)``: by-study GSI, joined to the summaries
- ``list_jobs_by_calling_ae(ddb, table, ae_title, since=None, until=None, limit=50)``: by-calling-ae GSI
- ``list_recent_jobs(ddb, table, since=None, until=None, limit=50)``: every status, merged
- ``get_job(ddb, table, job_id)``: ``{"summary": {...} | None, "timeline": [...], "studies": [...]}``
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from boto3.dynamodb.types import TypeDeserializer

from core.layout import (
    BY_CALLING_AE,
    BY_STATUS,
    BY_STUDY,
    JOB_STATES,
    STUDY_SORT_KEY_PREFIX,
    SUMMARY_SORT_KEY,
    TABLE_INDEXES,
    TABLE_PARTITION_KEY,
    TABLE_SORT_KEY,
)

_deserializer = TypeDeserializer()


def plain(item: dict[str, Any]) -> dict[str, Any]:
    """A DynamoDB item -> plain Python (Decimals that are whole become ints)."""
    return {k: _simplify(_deserializer.deserialize(v)) for k, v in item.items()}


def _simplify(value: Any) -> Any:
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    if isinstance(value, dict):
        return {k: _simplify(v) for k, v in value.items()}
    if isinstance(value, list | set):
        return [_simplify(v) for v in value]
    return value


def _query(ddb: Any, limit: int, **kwargs: Any) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    paginator = ddb.get_paginator("query")
    for page in paginator.paginate(**kwargs):
        items.extend(plain(i) for i in page.get("Items", []))
        if len(items) >= limit:
            break
    return items[:limit]


def _index_range(index: str, pk_value: str, since: str | None, until: str | None):
    """Query arguments for ``index``: partition key ``pk_value``, sort key (a time) in [since, until]."""
    pk_name, sk_name = TABLE_INDEXES[index]
    names = {"#pk": pk_name, "#sk": sk_name}
    values: dict[str, Any] = {":pk": {"S": pk_value}}
    condition = "#pk = :pk"
    if since and until:
        condition += " AND #sk BETWEEN :since AND :until"
        values.update({":since": {"S": since}, ":until": {"S": until}})
    elif since:
        condition += " AND #sk >= :since"
        values[":since"] = {"S": since}
    elif until:
        condition += " AND #sk <= :until"
        values[":until"] = {"S": until}
    else:
        names.pop("#sk")
    return {
        "IndexName": index,
        "KeyConditionExpression": condition,
        "ExpressionAttributeNames": names,
        "ExpressionAttributeValues": values,
    }


def list_jobs_by_status(
    ddb: Any, table: str, status: str, since: str | None = None, until: str | None = None, limit: int = 50
) -> list[dict[str, Any]]:
    """Job summaries currently in ``status`` whose last change is within [since, until]."""
    if status not in JOB_STATES:
        raise ValueError(f"unknown status {status!r}; choose from {', '.join(JOB_STATES)}")
    return _query(
        ddb,
        limit,
        TableName=table,
        ScanIndexForward=False,
        **_index_range(BY_STATUS, status, since, until),
    )


def list_recent_jobs(
    ddb: Any, table: str, since: str | None = None, until: str | None = None, limit: int = 50
) -> list[dict[str, Any]]:
    """Job summaries of every status changed within [since, until], newest first.

    One query per status, in the order jobs move: a job that moves on between two queries is
    seen twice (never missed), and only its newest summary is kept.
    """
    newest: dict[str, dict[str, Any]] = {}
    for status in JOB_STATES:
        for job in list_jobs_by_status(ddb, table, status, since, until, limit):
            seen = newest.get(job["jobId"])
            if seen is None or job.get("updatedAt", "") >= seen.get("updatedAt", ""):
                newest[job["jobId"]] = job
    return sorted(newest.values(), key=lambda j: j.get("updatedAt", ""), reverse=True)[:limit]


def list_jobs_by_calling_ae(
    ddb: Any, table: str, ae_title: str, since: str | None = None, until: str | None = None, limit: int = 50
) -> list[dict[str, Any]]:
    """Job summaries of batches sent by ``ae_title``, created within [since, until], newest first."""
    return _query(
        ddb,
        limit,
        TableName=table,
        ScanIndexForward=False,
        **_index_range(BY_CALLING_AE, ae_title, since, until),
    )


def list_jobs_by_study(ddb: Any, table: str, study_uid: str, limit: int = 50) -> list[dict[str, Any]]:
    """Job summaries of every batch that contained ``study_uid`` (a study may span batches)."""
    refs = _query(
        ddb,
        limit,
        TableName=table,
        ScanIndexForward=False,
        **_index_range(BY_STUDY, study_uid, None, None),
    )
    job_ids = list(dict.fromkeys(r[TABLE_PARTITION_KEY] for r in refs))
    summaries = _batch_get_summaries(ddb, table, job_ids)
    return [summaries[j] for j in job_ids if j in summaries]


def _batch_get_summaries(ddb: Any, table: str, job_ids: list[str]) -> dict[str, dict[str, Any]]:
    found: dict[str, dict[str, Any]] = {}
    for start in range(0, len(job_ids), 100):
        keys = [
            {TABLE_PARTITION_KEY: {"S": j}, TABLE_SORT_KEY: {"S": SUMMARY_SORT_KEY}}
            for j in job_ids[start : start + 100]
        ]
        request = {table: {"Keys": keys}}
        while request:
            response = ddb.batch_get_item(RequestItems=request)
            for item in response.get("Responses", {}).get(table, []):
                summary = plain(item)
                found[summary[TABLE_PARTITION_KEY]] = summary
            request = response.get("UnprocessedKeys") or {}
    return found


def get_job(ddb: Any, table: str, job_id: str) -> dict[str, Any]:
    """One job: its summary (None if unknown), its audit timeline (oldest first) and its studies."""
    items = _query(
        ddb,
        10_000,
        TableName=table,
        KeyConditionExpression="#pk = :pk",
        ExpressionAttributeNames={"#pk": TABLE_PARTITION_KEY},
        ExpressionAttributeValues={":pk": {"S": job_id}},
    )
    summary = next((i for i in items if i[TABLE_SORT_KEY] == SUMMARY_SORT_KEY), None)
    studies = [i for i in items if i[TABLE_SORT_KEY].startswith(STUDY_SORT_KEY_PREFIX)]
    timeline = [i for i in items if not i[TABLE_SORT_KEY].startswith("~")]
    return {"summary": summary, "timeline": timeline, "studies": studies}
