"""Run states: what a task or flow run is doing, or how it ended, and its result.

A `State` has a `type` (one of `StateType`), a display `name` (``"Cached"`` and
``"TimedOut"`` are named variants of COMPLETED and FAILED), an optional `message`, and either
the run's return value or the exception it failed with. ``state.result()`` returns the value or
re-raises the failure.

Example:
    >>> from blocks.states import Completed, Failed
    >>> Completed(data=42).result()
    42
    >>> Failed(exception=ValueError("bad")).result()
    Traceback (most recent call last):
    ValueError: bad
"""

from __future__ import annotations

import asyncio
import inspect
import time
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any

from blocks.core import _masking as masking
from blocks.errors import MissingResult, UpstreamFailed

__all__ = [
    "Cached",
    "Cancelled",
    "Completed",
    "Crashed",
    "Failed",
    "NotReady",
    "Pending",
    "Running",
    "State",
    "StateDetails",
    "StateType",
    "TimedOut",
    "is_state_iterable",
    "return_value_to_state",
]


class StateType(StrEnum):
    """The kind of a state; `State.name` may refine it (``Cached`` is a COMPLETED state)."""

    PENDING = "PENDING"
    RUNNING = "RUNNING"
    COMPLETED = "COMPLETED"
    FAILED = "FAILED"
    CRASHED = "CRASHED"
    CANCELLED = "CANCELLED"


_COMPLETED = StateType.COMPLETED
_FINAL = frozenset({StateType.COMPLETED, StateType.FAILED, StateType.CRASHED, StateType.CANCELLED})


_NAMES = {kind: kind.value.title() for kind in StateType}
_now = time.time


@dataclass(frozen=True, slots=True)
class StateDetails:
    """Prefect's ``state.state_details``: which runs a state belongs to and how it was cached.

    Ids are our runs' ids (hex strings, as ``TaskRun.id``); each is None where there is no
    such run (a state made by hand, a task called outside a flow). `cache_key` and
    `cache_expiration` are set for a task run whose result was persisted or read from the
    store (the record's key, and when it expires: None for never). `scheduled_time` is the slot
    (or the due time of a run made by hand) of a deployment's flow run, on that flow run's
    states; None for every other run (a flow called by hand starts when called).
    """

    flow_run_id: str | None = None
    task_run_id: str | None = None
    cache_key: str | None = None
    cache_expiration: datetime | None = None
    scheduled_time: datetime | None = None


_NO_DETAILS = StateDetails()


