"""The recorder a deployment's run process installs: its task runs and run-logger lines go to
the run store, in batches.

The engine hands the recorder each finished task run and the logging handler each run-log
line (`blocks.runtime._history`); the recorder only appends them to a list. A thread of its own
writes what gathered, in one transaction, every `FLUSH_SECONDS` or as soon as `FLUSH_ITEMS`
are waiting, and `close` writes the rest when the flow returns: a run of 100 tasks costs one
transaction, never a round-trip per line or per task. Every text is masked (every secret this
process knows, `blocks.core._masking`) when it is written. What a SIGKILL interrupts is lost
(at most the last `FLUSH_SECONDS`); a SIGTERM ends the flow first (Crashed) and is flushed.

Example:
    >>> with recording(RunStore.default, run_id, attempt=1, scheduled_time=slot):
    ...     my_flow(**parameters)
"""

from __future__ import annotations

import contextlib
import sys
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any

from blocks.core import _masking as masking
from blocks.deployments._run_history import LogLine, TaskRunSummary
from blocks.deployments._store import RunStore
from blocks.runtime import _history

__all__ = ["FLUSH_ITEMS", "FLUSH_SECONDS", "StoreRecorder", "recording"]

_now = time.time

#: Seconds between two writes of a run's gathered history.
FLUSH_SECONDS = 0.5
#: Lines plus task runs waiting that make the writer go at once.
FLUSH_ITEMS = 500


class StoreRecorder:
    """Buffers a run's task runs and log lines; a thread writes them to the run store."""

    def __init__(self, store: Callable[[], RunStore], run_id: str, attempt: int) -> None:
        self._open_store = store  # opened by the writer: the flow's start never waits on it
        self._store: RunStore | None = None
        self.run_id = run_id
        self.attempt = attempt
        self._tasks: list[tuple[Any, Any, float, float]] = []
        self._lines: list[tuple[float, str, str]] = []
        self._wake = threading.Event()
        self._closed = False
        self._write_lock = threading.Lock()
        self._writer = threading.Thread(target=self._loop, name="blocks-run-history", daemon=True)
        self._writer.start()

    # -- the hot path: append only -------------------------------------------------------------

    def task_run(self, run: Any, state: Any, started: float) -> None:
        self._tasks.append((run, state, started, _now()))
        if len(self._tasks) >= FLUSH_ITEMS:
            self._wake.set()

    def log(self, at: float, level: str, message: str) -> None:
        self._lines.append((at, level, message))
        if len(self._lines) >= FLUSH_ITEMS:
            self._wake.set()

    # -- writing ------------------------------------------------------------------------------

    def _loop(self) -> None:
        while not self._closed:
            self._wake.wait(FLUSH_SECONDS)
            self._wake.clear()
            if not self._closed:
                self.flush()

    def flush(self) -> None:
        """Write what gathered (one transaction); a failed write is said on stderr and the
        run goes on (its history is not worth failing the run for)."""
        with self._write_lock:
            tasks, self._tasks = self._tasks, []
            lines, self._lines = self._lines, []
            if not tasks and not lines:
                return
            try:
                if self._store is None:
                    self._store = self._open_store()
                self._store.record_history(
                    self.run_id,
                    [_line(at, level, message) for at, level, message in lines],
                    [self._summary(*task) for task in tasks],
                )
            except Exception as exc:
                print(
                    f"run history of {self.run_id}: {len(lines)} line(s) and {len(tasks)} task "
                    f"run(s) not written: {type(exc).__name__}: {masking.mask(str(exc))}",
                    file=sys.stderr,
                )

    def _summary(self, run: Any, state: Any, started: float, ended: float) -> TaskRunSummary:
        name = "Completed" if state is None else state.name
        message = "" if state is None else state.message or ""
        return TaskRunSummary(
            attempt=self.attempt,
            task_run_id=run.id,
            name=masking.mask(run.name),
            task_name=run.task.name,
            state=name,
            message=masking.mask(message)[:2000],
            cached=name == "Cached",
            started=_utc(started),
            ended=_utc(ended),
        )

    def close(self) -> None:
        """Stop the writer and write the rest."""
        self._closed = True
        self._wake.set()
        self._writer.join(timeout=10)
        self.flush()


@contextlib.contextmanager
def recording(
    store: Callable[[], RunStore],
    run_id: str,
    attempt: int,
    scheduled_time: datetime | None = None,
) -> Iterator[StoreRecorder]:
    """Record this process's task runs and run logs into `run_id`'s history while the block
    runs (`store` opens the run store, once, in the writer); the first top-level flow run
    gets `scheduled_time` in its states' details."""
    recorder = StoreRecorder(store, run_id, attempt)
    _history.install(recorder, scheduled_time)
    try:
        yield recorder
    finally:
        _history.uninstall()
        recorder.close()


def _utc(at: float) -> datetime:
    return datetime.fromtimestamp(at, UTC)


def _line(at: float, level: str, message: str) -> LogLine:
    return (_utc(at), level, masking.mask(message))
