"""`TaskFuture`: the handle ``task.submit()`` returns, and resolution of futures in arguments.

A future is also awaitable: ``await future`` gives its result without blocking an event loop.
An async task submitted from an async flow's loop is scheduled on that loop (a `LoopJob`).
Blocking on any future in the thread that runs a loop (``future.result()``, ``wait``, a sync
task resolving its arguments) works as in Prefect: first every run queued on that loop that has
not started yet moves to a thread of its own (`release_loop`), since a blocked loop cannot
start it. A run that already started on the loop cannot move: blocking on it raises
`RuntimeError` (``await future`` instead).

``.map()`` returns a `TaskFutureList` (Prefect's ``PrefectFutureList``): a list of futures
with ``wait()`` and ``result()`` for all of them.

Example:
    >>> @flow
    ... def fan_out(items: list[str]) -> list[str]:
    ...     return process_item.map(items).result()
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import contextvars
import operator
import threading
import time
import weakref
from collections.abc import Callable, Coroutine, Generator, Iterable, Iterator
from itertools import chain
from typing import TYPE_CHECKING, Any, Generic, NamedTuple, Protocol, TypeVar

from blocks.errors import ConfigurationError, UpstreamFailed
from blocks.runtime._annotations import SCAN, BaseAnnotation, allow_failure, opaque, quote
from blocks.runtime._states import Pending, Running, State, StateType

if TYPE_CHECKING:
    from blocks.runtime._context import TaskRun

__all__ = [
    "WORKER",
    "DoneAndNotDoneFutures",
    "LoopJob",
    "PrefectFutureList",
    "TaskFuture",
    "TaskFutureList",
    "aresolve_futures",
    "as_completed",
    "enable_argument_resolution",
    "futures_to_states",
    "leave_lane",
    "rejoin_lane",
    "release_loop",
    "resolve_futures",
    "resolve_futures_to_results",
    "resolve_futures_to_states",
    "wait",
]

R = TypeVar("R")
_COMPLETED = StateType.COMPLETED


class Yielding(Protocol):
    """A task runner's share of threads that a worker thread leaves while it blocks."""

    def blocked(self) -> None:
        """The calling worker thread is about to block: let another take its place."""

    def unblocked(self) -> None:
        """The calling worker thread is back at work."""


class _Worker(threading.local):
    """What the current thread works for: the runner's lane whose job it runs, if any, and
    how many waits on runs are open in it (coroutines of its loop may wait at once)."""

    lane: Yielding | None = None
    waits = 0


#: Set by a task runner's worker thread while it runs the runner's jobs (`runners._base`).
WORKER = _Worker()


def leave_lane() -> Yielding | None:
    """Before this thread waits on a run: if it is a runner's worker, it leaves its lane's
    count (at its first open wait), so another thread can run what it waits for."""
    worker = WORKER
    lane = worker.lane
    if lane is not None:
        worker.waits += 1
        if worker.waits == 1:
            lane.blocked()
    return lane


def rejoin_lane(lane: Yielding | None) -> None:
    """After the wait `leave_lane` opened: back in the count at its last open wait."""
    if lane is not None:
        worker = WORKER
        worker.waits -= 1
        if worker.waits == 0:
            lane.unblocked()


