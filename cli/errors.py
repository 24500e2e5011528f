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


class CliError(Exception):
    """An error with a message for the operator, an optional fix, and an exit code."""

    exit_code = EXIT_FAILED

    def __init__(self, message: str, fix: str | None = None):
        super().__init__(message)
        self.message = message
        self.fix = fix


class UsageProblem(CliError):
    exit_code = EXIT_USAGE


class ConfigProblem(CliError):
    exit_code = EXIT_USAGE


class MissingOutput(CliError):
    exit_code = EXIT_USAGE


class Unreachable(CliError):
    exit_code = EXIT_UNREACHABLE


class Rejected(CliError):
    exit_code = EXIT_REJECTED


class OperationFailed(CliError):
    exit_code = EXIT_FAILED
