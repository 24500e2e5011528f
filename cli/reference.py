"""The command reference in docs/cli.md, rendered from the Typer app itself so it cannot drift.

``python -m cli.reference`` rewrites the generated part of docs/cli.md (between the markers);
tests/cli/test_reference.py fails when the file differs from what the CLI prints.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import typer
from typer.testing import CliRunner

from cli.main import app
from components.project_file import replace_generated

DOC = Path(__file__).resolve().parent.parent / "docs" / "cli.md"
BEGIN = "<!-- BEGIN GENERATED COMMAND REFERENCE (python -m cli.reference) -->"
END = "<!-- END GENERATED COMMAND REFERENCE -->"
WIDTH = "100"


def command_paths(group: Any, prefix: tuple[str, ...] = ()) -> Iterator[tuple[str, ...]]:
    """Every command and group, parents before children, in registration order."""
    yield prefix
    for name, command in group.commands.items():
        if getattr(command, "commands", None) is not None:  # a group (typer may vendor click)
            yield from command_paths(command, (*prefix, name))
        else:
            yield (*prefix, name)


def render() -> str:
    """Each command's ``--help`` at a fixed width without colour, as Markdown sections."""
    env = {"COLUMNS": WIDTH, "TERMINAL_WIDTH": WIDTH, "NO_COLOR": "1", "TERM": "dumb"}
    env |= {name: None for name in os.environ if name.startswith("DICOMCTL_")}
    runner = CliRunner(env=env)
    sections = []
    for path in command_paths(typer.main.get_command(app)):
        result = runner.invoke(app, [*path, "--help"], prog_name="dicomctl")
        if result.exit_code != 0:
            raise RuntimeError(f"dicomctl {' '.join(path)} --help failed: {result.output}")
        title = " ".join(("dicomctl", *path))
        body = "\n".join(line.rstrip() for line in result.output.strip("\n").splitlines())
        sections.append(f"### `{title}`\n\n```text\n{body}\n```\n")
    return "\n".join(sections)


def updated(document: str) -> str:
    return replace_generated(document, BEGIN, END, "\n" + render())


def main() -> int:
    DOC.write_text(updated(DOC.read_text()))
    print(f"wrote {DOC}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
