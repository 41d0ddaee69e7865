"""The run engine shared by tasks and flows, sync and async: steps and the drivers that run them.

A run's state machine (`_task_run.task_steps`, `_flow_run.flow_steps`) is a generator of
`Step` effects — call the function, sleep, read or write the store, take a key's lock, call a
hook. `drive` performs them blocking in this thread, `adrive` awaits them on the running event
loop; the generator makes every decision once, for both.

Example:
    >>> def steps():
    ...     yield Sleep(0.01)
    ...     return "done"
    >>> drive(steps())
    'done'
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextvars
import inspect
import threading
import time
from collections.abc import Awaitable, Callable, Generator, Iterable
from typing import TYPE_CHECKING, Any, TypeVar

from blocks.errors import TaskTimeout
from blocks.results import _persistence as persistence
from blocks.runtime._futures import aresolve_futures, leave_lane, rejoin_lane, resolve_futures
from blocks.runtime._logging import run_logger
from blocks.runtime._states import State

if TYPE_CHECKING:
    from blocks.results import ResultStore

__all__ = [
    "Blocking",
    "Call",
    "Engine",
    "Hook",
    "Lock",
    "Resolve",
    "Sleep",
    "Step",
    "adrive",
    "call_with_timeout",
    "drive",
    "run_coroutine",
    "run_hooks",
]

T = TypeVar("T")

Engine = Generator["Step", Any, State]
"""A run's engine (or part of one): yields `Step`s for a driver, returns the final state."""


# -- steps ---------------------------------------------------------------------------------------


class Step:
    """One effect a run's engine asks for; `drive` performs it blocking, `adrive` awaiting."""

    __slots__ = ()

    def run(self) -> Any:
        raise NotImplementedError

    async def arun(self) -> Any:
        raise NotImplementedError


class Call(Step):
    """Call the user's function once, under its timeout.

    Sync: in this thread, or in a watched daemon thread when there is a timeout (abandoned,
    not killed, when it expires). Async: awaited, and cancelled when the timeout expires.
    Either way an expired timeout raises `TaskTimeout`.
    """

    __slots__ = ("args", "fn", "kwargs", "timeout", "what")

    def __init__(
        self,
        fn: Callable[..., Any],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        timeout: float | None,
        what: Callable[[], str],
    ) -> None:
        self.fn, self.args, self.kwargs = fn, args, kwargs
        self.timeout, self.what = timeout, what

    def run(self) -> Any:
        if self.timeout is None:
            return self.fn(*self.args, **self.kwargs)
        return call_with_timeout(self.fn, self.args, self.kwargs, self.timeout, self.what())

    async def arun(self) -> Any:
        if self.timeout is None:
            return await self.fn(*self.args, **self.kwargs)
        scope = asyncio.timeout(self.timeout)
        try:
            async with scope:
                return await self.fn(*self.args, **self.kwargs)
        except TimeoutError:
            if not scope.expired():
                raise  # the body's own TimeoutError, not our deadline
        raise TaskTimeout(
            f"{self.what()} exceeded its timeout of {self.timeout:g} second(s) and was cancelled."
        )


class Blocking(Step):
    """Blocking I/O (the result store, a runner's shutdown): in this thread, or in a worker
    thread under asyncio (`asyncio.to_thread`) so the event loop keeps running."""

    __slots__ = ("args", "fn")

    def __init__(self, fn: Callable[..., Any], *args: Any) -> None:
        self.fn, self.args = fn, args

    def run(self) -> Any:
        return self.fn(*self.args)

    async def arun(self) -> Any:
        return await asyncio.to_thread(self.fn, *self.args)


class Sleep(Step):
    """Wait before a retry: `time.sleep`, or `asyncio.sleep`."""

    __slots__ = ("seconds",)

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds

    def run(self) -> None:
        time.sleep(self.seconds)

    async def arun(self) -> None:
        await asyncio.sleep(self.seconds)


