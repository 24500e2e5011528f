"""The embedded local stack: the whole pipeline in one process, no AWS account (DESIGN "The local stack").

``with LocalStack(config) as stack:`` starts moto in server mode (Step Functions execution on;
plain GetObject requests answered from its backend, local/moto_s3.py), replaces moto's
docker Lambda runner with our real handlers in worker processes (local/moto_lambda.py,
local/lambda_workers.py), starts the HealthImaging emulator,
creates the resources from the same config, function list and ASL builder the Pulumi program
uses, wires the S3 -> trigger notification on ``batches/*.json``, and starts the SCP writing to
the dicom bucket.

The stack sets the endpoints, fake credentials and the union of the functions' environments in
``os.environ`` (the handler workers inherit it; the emulator and SCP here read it) and restores
it on exit. Used by
``dicomctl dev``/``demo``, the end-to-end tests and the workflow benchmark.

Logs: every record of this process at INFO and up (the SCP's, with their fields) goes to
``<data dir>/logs/stack.jsonl`` and the Lambda workers' output to ``<data dir>/logs/lambda.jsonl``
(``log_files``); the console gets what a caller adds (``dicomctl dev`` adds one readable line per
event, local/console_log.py).
"""

from __future__ import annotations

import io
import json
import logging
import math
import os
import re
import tempfile
import urllib.request
import zipfile
from pathlib import Path
from typing import Any, TextIO

import boto3

from core.asl import build_definition
from core.config import PROJECT_NAME, StackConfig
from core.config_base import camel_name
from core.contracts import FUNCTIONS, LAMBDA_RUNTIME, POWERTOOLS_NAMES, function_environment
from core.layout import (
    BATCHES_PREFIX,
    MANIFEST_SUFFIX,
    TABLE_INDEXES,
    TABLE_PARTITION_KEY,
    TABLE_SORT_KEY,
    TTL_ATTRIBUTE,
)
from core.workflow_settings import WorkflowResources, WorkflowSettings
from local import moto_dispatch, moto_lambda, moto_s3
from local.credentials import FAKE_AWS_ENV
from local.lambda_workers import LambdaWorkers, resolve_handler
from local.moto_server import MotoServer

LOCAL_ACCOUNT = "123456789012"  # moto's default account
POWERTOOLS_ENV = {
    **POWERTOOLS_NAMES,
    "POWERTOOLS_TRACE_DISABLED": "true",  # no X-Ray daemon here
    "POWERTOOLS_METRICS_DISABLED": "true",  # no CloudWatch: keep EMF lines off the console
    "POWERTOOLS_LOG_LEVEL": "INFO",  # to logs/lambda.jsonl; the console shows warnings and up
}
LOGGER_LEVELS = {
    "scp": logging.INFO,  # associations and batches, with their fields, into logs/stack.jsonl
    "werkzeug": logging.ERROR,  # one line per moto request otherwise
    # A failed execution is logged with its whole state tree; it is visible through the
    # Step Functions API, the job table and the DLQ anyway.
    "moto.stepfunctions.parser": logging.CRITICAL,
}


def _resource_prefix(stack: str) -> str:
    slug = re.sub(r"[^a-z0-9-]+", "-", f"{PROJECT_NAME}-{stack}".lower()).strip("-")
    return slug[:40]


