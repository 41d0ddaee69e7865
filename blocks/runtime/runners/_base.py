"""Task runners: where ``task.submit()`` runs a task — inline, on a pool of threads, or on Dask.

A runner given to ``@flow(task_runner=...)`` is a template: every flow run works on its own
copy (`duplicate()`), started lazily at the first ``submit()`` and shut down (waiting for its
tasks) when the flow run ends.

Example:
    >>> from blocks.task_runners import ConcurrentTaskRunner
    >>> @flow(task_runner=ConcurrentTaskRunner(max_workers=4))
    ... def parallel(items: list[str]) -> list[str]:
    ...     return [f.result() for f in process_item.map(items)]

`DaskTaskRunner` (``pip install 'blocks[dask]'``) lives in `_dask`; `blocks.runtime` and
`blocks.task_runners` import it (and Dask) only when asked for it.
"""

from __future__ import annotations

import atexit
import collections
import concurrent.futures
import contextvars
import functools
import os
import queue
import threading
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from blocks.errors import ConfigurationError
from blocks.runtime._futures import WORKER
from blocks.runtime._states import State
from blocks.runtime.engine._task_run import run_plain, run_task
from blocks.runtime.runners._calls import is_task, map_calls, submit_call

if TYPE_CHECKING:
    from blocks.runtime._context import TaskRun
    from blocks.runtime._futures import TaskFuture
    from blocks.runtime._options import TaskLike

__all__ = [
    "ConcurrentTaskRunner",
    "SequentialTaskRunner",
    "TaskRunner",
    "ThreadPoolTaskRunner",
]

_made = threading.Lock()
_PENDING, _RUNNING, _FINISHED = "PENDING", "RUNNING", "FINISHED"
_DONE = frozenset({"CANCELLED", "CANCELLED_AND_NOTIFIED", _FINISHED})


class RunFuture(concurrent.futures.Future[State]):
    """A `concurrent.futures.Future` that makes its condition only when something waits on it.

    The base class builds a `threading.Condition` per future and takes it for every state
    change, which is about half of what ``.submit()`` of a small task costs. Here the states
    a run's future goes through when nobody blocks on it (pending, running, finished) are
    set under one lock instead (`_guard`); the condition is made at the first ``wait``,
    ``add_done_callback``, ``cancel``, `concurrent.futures.wait` or ``as_completed``, and from
    then on the base class's own code runs. A setter that finds no condition knows no thread
    is waiting, since waiting needs the condition, and both are decided under `_guard`: the
    module's `_made`, or a lane's own lock for its jobs (its worker finishes one job and
    starts the next under one acquisition).

    A new future sets nothing: the class holds the pending state's values, and the waiter
    and callback lists are made when the base class first reaches for them.
    """

    _cond: threading.Condition | None = None
    _state = "PENDING"
    _result: State | None = None
    _exception: BaseException | None = None
    _guard: threading.Lock = _made

    def __init__(self, guard: threading.Lock | None = None) -> None:
        # Not the base __init__: it makes the condition and the lists.
        if guard is not None:
            self._guard = guard

    @property
    def _waiters(self) -> list[Any]:  # type: ignore[override]
        return self.__dict__.setdefault("_waiter_list", [])  # type: ignore[no-any-return]

    @property
    def _done_callbacks(self) -> list[Any]:
        return self.__dict__.setdefault("_callback_list", [])  # type: ignore[no-any-return]

    @classmethod
    def finished(cls, result: State) -> RunFuture:
        """A future already done with `result` (nobody can be waiting on a new one)."""
        future = cls()
        future._result = result
        future._state = _FINISHED
        return future

    @property
    def _condition(self) -> threading.Condition:  # type: ignore[override]
        cond = self._cond
        if cond is None:
            with self._guard:
                cond = self._cond
                if cond is None:
                    cond = self._cond = threading.Condition()
        return cond

    def set_running_or_notify_cancel(self) -> bool:
        with self._guard:
            fast = self._cond is None and self._state == _PENDING
            if fast:
                self._state = _RUNNING
        return True if fast else super().set_running_or_notify_cancel()

    def set_result(self, result: State) -> None:
        with self._guard:
            fast = self._cond is None and self._state in (_PENDING, _RUNNING)
            if fast:
                self._result = result
                self._state = _FINISHED
        if not fast:
            super().set_result(result)

    def set_exception(self, exception: BaseException | None) -> None:
        with self._guard:
            fast = self._cond is None and self._state in (_PENDING, _RUNNING)
            if fast:
                self._exception = exception
                self._state = _FINISHED
        if not fast:
            super().set_exception(exception)

    def _finish_waited(self, result: State | None, error: BaseException | None) -> None:
        """Finish a running future that has a condition, as the base class does (called
        without the guard: it notifies waiters and runs callbacks)."""
        if error is None:
            super().set_result(result)  # type: ignore[arg-type]  # a runner runs any callable
        else:
            super().set_exception(error)

    def result(self, timeout: float | None = None) -> State:
        if self._state == _FINISHED and self._exception is None:
            return self._result  # type: ignore[return-value]
        return super().result(timeout)

    def done(self) -> bool:
        return self._state in _DONE

    def running(self) -> bool:
        return self._state == _RUNNING


