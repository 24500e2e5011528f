"""What every handler module shares: its Powertools objects (under the service name and metrics
namespace of core/contracts.py), the Lambda entry-point wrapping, and how a handler reads its
settings (lazily, from the environment the deployment wrote) and opens the job table."""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from aws_lambda_powertools import Logger, Metrics, Tracer

from core.contracts import POWERTOOLS_SERVICE, WORKFLOW_METRICS_NAMESPACE
from core.workflow_settings import ENV_PREFIX, WorkflowResources, WorkflowSettings
from handlers import aws
from handlers.jobs import JobTable


@dataclass(frozen=True)
class Environment:
    resources: WorkflowResources
    settings: WorkflowSettings

    def job_table(self) -> JobTable:
        return JobTable(aws.client("dynamodb"), self.resources.job_table, self.settings.job_ttl_days)


def environment() -> Environment:
    """Read per invocation (cheap), so a changed environment is honoured without a re-import."""
    return Environment(
        resources=WorkflowResources.from_env(os.environ, ENV_PREFIX),
        settings=WorkflowSettings.from_env(os.environ, ENV_PREFIX),
    )


def powertools() -> tuple[Logger, Metrics, Tracer]:
    """One handler module's logger, metrics and tracer, all under the workflow's service name.

    An invocation without metrics is normal here (a status poll while the import runs), so
    Powertools' warning about it is filtered, the way its documentation suggests.
    """
    warnings.filterwarnings("ignore", "No application metrics to publish*")
    return (
        Logger(service=POWERTOOLS_SERVICE),
        Metrics(namespace=WORKFLOW_METRICS_NAMESPACE, service=POWERTOOLS_SERVICE),
        Tracer(service=POWERTOOLS_SERVICE),
    )


def lambda_entry_point(logger: Logger, metrics: Metrics, tracer: Tracer) -> Callable[[Callable], Callable]:
    """The decorators every handler wears, in one order: Lambda context in the logs, metrics
    flushed at the end of the invocation, the invocation traced."""

    def wrap(function: Callable[[Any, Any], Any]) -> Callable[[Any, Any], Any]:
        return logger.inject_lambda_context(metrics.log_metrics(tracer.capture_lambda_handler(function)))

    return wrap
