"""dicomctl's own exception types and exit codes.

Commands raise these; ``cli.main`` catches them at the command boundary and prints one clear
message (with the fix when we know it) instead of a traceback. Exit codes are documented in
docs/cli.md and stable for scripts.
"""

from __future__ import annotations

EXIT_OK = 0
EXIT_FAILED = 1  # something was not stored, a job failed, a check did not pass
EXIT_USAGE = 2  # bad option, bad config value, unknown stack, missing stack output
EXIT_UNREACHABLE = 3  # a host or endpoint could not be reached
EXIT_REJECTED = 4  # the peer refused us (association rejected: wrong AE title, not allowed)
EXIT_INTERRUPTED = 130  # Ctrl-C

# What each exit code means, as ``--json`` error documents say it (docs/cli.md "Exit codes").
EXIT_MEANINGS = {
    EXIT_OK: "success",
    EXIT_FAILED: "not stored, job failed, refused, or the item does not exist",
    EXIT_USAGE: "usage or configuration problem",
    EXIT_UNREACHABLE: "unreachable, or the port does not speak DICOM",
    EXIT_REJECTED: "rejected by the DICOM peer",
    EXIT_INTERRUPTED: "interrupted",
}


class CliError(Exception):
    """An error with a message for the operator, an optional fix, and an exit code."""

    exit_code = EXIT_FAILED

    def __init__(self, message: str, fix: str | None = None):
        super().__init__(message)
        self.message = message
        self.fix = fix


class UsageProblem(CliError):
    """A bad option or combination of options."""

    exit_code = EXIT_USAGE


class ConfigProblem(CliError):
    """A stack or SCP setting is invalid or the stack config cannot be read."""

    exit_code = EXIT_USAGE


class MissingOutput(CliError):
    """The stack has not exported an output the command needs (not deployed yet?)."""

    exit_code = EXIT_USAGE


class Unreachable(CliError):
    """A host, port or AWS endpoint did not answer."""

    exit_code = EXIT_UNREACHABLE


class Rejected(CliError):
    """The peer refused us: association rejected (AE title, allow list) or nothing negotiated."""

    exit_code = EXIT_REJECTED


class OperationFailed(CliError):
    """The request ran but did not succeed: not stored, job failed, check failed."""

    exit_code = EXIT_FAILED


class Interrupted(CliError):
    """Ctrl-C while the command was working."""

    exit_code = EXIT_INTERRUPTED


def error_document(error: CliError) -> dict[str, object]:
    """The ``error`` member of a ``--json`` document: what went wrong, the fix, the exit code, its meaning."""
    return {
        "type": type(error).__name__,
        "message": error.message,
        "fix": error.fix,
        "exitCode": error.exit_code,
        "meaning": EXIT_MEANINGS.get(error.exit_code, ""),
    }