def _taking_tasks(submit: Callable[..., Any]) -> Callable[..., Any]:
    """A subclass's ``submit(fn)`` that also takes Prefect's ``submit(task, parameters, ...)``
    (a prepared call, as our tasks and flows hand over, goes straight through)."""
    if getattr(submit, "_takes_tasks", False):
        return submit

    @functools.wraps(submit)
    def taking_tasks(
        self: TaskRunner,
        fn: Any,
        parameters: Any = None,
        wait_for: Any = None,
        dependencies: Any = None,
    ) -> Any:
        if parameters is None and wait_for is None and dependencies is None and not is_task(fn):
            return submit(self, fn)
        return submit_call(self, fn, parameters, wait_for)

    taking_tasks._takes_tasks = True  # type: ignore[attr-defined]
    return taking_tasks


class TaskRunner:
    """Base class: runs a callable that returns a `State`, giving back a concurrent future."""

    #: Whether this class's `submit_plain` is its own way to run a plain task. A subclass that
    #: overrides `submit` or `submit_task` but not `submit_plain` gets every run through them.
    _direct_plain = False

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "submit_plain" in cls.__dict__:
            cls._direct_plain = True
        elif "submit" in cls.__dict__ or "submit_task" in cls.__dict__:
            cls._direct_plain = False
        if "submit" in cls.__dict__:
            cls.submit = _taking_tasks(cls.__dict__["submit"])  # type: ignore[method-assign]

    def duplicate(self) -> TaskRunner:
        """A fresh runner with the same settings, for one flow run."""
        return type(self)()

    def submit(self, fn: Callable[[], State]) -> concurrent.futures.Future[State]:
        """Run `fn` (a callable returning a `State`); its concurrent future.

        Every runner also takes Prefect 3's ``submit(task, parameters=None, wait_for=None,
        dependencies=None)``, which runs the task with those arguments and gives back its
        `TaskFuture` (`dependencies` is accepted and ignored: Prefect's run graph has no
        counterpart here). A subclass implements the first form; the second is added to it
        (`_taking_tasks`), so type checkers see only the first.
        """
        raise NotImplementedError

    def map(self, task: Any, parameters: dict[str, Any], wait_for: Any = None) -> Any:
        """Prefect 3's ``runner.map(task, parameters, wait_for)``: one run per element of the
        iterable parameters, as ``task.map``; their `TaskFutureList`."""
        return map_calls(self, task, parameters, wait_for)

    def submit_task(
        self,
        task: TaskLike,
        run: TaskRun,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        wait_for: Sequence[TaskFuture[Any]] = (),
    ) -> concurrent.futures.Future[State]:
        """Submit one run of `task`: wait for `wait_for`, then run the task engine.

        Runners that run tasks in another process override this: they need the task and its
        arguments, not a closure over the flow run. The default runs the closure via `submit`.
        """
        if not wait_for:
            return self.submit(functools.partial(run_task, task, run, args, kwargs))
        waits = list(wait_for)

        def job() -> State:
            for future in waits:
                future.wait()
            return run_task(task, run, args, kwargs)

        return self.submit(job)

    def submit_plain(
        self, task: TaskLike, run: TaskRun, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> concurrent.futures.Future[State]:
        """Submit a run that needs nothing around the call (`Task.submit` checked what
        `engine._task_run.is_plain` checks): the runners here hand `run_plain` over directly.
        Others get it as `submit_task`."""
        return self.submit_task(task, run, args, kwargs)

    def shutdown(self, wait: bool = True) -> None:
        """Release resources; with `wait`, first let every submitted task finish."""

    def __enter__(self) -> TaskRunner:
        return self

    def __exit__(self, *exc: object) -> None:
        self.shutdown(wait=True)

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


TaskRunner.submit = _taking_tasks(TaskRunner.submit)  # type: ignore[method-assign]


class SequentialTaskRunner(TaskRunner):
    """Runs each submitted task immediately, in the calling thread, one after another."""

    def submit(self, fn: Callable[[], State]) -> concurrent.futures.Future[State]:
        return _run_now(fn)

    def submit_plain(
        self, task: TaskLike, run: TaskRun, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> concurrent.futures.Future[State]:
        if not self._direct_plain:
            return self.submit_task(task, run, args, kwargs)
        return _run_now(run_plain, task, run, args, kwargs)


def _run_now(fn: Callable[..., State], *args: Any) -> RunFuture:
    """A future already done with ``fn(*args)``, or with what it raised."""
    try:
        return RunFuture.finished(fn(*args))
    except BaseException as exc:  # the engine returns states; this is a crash
        future = RunFuture()
        future.set_exception(exc)
        return future


class ConcurrentTaskRunner(TaskRunner):
    """Runs submitted tasks on threads, at most `max_workers` at once (default ``min(32, cpus+4)``).

    Each task runs in a copy of the submitting thread's context, so it sees its flow run.
    Threads suit I/O-bound tasks; CPU-bound pure-Python tasks still share the GIL.

    The threads are the process's (`SharedThreads`): a flow run borrows them instead of
    starting a pool of its own, so the hundredth flow run starts its tasks as fast as the
    first. Each run still has its own bound, and waits only for its own tasks.
    """

    def __init__(self, max_workers: int | None = None) -> None:
        if max_workers is not None and max_workers < 1:
            raise ConfigurationError("max_workers must be at least 1")
        self.max_workers = max_workers
        self._pool: _Lane | None = None
        self._lock = threading.Lock()

    def duplicate(self) -> ConcurrentTaskRunner:
        return type(self)(max_workers=self.max_workers)

    def _lane(self) -> _Lane:
        pool = self._pool
        if pool is None:
            with self._lock:
                pool = self._pool
                if pool is None:
                    workers = self.max_workers or min(32, (os.cpu_count() or 1) + 4)
                    pool = self._pool = _Lane(workers)
        return pool

    def submit(self, fn: Callable[[], State]) -> concurrent.futures.Future[State]:
        return self._lane().submit(contextvars.copy_context(), fn, ())

    def submit_plain(
        self, task: TaskLike, run: TaskRun, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> concurrent.futures.Future[State]:
        if not self._direct_plain:
            return self.submit_task(task, run, args, kwargs)
        lane = self._pool or self._lane()
        return lane.submit(contextvars.copy_context(), run_plain, (task, run, args, kwargs))

    def shutdown(self, wait: bool = True) -> None:
        pool = self._pool
        if pool is not None:
            # Detached after waiting: tasks that submit more while we wait use the same lane.
            pool.shutdown(wait=wait)
            with self._lock:
                if self._pool is pool:
                    self._pool = None

    def __repr__(self) -> str:
        return f"{type(self).__name__}(max_workers={self.max_workers})"


#: A lane's job: its future, the submitter's context, and ``fn(*args)`` to run in it.
_Job = tuple[RunFuture, contextvars.Context, Callable[..., State], tuple[Any, ...]]


class _Lane:
    """One flow run's share of the process's threads: at most `limit` of its jobs run at once.

    A job that blocks on another run (``future.result()``, ``wait_for``, a future argument)
    does not count while it waits (`blocked`): another thread takes its place. Otherwise
    `limit` runs each waiting for a run they submitted would hold every slot while their
    runs stay queued behind them, forever.

    A thread that finishes a job takes the lane's next one, so a burst of submissions is
    served by `limit` threads looping, not by one hand-off per job. Threads are woken one at
    a time: while one is on its way (`_waking`) new jobs queue for it, and each thread that
    starts wakes the next if jobs are still queued. Jobs that block (I/O, sleep) so spread
    over up to `limit` threads in turn, while a burst of tiny jobs, which one thread drains
    before another could even take the GIL, does not wake `limit` threads for nothing.
    """

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._lock = threading.Lock()
        self._queued: collections.deque[_Job] = collections.deque()
        self._running = 0  # threads working for this lane (or woken to)
        self._waking = 0  # of which woken, not yet started
        # Jobs submitted and not yet run or cancelled: a count, not a set of futures, so a
        # job costs no hashing; `shutdown` waits on `_drained` for it to reach zero.
        self._unfinished = 0
        self._waiting = 0
        self._drained = threading.Condition(self._lock)

    def submit(
        self, ctx: contextvars.Context, fn: Callable[..., State], args: tuple[Any, ...]
    ) -> concurrent.futures.Future[State]:
        lock = self._lock
        future = RunFuture(lock)
        job: _Job = (future, ctx, fn, args)
        lock.acquire()
        self._unfinished += 1
        if self._running >= self.limit or self._waking:
            self._queued.append(job)
            lock.release()
            return future
        self._running += 1
        self._waking += 1
        lock.release()
        try:
            SHARED_THREADS.start(lambda: self._work(job))
        except BaseException:
            with self._lock:
                self._running -= 1
                self._waking -= 1
                self._finished(1)
            raise
        return future

    def _wake(self) -> None:
        """Start one more thread on the queued jobs (`_running` and `_waking` counted)."""
        try:
            SHARED_THREADS.start(lambda: self._work(None))
        except BaseException:  # interpreter exit: the threads already here drain the queue
            with self._lock:
                self._running -= 1
                self._waking -= 1

    def _work(self, job: _Job | None) -> None:
        """Run `job` (None: the first queued one), then the lane's queued ones. Between two
        jobs the lock is taken once: to finish one future, count it, take the next job and
        mark its future running (the futures' guard is this lock); a future someone waits on
        goes the base class's way."""
        lock = self._lock
        WORKER.lane = self
        with lock:
            self._waking -= 1
            if job is None:
                if not self._queued:
                    self._running -= 1
                    WORKER.lane = None
                    return
                job = self._queued.popleft()
            started = _start(job[0])
            wake = bool(self._queued) and self._running < self.limit
            if wake:
                self._running += 1
                self._waking += 1
        if wake:
            self._wake()
        while True:
            future, ctx, fn, args = job
            ran = started or future.set_running_or_notify_cancel()  # False: cancelled
            result: State | None = None
            error: BaseException | None = None
            if ran:
                try:
                    result = ctx.run(fn, *args)
                except BaseException as exc:  # the engine returns states; this is a crash
                    error = exc
            lock.acquire()
            try:
                if ran and future._cond is not None:
                    lock.release()  # a waiter: its condition, waiters and callbacks, unlocked
                    try:
                        future._finish_waited(result, error)
                    finally:
                        lock.acquire()
                elif ran:
                    if error is None:
                        future._result = result
                    else:
                        future._exception = error
                    future._state = _FINISHED
                self._unfinished -= 1
                if not self._unfinished and self._waiting:
                    self._drained.notify_all()
                # Past the limit: a thread that blocked came back while another took its
                # place; the others (at least `limit`, none blocked) drain the queue.
                if not self._queued or self._running > self.limit:
                    self._running -= 1
                    WORKER.lane = None
                    return
                job = self._queued.popleft()
                nxt = job[0]  # mark it running if nobody waits on it (as `_start`)
                started = nxt._cond is None and nxt._state == _PENDING
                if started:
                    nxt._state = _RUNNING
            finally:
                lock.release()

    def blocked(self) -> None:
        """A thread of this lane is about to block on a run: it stops counting, and a queued
        job gets a thread if none is on its way."""
        with self._lock:
            self._running -= 1
            wake = bool(self._queued) and not self._waking and self._running < self.limit
            if wake:
                self._running += 1
                self._waking += 1
        if wake:
            self._wake()

    def unblocked(self) -> None:
        """The thread is back at its job: it counts again (for a moment past the limit)."""
        with self._lock:
            self._running += 1

    def _finished(self, jobs: int) -> None:
        """Count `jobs` as done (called holding `_lock`)."""
        self._unfinished -= jobs
        if not self._unfinished and self._waiting:
            self._drained.notify_all()

    def shutdown(self, wait: bool) -> None:
        """With `wait`, let every job finish (also those submitted meanwhile); else cancel the
        jobs not started (running ones go on: Python cannot stop a thread)."""
        if not wait:
            with self._lock:
                queued, self._queued = self._queued, collections.deque()
                self._finished(len(queued))
            for future, _, _, _ in queued:
                future.cancel()
            return
        with self._lock:
            self._waiting += 1
            try:
                while self._unfinished:
                    self._drained.wait()
            finally:
                self._waiting -= 1


def _start(future: RunFuture) -> bool:
    """Mark a pending future nobody waits on running (its guard held); False: not done here."""
    if future._cond is None and future._state == _PENDING:
        future._state = _RUNNING
        return True
    return False


class SharedThreads:
    """Worker threads shared by every `ConcurrentTaskRunner` of the process.

    A job goes to an idle thread if there is one, else to a new thread: the number of busy
    threads is bounded by the runners' own limits (as with a pool per run, which also rules
    out the deadlock a single bounded pool would risk when tasks wait on subflows' tasks).
    At most `keep_idle` threads stay parked, each for at most `idle_seconds`. At interpreter
    exit idle threads are released and running jobs awaited (as `concurrent.futures` does);
    a forked child starts with none.
    """

    def __init__(self, keep_idle: int = 32, idle_seconds: float = 60.0) -> None:
        self.keep_idle = keep_idle
        self.idle_seconds = idle_seconds
        self._lock = threading.Lock()
        self._jobs: queue.SimpleQueue[Callable[[], None] | None] = queue.SimpleQueue()
        self._idle = 0
        self._threads: set[threading.Thread] = set()
        self._closed = False

    def start(self, job: Callable[[], None]) -> None:
        """Run `job` (which must not raise) on an idle thread or a new one."""
        with self._lock:
            if self._closed:
                raise RuntimeError("cannot start tasks after interpreter shutdown")
            if self._idle:
                # Put under the lock: a parked thread that times out checks the queue under
                # the same lock before leaving, so a job handed to "an idle thread" is never
                # stranded.
                self._idle -= 1
                self._jobs.put(job)
                return
            thread = threading.Thread(
                target=self._serve, args=(job,), name="blocks-task", daemon=True
            )
            self._threads.add(thread)
        thread.start()

    def _serve(self, job: Callable[[], None] | None) -> None:
        try:
            while job is not None:
                job()
                job = None  # drop references (the task's result) while parked
                with self._lock:
                    if self._closed or self._idle >= self.keep_idle:
                        return
                    self._idle += 1
                try:
                    job = self._jobs.get(timeout=self.idle_seconds)
                except queue.Empty:
                    with self._lock:
                        try:
                            job = self._jobs.get_nowait()
                        except queue.Empty:
                            self._idle -= 1
                            return
        finally:
            with self._lock:
                self._threads.discard(threading.current_thread())

    def idle(self) -> int:
        """How many threads are parked, waiting for a job."""
        with self._lock:
            return self._idle

    def threads(self) -> int:
        """How many threads are alive (busy or parked)."""
        with self._lock:
            return len(self._threads)

    def close(self) -> None:
        """Release parked threads and wait for busy ones (interpreter exit)."""
        with self._lock:
            self._closed = True
            idle, self._idle = self._idle, 0
            threads = list(self._threads)
        for _ in range(idle):
            self._jobs.put(None)
        for thread in threads:
            if thread is not threading.current_thread():
                thread.join()

    def _after_fork(self) -> None:
        # The child has only the forking thread: forget the parent's threads and jobs.
        self._lock = threading.Lock()
        self._jobs = queue.SimpleQueue()
        self._idle = 0
        self._threads = set()


SHARED_THREADS = SharedThreads()
# Daemon threads, so the interpreter's own thread shutdown does not wait for parked ones;
# this handler then releases them and waits for running tasks, as concurrent.futures does.
atexit.register(SHARED_THREADS.close)
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=SHARED_THREADS._after_fork)


ThreadPoolTaskRunner = ConcurrentTaskRunner
"""Prefect 3's name for the thread-pool runner."""
