"""Where a command gets its settings: the stack config, the stack outputs, AWS clients, output.

Resolution (docs/cli.md "Settings"):
- config: ``Pulumi.yaml`` + ``Pulumi.<stack>.yaml`` through ``core.config.load_stack``; the
  ``local`` stack uses ``Pulumi.local.yaml`` when present, else the model's defaults;
- outputs: ``--outputs FILE`` when given; for ``--stack local`` the state file the running
  ``dicomctl dev`` wrote; else ``pulumi stack output --json --stack NAME`` when the Pulumi CLI is
  on PATH;
- AWS clients: ``--profile``/``--region``/``--endpoint-url``, else the local stack's environment,
  else boto3's usual chain.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager, redirect_stdout
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Annotated, Any, TextIO

import typer
from rich.console import Console

from cli.errors import ConfigProblem, MissingOutput, UsageProblem
from core.config import StackConfig, from_flat, load_stack
from core.config_base import ConfigError
from core.layout import STACK_OUTPUTS

LOCAL_STACK = "local"
STATE_DIR = ".dicomctl"

OFF_TERMINAL_WIDTH = 4000  # a pipe or a log file wraps nothing: rows and ids stay whole


def _json_requested(ctx: typer.Context, value: bool) -> bool:
    """A command's ``--json`` is the global one too: the error boundary answers in JSON as well."""
    if value and isinstance(ctx.obj, AppContext):
        ctx.obj.json = True
    return value


JsonOption = Annotated[
    bool,
    typer.Option("--json", help="Print machine-readable JSON on stdout.", callback=_json_requested),
]


def state_file(project_dir: Path) -> Path:
    """Where ``dicomctl dev``/``demo`` publish the running local stack's outputs and environment."""
    return project_dir / STATE_DIR / f"{LOCAL_STACK}.json"


