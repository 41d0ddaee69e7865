"""A flow run's history beside its states: its log lines and its task-run summaries, both
capped per run (``BLOCKS_RUN_LOG_LINES``, ``BLOCKS_RUN_TASK_RUNS``).

Two writers add to a run's history: its worker (what the run process printed) and the run
process itself (run-logger lines and task runs, batched by `blocks.deployments._history`).
Each write is one transaction that reads the run's counters, inserts what fits under the caps
and adds everything to the counters, so the caps hold whichever writer comes first.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING

import sqlalchemy as sa

from blocks import settings
from blocks.deployments import _tables as t
from blocks.deployments._leases import RunLeases
from blocks.deployments._records import as_utc

if TYPE_CHECKING:
    from sqlalchemy.engine import Connection

#: A log line as written: ``(time, level, message)``.
LogLine = tuple[datetime, str, str]


@dataclass(frozen=True, slots=True)
class TaskRunSummary:
    """One task run of a flow run, as its run process reported it."""

    attempt: int
    task_run_id: str
    name: str
    task_name: str
    state: str
    message: str
    cached: bool
    started: datetime
    ended: datetime

    @property
    def duration(self) -> float:
        return (self.ended - self.started).total_seconds()


class RunHistory(RunLeases):
    """Log lines and task-run summaries of flow runs."""

    def append_logs(self, run_id: str, lines: Sequence[LogLine]) -> int:
        """Add ``(time, level, message)`` lines to a run's log, at most ``BLOCKS_RUN_LOG_LINES``
        kept per run (one more line says the rest was dropped); returns how many were kept."""
        if not lines:
            return 0
        with self.registry.write() as conn:
            return self._append_logs(conn, run_id, lines)

    def record_history(
        self, run_id: str, lines: Sequence[LogLine], tasks: Sequence[TaskRunSummary]
    ) -> None:
        """Add log lines and task-run summaries to a run's history in one transaction (what
        a run process's recorder flushes)."""
        if not lines and not tasks:
            return
        with self.registry.write() as conn:
            if lines:
                self._append_logs(conn, run_id, lines)
            if tasks:
                self._append_tasks(conn, run_id, tasks)

    def _append_logs(self, conn: Connection, run_id: str, lines: Sequence[LogLine]) -> int:
        cap = settings.run_log_lines()
        count = conn.execute(
            sa.select(t.flow_runs.c.log_lines).where(t.flow_runs.c.id == run_id)
        ).scalar()
        if count is None:
            return 0
        room = max(0, cap - count)
        kept = list(lines[:room])
        if count <= cap < count + len(lines):  # the first line past the cap
            kept.append(
                (
                    lines[room][0],
                    "WARNING",
                    f"log capped at {cap} lines (BLOCKS_RUN_LOG_LINES): the rest of this run's "
                    "output is not kept",
                )
            )
        if kept:
            conn.execute(
                t.flow_run_logs.insert(),
                [
                    {"run_id": run_id, "at": as_utc(at), "level": level, "message": message}
                    for at, level, message in kept
                ],
            )
        conn.execute(
            t.flow_runs.update()
            .where(t.flow_runs.c.id == run_id)
            .values(log_lines=count + len(lines))
        )
        return int(min(len(lines), room))

    def _append_tasks(self, conn: Connection, run_id: str, tasks: Sequence[TaskRunSummary]) -> None:
        count = conn.execute(
            sa.select(t.flow_runs.c.task_runs).where(t.flow_runs.c.id == run_id)
        ).scalar_one_or_none()
        count = count or 0
        room = max(0, settings.run_task_runs() - count)
        if room:
            conn.execute(
                t.flow_run_task_runs.insert(),
                [
                    {
                        "run_id": run_id,
                        "attempt": task.attempt,
                        "task_run_id": task.task_run_id,
                        "name": task.name[:256],
                        "task_name": task.task_name[:256],
                        "state": task.state[:32],
                        "message": task.message,
                        "cached": task.cached,
                        "started": as_utc(task.started),
                        "ended": as_utc(task.ended),
                    }
                    for task in tasks[:room]
                ],
            )
        conn.execute(
            t.flow_runs.update()
            .where(t.flow_runs.c.id == run_id)
            .values(task_runs=count + len(tasks))
        )

    def logs(self, run_id: str, *, after: int = 0) -> list[tuple[int, datetime, str, str]]:
        """A run's kept log lines ``(line id, time, level, message)``, after line id `after`."""
        with self.registry.read() as conn:
            rows = conn.execute(
                sa.select(t.flow_run_logs)
                .where(t.flow_run_logs.c.run_id == run_id, t.flow_run_logs.c.id > after)
                .order_by(t.flow_run_logs.c.id)
            ).all()
        return [(r.id, as_utc(r.at) or r.at, r.level, r.message) for r in rows]

    def task_runs(self, run_id: str) -> tuple[list[TaskRunSummary], int]:
        """A run's kept task-run summaries in the order they ended, and how many its run
        process reported in all (more than kept once ``BLOCKS_RUN_TASK_RUNS`` was reached)."""
        with self.registry.read() as conn:
            rows = conn.execute(
                sa.select(t.flow_run_task_runs)
                .where(t.flow_run_task_runs.c.run_id == run_id)
                .order_by(t.flow_run_task_runs.c.id)
            ).all()
            total = conn.execute(
                sa.select(t.flow_runs.c.task_runs).where(t.flow_runs.c.id == run_id)
            ).scalar()
        summaries = [
            TaskRunSummary(
                r.attempt,
                r.task_run_id,
                r.name,
                r.task_name,
                r.state,
                r.message,
                bool(r.cached),
                as_utc(r.started) or r.started,
                as_utc(r.ended) or r.ended,
            )
            for r in rows
        ]
        return summaries, max(int(total or 0), len(summaries))