class TaskFuture(Generic[R]):
    """The eventual final `State` of a submitted task run.

    ``result()`` waits and returns the value (or re-raises the task's exception);
    ``wait()`` waits without raising; ``state`` is the current state without waiting;
    ``await future`` is ``result()`` for async code, and ``await future.wait_async()`` is
    ``wait()``. `loop` is the event loop the run is on, for an async task submitted from an
    async flow (None otherwise).
    """

    __slots__ = ("_future", "loop", "task_run", "upstream")

    def __init__(
        self,
        task_run: TaskRun,
        future: concurrent.futures.Future[State],
        loop: asyncio.AbstractEventLoop | None = None,
        upstream: list[TaskFuture[Any]] | tuple[()] = (),
    ) -> None:
        SCAN[0] = True
        self.task_run = task_run
        self._future = future
        self.loop = loop
        #: The futures the run was declared to wait for (``wait_for=`` and its arguments).
        self.upstream = upstream

    @property
    def state(self) -> State:
        """The final state if done, else Running or Pending."""
        if self._future.done():
            return self._future.result()
        return Running() if self._future.running() else Pending()

    def wait(self, timeout: float | None = None) -> State | None:
        """Wait up to `timeout` seconds for the run to finish; its final state, or None."""
        try:
            return self._final_state(timeout)
        except concurrent.futures.TimeoutError:
            return None

    def result(self, timeout: float | None = None, raise_on_failure: bool = True) -> R:
        """Wait for the run and return its value; re-raises its exception if it failed.

        Raises `TimeoutError` if it does not finish within `timeout` seconds.
        """
        job = self._future
        state = job.result() if job.done() else self._block(timeout)
        if state.type is _COMPLETED and state.ref is None:
            return state.data  # type: ignore[no-any-return]  # what state.result() gives
        value: R = state.result(raise_on_failure)
        return value

    async def wait_async(self) -> State:
        """Wait for the run without blocking the event loop; its final state.

        Cancelling the waiter does not cancel the run. In a runner's worker thread (an
        async task on its private loop) the thread leaves its lane's count while it waits,
        as a blocking wait does (`_final_state`).
        """
        job = self._future
        if WORKER.lane is None or (job.done() and not job.cancelled()):
            return await asyncio.shield(asyncio.wrap_future(job))
        lane = leave_lane()
        try:
            return await asyncio.shield(asyncio.wrap_future(job))
        finally:
            rejoin_lane(lane)

    async def result_async(self, raise_on_failure: bool = True) -> R:
        """`result()` for async code: ``await future.result_async()`` (or ``await future``)."""
        state = await self.wait_async()
        value: R = state.result(raise_on_failure=raise_on_failure)
        return value

    def __await__(self) -> Generator[Any, None, R]:
        return self.result_async().__await__()

    def _final_state(self, timeout: float | None = None) -> State:
        """Block until the run is done (`TimeoutError` after `timeout` s); its final state.

        The one way a thread blocks on a run: an event loop's thread first hands off the
        runs queued on its loop (`_check_blocking`); a task runner's worker thread lets
        another thread take its place while it waits (`WORKER`), so runs waiting for runs
        they submitted never fill their runner's threads.
        """
        job = self._future
        if job.done():
            return job.result()
        return self._block(timeout)

    def _block(self, timeout: float | None) -> State:
        """`_final_state` for a run not done when last looked at."""
        job = self._future
        if _running_loop() is not None:
            self._check_blocking()
        if WORKER.lane is None:
            return job.result(timeout)
        lane = leave_lane()
        try:
            return job.result(timeout)
        finally:
            rejoin_lane(lane)

    def _check_blocking(self) -> None:
        """Before blocking this thread on the run: if the thread runs an event loop, move the
        runs queued on that loop to threads (`release_loop`); refuse if this run already
        started on it, since it could never finish while its loop is blocked."""
        loop = _running_loop()
        if loop is None or self._future.done():
            return
        release_loop(loop)
        stuck = self._stuck_on(loop)
        if stuck is self:
            raise RuntimeError(
                f"Task run {self.task_run.name!r} already started on this event loop, so "
                "waiting for it here with a blocking call would never return: use "
                "`await future` (or `await future.wait_async()`) in async code."
            )
        if stuck is not None:
            raise RuntimeError(
                f"Task run {self.task_run.name!r} waits for task run {stuck.task_run.name!r}, "
                "which already started on this event loop, so waiting for it here with a "
                "blocking call would never return: use `await future` (or "
                "`await future.wait_async()`) in async code."
            )

    def _stuck_on(self, loop: asyncio.AbstractEventLoop) -> TaskFuture[Any] | None:
        """This run, or one it declared it waits for (at any depth), that is not done and
        already started on `loop`: one that cannot finish while the loop's thread blocks."""
        seen: set[int] = set()
        stack: list[TaskFuture[Any]] = [self]
        while stack:
            future = stack.pop()
            job = future._future
            if id(future) in seen or job.done():
                continue
            seen.add(id(future))
            if isinstance(job, LoopJob) and job.loop is loop and job.started_on_loop():
                return future
            stack.extend(future.upstream)
        return None

    @property
    def task_run_id(self) -> str:
        """The id of the task run (Prefect's ``future.task_run_id``)."""
        return self.task_run.id

    def done(self) -> bool:
        return self._future.done()

    def add_done_callback(self, fn: Any) -> None:
        self._future.add_done_callback(lambda _f: fn(self))

    def __repr__(self) -> str:
        return f"TaskFuture({self.task_run.name!r}, state={self.state!r})"


