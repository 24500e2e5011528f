"""What every handler module shares: the Powertools service name and metrics namespace, and how
a handler reads its settings (lazily, from the environment the deployment wrote)."""

from __future__ import annotations

import os
from dataclasses import dataclass

from components.workflow_settings import ENV_PREFIX, WorkflowResources, WorkflowSettings

SERVICE = "dicom-ingest"
METRICS_NAMESPACE = "DicomIngest/Workflow"


@dataclass(frozen=True)
class Environment:
    resources: WorkflowResources
    settings: WorkflowSettings


def environment() -> Environment:
    """Read per invocation (cheap), so a changed environment is honoured without a re-import."""
    return Environment(
        resources=WorkflowResources.from_env(os.environ, ENV_PREFIX),
        settings=WorkflowSettings.from_env(os.environ, ENV_PREFIX),
    )
