"""A local AWS HealthImaging (``medical-imaging``) for the embedded stack and the tests.

No emulator of HealthImaging exists anywhere installable; this one speaks the real REST-JSON API
(routes, members and constraints derived at run time from botocore's service model), reads DICOM
from an S3 endpoint (moto in server mode locally), groups instances into image sets and writes the
documented job output layout. boto3 reaches it with::

    AWS_ENDPOINT_URL_MEDICAL_IMAGING=<url>  AWS_DISABLE_HOST_PREFIX_INJECTION=true

(or ``endpoint_url=<url>`` and ``Config(inject_host_prefix=False)``). See docs/ahi-emulator.md.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import boto3
from botocore.config import Config

from local.ahi.faults import Faults, TokenBucket
from local.ahi.http import ApiServer
from local.ahi.imagesets import ImageSetCatalog
from local.ahi.importer import MAX_CONCURRENT_READS, MAX_NESTED_FOLDERS, JobRunner, ObjectReader
from local.ahi.model import ApiModel
from local.ahi.operations import Operations
from local.ahi.state import Registry

__all__ = ["AhiEmulator"]


class AhiEmulator:
    """The emulator: a threaded HTTP server on 127.0.0.1 plus one import job runner thread."""

    def __init__(
        self,
        s3_endpoint_url: str | None = None,
        region: str = "us-east-1",
        job_seconds: float = 0.5,
        start_rate_limit: float | None = None,
        max_nested_folders: int = MAX_NESTED_FOLDERS,
        object_reader: ObjectReader | None = None,
    ):
        """``job_seconds``: how long a job stays SUBMITTED/IN_PROGRESS before it ends.
        ``start_rate_limit``: StartDICOMImportJob requests per second (burst 2) like the real
        quota; None (default) for no limit. ``max_nested_folders``: the per-job folder quota.
        ``object_reader``: how jobs read input objects when not through the S3 endpoint (the
        local stack reads moto's backend directly: local/moto_s3.py)."""
        self.s3_endpoint_url = s3_endpoint_url
        self.region = region
        self._faults = Faults()
        self._registry = Registry(region)
        self._catalog = ImageSetCatalog(self._registry.arn_prefix)
        self._runner = JobRunner(
            self._registry,
            self._catalog,
            self._faults,
            self._s3_client,
            job_seconds,
            max_nested_folders,
            object_reader,
        )
        bucket = TokenBucket(start_rate_limit) if start_rate_limit else None
        self._operations = Operations(self._registry, self._catalog, self._runner, self._faults, bucket)
        self._api = ApiModel()
        self._server = ApiServer(self._api, self._operations.handlers, self._faults)
        self.url: str | None = None

    # --- lifecycle ------------------------------------------------------------------------
    def start(self) -> str:
        """Start serving; returns the base URL (``http://127.0.0.1:<ephemeral port>``)."""
        if self.url is None:
            self._runner.start()
            self.url = f"http://127.0.0.1:{self._server.start()}"
        return self.url

    def stop(self) -> None:
        """Stop the HTTP server and the job runner and join their threads."""
        self._server.stop()
        self._runner.stop()
        self.url = None

    def __enter__(self) -> AhiEmulator:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # --- direct access (also reachable through the API) -----------------------------------
    def create_datastore(self, name: str) -> str:
        """Create an ACTIVE datastore and return its id (same as the CreateDatastore API).

        The name is validated like CreateDatastore's ``datastoreName`` (``[A-Za-z0-9._/#-]+``,
        1-256 characters); a bad name raises ``ValidationError``."""
        operation = self._api.service.operation_model("CreateDatastore")
        self._api.validate(operation, {"datastoreName": name, "clientToken": "create-datastore"})
        datastore, _ = self._registry.create_datastore(name)
        return datastore.id

    def inject(
        self,
        fail_instances: Iterable[str] | None = None,
        fail_next_jobs: int | None = None,
        throttle_next_starts: int | None = None,
    ) -> None:
        """Add faults: SOP Instance UIDs that fail per file in every later job, a number of next
        import jobs that end FAILED, a number of next StartDICOMImportJob calls throttled."""
        self._faults.inject(fail_instances, fail_next_jobs, throttle_next_starts)

    def reset_faults(self) -> None:
        self._faults.reset()

    @property
    def start_import_calls(self) -> int:
        """StartDICOMImportJob calls accepted (not throttled, not an idempotent replay)."""
        return self._operations.start_import_calls

    @property
    def jobs(self) -> list[dict[str, Any]]:
        """``jobProperties`` of every import job, in submission order."""
        return [job.properties() for job in self._registry.jobs()]

    # --- internals ------------------------------------------------------------------------
    def _s3_client(self) -> Any:
        """The S3 client jobs read input and write results with (built in the runner thread)."""
        session = boto3.session.Session()
        credentials: dict[str, str] = {}
        if session.get_credentials() is None:  # moto accepts any credentials
            credentials = {"aws_access_key_id": "testing", "aws_secret_access_key": "testing"}
        return session.client(
            "s3",
            endpoint_url=self.s3_endpoint_url,
            region_name=self.region,
            config=Config(
                s3={"addressing_style": "path"},
                retries={"max_attempts": 3, "mode": "standard"},
                max_pool_connections=MAX_CONCURRENT_READS,  # one kept-alive connection per reader
            ),
            **credentials,
        )