class DoneAndNotDoneFutures(NamedTuple):
    """What `wait` gives: the futures that finished and those still running."""

    done: set[TaskFuture[Any]]
    not_done: set[TaskFuture[Any]]


def wait(futures: Iterable[TaskFuture[Any]], timeout: float | None = None) -> DoneAndNotDoneFutures:
    """Wait until every future in `futures` is done (or `timeout` passes); never raises."""
    futures = list(futures)
    for future in futures:
        future._check_blocking()
    lane = leave_lane()
    try:
        concurrent.futures.wait([f._future for f in futures], timeout=timeout)
    finally:
        rejoin_lane(lane)
    done = {f for f in futures if f.done()}
    return DoneAndNotDoneFutures(done, {f for f in futures if f not in done})


def as_completed(
    futures: Iterable[TaskFuture[R]], timeout: float | None = None
) -> Iterator[TaskFuture[R]]:
    """Yield each future as its run finishes (each once); `TimeoutError` after `timeout` s.

    Example:
        >>> for future in as_completed(extract.map(sources)):
        ...     print(future.result())
    """
    by_inner: dict[concurrent.futures.Future[State], TaskFuture[R]] = {}
    for future in futures:
        future._check_blocking()
        by_inner.setdefault(future._future, future)
    deadline = None if timeout is None else time.monotonic() + timeout
    pending = set(by_inner)
    while pending:
        # One wait per batch (not the standard library's generator, which would stay
        # blocked-or-not across the caller's own code between two yields).
        left = None if deadline is None else max(0.0, deadline - time.monotonic())
        done = [f for f in pending if f.done()]
        if not done:
            lane = leave_lane()
            try:
                done = list(
                    concurrent.futures.wait(
                        pending, left, return_when=concurrent.futures.FIRST_COMPLETED
                    ).done
                )
            finally:
                rejoin_lane(lane)
        if not done:
            raise TimeoutError(f"{len(pending)} (of {len(by_inner)}) runs did not finish")
        for inner in done:
            pending.discard(inner)
            yield by_inner[inner]


class TaskFutureList(list[TaskFuture[R]]):
    """The futures ``.map()`` returns, in order, with ``wait()`` and ``result()`` for all.

    Example:
        >>> squares = square.map(range(3))
        >>> squares.result()
        [0, 1, 4]
    """

    def wait(self, timeout: float | None = None) -> None:
        """Wait until every run is done or `timeout` seconds pass; never raises."""
        wait(self, timeout)

    def result(self, timeout: float | None = None, raise_on_failure: bool = True) -> list[R]:
        """Every run's value, in order; raises the first failure met (or `TimeoutError`)."""
        if timeout is not None and timeout < 0:
            raise ConfigurationError(f"timeout must be 0 or more seconds, not {timeout}")
        done = wait(self, timeout)
        if done.not_done:
            raise TimeoutError(
                f"{len(done.not_done)} of {len(self)} runs did not finish within {timeout} "
                "second(s)."
            )
        return [f.result(raise_on_failure=raise_on_failure) for f in self]


PrefectFutureList = TaskFutureList
"""Prefect 3's name for the futures list ``.map()`` returns."""


