"""``dicomctl config show|validate``: the resolved stack config and outputs, checked by the shared model."""

from __future__ import annotations

import re
from typing import Annotated, Any

import typer
from rich.markup import escape

from cli import render
from cli.commands import Command, CommandGroup
from cli.context import LOCAL_STACK, AppContext, JsonOption
from cli.errors import CliError, MissingOutput
from core.config import GROUPS, config_warnings, read_stack_values
from core.config_base import camel_name
from core.layout import STACK_OUTPUTS

# What the local stack sets otherwise than the config (local/stack.py: it stores into its
# own bucket and listens on localhost); when it runs, its state file has the values.
LOCAL_OVERRIDES = {
    "scpStorageUri",
    "scpPort",
    "scpBindAddress",
    "scpHealthPort",
    "scpSpoolDir",
    "scpJournalDir",
    "scpCommitmentTable",
    "scpTlsEnabled",
    "scpPlainEnabled",
    "scpWorkers",
    "scpTaskId",
    "workflowPollSeconds",
    "workflowMaxPollAttempts",
}

app = typer.Typer(
    help="Show and validate the resolved stack configuration.", no_args_is_help=True, cls=CommandGroup
)

# Names of values that are secrets. "private" only as in a private key: private subnets and private
# IPs are addresses. A name ending in Arn names a secret (in Secrets Manager), it is not one.
SECRET_NAME = re.compile(r"secret|password|passphrase|token|credential|private_?key|pem", re.IGNORECASE)
# Absent when TLS / the dashboard / fixed NLB addresses are off, or locally.
OPTIONAL_OUTPUTS = {"tlsPort", "dashboardUrl", "endpointIps"}
MASK = "********"
LOCAL_SOURCE = "local stack"


def masked(name: str, value: Any) -> Any:
    """Secrets never reach the terminal: by name, and Pulumi ``secure:`` values whatever their name."""
    if isinstance(value, dict) and "secure" in value:
        return MASK
    if SECRET_NAME.search(name) and not name.endswith("Arn") and value not in (None, "", []):
        return MASK
    return value


def shown(value: Any) -> str:
    """A value as the human table prints it: lists (subnets, fixed addresses) comma-separated."""
    return ", ".join(str(v) for v in value) if isinstance(value, list) else str(value)


def resolved(app: AppContext) -> dict[str, dict[str, Any]]:
    """Every stack key with the value in effect and where it came from: the stack file, the
    model's default, or (``--stack local``) what the running local stack uses instead."""
    config = app.config
    try:
        explicit = set(read_stack_values(app.project_dir, app.stack))
    except Exception:  # noqa: BLE001 - the local stack may have no stack file: everything is a default
        explicit = set()
    local = app.stack == LOCAL_STACK and not app.outputs_file
    running = (app.local_state or {}).get("effectiveConfig", {}) if local else {}
    values: dict[str, dict[str, Any]] = {}
    for group in GROUPS:
        settings = getattr(config, group).model_dump(mode="json")
        for field, value in settings.items():
            key = camel_name(group, field)
            source = "stack" if key in explicit else "default"
            if key in running:
                value, source = running[key], LOCAL_SOURCE
            elif local and key in LOCAL_OVERRIDES:
                source += f" ({LOCAL_SOURCE} sets its own when it runs)"
            values[key] = {"value": masked(key, value), "source": source}
    return values


def outputs_or_reason(app: AppContext) -> tuple[dict[str, Any] | None, str | None]:
    try:
        outputs = app.outputs
    except CliError as exc:
        return None, exc.message + (f" ({exc.fix})" if exc.fix else "")
    return {k: masked(k, v) for k, v in outputs.items()}, None


@app.command("show", cls=Command)
def show(ctx: typer.Context, json_output: JsonOption = False) -> None:
    """The resolved config (stack file + defaults) and the stack outputs, secrets masked."""
    app_ctx: AppContext = ctx.obj
    values = resolved(app_ctx)
    outputs, reason = outputs_or_reason(app_ctx)
    if app_ctx.wants_json(json_output):
        app_ctx.print_json(
            {"stack": app_ctx.stack, "config": values, "outputs": outputs, "outputsUnavailable": reason}
        )
        return
    console = app_ctx.console
    rows = [
        (
            key,
            f"[{'dim' if entry['source'].startswith('default') else 'bold'}]"
            f"{escape(shown(entry['value']))}[/]",
        )
        + (entry["source"],)
        for key, entry in values.items()
    ]
    console.print(
        render.table(console, f"Config of stack {app_ctx.stack!r}", ["Key", "Value", "Source"], rows)
    )
    if outputs is None:
        console.print(f"Stack outputs unavailable: {escape(reason or '')}", soft_wrap=True)
        return
    pairs = [(key, escape(shown(value))) for key, value in outputs.items()]
    console.print(render.fields(console, "Stack outputs", pairs))


@app.command("validate", cls=Command)
def validate(
    ctx: typer.Context,
    check_outputs: Annotated[
        bool, typer.Option("--check-outputs", help="Also require every stack output the CLI reads.")
    ] = False,
    json_output: JsonOption = False,
) -> None:
    """Validate the stack config with the shared model (exit 2 with one line per bad value).

    Valid but risky choices (no alarm e-mail, a single task) are printed as warnings on stderr;
    they do not change the exit status.
    """
    app_ctx: AppContext = ctx.obj
    warnings = config_warnings(app_ctx.config)  # raises ConfigProblem with one line per bad value
    missing: list[str] = []
    if check_outputs:
        outputs = app_ctx.outputs
        missing = [k for k in STACK_OUTPUTS if k not in OPTIONAL_OUTPUTS and outputs.get(k) in (None, "")]
    if app_ctx.wants_json(json_output):
        app_ctx.print_json(
            {"stack": app_ctx.stack, "valid": not missing, "missingOutputs": missing, "warnings": warnings}
        )
    else:
        for warning in warnings:
            app_ctx.err.print(f"warning: {warning}", soft_wrap=True)
        if not missing:
            app_ctx.console.print(
                f"stack {app_ctx.stack!r}: configuration is valid" + (" and complete" * check_outputs)
            )
    if missing:
        raise MissingOutput(
            f"stack {app_ctx.stack!r} lacks outputs: {', '.join(missing)}",
            fix="run `pulumi up` for the stack, or complete the --outputs file",
        )
