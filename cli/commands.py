"""The Click classes every dicomctl command and group is built with.

Help shows a flag as a flag: Typer prints a type for every option (``--json <bool>``), which
reads as if the flag took a value (``dicomctl --json true status`` then fails with "No such
command 'true'"). An empty metavar leaves the type column of flags blank.
"""

from __future__ import annotations

from typing import Any

from typer.core import TyperCommand, TyperGroup


def _flags_without_type(params: list[Any]) -> list[Any]:
    for param in params:
        if getattr(param, "is_flag", False) and param.metavar is None:
            param.metavar = ""
    return params


class Command(TyperCommand):
    def get_params(self, ctx: Any) -> list[Any]:
        return _flags_without_type(super().get_params(ctx))


class CommandGroup(TyperGroup):
    def get_params(self, ctx: Any) -> list[Any]:
        return _flags_without_type(super().get_params(ctx))