class LoopJob(concurrent.futures.Future[State]):
    """A run scheduled on an async flow's event loop, which a blocking waiter may take over.

    Whoever claims it first runs it: the loop (`start`), or `take_over` in a thread of its
    own when the loop's thread is about to block on it. `cancel` also cancels a run that
    already started on the loop.
    """

    def __init__(
        self, make: Callable[[], Coroutine[Any, Any, State]], loop: asyncio.AbstractEventLoop
    ) -> None:
        super().__init__()
        self._make = make
        self.loop = loop
        self._claim_lock = threading.Lock()
        self._claimed = False
        self._on_loop = False  # claimed by the loop (not by a thread)
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Queue the run on the loop (from any thread)."""
        with _queued_lock:
            queued = _queued.get(self.loop)
            if queued is None:
                queued = _queued[self.loop] = set()
            queued.add(self)
        self.loop.call_soon_threadsafe(self._start_on_loop)

    def _claim(self, on_loop: bool) -> bool:
        with self._claim_lock:
            if self._claimed:
                return False
            self._claimed, self._on_loop = True, on_loop
        with _queued_lock:
            queued = _queued.get(self.loop)
            if queued is not None:
                queued.discard(self)
        return self.set_running_or_notify_cancel()  # False if cancelled before it started

    def started_on_loop(self) -> bool:
        """Whether the loop itself started the run and it is not done yet."""
        return self._on_loop and not self.done()

    def _start_on_loop(self) -> None:
        if self._claim(on_loop=True):
            self._task = self.loop.create_task(self._run_on_loop())

    async def _run_on_loop(self) -> None:
        try:
            self.set_result(await self._make())
        except BaseException as exc:
            self.set_exception(exc)
            if not isinstance(exc, Exception):
                raise

    def take_over(self) -> bool:
        """Run it in a new thread if nobody started it; whether it is done or will be."""
        if self.done():
            return True
        if not self._claim(on_loop=False):
            return self.done() or not self._on_loop
        ctx = contextvars.copy_context()

        def target() -> None:
            try:
                self.set_result(ctx.run(asyncio.run, self._make()))
            except BaseException as exc:
                self.set_exception(exc)

        threading.Thread(target=target, name="blocks-async-task", daemon=True).start()
        return True

    def cancel(self) -> bool:
        if super().cancel():
            return True
        task = self._task
        if task is not None and not self.done():
            with contextlib.suppress(RuntimeError):  # a closed loop: nothing left to cancel
                self.loop.call_soon_threadsafe(task.cancel)
        return False


#: The jobs queued on each event loop and not yet claimed (by the loop or by a thread).
_queued: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, set[LoopJob]] = (
    weakref.WeakKeyDictionary()
)
_queued_lock = threading.Lock()
#: The event loop running in this thread, or None (C-level: cheap enough for every wait).
_running_loop = asyncio._get_running_loop


def release_loop(loop: asyncio.AbstractEventLoop) -> None:
    """The thread running `loop` is about to block: run every job queued on the loop in a
    thread of its own, since the loop cannot start one until the block ends.

    Every blocking wait on a loop's thread calls this first, whatever it waits for: the
    awaited run may itself wait (through ``wait_for``, an argument, or a future it blocks on)
    on a job queued here, and a job left queued behind a blocked loop never runs.
    """
    with _queued_lock:
        jobs = _queued.pop(loop, None)
    if jobs:
        for job in jobs:
            job.take_over()


def enable_argument_resolution() -> None:
    """Look for futures and states in task arguments from now on, as once a future exists.

    For a process that receives states it did not make (a Dask worker): until a `TaskFuture`
    is created, `has_futures` skips the scan entirely.
    """
    SCAN[0] = True


_SEQUENCES = (list, tuple, set, frozenset, TaskFutureList)


def _kind(value: Any) -> type:
    """The container type to rebuild `value` as (a `TaskFutureList` of results is a list)."""
    kind = type(value)
    return list if kind is TaskFutureList else kind


def has_futures(args: tuple[Any, ...], kwargs: dict[str, Any]) -> bool:
    """Whether any argument is, or directly holds, a future, a `State` or an annotation
    (cheap when none was ever made)."""
    if not SCAN[0]:
        return False
    for value in args:
        if type(value) not in _SCALARS and _holds_future(value):
            return True
    if kwargs:
        for value in kwargs.values():
            if type(value) not in _SCALARS and _holds_future(value):
                return True
    return False


#: Argument types that never hold a future (skipped without a call).
_SCALARS = frozenset({int, float, str, bytes, bool, type(None)})


def _holds_future(value: Any, depth: int = 0) -> bool:
    if isinstance(value, TaskFuture | State | BaseAnnotation):
        return True
    if depth < 3 and type(value) in _SEQUENCES:
        return any(_holds_future(v, depth + 1) for v in value)
    if depth < 3 and type(value) is dict:
        return any(_holds_future(v, depth + 1) for v in value.values())
    return False


def _state_value(state: State, allow: bool, what: str) -> Any:
    """The value an upstream `state` gives a downstream argument, as Prefect 3 resolves it."""
    if state.is_completed():
        return state.data
    if allow and state.is_failed():
        return state.result(raise_on_failure=False)
    if allow and state.is_pending() and state.name == "NotReady":
        return None
    detail = state.message or (type(state.exception).__name__ if state.exception else "")
    raise UpstreamFailed(
        f"{what} ended in state {state.name}"
        + (f": {detail}" if detail else "")
        + "; wrap it in allow_failure(...) to run anyway."
    )


def resolve_futures(value: Any, depth: int = 0, allow: bool = False) -> Any:
    """Replace futures (and states) in `value` by their results, waiting for them.

    Looks inside lists, tuples, sets and dicts, three levels deep, and unwraps annotations:
    `quote` is passed as is, `opaque` resolved at the top only, `allow_failure` lets a failed
    upstream give its exception. A failed upstream otherwise raises `UpstreamFailed`.
    """
    if isinstance(value, BaseAnnotation):
        inner = value[0]
        if isinstance(value, quote):
            return inner
        if isinstance(value, opaque):
            if isinstance(inner, TaskFuture | State):
                return resolve_futures(inner, 3, allow)
            return inner
        return resolve_futures(inner, depth, allow or isinstance(value, allow_failure))
    if isinstance(value, TaskFuture):
        what = f"Upstream task run {value.task_run.name!r}"
        result = _state_value(value._final_state(), allow, what)
        return resolve_futures(result, depth + 1, allow)  # as Prefect: look inside it too
    if isinstance(value, State):
        return resolve_futures(_state_value(value, allow, "An upstream run"), depth + 1, allow)
    if depth >= 3:
        return value
    kind = _kind(value)
    if kind in _SEQUENCES:
        return kind(resolve_futures(v, depth + 1, allow) for v in value)
    if kind is dict:
        return {k: resolve_futures(v, depth + 1, allow) for k, v in value.items()}
    return value


def futures_in(value: Any, depth: int = 0) -> list[TaskFuture[Any]]:
    """The futures `resolve_futures` would wait for in `value`."""
    if isinstance(value, TaskFuture):
        return [value]
    if isinstance(value, BaseAnnotation):
        return [] if isinstance(value, quote) else futures_in(value[0], depth)
    if depth >= 3:
        return []
    kind = _kind(value)
    if kind in _SEQUENCES:
        return [f for v in value for f in futures_in(v, depth + 1)]
    if kind is dict:
        return [f for v in value.values() for f in futures_in(v, depth + 1)]
    return []


async def aresolve_futures(value: Any) -> Any:
    """`resolve_futures` for async code: awaits the futures, then resolves without blocking."""
    if SCAN[0]:
        for future in futures_in(value):
            await future.wait_async()
    return resolve_futures(value)


def futures_to_states(value: Any, depth: int = 0) -> Any:
    """`value` with each future (three levels into lists, tuples, sets, dicts) replaced by its
    final state, waiting for it: what a flow returning futures ends with, as in Prefect."""
    if isinstance(value, TaskFuture):
        return value._final_state()
    if not depth and not _holds_task_future(value):
        return value  # the common case (plain results): one scan at C speed, no rebuilding
    return _to_states(value, depth)


#: The containers `futures_to_states` looks into (exact types).
_CONTAINERS = frozenset({*_SEQUENCES, dict})


def _holds_task_future(value: Any) -> bool:
    """Whether `futures_to_states` would find a future in `value`: level by level (the
    containers at depth 0, 1 and 2 and their items), the item types of a whole level
    gathered by `map` and `chain` in C: a flow returning 300 small dicts costs a few list
    passes (~0.1 ms) rather than a Python call and a list per container (~0.5 ms)."""
    if not SCAN[0]:
        return False  # no future was ever made in this process
    if type(value) is TaskFutureList:
        return True  # rebuilt as a plain list, futures or not
    level = [value] if type(value) in _CONTAINERS else []
    for depth in range(3):
        if not level:
            return False
        kinds = set(map(type, level))
        if dict not in kinds:
            flat = list(chain.from_iterable(level))
        elif len(kinds) == 1:
            flat = list(chain.from_iterable(map(dict.values, level)))
        else:
            flat = list(chain.from_iterable([c.values() if type(c) is dict else c for c in level]))
        kinds = set(map(type, flat))
        if TaskFutureList in kinds or any(issubclass(kind, TaskFuture) for kind in kinds):
            return True
        if depth == 2 or not kinds & _CONTAINERS:
            return False
        level = [v for v in flat if type(v) in _CONTAINERS]
    return False


def _to_states(value: Any, depth: int) -> Any:
    """`futures_to_states` past the scan: rebuild the containers that hold a future."""
    if isinstance(value, TaskFuture):
        return value._final_state()
    if depth >= 3:
        return value
    kind = type(value)
    # A container holding no future is returned as it is (no copy): one pass, scalars skipped
    # without a call, so a flow returning 300 plain results does not rebuild them all.
    if kind in _SEQUENCES:
        items = [v if type(v) in _SCALARS else _to_states(v, depth + 1) for v in value]
        if kind is not TaskFutureList and all(map(operator.is_, items, value)):
            return value
        return _kind(value)(items)
    if kind is dict:
        values = [v if type(v) in _SCALARS else _to_states(v, depth + 1) for v in value.values()]
        if all(map(operator.is_, values, value.values())):
            return value
        return dict(zip(value, values, strict=True))
    return value


def resolve_futures_to_states(expr: Any) -> Any:
    """`expr` with every future in it (at any depth of lists, tuples, sets and dict values)
    replaced by its final `State`, waiting for them all first (Prefect's name).

    Example:
        >>> resolve_futures_to_states({"a": [double.submit(1)]})
        {'a': [Completed()]}
    """
    futures = _futures_anywhere(expr)
    for future in futures:
        future.wait()
    return _replace_futures(expr, lambda future: future.state, set())


def resolve_futures_to_results(expr: Any) -> Any:
    """`expr` with every future in it (at any depth) replaced by its result, waiting for each;
    a failed run raises its exception, as ``future.result()`` does (Prefect's name)."""
    return _replace_futures(expr, lambda future: future.result(), set())


def _futures_anywhere(expr: Any) -> list[TaskFuture[Any]]:
    found: list[TaskFuture[Any]] = []

    def note(future: TaskFuture[Any]) -> TaskFuture[Any]:
        found.append(future)
        return future

    _replace_futures(expr, note, set())
    return found


def _replace_futures(
    expr: Any, replace: Callable[[TaskFuture[Any]], Any], open_containers: set[int]
) -> Any:
    """`expr` rebuilt with ``replace(future)`` for each future; a container that holds itself
    is left as it is where it recurs."""
    if isinstance(expr, TaskFuture):
        return replace(expr)
    kind = _kind(expr)
    if kind not in _SEQUENCES and kind is not dict:
        return expr
    if id(expr) in open_containers:
        return expr
    open_containers.add(id(expr))
    try:
        if kind is dict:
            return {k: _replace_futures(v, replace, open_containers) for k, v in expr.items()}
        return kind(_replace_futures(v, replace, open_containers) for v in expr)
    finally:
        open_containers.discard(id(expr))
