"""dicomctl: operate the DICOM gateway into AWS HealthImaging (console script ``cli.main:app``).

The global options build one ``AppContext``; each command group lives in its own module. Errors
are caught once, here, at the command boundary: our own ``CliError`` types and the AWS/network
errors we can explain become one message and a documented exit code (tracebacks only with
``--verbose``).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Any

import typer
from typer import TyperException

from cli import config_cmd, demo, dev, dlq, echo, executions, load, send, status
from cli.commands import Command, CommandGroup
from cli.context import LOCAL_STACK, AppContext
from cli.errors import (
    EXIT_USAGE,
    CliError,
    ConfigProblem,
    Interrupted,
    OperationFailed,
    Unreachable,
    UsageProblem,
    error_document,
)


def _translate(exc: Exception) -> CliError | None:
    """AWS SDK errors we can explain in one line; anything else stays a bug (traceback)."""
    from botocore.exceptions import (
        ClientError,
        EndpointConnectionError,
        NoCredentialsError,
        NoRegionError,
        ProfileNotFound,
    )

    if isinstance(exc, EndpointConnectionError):
        return Unreachable(
            f"cannot reach the AWS endpoint {exc.kwargs.get('endpoint_url', '')}",
            fix="check --endpoint-url / --region, your network, or that `dicomctl dev` is still running",
        )
    if isinstance(exc, NoCredentialsError | ProfileNotFound):
        return ConfigProblem(str(exc), fix="pass --profile NAME or set AWS credentials in the environment")
    if isinstance(exc, NoRegionError):
        return ConfigProblem("no AWS region configured", fix="pass --region or set AWS_DEFAULT_REGION")
    if isinstance(exc, ClientError):
        error = exc.response.get("Error", {})
        return OperationFailed(
            f"AWS {exc.operation_name} failed: {error.get('Code', '?')}: {error.get('Message', '')}",
            fix="check --stack/--region point at the deployed stack and your credentials may call it",
        )
    return None


ARGV = "dicomctl.argv"  # ctx.meta key: the arguments as given, to tell whether --json was asked for
TRUE_WORDS = ("1", "true", "yes", "on")


def _wants_json(ctx: Any, app_ctx: AppContext) -> bool:
    """``--json`` anywhere (global or on the command), or DICOMCTL_JSON: even when parsing failed."""
    if app_ctx.json or os.environ.get("DICOMCTL_JSON", "").lower() in TRUE_WORDS:
        return True
    argv = ctx.meta.get(ARGV, [])
    return "--json" in argv[: argv.index("--")] if "--" in argv else "--json" in argv


class BoundaryGroup(CommandGroup):
    """The top-level group: every subcommand runs inside ``invoke``, so this is the error boundary.

    With ``--json`` every outcome is one JSON document on stdout: the command's result, or
    ``{"ok": false, "error": {type, message, fix, exitCode, meaning}}`` (the result with an
    ``error`` member when a command printed one and then failed); a stream ends with an error
    line. People get the message and the fix on stderr either way.
    """

    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:
        ctx.meta[ARGV] = list(args)
        try:
            return super().parse_args(ctx, args)
        except TyperException as exc:  # a bad global option; Typer prints the usage message
            self._json_usage_error(ctx, exc)
            raise

    def invoke(self, ctx: Any):
        try:
            result = super().invoke(ctx)
        except KeyboardInterrupt:
            error: CliError | None = Interrupted("interrupted")
        except TyperException as exc:  # no such command, a bad option of the command
            self._json_usage_error(ctx, exc)
            raise
        except Exception as exc:  # the boundary: explain what we can, re-raise the rest (typer.Exit, bugs)
            error = exc if isinstance(exc, CliError) else _translate(exc)
            if error is None:
                raise
        else:
            _app_context(ctx).emit_document()
            return result
        app_ctx = _app_context(ctx)
        if not isinstance(error, Interrupted):
            if app_ctx.verbose:
                app_ctx.err.print_exception()
            app_ctx.err.print(f"[bold red]Error:[/] {error.message}", markup=True, soft_wrap=True)
            if error.fix:
                app_ctx.err.print(f"[bold]Fix:[/] {error.fix}", markup=True, soft_wrap=True)
        if _wants_json(ctx, app_ctx):
            app_ctx.emit_document(error_document(error))
        raise typer.Exit(error.exit_code) from None

    @staticmethod
    def _json_usage_error(ctx: Any, exc: TyperException) -> None:
        app_ctx = _app_context(ctx)
        if _wants_json(ctx, app_ctx):
            problem = UsageProblem(
                exc.format_message(), fix="see `dicomctl --help` or `dicomctl COMMAND --help`"
            )
            problem.exit_code = getattr(exc, "exit_code", EXIT_USAGE)
            app_ctx.emit_document(error_document(problem))


def _app_context(ctx: Any) -> AppContext:
    if not isinstance(ctx.obj, AppContext):  # failed before the global options were read
        ctx.obj = AppContext()
    return ctx.obj


app = typer.Typer(
    cls=BoundaryGroup,
    name="dicomctl",
    help="Operate the DICOM gateway into AWS HealthImaging: send, check, follow, and run it locally.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


@app.callback()
def main(
    ctx: typer.Context,
    stack: Annotated[
        str, typer.Option(envvar="DICOMCTL_STACK", help="Stack whose config and outputs to use.")
    ] = LOCAL_STACK,
    region: Annotated[str | None, typer.Option(envvar="DICOMCTL_REGION", help="AWS region.")] = None,
    profile: Annotated[str | None, typer.Option(envvar="DICOMCTL_PROFILE", help="AWS profile.")] = None,
    endpoint_url: Annotated[
        str | None, typer.Option(envvar="DICOMCTL_ENDPOINT_URL", help="AWS endpoint URL (e.g. moto).")
    ] = None,
    outputs: Annotated[
        Path | None,
        typer.Option(
            envvar="DICOMCTL_OUTPUTS",
            help="JSON file of stack outputs (when the Pulumi CLI is not installed).",
        ),
    ] = None,
    project_dir: Annotated[
        Path, typer.Option(envvar="DICOMCTL_PROJECT_DIR", help="Directory holding Pulumi.yaml.")
    ] = Path("."),
    json_output: Annotated[
        bool, typer.Option("--json", envvar="DICOMCTL_JSON", help="Machine-readable JSON on stdout.")
    ] = False,
    verbose: Annotated[
        bool, typer.Option("--verbose", "-v", envvar="DICOMCTL_VERBOSE", help="Show tracebacks.")
    ] = False,
) -> None:
    ctx.obj = AppContext(
        stack=stack,
        region=region,
        profile=profile,
        endpoint_url=endpoint_url,
        outputs_file=outputs,
        project_dir=project_dir.resolve(),
        json=json_output,
        verbose=verbose,
    )


app.command("send", cls=Command)(send.send)
app.command("load", cls=Command)(load.load)
app.command("echo", cls=Command)(echo.echo)
app.command("status", cls=Command)(status.status)
app.add_typer(executions.app, name="executions")
app.add_typer(dlq.app, name="dlq")
app.add_typer(config_cmd.app, name="config")
app.command("dev", cls=Command)(dev.dev)
app.command("demo", cls=Command)(demo.demo)
