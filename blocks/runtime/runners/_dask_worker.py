"""The worker half of `DaskTaskRunner`: what runs on a Dask worker for one submitted task.

`run_on_worker` unpickles the run the flow process sent (task, arguments, names, a snapshot of
the flow run), puts the upstream states where the arguments had futures, runs the ordinary
engine, and sends back an `Outcome`: the final state, the run's log records (captured here and
replayed in the flow process) and its attempt count. An exception that cannot be pickled comes
back as a `RemoteTaskError`.

Example:
    >>> outcome = run_on_worker(spec)  # what Dask calls on the worker
    >>> outcome.state.is_completed()
    True
"""

from __future__ import annotations

import contextvars
import logging
import os
import pickle
import socket
import threading
import time
import traceback
from collections.abc import Sequence
from typing import Any

import cloudpickle

from blocks.errors import RemoteTaskError
from blocks.runtime import _history
from blocks.runtime._annotations import BaseAnnotation
from blocks.runtime._context import FlowRun, TaskRun
from blocks.runtime._futures import enable_argument_resolution
from blocks.runtime._logging import FLOW_LOGGER, OUTSIDE_LOGGER, TASK_LOGGER
from blocks.runtime._states import Crashed, Failed, State
from blocks.runtime.engine._task_run import run_task
from blocks.runtime.runners._base import SequentialTaskRunner

__all__ = ["Outcome", "Upstream", "run_on_worker"]


class Upstream:
    """Marks where the state of the `index`-th upstream Dask future goes in the arguments."""

    __slots__ = ("index",)

    def __init__(self, index: int) -> None:
        self.index = index


class Outcome:
    """What a worker sends back: the final state, the run's log records, its attempt count."""

    __slots__ = ("name", "recorded", "records", "run_count", "started", "state")

    def __init__(
        self,
        state: State,
        records: list[logging.LogRecord],
        run_count: int,
        name: str | None,
        started: float,
        recorded: bool = False,
    ) -> None:
        self.state = state
        self.records = records
        self.run_count = run_count
        self.name = name
        self.started = started  # epoch seconds, on the worker
        self.recorded = recorded  # in run history already (a thread worker in the flow process)


_capture: contextvars.ContextVar[list[logging.LogRecord] | None] = contextvars.ContextVar(
    "blocks_dask_capture", default=None
)
_capture_installed = False
_capture_guard = threading.Lock()
_STANDARD_RECORD_FIELDS = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None)))


class _CaptureFilter(logging.Filter):
    """Takes the run loggers' records of a task running here, to be sent back with its state."""

    def filter(self, record: logging.LogRecord) -> bool:
        records = _capture.get()
        if records is None:
            return True
        records.append(_portable_record(record))
        return False  # logged in the flow process instead


def _install_capture() -> None:
    global _capture_installed
    with _capture_guard:
        if not _capture_installed:
            for name in (FLOW_LOGGER, TASK_LOGGER, OUTSIDE_LOGGER):
                logging.getLogger(name).addFilter(_CaptureFilter())
            _capture_installed = True


def _portable_record(record: logging.LogRecord) -> logging.LogRecord:
    """A picklable copy: message formatted, traceback as text, odd extras as their repr."""
    fields = dict(vars(record))
    fields["msg"] = record.getMessage()
    fields["args"] = None
    if record.exc_info:
        fields["exc_text"] = record.exc_text or logging.Formatter().formatException(record.exc_info)
    fields["exc_info"] = None
    for name, value in fields.items():
        if name not in _STANDARD_RECORD_FIELDS and not isinstance(
            value, str | int | float | bool | type(None)
        ):
            fields[name] = repr(value)
    return logging.makeLogRecord(fields)


def run_on_worker(spec: bytes, *upstream: Outcome) -> Outcome:
    """Run one task with the ordinary engine on this worker; never raises."""
    _install_capture()
    started = time.time()
    records: list[logging.LogRecord] = []
    token = _capture.set(records)
    run: TaskRun | None = None
    try:
        task, args, kwargs, name, run_id, log_prints, picture, where = cloudpickle.loads(spec)
        args = _fill(args, upstream)
        kwargs = _fill(kwargs, upstream)
        # States among the arguments are resolved (or fail the run as upstream failures) only
        # when this process knows futures exist; a worker never made one itself.
        enable_argument_resolution()
        flow_run = None
        if picture is not None:  # tasks it submits run inline, here
            flow_run = FlowRun.from_snapshot(picture, SequentialTaskRunner())
        run = TaskRun(task, flow_run, flow_run, log_prints)
        run.name, run.id = name, run_id
        try:
            state = run_task(task, run, args, kwargs)
        except BaseException as exc:  # KeyboardInterrupt, SystemExit: the engine re-raises
            state = Crashed(exc)
        if state.exception is not None and (socket.gethostname(), os.getpid()) != tuple(where):
            state.exception = _portable_exception(state.exception)
    except Exception as exc:  # the run could not even start here (unpickling, say)
        state = Failed(_portable_exception(exc))
    finally:
        _capture.reset(token)
    if run is None:
        return Outcome(state, records, 0, None, started)
    # A thread worker in the flow's own process: its engine handed the run to the recorder.
    recorded = _history.active is not None and (socket.gethostname(), os.getpid()) == tuple(where)
    return Outcome(state, records, run.run_count, run.name, started, recorded)


def _fill(value: Any, upstream: Sequence[Outcome], depth: int = 0) -> Any:
    """Put the upstream states back where `_swap_futures` left its marks."""
    if isinstance(value, Upstream):
        return upstream[value.index].state
    if isinstance(value, BaseAnnotation):
        return value.rewrap(_fill(value[0], upstream, depth))
    if depth >= 3:
        return value
    kind = type(value)
    if kind in (list, tuple, set, frozenset):
        return kind(_fill(v, upstream, depth + 1) for v in value)
    if kind is dict:
        return {k: _fill(v, upstream, depth + 1) for k, v in value.items()}
    return value


def _portable_exception(exc: BaseException) -> BaseException:
    """`exc` with its worker-side traceback as a note, or a `RemoteTaskError` if unpicklable."""
    text = "".join(traceback.format_exception(exc)).rstrip()
    try:
        exc.add_note(f"Raised on Dask worker {_worker_name()}:\n{text}")
        pickle.loads(cloudpickle.dumps(exc))
        return exc
    except Exception:
        error = RemoteTaskError(
            f"{type(exc).__module__}.{type(exc).__qualname__}: {exc} (the exception could "
            "not be pickled; it was raised on a Dask worker)"
        )
        error.add_note(f"Raised on Dask worker {_worker_name()}:\n{text}")
        return error


def _worker_name() -> str:
    try:
        from distributed import get_worker

        return f"{get_worker().address} (pid {os.getpid()})"
    except (ImportError, ValueError):
        return f"{socket.gethostname()} (pid {os.getpid()})"