def _console(**kwargs: Any) -> Console:
    """Rich output that never cuts a row: off a terminal (a pipe, a log file, CI) lines are as
    long as they need to be; on a terminal, the terminal's width (cli/render.py stacks tables
    that do not fit)."""
    console = Console(highlight=False, **kwargs)
    if not console.is_terminal:
        console = Console(highlight=False, width=OFF_TERMINAL_WIDTH, **kwargs)
    return console


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@dataclass
class AppContext:
    """The global options of one dicomctl invocation, and what is resolved from them (lazily)."""

    stack: str = LOCAL_STACK
    region: str | None = None
    profile: str | None = None
    endpoint_url: str | None = None
    outputs_file: Path | None = None
    project_dir: Path = field(default_factory=Path.cwd)
    json: bool = False
    verbose: bool = False
    out: TextIO | None = None  # our stdout while in-process components' logs are sent to stderr

    document: Any = None  # the command's JSON result, printed by the boundary with the outcome
    streamed: bool = False  # JSON Lines went out already (streams)

    # --- output -----------------------------------------------------------------------------
    @property
    def console(self) -> Console:
        return _console(file=self.out)

    @cached_property
    def err(self) -> Console:
        return _console(stderr=True)

    def wants_json(self, local_flag: bool = False) -> bool:
        return self.json or local_flag

    def print_json(self, document: Any, lines: bool = False) -> None:
        """One compact line per document with ``lines`` (streams: JSON Lines, printed at once);
        otherwise the command's one result document, which the error boundary (cli.main) prints
        when the command ends, with the error in it if one ended the command."""
        if lines:
            self.streamed = True
            typer.echo(json.dumps(document, default=str), file=self.out)
        else:
            self.document = document

    def emit_document(self, error: dict[str, Any] | None = None) -> None:
        """Print the one JSON document of this invocation: the result, the error, or both."""
        document = self.document
        if error is not None:
            if isinstance(document, dict):
                document = {**document, "ok": False, "error": error}
            elif document is None or not self.streamed:
                document = {"ok": False, "error": error} | ({"result": document} if document else {})
            if self.streamed:  # a stream ends with one line saying why it ended
                typer.echo(json.dumps({"ok": False, "error": error}, default=str), file=self.out)
                return
        if document is not None:
            typer.echo(json.dumps(document, indent=2, default=str), file=self.out)
        self.document = None

    @contextmanager
    def logs_to_stderr(self) -> Iterator[None]:
        """Send whatever in-process components print (Lambda handler logs, the SCP's EMF lines) to
        stderr, so stdout carries only our own output (``--json`` stays parseable)."""
        sys.stdout.flush()
        try:
            fd = sys.stdout.fileno()
        except (OSError, ValueError, AttributeError):  # not a real file (e.g. a test runner's buffer)
            self.out = sys.stdout
            try:
                with redirect_stdout(sys.stderr):
                    yield
            finally:
                self.out = None
            return
        saved = os.dup(fd)
        self.out = os.fdopen(saved, "w")
        os.dup2(sys.stderr.fileno(), fd)
        try:
            yield
        finally:
            sys.stdout.flush()
            os.dup2(saved, fd)
            self.out.close()
            self.out = None

    # --- config -----------------------------------------------------------------------------
    @cached_property
    def config(self) -> StackConfig:
        stack_file = self.project_dir / f"Pulumi.{self.stack}.yaml"
        try:
            if self.stack == LOCAL_STACK and not stack_file.is_file():
                return from_flat({}, LOCAL_STACK, source="defaults")
            return load_stack(self.project_dir, self.stack)
        except ConfigError as exc:
            if not stack_file.is_file():  # the model's one problem names the stacks that do exist
                raise ConfigProblem(
                    f"stack {self.stack!r} does not exist: {exc.problems[0]} (in {self.project_dir})",
                    fix=f"pick one of the known stacks with --stack (or another --project-dir), "
                    f"or create it with `pulumi stack init {self.stack}`",
                ) from None
            raise ConfigProblem(
                str(exc),
                fix=f"fix the values in Pulumi.{self.stack}.yaml, or pick another stack with --stack",
            ) from None

    # --- outputs ----------------------------------------------------------------------------
    @cached_property
    def local_state(self) -> dict[str, Any] | None:
        path = state_file(self.project_dir)
        if not path.is_file():
            return None
        state = json.loads(path.read_text())
        if not _pid_alive(int(state.get("pid", 0))):
            return None
        return state

    @cached_property
    def outputs(self) -> dict[str, Any]:
        if self.outputs_file:
            try:
                document = json.loads(self.outputs_file.read_text())
            except (OSError, ValueError) as exc:
                raise UsageProblem(f"cannot read stack outputs from {self.outputs_file}: {exc}") from None
            if not isinstance(document, dict):
                raise UsageProblem(f"{self.outputs_file} must hold a JSON object of stack outputs")
            return document
        if self.stack == LOCAL_STACK:
            if self.local_state is None:
                raise MissingOutput(
                    "the local stack is not running",
                    fix="run `dicomctl dev` in another terminal, or pass --stack NAME / --outputs FILE",
                )
            return dict(self.local_state["outputs"])
        self.config  # noqa: B018 - a stack that does not exist is named as such, before asking Pulumi
        if shutil.which("pulumi"):
            return self._pulumi_outputs()
        raise MissingOutput(
            f"no stack outputs for stack {self.stack!r}: the Pulumi CLI is not installed",
            fix=f"install the Pulumi CLI, or pass --outputs FILE (saved with "
            f"`pulumi stack output --json --stack {self.stack} > outputs.json`)",
        )

    def _pulumi_outputs(self) -> dict[str, Any]:
        proc = subprocess.run(
            ["pulumi", "stack", "output", "--json", "--stack", self.stack],
            cwd=self.project_dir,
            capture_output=True,
            text=True,
            check=False,
        )
        if proc.returncode != 0:
            detail = (proc.stderr.strip().splitlines() or ["unknown error"])[-1]
            raise MissingOutput(
                f"`pulumi stack output` failed for stack {self.stack!r}: {detail}",
                fix="run `pulumi login` and check the stack name, or pass --outputs FILE",
            )
        return json.loads(proc.stdout or "{}")

    def output(self, name: str) -> str:
        """One stack output by its layout.STACK_OUTPUTS name; missing -> one message with the fix."""
        value = self.outputs.get(name)
        if value in (None, ""):
            what = STACK_OUTPUTS.get(name, name)
            raise MissingOutput(
                f"stack {self.stack!r} has no output {name!r} ({what})",
                fix="deploy the stack with `pulumi up`, or add the key to the --outputs file",
            )
        return str(value)

    def outputs_or_config_ae_title(self) -> str:
        """The gateway's AE title: the stack output, else the stack config (it is the same setting)."""
        try:
            return self.output("aeTitle")
        except MissingOutput:
            return self.config.scp.ae_title

    # --- AWS --------------------------------------------------------------------------------
    def _local_environment(self) -> dict[str, str]:
        if self.stack == LOCAL_STACK and not self.outputs_file:
            self.outputs  # noqa: B018 - raises the "not running" message when it is not
            return dict(self.local_state.get("environment", {}))
        return {}

    def client(self, service: str):
        """A boto3 client for ``service`` aimed at the resolved stack; built only when a command needs it."""
        import boto3
        from botocore.config import Config

        env = self._local_environment()
        region = self.region or env.get("AWS_DEFAULT_REGION") or self.outputs.get("region") or None
        session = boto3.session.Session(
            profile_name=self.profile,
            region_name=region,
            aws_access_key_id=env.get("AWS_ACCESS_KEY_ID"),
            aws_secret_access_key=env.get("AWS_SECRET_ACCESS_KEY"),
        )
        service_env = "AWS_ENDPOINT_URL_" + service.upper().replace("-", "_")
        endpoint = self.endpoint_url or env.get(service_env) or env.get("AWS_ENDPOINT_URL")
        config = Config(
            retries={"max_attempts": 2, "mode": "standard"},
            connect_timeout=5,
            read_timeout=30,
            inject_host_prefix=not bool(env.get("AWS_DISABLE_HOST_PREFIX_INJECTION")),
        )
        return session.client(service, endpoint_url=endpoint, config=config)
