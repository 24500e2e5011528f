"""``dicomctl dev``: the whole pipeline on this machine, in the foreground, until Ctrl-C.

While it runs, its outputs and the environment to reach it are published in
``<project>/.dicomctl/local.json`` (with this process id), so every other command works with
``--stack local`` (the default) from another terminal. The file is removed on exit.

The console shows one readable line per event (associations, refusals and their reasons,
Lambda warnings); the structured logs stay in the stack's data directory,
``<project>/.dicomctl/local/logs/`` (the startup output says where).
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape

from cli import render
from cli.context import STATE_DIR, AppContext, state_file
from cli.errors import UsageProblem

SIGNAL_CHECK_SECONDS = 0.2  # how often the waiting main thread wakes to run signal handlers


@contextmanager
def local_stack(app: AppContext, scp_port: int, publish: bool) -> Iterator[Any]:
    """Start the local stack from the resolved config; optionally publish it in the state file.

    A published stack (``dev``) keeps its data directory, logs included, under the project; the
    console gets one readable line per event either way."""
    from local.console_log import console_logging
    from local.stack import LocalStack

    if app.stack != "local":
        raise UsageProblem(f"the local stack runs as --stack local, not {app.stack!r}")
    path = state_file(app.project_dir)
    if publish and app.local_state is not None:
        raise UsageProblem(
            f"a local stack is already running (pid {app.local_state['pid']}, state in {path})",
            fix="use it, or stop it with Ctrl-C in its terminal",
        )
    data_dir = data_directory(app.project_dir) if publish else None
    stack = LocalStack(
        app.config, scp_port=scp_port, poll_seconds=1.0, ahi_job_seconds=0.5, data_dir=data_dir
    )
    with console_logging(sys.stderr):
        try:
            stack.start()
        except OSError as exc:  # the DICOM port is taken (another dev, a PACS, an earlier run)
            stack.stop()
            raise UsageProblem(
                f"cannot start the local stack on DICOM port {scp_port}: {exc.strerror or exc}",
                fix="pick another port with --port (0 = any free port), or stop what uses it",
            ) from None
        except BaseException:
            stack.stop()
            raise
        try:
            if publish:
                path.parent.mkdir(parents=True, exist_ok=True)
                document = {
                    "pid": os.getpid(),
                    "outputs": stack.outputs,
                    "environment": stack.environment,
                    "effectiveConfig": stack.effective_config,
                    "logs": log_files(stack),
                }
                path.write_text(json.dumps(document, indent=2))
            yield stack
        finally:
            if publish:
                path.unlink(missing_ok=True)
            stack.stop()


def data_directory(project_dir: Path) -> Path:
    """Where ``dicomctl dev`` keeps its spool and logs: next to the state file, kept after it stops."""
    return project_dir / STATE_DIR / "local"


def log_files(stack: Any) -> dict[str, str]:
    return {name: str(file) for name, file in stack.log_files.items()}


def describe(app: AppContext, stack: Any) -> None:
    console = app.console
    pairs = [(key, escape(str(value))) for key, value in stack.outputs.items()]
    console.print(render.fields(console, "Local stack (no AWS account involved)", pairs))
    logs = stack.log_files
    console.print(
        f"Logs (JSON lines): {logs['stack']} (the SCP, this process) and {logs['lambda']} "
        "(the Lambda handlers); this console shows one line per event.",
        soft_wrap=True,
    )
    app.console.print("To use it from another shell with the AWS CLI or boto3:")
    for key, value in stack.environment.items():
        app.console.print(f"  export {key}={value}", soft_wrap=True)
    outputs = stack.outputs
    app.console.print(
        f"Send a study:  dicomctl send --synthetic ct   "
        f"(or storescu -aec {outputs['aeTitle']} 127.0.0.1 {outputs['dicomPort']} FILES)",
        soft_wrap=True,
    )
    app.console.print("Ctrl-C stops everything (the SCP first, sealing its open batches).")


def dev(
    ctx: typer.Context,
    port: Annotated[
        int, typer.Option(min=0, max=65535, help="DICOM port of the local SCP (0 = any free).")
    ] = 11112,
) -> None:
    """Run the local stack (moto, Lambdas, HealthImaging emulator, SCP) in the foreground."""
    app: AppContext = ctx.obj
    stopped: list[int] = []  # appended by the handler: a signal handler must not take locks
    previous = signal.signal(signal.SIGTERM, lambda number, _frame: stopped.append(number))
    try:
        with app.logs_to_stderr(), local_stack(app, port, publish=True) as stack:
            if app.json:
                ready = {"event": "ready", "outputs": stack.outputs, "environment": stack.environment}
                app.print_json(ready | {"logs": log_files(stack)}, lines=True)
            else:
                describe(app, stack)
                app.console.print("[bold green]ready[/]")
            try:
                # Python runs signal handlers (Ctrl-C's KeyboardInterrupt included) only when this
                # thread runs bytecode: sleep in short steps instead of blocking on a lock.
                while not stopped:
                    time.sleep(SIGNAL_CHECK_SECONDS)
            except KeyboardInterrupt:
                pass
            app.err.print("stopping the local stack ...")
    finally:
        signal.signal(signal.SIGTERM, previous)
