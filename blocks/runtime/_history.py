"""Run history hooks: where a process that runs a deployment's flow run reports its task runs
and run-logger lines, and the deployment run's scheduled time.

The runtime knows nothing of the run store: the process that runs a deployment's run (the
worker's run process) installs a `Recorder` (``blocks.deployments._history``) with `install`,
and the engine hands it each finished task run and the logging handler each run-log line. With
no recorder installed (every plain ``python flow.py``), the engine's only cost is one global
read per task run.

Example:
    >>> install(my_recorder, scheduled_time=slot)   # before the flow is called
    >>> etl()                                        # task runs and log lines go to it
    >>> uninstall()
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Protocol

__all__ = ["Recorder", "install", "recorder", "take_scheduled_time", "uninstall"]


class Recorder(Protocol):
    """Receives a run's history. Both calls are on the hot path: keep the objects, never
    write here (`task_run` gets the run and its final state, None for a plain Completed run
    that made no state object, and its start time in epoch seconds)."""

    def task_run(self, run: Any, state: Any, started: float) -> None: ...

    def log(self, at: float, level: str, message: str) -> None: ...


#: The recorder of this process (None: nothing is recorded).
active: Recorder | None = None
_scheduled_time: list[datetime] = []


def install(new: Recorder, scheduled_time: datetime | None = None) -> None:
    """Record this process's runs with `new`; the next top-level flow run gets
    `scheduled_time` in its states' ``state_details``."""
    global active
    active = new
    _scheduled_time[:] = [] if scheduled_time is None else [scheduled_time]


def uninstall() -> None:
    global active
    active = None
    _scheduled_time.clear()


def recorder() -> Recorder | None:
    return active


def take_scheduled_time() -> datetime | None:
    """The deployment run's scheduled time, once: for the first top-level flow run only (a
    flow called again in the same process, or a subflow, is not that run)."""
    return _scheduled_time.pop() if _scheduled_time else None
