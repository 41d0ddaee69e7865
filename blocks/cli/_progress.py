"""Progress for long CLI work: a rich bar on stderr, only on a terminal, silenced by --quiet.

The library reports progress through a plain callback, ``progress(done, total)`` (``total``
None when unknown), so it never imports rich; the CLI passes `Progress.update`.

Example:
    >>> with progress("Deleting", total=len(keys)) as bar:
    ...     for key in keys:
    ...         store.delete(key)
    ...         bar.advance()
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

#: Work smaller than this many items finishes before a bar would help; none is drawn.
THRESHOLD = 20

_quiet = False


def set_quiet(quiet: bool) -> None:
    """``--quiet``: draw no progress at all (results and errors are still printed)."""
    global _quiet
    _quiet = quiet


def enabled() -> bool:
    """Whether progress may be drawn: stderr is a terminal and --quiet was not given."""
    return not _quiet and sys.stderr.isatty()


class Progress:
    """One bar (or, while the total is unknown, a counter); started when first worth showing."""

    def __init__(self, label: str, total: int | None, threshold: int) -> None:
        self.label = label
        self.total = total
        self.done = 0
        self.threshold = threshold
        self._enabled = enabled()  # asked once: isatty is a system call, update runs per item
        self._rich: Any = None
        self._task: Any = None

    def advance(self, step: int = 1) -> None:
        self.update(self.done + step)

    def update(self, done: int, total: int | None = None) -> None:
        """Set the count (and the total, once known); the callback form libraries call."""
        self.done = done
        if total is not None:
            self.total = total
        if self._rich is None and not self._start():
            return
        self._rich.update(self._task, completed=done, total=self.total)

    def _start(self) -> bool:
        # Small work (a known small total, or few items so far) finishes before a bar helps.
        count = self.total if self.total is not None else self.done
        if not self._enabled or count < self.threshold:
            return False
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            SpinnerColumn,
            TextColumn,
            TimeElapsedColumn,
        )
        from rich.progress import Progress as RichProgress

        self._rich = RichProgress(
            SpinnerColumn(),
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=Console(stderr=True),
            transient=True,  # gone when done: only the command's own output stays
        )
        self._rich.start()
        self._task = self._rich.add_task(self.label, total=self.total, completed=self.done)
        return True

    def close(self) -> None:
        if self._rich is not None:
            self._rich.stop()
            self._rich = None


@contextmanager
def progress(
    label: str, *, total: int | None = None, threshold: int = THRESHOLD
) -> Iterator[Progress]:
    """A `Progress` for the duration of the block. Nothing is drawn off a terminal, with
    --quiet, or until the total (or, while it is unknown, the count) reaches `threshold`;
    ``threshold=0`` shows a spinner at once (e.g. while scanning)."""
    bar = Progress(label, total, threshold)
    try:
        bar.update(0)
        yield bar
    finally:
        bar.close()