class LocalStack:
    """moto server + Lambda worker processes + HealthImaging emulator + SCP, created from one config."""

    def __init__(
        self,
        config: StackConfig,
        *,
        scp_port: int = 11112,
        poll_seconds: float = 1.0,
        ahi_job_seconds: float = 0.5,
        data_dir: Path | None = None,
        moto_port: int = 0,
        region: str = "us-east-1",
        ahi_start_rate_limit: float | None = None,
    ):
        """``ahi_start_rate_limit``: make the emulator enforce StartDICOMImportJob's quota (requests/s)."""
        self.config = config
        self.scp_port = scp_port
        # An ASL Wait takes whole seconds; the local stack polls at least once a second.
        self.poll_seconds = max(1, math.ceil(poll_seconds))
        self.ahi_job_seconds = ahi_job_seconds
        self.ahi_start_rate_limit = ahi_start_rate_limit
        self.moto_port = moto_port
        self.region = region
        self._data_dir = data_dir
        self._tmp: tempfile.TemporaryDirectory | None = None
        self._saved_env: dict[str, str | None] = {}
        self._logger_levels: dict[str, int] = {}
        self._server: MotoServer | None = None
        self._lambdas: LambdaWorkers | None = None
        self.ahi: Any = None
        self.scp: Any = None
        self._scp_metrics: TextIO | None = None
        self.data_dir: Path | None = None
        self.log_files: dict[str, Path] = {}
        self._log_handler: logging.Handler | None = None
        self.effective_config: dict[str, Any] = {}  # stack keys this stack sets otherwise than the config
        self.outputs: dict[str, Any] = {}
        self.environment: dict[str, str] = {}
        self.resources: WorkflowResources | None = None
        self.workflow: WorkflowSettings | None = None
        self.function_arns: dict[str, str] = {}

    # --- lifecycle -------------------------------------------------------------------------
    def __enter__(self) -> LocalStack:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def start(self) -> None:
        self._set_env(FAKE_AWS_ENV | {"AWS_DEFAULT_REGION": self.region, "AWS_REGION": self.region})
        self.data_dir = self._resolve_data_dir()
        self._start_logs()
        for name, level in LOGGER_LEVELS.items():
            logger = logging.getLogger(name)
            self._logger_levels[name] = logger.level
            logger.setLevel(level)

        moto_dispatch.install()
        self._server = MotoServer("127.0.0.1", self.moto_port, LOCAL_ACCOUNT)
        self._server.start()
        moto_url = self._server.url
        # The ASL interpreter calls Lambda at localhost:$MOTO_PORT.
        self._set_env({"MOTO_PORT": str(self._server.port)})
        # Run state machines for real (the ASL interpreter), set through the server's config API.
        self._moto_api(moto_url, "config", {"stepfunctions": {"execute_state_machine": True}})
        self._set_env({k: v for k, v in POWERTOOLS_ENV.items() if k not in os.environ})
        for spec in FUNCTIONS:  # a handler that cannot be imported fails the start, not the first batch
            resolve_handler(spec.handler)
        self._lambdas = LambdaWorkers((spec.handler for spec in FUNCTIONS), log_path=self.log_files["lambda"])
        moto_lambda.install(self._lambdas)

        from local.ahi.emulator import AhiEmulator

        self.ahi = AhiEmulator(
            s3_endpoint_url=moto_url,
            region=self.region,
            job_seconds=self.ahi_job_seconds,
            start_rate_limit=self.ahi_start_rate_limit,
            object_reader=moto_s3.object_reader(LOCAL_ACCOUNT),
        )
        ahi_url = self.ahi.start()
        self.environment = {
            "AWS_ENDPOINT_URL": moto_url,
            "AWS_ENDPOINT_URL_MEDICAL_IMAGING": ahi_url,
            "AWS_DISABLE_HOST_PREFIX_INJECTION": "true",
            "AWS_DEFAULT_REGION": self.region,
            **{k: v for k, v in FAKE_AWS_ENV.items() if k != "AWS_SESSION_TOKEN"},
        }
        self._set_env(self.environment)
        self._create_resources()
        self._lambdas.prewarm()  # after _create_resources: workers inherit the complete environment
        self._start_scp()

    def stop(self) -> None:
        """SCP first (it seals its open batches), then the emulator and moto; restore the process."""
        if self.scp is not None:
            self.scp.stop()
            self.scp = None
        if self._scp_metrics is not None:
            self._scp_metrics.close()
            self._scp_metrics = None
        if self.ahi is not None:
            self.ahi.stop()
            self.ahi = None
        if self._server is not None:
            # moto's backends and config are process-wide: leave the process as we found it.
            moto_url = self._server.url
            self._moto_api(moto_url, "config", {"stepfunctions": {"execute_state_machine": False}})
            self._moto_api(moto_url, "reset")
            self._server.stop()
            self._server = None
        if self._lambdas is not None:
            moto_lambda.uninstall(self._lambdas)
            self._lambdas.close()
            self._lambdas = None
        for name, level in self._logger_levels.items():
            logging.getLogger(name).setLevel(level)
        self._logger_levels.clear()
        if self._log_handler is not None:
            logging.getLogger().removeHandler(self._log_handler)
            self._log_handler.close()
            self._log_handler = None
        for name, value in reversed(list(self._saved_env.items())):
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        self._saved_env.clear()
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None

    # --- what callers use ------------------------------------------------------------------
    def client(self, service: str) -> Any:
        """A boto3 client for this stack (moto, or the emulator for ``medical-imaging``)."""
        return boto3.session.Session().client(service, region_name=self.region)

    def run_sweeper(self, min_age_seconds: int | None = None) -> dict[str, Any]:
        """Invoke the sweeper function now (schedules do not fire locally); returns its result.

        ``min_age_seconds`` overrides the configured age for this run (tests use 0).
        """
        event = {} if min_age_seconds is None else {"minAgeSeconds": min_age_seconds}
        response = self.client("lambda").invoke(
            FunctionName=self.function_arns["sweeper"], Payload=json.dumps(event).encode()
        )
        payload = json.loads(response["Payload"].read() or b"null")
        if response.get("FunctionError"):
            raise RuntimeError(f"sweeper failed: {payload}")
        return payload

    def restart_scp(self) -> None:
        """Stop the SCP (it seals its batches) and start a new one on the same port (tests)."""
        if self.scp is not None:
            port = self.scp.port
            self.scp.stop()
            self.scp = None
            self.scp_port = port
        if self._scp_metrics is not None:
            self._scp_metrics.close()
            self._scp_metrics = None
        self._start_scp()

    # --- internals -------------------------------------------------------------------------
    def _set_env(self, values: dict[str, str]) -> None:
        for name, value in values.items():
            self._saved_env.setdefault(name, os.environ.get(name))
            os.environ[name] = value

    def _record_effective(self, group: str, values: dict[str, Any], changed: dict[str, Any]) -> None:
        """What ``dicomctl config show`` reports for the running stack instead of the config's value."""
        self.effective_config.update({camel_name(group, name): values[name] for name in changed})

    @staticmethod
    def _moto_api(moto_url: str, path: str, body: dict[str, Any] | None = None) -> None:
        """moto's own control API (``/moto-api/config``, ``/moto-api/reset``)."""
        request = urllib.request.Request(
            f"{moto_url}/moto-api/{path}",
            data=json.dumps(body or {}).encode(),
            method="POST",
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            response.read()

    def _create_resources(self) -> None:
        prefix = _resource_prefix(self.config.stack)
        iam, s3, ddb, sqs = (self.client(s) for s in ("iam", "s3", "dynamodb", "sqs"))
        lam, sfn = self.client("lambda"), self.client("stepfunctions")

        roles = {
            name: iam.create_role(RoleName=f"{prefix}-{name}", AssumeRolePolicyDocument=_trust(service))[
                "Role"
            ]["Arn"]
            for name, service in (
                ("functions", "lambda.amazonaws.com"),
                ("workflow", "states.amazonaws.com"),
                ("import", "medical-imaging.amazonaws.com"),
            )
        }
        dicom_bucket, results_bucket = f"{prefix}-dicom", f"{prefix}-results"
        for bucket in (dicom_bucket, results_bucket):
            s3.create_bucket(Bucket=bucket)
        table = f"{prefix}-jobs"
        create_job_table(ddb, table)
        dlq_url = sqs.create_queue(QueueName=f"{prefix}-dlq")["QueueUrl"]
        datastore_id = self.ahi.create_datastore(f"{prefix}-datastore")

        state_machine_name = f"{prefix}-import"
        state_machine_arn = f"arn:aws:states:{self.region}:{LOCAL_ACCOUNT}:stateMachine:{state_machine_name}"
        self.resources = WorkflowResources(
            dicom_bucket=dicom_bucket,
            results_bucket=results_bucket,
            job_table=table,
            state_machine_arn=state_machine_arn,
            datastore_id=datastore_id,
            import_role_arn=roles["import"],
            dlq_url=dlq_url,
        )
        # Poll faster, but keep the deployed stack's total polling budget (poll x attempts).
        budget = self.config.workflow.poll_seconds * self.config.workflow.max_poll_attempts
        attempts = min(
            10_000, max(self.config.workflow.max_poll_attempts, math.ceil(budget / self.poll_seconds))
        )
        polling = {"poll_seconds": self.poll_seconds, "max_poll_attempts": attempts}
        self.workflow = self.config.workflow.model_copy(update=polling)
        self._record_effective("workflow", self.workflow.model_dump(mode="json"), polling)
        function_env = function_environment(self.resources, self.workflow, POWERTOOLS_ENV)
        # The union of the functions' environments, here too: the handler workers inherit it and
        # code in this process (CLI, tests) reads the same settings (a caller's Powertools win).
        self._set_env({k: v for k, v in function_env.items() if k not in POWERTOOLS_ENV})

        package = _placeholder_package()
        for spec in FUNCTIONS:
            self.function_arns[spec.name] = lam.create_function(
                FunctionName=spec.resource_name(prefix),
                Runtime=LAMBDA_RUNTIME,
                Role=roles["functions"],
                Handler=spec.handler,
                Code={"ZipFile": package},
                Timeout=spec.timeout_seconds,
                MemorySize=spec.memory_mb,
                Description=spec.description,
                Environment={"Variables": function_env},
            )["FunctionArn"]

        definition = build_definition(self.function_arns, self.workflow)
        created = sfn.create_state_machine(
            name=state_machine_name, definition=json.dumps(definition), roleArn=roles["workflow"]
        )["stateMachineArn"]
        if created != state_machine_arn:
            raise RuntimeError(f"state machine ARN {created} differs from the expected {state_machine_arn}")

        s3.put_bucket_notification_configuration(
            Bucket=dicom_bucket,
            NotificationConfiguration={
                "LambdaFunctionConfigurations": [
                    {
                        "LambdaFunctionArn": self.function_arns["trigger"],
                        "Events": ["s3:ObjectCreated:*"],
                        "Filter": {
                            "Key": {
                                "FilterRules": [
                                    {"Name": "prefix", "Value": BATCHES_PREFIX},
                                    {"Name": "suffix", "Value": MANIFEST_SUFFIX},
                                ]
                            }
                        },
                    }
                ]
            },
        )
        self.outputs = {
            "endpointHost": "127.0.0.1",
            "dicomPort": None,  # set once the SCP is listening
            "aeTitle": self.config.scp.ae_title,
            "dicomBucket": dicom_bucket,
            "resultsBucket": results_bucket,
            "jobTable": table,
            "stateMachineArn": state_machine_arn,
            "datastoreId": datastore_id,
            "dlqUrl": dlq_url,
            "region": self.region,
        }

    def _resolve_data_dir(self) -> Path:
        if self._data_dir is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="dicom-local-")
            return Path(self._tmp.name)
        return Path(self._data_dir)

    def _start_logs(self) -> None:
        from scp.logs import JsonFormatter

        logs = self.data_dir / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        self.log_files = {"stack": logs / "stack.jsonl", "lambda": logs / "lambda.jsonl"}
        self._log_handler = logging.FileHandler(self.log_files["stack"])
        self._log_handler.setFormatter(JsonFormatter())
        self._log_handler.setLevel(logging.INFO)
        logging.getLogger().addHandler(self._log_handler)

    def _start_scp(self) -> None:
        from scp.server import StoreScp

        spool = self.data_dir / "spool"
        spool.mkdir(parents=True, exist_ok=True)
        overrides = {
            "storage_uri": f"s3://{self.outputs['dicomBucket']}",
            "port": self.scp_port,
            "bind_address": "127.0.0.1",
            "health_port": 0,
            "spool_dir": spool,
            "journal_dir": self.data_dir / "journal",  # as deployed: acknowledged once in the journal
            "tls_enabled": False,
            "plain_enabled": True,
            "workers": 1,
            "task_id": "local",
            "commitment_table": self.outputs["jobTable"],
        }
        settings = self.config.scp.model_copy(update=overrides)
        # The SCP's CloudWatch EMF lines go to a file next to the spool instead of the console.
        self._scp_metrics = (self.data_dir / "scp-metrics.emf").open("a")
        self.scp = StoreScp(settings, stdout=self._scp_metrics)
        self.scp.start()
        self.outputs["dicomPort"] = self.scp.port
        effective = settings.model_copy(update={"port": self.scp.port, "health_port": self.scp.health_port})
        self._record_effective("scp", effective.model_dump(mode="json"), overrides)


