"""The whole stack's configuration: every settings group under one model.

Readers:
- ``__main__.py`` passes ``pulumi.Config()`` values for ``flat_keys()`` to ``from_flat``;
- the CLI reads ``Pulumi.yaml`` + ``Pulumi.<stack>.yaml`` with ``load_stack``;
- the SCP container and the Lambdas read their own groups from the environment the Pulumi
  program wrote with ``Settings.to_env``.
Stack config keys are flat camelCase ``<group><Field>`` (``scpAeTitle``, ``serviceTaskCpu``),
so ``pulumi config set scpAeTitle MY-AE`` works without ``--path``.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict

from components.config_base import ConfigError, Settings, camel_name
from components.scp_settings import ScpSettings
from components.workflow_settings import WorkflowSettings

PROJECT_NAME = "dicom-ingest"

# group prefix -> settings model. Further groups (network, storage, service, ...) are added here.
GROUPS: dict[str, type[Settings]] = {
    "scp": ScpSettings,
    "workflow": WorkflowSettings,
}


class StackConfig(BaseModel):
    model_config = ConfigDict(frozen=True)

    stack: str
    scp: ScpSettings
    workflow: WorkflowSettings


def flat_keys() -> dict[str, tuple[str, str]]:
    """Every stack config key -> (group, field)."""
    return {
        camel_name(group, field): (group, field)
        for group, model in GROUPS.items()
        for field in model.model_fields
    }


def from_flat(values: Mapping[str, Any], stack: str, source: str = "stack config") -> StackConfig:
    """Build the stack config from flat keys; every bad or unknown key is reported at once."""
    keys = flat_keys()
    grouped: dict[str, dict[str, Any]] = {group: {} for group in GROUPS}
    problems: list[str] = []
    for key, value in values.items():
        if key not in keys:
            problems.append(f"{key}: unknown config key (see Pulumi.yaml for the declared keys)")
            continue
        group, field = keys[key]
        grouped[group][field] = value
    built: dict[str, Settings] = {}
    for group, model in GROUPS.items():
        try:
            built[group] = model.build(grouped[group], source, lambda f, g=group: camel_name(g, f))
        except ConfigError as exc:
            problems.extend(exc.problems)
    if problems:
        raise ConfigError(source, problems)
    return StackConfig(stack=stack, **built)


def read_stack_values(project_dir: Path, stack: str) -> dict[str, Any]:
    """The project's own keys from ``Pulumi.<stack>.yaml`` (namespace stripped, secrets kept as-is)."""
    path = project_dir / f"Pulumi.{stack}.yaml"
    if not path.is_file():
        known = sorted(p.name[len("Pulumi.") : -len(".yaml")] for p in project_dir.glob("Pulumi.*.yaml"))
        raise ConfigError(
            str(path),
            [f"no stack file for stack {stack!r}; known stacks: {', '.join(known) or 'none'}"],
        )
    document = yaml.safe_load(path.read_text()) or {}
    config = document.get("config") or {}
    prefix = f"{PROJECT_NAME}:"
    return {k[len(prefix) :]: v for k, v in config.items() if k.startswith(prefix)}


def load_stack(project_dir: Path, stack: str) -> StackConfig:
    """What the Pulumi program would read for ``stack``, without the Pulumi CLI."""
    values = read_stack_values(project_dir, stack)
    return from_flat(values, stack, source=f"Pulumi.{stack}.yaml")