class Lock(Step):
    """Take the "compute once" lock of a cache key; gives the held `persistence.KeyLock`.

    Sync: waits for it. Async: polls it between short ``asyncio.sleep``s — never parks a worker
    thread on it, so many runs waiting for one key cannot starve the thread pool that the
    holder needs to write its result.
    """

    __slots__ = ("key", "store")

    def __init__(self, store: ResultStore, key: str) -> None:
        self.store, self.key = store, key

    def run(self) -> persistence.KeyLock:
        lock = persistence.KeyLock(self.store, self.key)
        lock.acquire()
        return lock

    async def arun(self) -> persistence.KeyLock:
        lock = persistence.KeyLock(self.store, self.key)
        pause = 0.001
        while not lock.acquire(blocking=False):
            await asyncio.sleep(pause)
            pause = min(pause * 2, 0.05)
        return lock


class Resolve(Step):
    """Wait for the futures in some values and give the values with their results in place."""

    __slots__ = ("values",)

    def __init__(self, *values: Any) -> None:
        self.values = values

    def run(self) -> tuple[Any, ...]:
        return tuple(resolve_futures(v) for v in self.values)

    async def arun(self) -> tuple[Any, ...]:
        return tuple([await aresolve_futures(v) for v in self.values])


class Hook(Step):
    """Call a state hook ``hook(owner, run, state)``; an async hook's awaitable is awaited
    (by a sync run: on a private event loop, see `run_coroutine`)."""

    __slots__ = ("args", "hook")

    def __init__(self, hook: Callable[..., Any], *args: Any) -> None:
        self.hook, self.args = hook, args

    def run(self) -> None:
        outcome = self.hook(*self.args)
        if inspect.isawaitable(outcome):
            run_coroutine(outcome)

    async def arun(self) -> None:
        outcome = self.hook(*self.args)
        if inspect.isawaitable(outcome):
            await outcome


def drive(steps: Generator[Step, Any, T]) -> T:
    """Run an engine to its end in this thread, performing each step blocking.

    A step's exception (even KeyboardInterrupt) is thrown back into the engine, which decides.
    """
    value: Any = None
    error: BaseException | None = None
    while True:
        try:
            step = steps.send(value) if error is None else steps.throw(error)
        except StopIteration as stop:
            result: T = stop.value
            return result
        try:
            value, error = step.run(), None
        except BaseException as exc:
            value, error = None, exc


async def adrive(steps: Generator[Step, Any, T]) -> T:
    """Run an engine to its end on the running event loop, awaiting each step (see `drive`)."""
    value: Any = None
    error: BaseException | None = None
    while True:
        try:
            step = steps.send(value) if error is None else steps.throw(error)
        except StopIteration as stop:
            result: T = stop.value
            return result
        try:
            value, error = await step.arun(), None
        except BaseException as exc:
            value, error = None, exc


def run_coroutine(awaitable: Awaitable[T]) -> T:
    """Run `awaitable` to its end from sync code, with ``asyncio.run`` (in a new thread when
    this one already runs an event loop, since loops do not nest). The current context goes
    along, so the run still sees its flow run."""

    async def main() -> T:
        return await awaitable

    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(main())
    ctx = contextvars.copy_context()
    with concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="blocks-async") as pool:
        lane = leave_lane()
        try:
            return pool.submit(ctx.run, asyncio.run, main()).result()
        finally:
            rejoin_lane(lane)


def run_hooks(
    hooks: Iterable[Callable[..., Any]], owner: Any, run: Any, state: State
) -> Generator[Step, Any, None]:
    """Call each ``hook(owner, run, state)``; a failing hook is logged, never fatal."""
    for hook in hooks:
        try:
            yield Hook(hook, owner, run, state)
        except Exception:
            name = getattr(hook, "__name__", repr(hook))
            run_logger(run).exception("State hook %s failed; the run's state stands.", name)


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
    lane = leave_lane()  # a runner's worker waiting on the body: the body may wait on runs
    try:
        finished = done.wait(timeout)
    finally:
        rejoin_lane(lane)
    if not finished:
        raise TaskTimeout(
            f"{what} exceeded its timeout of {timeout:g} second(s). It was abandoned, not "
            "killed: Python cannot stop a thread, so its body may still be running."
        )
    ok, value = outcome[0]
    if ok:
        return value
    raise value
