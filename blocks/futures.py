"""`TaskFuture`: the handle ``task.submit()`` returns, and resolution of futures in arguments.

Example:
    >>> @flow
    ... def fan_out(items: list[str]) -> list[str]:
    ...     futures = [process_item.submit(item) for item in items]
    ...     return [f.result() for f in futures]
"""

from __future__ import annotations

import concurrent.futures
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from blocks.states import Pending, Running, State

if TYPE_CHECKING:
    from blocks.context import TaskRun

__all__ = ["TaskFuture", "resolve_futures", "wait"]

R = TypeVar("R")

# Set once the first future exists: until then, argument scanning is skipped entirely.
_futures_exist = False


class TaskFuture(Generic[R]):
    """The eventual final `State` of a submitted task run.

    ``result()`` waits and returns the value (or re-raises the task's exception);
    ``wait()`` waits without raising; ``state`` is the current state without waiting.
    """

    __slots__ = ("_future", "task_run")

    def __init__(self, task_run: TaskRun, future: concurrent.futures.Future[State]) -> None:
        global _futures_exist
        _futures_exist = True
        self.task_run = task_run
        self._future = future

    @property
    def state(self) -> State:
        """The final state if done, else Running or Pending."""
        if self._future.done():
            return self._future.result()
        return Running() if self._future.running() else Pending()

    def wait(self, timeout: float | None = None) -> State | None:
        """Wait up to `timeout` seconds for the run to finish; its final state, or None."""
        try:
            return self._future.result(timeout)
        except concurrent.futures.TimeoutError:
            return None

    def result(self, timeout: float | None = None, raise_on_failure: bool = True) -> R:
        """Wait for the run and return its value; re-raises its exception if it failed.

        Raises `TimeoutError` if it does not finish within `timeout` seconds.
        """
        state = self._future.result(timeout)
        value: R = state.result(raise_on_failure=raise_on_failure)
        return value

    def done(self) -> bool:
        return self._future.done()

    def add_done_callback(self, fn: Any) -> None:
        self._future.add_done_callback(lambda _f: fn(self))

    def __repr__(self) -> str:
        return f"TaskFuture({self.task_run.name!r}, state={self.state!r})"


def wait(futures: list[TaskFuture[Any]], timeout: float | None = None) -> None:
    """Wait until every future in `futures` is done (or `timeout` passes)."""
    concurrent.futures.wait([f._future for f in futures], timeout=timeout)


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
