"""How the CLI prints: tables and pairs for people, JSON for scripts, streamed.

Tables stream their rows, so 10,000 rows cost milliseconds, not seconds:

* **stdout is not a terminal** (a pipe, a file, ``$(...)``): tab-separated values, one line of
  column names then one line per row, nothing else on stdout (titles and notes go to stderr).
  Tabs, newlines, carriage returns and backslashes inside a cell are written ``\\t``, ``\\n``,
  ``\\r`` and ``\\\\``, so every row is one line (``cut -f2``, ``awk -F'\\t'``, or
  ``column -t -s $'\\t'`` to align). This is the GitHub CLI's convention for piped tables.
* **stdout is a terminal**: rows that all fit on one screen are a rich table. A longer
  listing is drawn as rich's borderless style looks (a bold heading, a rule, then the rows),
  by hand: the first screen's rows set the column widths, and every row is written in those
  columns as soon as it is read (a cell wider than its column pushes the rest of its row
  right; nothing is ever cut). Importing and laying out rich would cost more (~90 ms here)
  than the whole 10,000-row listing.
* **JSON** (``--json``): one array, written incrementally, one element per line.

rich is imported only when a terminal shows a table that fits on one screen (or pairs),
which keeps piped output, ``--json`` and long listings fast.
"""

from __future__ import annotations

import itertools
import json
import os
import sys
from collections.abc import Iterable, Iterator, Sequence
from datetime import datetime
from typing import Any, TextIO

#: Rows (or JSON elements) joined into one write.
CHUNK_ROWS = 512
#: Lines of a terminal screen not available to rows: title, heading, rule, the next prompt.
_SCREEN_RESERVED = 4
_ESCAPES = str.maketrans({"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r"})
# Between two columns, rich's borderless table puts padding, a blank rule and padding.
_GAP = "   "
_BOLD, _PLAIN = "\x1b[1m", "\x1b[0m"


def echo_json(data: Any) -> None:
    """Print `data` as indented JSON on stdout."""
    import click  # here: the listing commands run without click (`blocks.cli._fast`)

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
    """A timestamp for people: local time to the second.

    Example:
        >>> local_time(datetime(2026, 1, 2, 3, 4, 5, 678, tzinfo=UTC))  # with TZ=UTC
        '2026-01-02 03:04:05'
    """
    try:
        # astimezone().strftime(...) in a third of the time (a listing formats two per row).
        return datetime.fromtimestamp(moment.timestamp()).isoformat(" ", "seconds")
    except (OverflowError, OSError, ValueError):  # past what the C library converts
        pass
    try:
        return moment.astimezone().replace(tzinfo=None).isoformat(" ", "seconds")
    except (OverflowError, OSError, ValueError):
        # Past what local time can show (9999-12-31 east of UTC is year 10000): as stored,
        # with its UTC offset, rather than a traceback.
        return moment.isoformat(" ", "seconds")


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
    echo(text, err=not is_terminal())


def echo(text: str, *, err: bool = False) -> None:
    """`click.echo` of a line (on stderr if `err`); plain text is written without importing
    click (~30 ms), which the listing commands run without (`blocks.cli._fast`)."""
    if text.isascii() and "\x1b" not in text:
        # What click.echo writes for such text: nothing to strip, nothing to re-encode.
        stream = sys.stderr if err else sys.stdout
        stream.write(text + "\n")
        stream.flush()
        return
    import click

    click.echo(text, err=err)


def print_table(
    columns: Sequence[str], rows: Iterable[Sequence[Any]], *, title: str | None = None
) -> int:
    """Print rows under column headings as they come (see the module doc); return how many."""
    if is_terminal():
        return _terminal_table(columns, rows, title)
    if title:
        import click

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
                [
                    _tsv_line([v if type(v) is str else cell(v) for v in row])  # cell(), inline
                    for row in chunk
                ]
            )
        )
        count += len(chunk)
    out.flush()
    return count


def _tsv_line(texts: list[str]) -> str:
    line = "\t".join(texts)
    # Almost no row holds a character to escape: one join and four scans in C cost ~8x less
    # than a translate() per cell, so cells are translated only when the line needs it.
    if line.count("\t") != len(texts) - 1 or _needs_escape(line):
        line = "\t".join([text.translate(_ESCAPES) for text in texts])
    return line + "\n"


def _needs_escape(text: str) -> bool:
    """Whether `text` holds a character `_ESCAPES` rewrites, other than a tab."""
    return "\n" in text or "\r" in text or "\\" in text


def _console() -> Any:
    from rich.console import Console

    # Piped output keeps whole lines (rich would wrap at 80 columns) unless COLUMNS says.
    wide = not is_terminal() and "COLUMNS" not in os.environ
    return Console(highlight=False, emoji=False, width=200 if wide else None)


def _terminal_table(
    columns: Sequence[str], rows: Iterable[Sequence[Any]], title: str | None
) -> int:
    iterator = iter(rows)
    import shutil  # here: only a terminal needs its size

    fits = max(1, shutil.get_terminal_size().lines - _SCREEN_RESERVED)
    screen = [[cell(value) for value in row] for row in itertools.islice(iterator, fits)]
    following = next(iterator, None)
    if following is None:  # everything fits: the full rich table
        from rich.table import Table
        from rich.text import Text

        table = Table(*columns, title=title, title_justify="left")
        for texts in screen:
            # Text, not str: a value such as "[bold]" is shown, not read as rich markup.
            table.add_row(*(Text(text) for text in texts))
        _console().print(table)
        return len(screen)
    # More than a screen: fixed columns from the first screen's rows, then every row as it
    # comes, so nothing waits for the last row to be read.
    widths = [
        max([len(heading), *(len(texts[i]) for texts in screen)])
        for i, heading in enumerate(columns)
    ]
    bold, plain = (_BOLD, _PLAIN) if _styled() else ("", "")
    lines = [title] if title else []
    lines.append(_GAP.join(bold + h.ljust(w) + plain for h, w in zip(columns, widths, strict=True)))
    # rich's rule is "─"; a terminal whose encoding lacks it (a Latin-1 locale) gets "-".
    encoding = (getattr(sys.stdout, "encoding", None) or "").lower().replace("-", "")
    rule = "\u2500" if encoding.startswith("utf") else "-"
    lines.append(rule * (sum(widths) + len(_GAP) * (len(widths) - 1)))
    out = sys.stdout
    out.write("".join(line + "\n" for line in lines) + _lines(screen, widths))
    out.flush()  # the first screen shows now, not when a buffer fills
    count = len(screen)
    for chunk in _chunks(itertools.chain([following], iterator)):
        out.write(_lines(([cell(value) for value in row] for row in chunk), widths))
        count += len(chunk)
    out.flush()
    return count


def _lines(rows: Iterable[list[str]], widths: list[int]) -> str:
    """Rows of cell texts as lines in columns of `widths` (a wider cell pushes the rest)."""
    lines = []
    for texts in rows:
        if _needs_escape(joined := "".join(texts)) or "\t" in joined:
            texts = [text.translate(_ESCAPES) for text in texts]
        padded = [text.ljust(width) for text, width in zip(texts, widths, strict=False)]
        lines.append(_GAP.join(padded).rstrip() + "\n")
    return "".join(lines)


def _styled() -> bool:
    """Whether to write bold: rich's rule (not on a dumb or unknown terminal), and not on
    Windows, whose older consoles print escape codes as text."""
    return os.environ.get("TERM", "").lower() not in ("dumb", "unknown") and os.name != "nt"
