"""How the CLI prints: rich tables for people, JSON for scripts.

rich is imported only when a table is printed, which keeps ``block ... --json`` and errors fast.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any

import click


def echo_json(data: Any) -> None:
    """Print `data` as indented JSON on stdout."""
    click.echo(json.dumps(data, indent=2, ensure_ascii=False, default=str))


def iso(moment: datetime) -> str:
    """A timestamp for JSON output: ISO 8601 in UTC."""
    return moment.isoformat()


def local_time(moment: datetime) -> str:
    """A timestamp for people: local time to the second."""
    return moment.astimezone().strftime("%Y-%m-%d %H:%M:%S")


def cell(value: Any) -> str:
    """A value as shown in a table: strings as they are, anything else as compact JSON."""
    if isinstance(value, str):
        return value
    return json.dumps(value, ensure_ascii=False, default=str)


def _console() -> Any:
    from rich.console import Console

    # Piped output keeps whole lines (rich would wrap at 80 columns) unless COLUMNS says.
    wide = not sys.stdout.isatty() and "COLUMNS" not in os.environ
    return Console(highlight=False, emoji=False, width=200 if wide else None)


def print_table(
    columns: Sequence[str], rows: Iterable[Sequence[Any]], *, title: str | None = None
) -> None:
    """Print rows under column headings."""
    from rich.table import Table
    from rich.text import Text

    table = Table(*columns, title=title, title_justify="left")
    for row in rows:
        # Text, not str: a value such as "[bold]" is shown, not read as rich markup.
        table.add_row(*(Text(cell(value)) for value in row))
    _console().print(table)


def print_pairs(pairs: Iterable[tuple[str, Any]], *, title: str | None = None) -> None:
    """Print ``label  value`` lines, aligned, with an optional bold title line."""
    from rich.table import Table
    from rich.text import Text

    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold")
    grid.add_column()
    for label, value in pairs:
        grid.add_row(Text(label), Text(cell(value)))
    console = _console()
    if title:
        console.print(Text(title, style="bold"))
    console.print(grid)