def _trust(service: str) -> str:
    return json.dumps(
        {
            "Version": "2012-10-17",
            "Statement": [{"Effect": "Allow", "Principal": {"Service": service}, "Action": "sts:AssumeRole"}],
        }
    )


def create_job_table(ddb: Any, table: str) -> None:
    """The job table exactly as core/layout.py declares it (keys, GSIs, TTL)."""
    attributes = {TABLE_PARTITION_KEY, TABLE_SORT_KEY} | {a for pair in TABLE_INDEXES.values() for a in pair}
    ddb.create_table(
        TableName=table,
        BillingMode="PAY_PER_REQUEST",
        AttributeDefinitions=[{"AttributeName": a, "AttributeType": "S"} for a in sorted(attributes)],
        KeySchema=[
            {"AttributeName": TABLE_PARTITION_KEY, "KeyType": "HASH"},
            {"AttributeName": TABLE_SORT_KEY, "KeyType": "RANGE"},
        ],
        GlobalSecondaryIndexes=[
            {
                "IndexName": name,
                "KeySchema": [
                    {"AttributeName": pk, "KeyType": "HASH"},
                    {"AttributeName": sk, "KeyType": "RANGE"},
                ],
                "Projection": {"ProjectionType": "ALL"},
            }
            for name, (pk, sk) in TABLE_INDEXES.items()
        ],
    )
    ddb.update_time_to_live(
        TableName=table, TimeToLiveSpecification={"Enabled": True, "AttributeName": TTL_ATTRIBUTE}
    )


def _placeholder_package() -> bytes:
    """moto wants a code package; the code that runs is ours, in local workers (moto_lambda)."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("README.txt", "handlers run in local worker processes, see local/moto_lambda.py\n")
    return buffer.getvalue()