class State:
    """The state of a run: its type, name, message and result (a value or an exception).

    `run` is the task or flow run that reached this state (None for a state made by hand):
    a flow that returns a hand-made state ends in it, while states of runs are aggregated
    (see `return_value_to_state`).
    """

    # `cache` ((key, expiration) of a persisted result) is left unset but by the engine, so
    # making a state costs nothing more; `state_details` reads it.
    __slots__ = ("cache", "data", "exception", "message", "name", "ref", "run", "timestamp", "type")
    cache: tuple[str, datetime | None]

    def __init__(
        self,
        type: StateType,
        name: str | None = None,
        message: str | None = None,
        data: Any = None,
        exception: BaseException | None = None,
    ) -> None:
        self.type = type
        self.name = name or _NAMES[type]
        self.message = message
        self.data = data
        self.exception = exception
        self.timestamp = _now()
        self.run: Any = None
        # (result store, key) of the persisted result: read back when `data` was dropped
        # (``cache_result_in_memory=False``).
        self.ref: tuple[Any, str] | None = None

    # -- predicates (Prefect-compatible) ---------------------------------------------------
    def is_pending(self) -> bool:
        return self.type is StateType.PENDING

    def is_running(self) -> bool:
        return self.type is StateType.RUNNING

    def is_completed(self) -> bool:
        return self.type is StateType.COMPLETED

    def is_failed(self) -> bool:
        return self.type is StateType.FAILED

    def is_crashed(self) -> bool:
        return self.type is StateType.CRASHED

    def is_cancelled(self) -> bool:
        return self.type is StateType.CANCELLED

    def is_final(self) -> bool:
        return self.type in _FINAL

    def is_cached(self) -> bool:
        return self.type is StateType.COMPLETED and self.name == "Cached"

    @property
    def state_details(self) -> StateDetails:
        """The ids of the runs this state belongs to and its cache key (Prefect's name)."""
        run = self.run
        cache: tuple[str, datetime | None] | None = getattr(self, "cache", None)
        if run is None and cache is None:
            return _NO_DETAILS
        flow_run = None if run is None else run.flow_run
        task_run_id = None if run is None or run is flow_run else run.id
        return StateDetails(
            flow_run_id=None if flow_run is None else flow_run.id,
            task_run_id=task_run_id,
            cache_key=None if cache is None else cache[0],
            cache_expiration=None if cache is None else cache[1],
            scheduled_time=None if flow_run is None or task_run_id else flow_run.scheduled_time,
        )

    async def aresult(self, raise_on_failure: bool = True) -> Any:
        """`result` for async code: a result read back from storage is read in a worker
        thread, so the event loop keeps going.

        Example:
            >>> state = await my_async_task(1, return_state=True)
            >>> await state.aresult()
            2
        """
        if self.type is StateType.COMPLETED and self.data is None and self.ref is not None:
            return await asyncio.to_thread(self._load)
        return self.result(raise_on_failure)

    def result(self, raise_on_failure: bool = True) -> Any:
        """The run's return value; re-raises its exception if it failed or crashed.

        With ``raise_on_failure=False`` a failed state returns its data if it has some (the
        states of an aggregate, see `return_value_to_state`), else its exception.
        """
        if self.type is StateType.COMPLETED:
            if self.data is None and self.ref is not None:
                return self._load()
            return self.data
        if self.type in _FINAL:
            exc = self.exception or UpstreamFailed(
                f"The run ended in state {self.name}"
                + (f": {self.message}" if self.message else "")
                + " and has no result."
            )
            if raise_on_failure:
                raise exc
            return exc if self.data is None else self.data
        if self.exception is not None:  # NotReady: why it never ran
            raise self.exception
        raise UpstreamFailed(f"The run is still {self.name}; it has no result yet.")

    def _load(self) -> Any:
        """The persisted result, read back from its store (it was not kept in memory)."""
        assert self.ref is not None
        store, key = self.ref
        hit = store.read(key)
        if hit is None:
            raise MissingResult(
                f"The result of this run was not kept in memory and its record {key!r} is no "
                "longer in result storage (deleted or expired): run it again, or keep "
                "results in memory (cache_result_in_memory=True)."
            )
        return hit.value

    def __repr__(self) -> str:
        if self.message:
            return f"{self.name}(message={self.message!r}, type={self.type.value})"
        return f"{self.name}()"


def Pending(message: str | None = None) -> State:
    """A run that has not started."""
    return State(StateType.PENDING, message=message)


def NotReady(exception: BaseException | None = None, message: str | None = None) -> State:
    """A run that did not start because an upstream run it needs did not complete.

    As in Prefect 3, a PENDING state named ``"NotReady"``; `result()` raises `exception`.
    """
    if message is None and exception is not None:
        message = str(exception)
    message = _masked(message, exception)
    return State(StateType.PENDING, "NotReady", message, exception=exception)


def Running(message: str | None = None) -> State:
    """A run in progress."""
    return State(StateType.RUNNING, message=message)


def Completed(data: Any = None, message: str | None = None) -> State:
    """A run that returned `data`."""
    return State(_COMPLETED, None, message, data)  # positional: every submitted run makes one


def Cached(data: Any = None, message: str | None = None) -> State:
    """A run answered from the result store without running the function."""
    return State(StateType.COMPLETED, "Cached", message, data)


