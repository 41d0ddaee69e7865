"""How the CLI prints: tables and pairs for people, JSON for scripts, streamed.

Tables stream their rows, so 10,000 rows cost milliseconds, not seconds:

* **stdout is not a terminal** (a pipe, a file, ``$(...)``): tab-separated values, one line of
  column names then one line per row, nothing else on stdout (titles and notes go to stderr).
  Tabs, newlines, carriage returns and backslashes inside a cell are written ``\\t``, ``\\n``,
  ``\\r`` and ``\\\\``, so every row is one line (``cut -f2``, ``awk -F'\\t'``, or
  ``column -t -s $'\\t'`` to align). This is the GitHub CLI's convention for piped tables.
* **stdout is a terminal**: the rows that fit on the first screen are a rich table; if there
  are more, the first screen uses rich's borderless style and the remaining rows follow in
  the same columns as plain text (a cell wider than its column pushes the rest of its row
  right; nothing is ever cut).
* **JSON** (``--json``): one array, written incrementally, one element per line.

rich is imported only when a terminal shows a table, which keeps piped output and ``--json``
fast.
"""

from __future__ import annotations

import itertools
import json
import os
import sys
from collections.abc import Iterable, Iterator, Sequence
from datetime import datetime
from typing import Any, TextIO

import click

#: Rows (or JSON elements) joined into one write.
CHUNK_ROWS = 512
#: Lines of a terminal screen not available to rows: title, heading, rule, the next prompt.
_SCREEN_RESERVED = 4
_ESCAPES = str.maketrans({"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r"})
# Between two columns, rich's borderless table puts padding, a blank rule and padding.
_GAP = "   "


def echo_json(data: Any) -> None:
    """Print `data` as indented JSON on stdout."""
    click.echo(json.dumps(data, indent=2, ensure_ascii=False, default=str))


def echo_json_array(items: Iterable[Any]) -> int:
    """Print `items` as one JSON array, an element per line, written as they come; return
    how many.

    Example:
        >>> echo_json_array({"n": n} for n in range(2))
        [
        {"n":0},
        {"n":1}
        ]
    """
    out = sys.stdout
    encode = json.JSONEncoder(ensure_ascii=False, default=str, separators=(",", ":")).encode
    count = 0
    head = "[\n"
    for chunk in _chunks(items):
        out.write(head + ",\n".join(map(encode, chunk)))
        head = ",\n"
        count += len(chunk)
    out.write("[]\n" if not count else "\n]\n")
    out.flush()
    return count


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


def is_terminal() -> bool:
    """Whether stdout is a terminal (tables for people) rather than a pipe or a file."""
    try:
        return sys.stdout.isatty()
    except ValueError:  # closed
        return False


def note(text: str) -> None:
    """A line about the output, not part of it: on stdout for a terminal, else on stderr."""
    click.echo(text, err=not is_terminal())


def print_table(
    columns: Sequence[str], rows: Iterable[Sequence[Any]], *, title: str | None = None
) -> int:
    """Print rows under column headings as they come (see the module doc); return how many."""
    if is_terminal():
        return _terminal_table(columns, rows, title)
    if title:
        click.echo(title, err=True)
    return _tsv(sys.stdout, columns, rows)


def print_pairs(pairs: Iterable[tuple[str, Any]], *, title: str | None = None) -> None:
    """Print ``label  value`` lines, aligned, with an optional title line (bold on a terminal)."""
    shown = [(label, cell(value)) for label, value in pairs]
    if not is_terminal():
        width = max((len(label) for label, _ in shown), default=0)
        lines = [title] if title else []
        lines += [f"{label:<{width}}  {value.translate(_ESCAPES)}" for label, value in shown]
        sys.stdout.write("".join(line + "\n" for line in lines))
        return
    from rich.table import Table
    from rich.text import Text

    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold")
    grid.add_column()
    for label, value in shown:
        grid.add_row(Text(label), Text(value))
    console = _console()
    if title:
        console.print(Text(title, style="bold"))
    console.print(grid)


def _chunks(items: Iterable[Any]) -> Iterator[list[Any]]:
    iterator = iter(items)
    while chunk := list(itertools.islice(iterator, CHUNK_ROWS)):
        yield chunk


def _tsv(out: TextIO, columns: Sequence[str], rows: Iterable[Sequence[Any]]) -> int:
    out.write("\t".join(columns) + "\n")
    count = 0
    for chunk in _chunks(rows):
        out.write(
            "".join(
                "\t".join([cell(value).translate(_ESCAPES) for value in row]) + "\n"
                for row in chunk
            )
        )
        count += len(chunk)
    out.flush()
    return count


def _console() -> Any:
    from rich.console import Console

    # Piped output keeps whole lines (rich would wrap at 80 columns) unless COLUMNS says.
    wide = not is_terminal() and "COLUMNS" not in os.environ
    return Console(highlight=False, emoji=False, width=200 if wide else None)


def _terminal_table(
    columns: Sequence[str], rows: Iterable[Sequence[Any]], title: str | None
) -> int:
    from rich import box
    from rich.table import Table
    from rich.text import Text

    console = _console()
    iterator = iter(rows)
    fits = max(1, console.size.height - _SCREEN_RESERVED)
    screen = [[cell(value) for value in row] for row in itertools.islice(iterator, fits)]
    following = next(iterator, None)
    if following is None:  # everything fits: the full rich table
        table = Table(*columns, title=title, title_justify="left")
        for texts in screen:
            # Text, not str: a value such as "[bold]" is shown, not read as rich markup.
            table.add_row(*(Text(text) for text in texts))
        console.print(table)
        return len(screen)
    # More than a screen: rich draws the first one borderless in fixed columns, and the rest
    # continue in those columns as plain text, so nothing waits for the last row to be read.
    widths = [
        max([len(heading), *(len(texts[i]) for texts in screen)])
        for i, heading in enumerate(columns)
    ]
    table = Table(
        title=title, title_justify="left", box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False
    )
    for heading, width in zip(columns, widths, strict=True):
        table.add_column(heading, width=width)
    for texts in screen:
        table.add_row(*(Text(text) for text in texts))
    console.print(table)
    out = sys.stdout
    out.flush()
    count = len(screen)
    for chunk in _chunks(itertools.chain([following], iterator)):
        lines = []
        for row in chunk:
            texts = [cell(value).translate(_ESCAPES) for value in row]
            padded = [text.ljust(width) for text, width in zip(texts, widths, strict=False)]
            lines.append(_GAP.join(padded).rstrip() + "\n")
        out.write("".join(lines))
        count += len(chunk)
    out.flush()
    return count
