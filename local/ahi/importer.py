"""The import job runner: one scheduler thread that moves jobs through their states.

A job stays SUBMITTED for half of ``job_seconds``, then turns IN_PROGRESS and is imported (the
objects under ``inputS3Uri`` are listed and read from the S3 endpoint, image sets updated, results
written to the job's output folder), and ends COMPLETED or FAILED no earlier than ``job_seconds``
after submission. Waiting is done on a condition variable, so ``stop()`` is immediate.
Up to ``JOB_WORKERS`` jobs import at the same time (as HealthImaging runs jobs concurrently), and
a job reads its objects ``READ_WORKERS`` at a time: each read is a round trip to the S3 endpoint,
so one job at a time, one object at a time left most of the time waiting.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import posixpath
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from local.ahi.dicom_reader import InstanceRejected, ParsedInstance, read_instance
from local.ahi.faults import Faults
from local.ahi.imagesets import ImageSetCatalog
from local.ahi.output import SERVER_ERROR, FileFailure, ImportResult, split_s3_uri, write_results
from local.ahi.state import ImportJob, Registry, now_utc

log = logging.getLogger(__name__)

MAX_NESTED_FOLDERS = 10_000  # per import job (AWS HealthImaging quota)
JOB_WORKERS = 4  # import jobs running at the same time
READ_WORKERS = 8  # objects one job reads at the same time
MAX_CONCURRENT_READS = JOB_WORKERS * READ_WORKERS


# (bucket, key) -> (body, Content-Encoding); raises botocore ClientError like GetObject does.
ObjectReader = Callable[[str, str], tuple[bytes, str]]


class JobFailed(Exception):
    """The whole job fails; the message becomes ``jobProperties.message``."""


@dataclass(frozen=True)
class _Step:
    job_id: str
    finish: bool  # False: begin (SUBMITTED -> IN_PROGRESS, import); True: end the job
    status: str = ""
    message: str = ""


class JobRunner:
    def __init__(
        self,
        registry: Registry,
        catalog: ImageSetCatalog,
        faults: Faults,
        s3_client: Callable[[], Any],
        job_seconds: float,
        max_nested_folders: int = MAX_NESTED_FOLDERS,
        object_reader: ObjectReader | None = None,
    ):
        """``object_reader``: how a job reads an input object; default GetObject on the S3 endpoint."""
        self._registry = registry
        self._catalog = catalog
        self._faults = faults
        self._s3_client = s3_client
        self._s3: Any = None
        self._client_lock = threading.Lock()
        self._job_seconds = job_seconds
        self._max_folders = max_nested_folders
        self._read_object = object_reader or self._get_object
        self._queue: list[tuple[float, int, _Step]] = []
        self._sequence = itertools.count()
        self._wake = threading.Condition()
        self._stopping = False
        self._thread: threading.Thread | None = None
        self._jobs: ThreadPoolExecutor | None = None

    def start(self) -> None:
        self._stopping = False
        self._jobs = ThreadPoolExecutor(max_workers=JOB_WORKERS, thread_name_prefix="ahi-emulator-job")
        self._thread = threading.Thread(target=self._run, name="ahi-emulator-jobs", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        with self._wake:
            self._stopping = True
            self._wake.notify_all()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        if self._jobs is not None:
            self._jobs.shutdown(wait=True, cancel_futures=True)
            self._jobs = None

    def submit(self, job: ImportJob) -> None:
        self._schedule(time.monotonic() + self._job_seconds / 2, _Step(job.id, finish=False))

    def _schedule(self, due: float, step: _Step) -> None:
        with self._wake:
            heapq.heappush(self._queue, (due, next(self._sequence), step))
            self._wake.notify_all()

    def _run(self) -> None:
        while True:
            with self._wake:
                while not self._stopping and (not self._queue or self._queue[0][0] > time.monotonic()):
                    timeout = self._queue[0][0] - time.monotonic() if self._queue else None
                    self._wake.wait(timeout)
                if self._stopping:
                    return
                _, _, step = heapq.heappop(self._queue)
                jobs = self._jobs
            if jobs is not None:
                jobs.submit(self._perform_safely, step)

    def _perform_safely(self, step: _Step) -> None:
        try:
            self._perform(step)
        except Exception:  # never let one job kill the runner
            log.exception("import job %s: emulator error", step.job_id)
            self._registry.set_status(step.job_id, "FAILED", "Internal error in the HealthImaging emulator")

    def _perform(self, step: _Step) -> None:
        if step.finish:
            self._registry.set_status(step.job_id, step.status, step.message or None)
            log.info("import job %s: %s", step.job_id, step.status)
            return
        job = self._registry.job_by_id(step.job_id)
        started = time.monotonic()
        self._registry.set_status(job.id, "IN_PROGRESS")
        try:
            result = self._import(job)
            status, message = "COMPLETED", ""
            log.info(
                "import job %s: %d files, %d imported, %d failed",
                job.id,
                result.scanned,
                len(result.imported),
                len(result.failures),
            )
        except JobFailed as exc:
            status, message = "FAILED", str(exc)
        due = max(time.monotonic(), started + self._job_seconds / 2)
        self._schedule(due, _Step(job.id, finish=True, status=status, message=message))

    # --- the import itself ----------------------------------------------------------------
    def _client(self) -> Any:
        with self._client_lock:  # boto3 clients are thread-safe; build one, not one per thread
            if self._s3 is None:
                self._s3 = self._s3_client()
            return self._s3

    def _import(self, job: ImportJob) -> ImportResult:
        if job.fail_injected:
            raise JobFailed("Import job failed: failure injected by the HealthImaging emulator")
        keys = self._list_input(job.input_s3_uri)
        bucket, _ = split_s3_uri(job.input_s3_uri)
        result = ImportResult(scanned=len(keys))
        parsed: list[ParsedInstance] = []
        with ThreadPoolExecutor(max_workers=READ_WORKERS, thread_name_prefix="ahi-emulator-read") as pool:
            outcomes = list(pool.map(lambda key: self._read_or_failure(bucket, key), keys))
        for outcome in outcomes:
            if isinstance(outcome, FileFailure):
                result.failures.append(outcome)
            else:
                parsed.append(outcome)
        placed = self._catalog.import_instances(job.datastore_id, parsed, now_utc())
        result.imported = [(instance, placed[instance.sop_uid]) for instance in parsed]
        try:
            write_results(self._client(), job, result)
        except (ClientError, BotoCoreError) as exc:
            raise JobFailed(
                f"Unable to write results to outputS3Uri {job.output_s3_uri}: {_code(exc)}"
            ) from exc
        return result

    def _list_input(self, input_uri: str) -> list[str]:
        bucket, prefix = split_s3_uri(input_uri)
        keys: list[str] = []
        try:
            for page in (
                self._client().get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
            ):
                keys.extend(o["Key"] for o in page.get("Contents", []) if not o["Key"].endswith("/"))
        except (ClientError, BotoCoreError) as exc:
            raise JobFailed(f"Unable to list inputS3Uri {input_uri}: {_code(exc)}") from exc
        if not keys:
            raise JobFailed(f"No objects found under inputS3Uri {input_uri}")
        folders = {
            parent for key in keys for parent in _ancestors(posixpath.dirname(key[len(prefix) :].lstrip("/")))
        }
        if len(folders) > self._max_folders:
            raise JobFailed(
                f"inputS3Uri contains {len(folders)} nested folders: an import job supports at most "
                f"{self._max_folders}"
            )
        return keys

    def _read_or_failure(self, bucket: str, key: str) -> ParsedInstance | FileFailure:
        try:
            return self._read(bucket, key)
        except InstanceRejected as exc:
            return FileFailure(key, str(exc))
        except (ClientError, BotoCoreError) as exc:
            return FileFailure(key, f"Unable to read the object: {_code(exc)}", SERVER_ERROR)

    def _get_object(self, bucket: str, key: str) -> tuple[bytes, str]:
        response = self._client().get_object(Bucket=bucket, Key=key)
        return response["Body"].read(), response.get("ContentEncoding") or ""

    def _read(self, bucket: str, key: str) -> ParsedInstance:
        body, content_encoding = self._read_object(bucket, key)
        if "gzip" in content_encoding:
            raise InstanceRejected("Objects with gzip Content-Encoding are not supported")
        instance = read_instance(key, body)
        if self._faults.instance_fails(instance.sop_uid):
            raise InstanceRejected("Import failure injected by the HealthImaging emulator")
        return instance


def _ancestors(folder: str) -> list[str]:
    """``a/b/c`` -> [a, a/b, a/b/c]; the top of the prefix itself is not a nested folder."""
    parts = [p for p in folder.split("/") if p]
    return ["/".join(parts[: i + 1]) for i in range(len(parts))]


def _code(exc: Exception) -> str:
    if isinstance(exc, ClientError):
        return str(exc.response.get("Error", {}).get("Code", "error"))
    return type(exc).__name__