def Failed(
    exception: BaseException | None = None, message: str | None = None, data: Any = None
) -> State:
    """A run that raised `exception` (after its retries)."""
    if message is None and exception is not None:
        message = _describe(exception)
    message = _masked(message, exception)
    return State(StateType.FAILED, message=message, data=data, exception=exception)


def TimedOut(exception: BaseException | None = None, message: str | None = None) -> State:
    """A run that exceeded its ``timeout_seconds`` (a FAILED state)."""
    if message is None and exception is not None:
        message = _describe(exception)
    message = _masked(message, exception)
    return State(StateType.FAILED, "TimedOut", message, exception=exception)


def Crashed(exception: BaseException | None = None, message: str | None = None) -> State:
    """A run stopped by something other than an ordinary exception (KeyboardInterrupt, ...)."""
    if message is None and exception is not None:
        message = _describe(exception)
    message = _masked(message, exception)
    return State(StateType.CRASHED, message=message, exception=exception)


def Cancelled(message: str | None = None, exception: BaseException | None = None) -> State:
    """A run that was cancelled (a final state; `result()` raises)."""
    return State(StateType.CANCELLED, message=_masked(message, exception), exception=exception)


#: The containers `is_state_iterable` accepts; a hot path tests ``type(value) in`` it first
#: (most values are none of them) and skips the call.
STATE_SEQUENCES: frozenset[type] = frozenset({list, tuple, set, frozenset})


def is_state_iterable(value: Any) -> bool:
    """Whether `value` is a non-empty list, tuple or set made only of states."""
    return (
        type(value) in STATE_SEQUENCES and bool(value) and all(isinstance(v, State) for v in value)
    )


def return_value_to_state(value: Any) -> State:
    """The final state of a run whose function returned `value` (Prefect 3's rule).

    A state made by hand is the run's state as given. A state of another run, or a non-empty
    list, tuple or set of such states, gives an aggregate: COMPLETED if all completed,
    CANCELLED if any was cancelled, FAILED otherwise; its result is `value` itself (the
    states), and its exception the first failure's. A generator becomes a list; any other
    value is the result of a COMPLETED state.

    Example:
        >>> return_value_to_state([Completed(1), Failed(ValueError("x"))]).message
        '1/2 states failed.'
    """
    if isinstance(value, State) and value.run is None:
        return value
    if isinstance(value, State) or is_state_iterable(value):
        states: list[State] = [value] if isinstance(value, State) else list(value)
        total = len(states)
        cancelled = sum(s.is_cancelled() for s in states)
        failed = [s for s in states if not s.is_completed() and not s.is_cancelled()]
        if not failed and not cancelled:
            return State(StateType.COMPLETED, message="All states completed.", data=value)
        first = next(s for s in states if not s.is_completed())
        exception = first.exception or UpstreamFailed(
            f"A returned run ended in state {first.name}"
            + (f": {first.message}" if first.message else ".")
        )
        if cancelled:
            return State(
                StateType.CANCELLED,
                message=f"{cancelled}/{total} states cancelled.",
                data=value,
                exception=exception,
            )
        unfinished = [s for s in failed if not s.is_final()]
        if len(unfinished) == len(failed):
            message = f"{len(unfinished)}/{total} states are not final."
        else:
            message = f"{len(failed) - len(unfinished)}/{total} states failed."
        return State(StateType.FAILED, message=message, data=value, exception=exception)
    if inspect.isgenerator(value):
        value = list(value)
    return State(StateType.COMPLETED, data=value)


def _describe(exc: BaseException) -> str:
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _masked(message: str | None, exception: BaseException | None) -> str | None:
    """A failure's message with every recorded secret value hidden, and its exception (and
    the chain it was raised from) masked in place, so a traceback printed or stored from the
    state shows ``***`` (see `blocks.core._masking`)."""
    if not masking.known():
        return message
    masking.mask_exception(exception)
    return masking.mask(message) if message else message
