"""Task runners: where ``task.submit()`` runs a task — inline, on a pool of threads, or on Dask.

A runner given to ``@flow(task_runner=...)`` is a template: every flow run works on its own
copy (`duplicate()`), started lazily at the first ``submit()`` and shut down (waiting for its
tasks) when the flow run ends.

Example:
    >>> from blocks.task_runners import ConcurrentTaskRunner
    >>> @flow(task_runner=ConcurrentTaskRunner(max_workers=4))
    ... def parallel(items: list[str]) -> list[str]:
    ...     return [f.result() for f in process_item.map(items)]

`DaskTaskRunner` (``pip install 'blocks[dask]'``) lives in `blocks.dask`; importing it from here
works too, and loads Dask only then.
"""

from __future__ import annotations

import concurrent.futures
import contextvars
import os
import threading
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from blocks.errors import TaskTimeout
from blocks.states import State

if TYPE_CHECKING:
    from blocks.context import TaskRun
    from blocks.dask import DaskTaskRunner
    from blocks.futures import TaskFuture
    from blocks.tasks import Task

__all__ = [
    "ConcurrentTaskRunner",
    "DaskTaskRunner",
    "SequentialTaskRunner",
    "TaskRunner",
    "ThreadPoolTaskRunner",
    "call_with_timeout",
]


class TaskRunner:
    """Base class: runs a callable that returns a `State`, giving back a concurrent future."""

    def duplicate(self) -> TaskRunner:
        """A fresh runner with the same settings, for one flow run."""
        return type(self)()

    def submit(self, fn: Callable[[], State]) -> concurrent.futures.Future[State]:
        raise NotImplementedError

    def submit_task(
        self,
        task: Task[Any, Any],
        run: TaskRun,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        wait_for: Sequence[TaskFuture[Any]] = (),
    ) -> concurrent.futures.Future[State]:
        """Submit one run of `task`: wait for `wait_for`, then run the task engine.

        Runners that run tasks in another process override this: they need the task and its
        arguments, not a closure over the flow run. The default runs the closure via `submit`.
        """
        waits = list(wait_for)

        def job() -> State:
            for future in waits:
                future.wait()
            return task._run(run, args, kwargs)

        return self.submit(job)

    def shutdown(self, wait: bool = True) -> None:
        """Release resources; with `wait`, first let every submitted task finish."""

    def __enter__(self) -> TaskRunner:
        return self

    def __exit__(self, *exc: object) -> None:
        self.shutdown(wait=True)

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class SequentialTaskRunner(TaskRunner):
    """Runs each submitted task immediately, in the calling thread, one after another."""

    def submit(self, fn: Callable[[], State]) -> concurrent.futures.Future[State]:
        future: concurrent.futures.Future[State] = concurrent.futures.Future()
        future.set_running_or_notify_cancel()
        try:
            future.set_result(fn())
        except BaseException as exc:  # the engine returns states; this is a crash
            future.set_exception(exc)
        return future


class ConcurrentTaskRunner(TaskRunner):
    """Runs submitted tasks on a thread pool (`max_workers` threads, default ``min(32, cpus+4)``).

    Each task runs in a copy of the submitting thread's context, so it sees its flow run.
    Threads suit I/O-bound tasks; CPU-bound pure-Python tasks still share the GIL.
    """

    def __init__(self, max_workers: int | None = None) -> None:
        if max_workers is not None and max_workers < 1:
            raise ValueError("max_workers must be at least 1")
        self.max_workers = max_workers
        self._pool: concurrent.futures.ThreadPoolExecutor | None = None
        self._lock = threading.Lock()

    def duplicate(self) -> ConcurrentTaskRunner:
        return type(self)(max_workers=self.max_workers)

    def _executor(self) -> concurrent.futures.ThreadPoolExecutor:
        pool = self._pool
        if pool is None:
            with self._lock:
                pool = self._pool
                if pool is None:
                    workers = self.max_workers or min(32, (os.cpu_count() or 1) + 4)
                    pool = self._pool = concurrent.futures.ThreadPoolExecutor(
                        max_workers=workers, thread_name_prefix="blocks-task"
                    )
        return pool

    def submit(self, fn: Callable[[], State]) -> concurrent.futures.Future[State]:
        ctx = contextvars.copy_context()
        return self._executor().submit(ctx.run, fn)

    def shutdown(self, wait: bool = True) -> None:
        pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=wait, cancel_futures=not wait)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(max_workers={self.max_workers})"


ThreadPoolTaskRunner = ConcurrentTaskRunner
"""Prefect 3's name for the thread-pool runner."""


def __getattr__(name: str) -> Any:
    # `from blocks.task_runners import DaskTaskRunner` without importing Dask for everyone else.
    if name == "DaskTaskRunner":
        from blocks.dask import DaskTaskRunner

        return DaskTaskRunner
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def call_with_timeout(
    fn: Callable[..., Any],
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    timeout: float,
    what: str,
) -> Any:
    """Call ``fn(*args, **kwargs)`` in a daemon thread; `TaskTimeout` if not done in `timeout` s.

    Python cannot stop a thread from outside: after a timeout the call goes on running in the
    background (a daemon thread, so it never blocks interpreter exit) and its result is dropped.
    """
    ctx = contextvars.copy_context()
    outcome: list[tuple[bool, Any]] = []
    done = threading.Event()

    def target() -> None:
        try:
            outcome.append((True, ctx.run(fn, *args, **kwargs)))
        except BaseException as exc:
            outcome.append((False, exc))
        finally:
            done.set()

    threading.Thread(target=target, name="blocks-timeout", daemon=True).start()
    if not done.wait(timeout):
        raise TaskTimeout(
            f"{what} exceeded its timeout of {timeout:g} second(s). It was abandoned, not "
            "killed: Python cannot stop a thread, so its body may still be running."
        )
    ok, value = outcome[0]
    if ok:
        return value
    raise value
