"""docs/cli.md's command reference is what the CLI prints: it fails when either drifts."""

from __future__ import annotations

import re

from cli.reference import BEGIN, DOC, END, updated

COMMANDS = {
    "dicomctl",
    "dicomctl send",
    "dicomctl load",
    "dicomctl echo",
    "dicomctl status",
    "dicomctl dev",
    "dicomctl demo",
    "dicomctl executions",
    "dicomctl executions list",
    "dicomctl executions show",
    "dicomctl executions tail",
    "dicomctl dlq",
    "dicomctl dlq list",
    "dicomctl dlq redrive",
    "dicomctl config",
    "dicomctl config show",
    "dicomctl config validate",
}


def test_docs_command_reference_matches_the_cli():
    document = DOC.read_text()
    assert BEGIN in document and END in document
    assert updated(document) == document, "docs/cli.md is stale: run `python -m cli.reference`"


def test_every_command_is_documented():
    assert set(re.findall(r"^### `(dicomctl[^`]*)`$", DOC.read_text(), flags=re.MULTILINE)) == COMMANDS
