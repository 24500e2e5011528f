"""Tables that never cut an identifier, at any width, on a terminal or not.

Rich fits a table into the console width by wrapping and then cutting cells (``COMPL…``), and a
pipe or a log file gets 80 columns. Here:
- every cell is ``no_wrap``: tables hold identifiers, statuses, counts and AE titles, never long
  free text (reasons, causes, details go below the table, in ``notes``);
- off a terminal the console is as wide as the rows need (cli/context.py), so rows stay whole;
- on a terminal too narrow for a table's natural width, each row is shown as a record, one
  ``column  value`` line per cell: nothing is cut, a line too long for the terminal folds.

Each function returns a renderable (``console.print`` it, or show it in a live view). Cells and
labels are Rich markup: callers escape text that comes from data (``rich.markup.escape``).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Literal

from rich import box
from rich.console import Console, Group, RenderableType
from rich.markup import escape
from rich.measure import Measurement
from rich.table import Table
from rich.text import Text

UNLIMITED = 100_000  # measure a table's natural width against this


@dataclass(frozen=True)
class Column:
    header: str
    justify: Literal["left", "right"] = "left"


def _line(markup: str) -> Text:
    return Text.from_markup(markup, overflow="fold")


def _title(title: str | None) -> list[Text]:
    """A title is a line of its own: a table title would wrap at the table's width."""
    return [_line(f"[bold]{title}[/]")] if title else []


def _fits(console: Console, table: Table) -> bool:
    natural = Measurement.get(console, console.options.update_width(UNLIMITED), table).maximum
    return natural <= console.width


def table(
    console: Console, title: str | None, columns: Sequence[Column | str], rows: Iterable[Sequence[str]]
) -> RenderableType:
    """A table at its natural width, or one record per row when the terminal is narrower."""
    columns = [c if isinstance(c, Column) else Column(c) for c in columns]
    rows = [[str(cell) for cell in row] for row in rows]
    grid = Table(box=box.SIMPLE_HEAD, pad_edge=False, show_edge=False)
    for column in columns:
        grid.add_column(column.header, justify=column.justify, no_wrap=True)
    for row in rows:
        grid.add_row(*row)
    lines = _title(title)
    if _fits(console, grid):
        return Group(*lines, grid)
    width = max((len(c.header) for c in columns[1:]), default=0)
    for row in rows:
        lines.append(_line(f"[bold]{row[0]}[/]"))
        for column, value in zip(columns[1:], row[1:], strict=False):
            label = escape(column.header)
            for index, part in enumerate(value.split("\n")):
                lines.append(_line(f"  {label if index == 0 else '':<{width}}  {part}"))
    return Group(*lines)


def fields(console: Console, title: str | None, pairs: Iterable[tuple[str, str]]) -> RenderableType:
    """Label/value pairs: two aligned columns, or ``label: value`` lines when they do not fit."""
    pairs = [(label, str(value)) for label, value in pairs]
    grid = Table(box=None, show_header=False, pad_edge=False)
    grid.add_column("field", style="bold", no_wrap=True)
    grid.add_column("value", no_wrap=True)
    for label, value in pairs:
        grid.add_row(label, value)
    lines = _title(title)
    if _fits(console, grid):
        return Group(*lines, grid)
    for label, value in pairs:
        for index, part in enumerate(value.split("\n")):
            lines.append(_line(f"[bold]{label}:[/] {part}" if index == 0 else f"  {part}"))
    return Group(*lines)


def notes(title: str, items: Iterable[tuple[str, str]]) -> RenderableType:
    """Free text (reasons, causes, stack traces) as lines below a table: ``label text``, never cut.

    ``label`` is markup; ``text`` is data and is escaped here."""
    lines = [_line(f"  [bold]{label}[/] {escape(str(text))}") for label, text in items]
    return Group(*_title(title), *lines) if lines else Group()
