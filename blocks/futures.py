"""`TaskFuture`: the handle ``task.submit()`` returns, and resolution of futures in arguments.

A future is also awaitable: ``await future`` gives its result without blocking an event loop.
That is the way to wait, in an async flow, for an async task submitted there: it runs on the
flow's own loop, so a blocking ``future.result()`` in that loop's thread could never finish and
raises `RuntimeError` instead of hanging.

Example:
    >>> @flow
    ... def fan_out(items: list[str]) -> list[str]:
    ...     futures = [process_item.submit(item) for item in items]
    ...     return [f.result() for f in futures]
"""

from __future__ import annotations

import asyncio
import concurrent.futures
from collections.abc import Generator
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from blocks.states import Pending, Running, State

if TYPE_CHECKING:
    from blocks.context import TaskRun

__all__ = [
    "TaskFuture",
    "aresolve_futures",
    "enable_argument_resolution",
    "resolve_futures",
    "wait",
]

R = TypeVar("R")

# Set once the first future exists: until then, argument scanning is skipped entirely.
_futures_exist = False


class TaskFuture(Generic[R]):
    """The eventual final `State` of a submitted task run.

    ``result()`` waits and returns the value (or re-raises the task's exception);
    ``wait()`` waits without raising; ``state`` is the current state without waiting;
    ``await future`` is ``result()`` for async code, and ``await future.wait_async()`` is
    ``wait()``. `loop` is the event loop the run is on, for an async task submitted from an
    async flow (None otherwise).
    """

    __slots__ = ("_future", "loop", "task_run")

    def __init__(
        self,
        task_run: TaskRun,
        future: concurrent.futures.Future[State],
        loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        global _futures_exist
        _futures_exist = True
        self.task_run = task_run
        self._future = future
        self.loop = loop

    @property
    def state(self) -> State:
        """The final state if done, else Running or Pending."""
        if self._future.done():
            return self._future.result()
        return Running() if self._future.running() else Pending()

    def wait(self, timeout: float | None = None) -> State | None:
        """Wait up to `timeout` seconds for the run to finish; its final state, or None."""
        self._check_blocking()
        try:
            return self._future.result(timeout)
        except concurrent.futures.TimeoutError:
            return None

    def result(self, timeout: float | None = None, raise_on_failure: bool = True) -> R:
        """Wait for the run and return its value; re-raises its exception if it failed.

        Raises `TimeoutError` if it does not finish within `timeout` seconds.
        """
        self._check_blocking()
        state = self._future.result(timeout)
        value: R = state.result(raise_on_failure=raise_on_failure)
        return value

    async def wait_async(self) -> State:
        """Wait for the run without blocking the event loop; its final state.

        Cancelling the waiter does not cancel the run.
        """
        return await asyncio.shield(asyncio.wrap_future(self._future))

    async def result_async(self, raise_on_failure: bool = True) -> R:
        """`result()` for async code: ``await future.result_async()`` (or ``await future``)."""
        state = await self.wait_async()
        value: R = state.result(raise_on_failure=raise_on_failure)
        return value

    def __await__(self) -> Generator[Any, None, R]:
        return self.result_async().__await__()

    def _check_blocking(self) -> None:
        """Refuse to block the thread of the event loop this run needs to make progress."""
        if self.loop is None or self._future.done():
            return
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            return
        if running is self.loop:
            raise RuntimeError(
                f"Task run {self.task_run.name!r} runs on this event loop, so waiting for it "
                "here with a blocking call would never return: use `await future` (or "
                "`await future.wait_async()`) in async code."
            )

    def done(self) -> bool:
        return self._future.done()

    def add_done_callback(self, fn: Any) -> None:
        self._future.add_done_callback(lambda _f: fn(self))

    def __repr__(self) -> str:
        return f"TaskFuture({self.task_run.name!r}, state={self.state!r})"


def wait(futures: list[TaskFuture[Any]], timeout: float | None = None) -> None:
    """Wait until every future in `futures` is done (or `timeout` passes)."""
    for future in futures:
        future._check_blocking()
    concurrent.futures.wait([f._future for f in futures], timeout=timeout)


def enable_argument_resolution() -> None:
    """Look for futures and states in task arguments from now on, as once a future exists.

    For a process that receives states it did not make (a Dask worker): until a `TaskFuture`
    is created, `has_futures` skips the scan entirely.
    """
    global _futures_exist
    _futures_exist = True


def has_futures(args: tuple[Any, ...], kwargs: dict[str, Any]) -> bool:
    """Whether any argument is, or directly holds, a future or a `State` (cheap when none exist)."""
    if not _futures_exist:
        return False
    return any(_holds_future(a) for a in args) or any(_holds_future(v) for v in kwargs.values())


def _holds_future(value: Any, depth: int = 0) -> bool:
    if isinstance(value, TaskFuture | State):
        return True
    if depth < 3 and type(value) in (list, tuple, set, frozenset):
        return any(_holds_future(v, depth + 1) for v in value)
    if depth < 3 and type(value) is dict:
        return any(_holds_future(v, depth + 1) for v in value.values())
    return False


def resolve_futures(value: Any, depth: int = 0) -> Any:
    """Replace futures (and states) in `value` by their results, waiting for them.

    Looks inside lists, tuples, sets and dicts, three levels deep. A failed upstream run
    re-raises its exception here.
    """
    if isinstance(value, TaskFuture):
        return value.result()
    if isinstance(value, State):
        return value.result()
    if depth >= 3:
        return value
    kind = type(value)
    if kind in (list, tuple, set, frozenset):
        return kind(resolve_futures(v, depth + 1) for v in value)
    if kind is dict:
        return {k: resolve_futures(v, depth + 1) for k, v in value.items()}
    return value


def futures_in(value: Any, depth: int = 0) -> list[TaskFuture[Any]]:
    """The futures `resolve_futures` would wait for in `value`."""
    if isinstance(value, TaskFuture):
        return [value]
    if depth >= 3:
        return []
    kind = type(value)
    if kind in (list, tuple, set, frozenset):
        return [f for v in value for f in futures_in(v, depth + 1)]
    if kind is dict:
        return [f for v in value.values() for f in futures_in(v, depth + 1)]
    return []


async def aresolve_futures(value: Any) -> Any:
    """`resolve_futures` for async code: awaits the futures, then resolves without blocking."""
    if _futures_exist:
        for future in futures_in(value):
            await future.wait_async()
    return resolve_futures(value)
