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

import time
from enum import StrEnum
from typing import Any

from blocks.errors import UpstreamFailed

__all__ = [
    "Cached",
    "Completed",
    "Crashed",
    "Failed",
    "Pending",
    "Running",
    "State",
    "StateType",
    "TimedOut",
]


class StateType(StrEnum):
    """The kind of a state; `State.name` may refine it (``Cached`` is a COMPLETED state)."""

    PENDING = "PENDING"
    RUNNING = "RUNNING"
    COMPLETED = "COMPLETED"
    FAILED = "FAILED"
    CRASHED = "CRASHED"


_FINAL = frozenset({StateType.COMPLETED, StateType.FAILED, StateType.CRASHED})


class State:
    """The state of a run: its type, name, message and result (a value or an exception)."""

    __slots__ = ("data", "exception", "message", "name", "timestamp", "type")

    def __init__(
        self,
        type: StateType,
        name: str | None = None,
        message: str | None = None,
        data: Any = None,
        exception: BaseException | None = None,
    ) -> None:
        self.type = type
        self.name = name or type.value.title()
        self.message = message
        self.data = data
        self.exception = exception
        self.timestamp = time.time()

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

    def is_final(self) -> bool:
        return self.type in _FINAL

    def is_cached(self) -> bool:
        return self.type is StateType.COMPLETED and self.name == "Cached"

    def result(self, raise_on_failure: bool = True) -> Any:
        """The run's return value; re-raises its exception if it failed or crashed.

        With ``raise_on_failure=False`` a failed state returns its exception instead.
        """
        if self.type is StateType.COMPLETED:
            return self.data
        if self.type in _FINAL:
            exc = self.exception or UpstreamFailed(
                f"The run ended in state {self.name}"
                + (f": {self.message}" if self.message else "")
                + " and has no result."
            )
            if raise_on_failure:
                raise exc
            return exc
        raise UpstreamFailed(f"The run is still {self.name}; it has no result yet.")

    def __repr__(self) -> str:
        if self.message:
            return f"{self.name}(message={self.message!r}, type={self.type.value})"
        return f"{self.name}()"


def Pending(message: str | None = None) -> State:
    """A run that has not started."""
    return State(StateType.PENDING, message=message)


def Running(message: str | None = None) -> State:
    """A run in progress."""
    return State(StateType.RUNNING, message=message)


def Completed(data: Any = None, message: str | None = None) -> State:
    """A run that returned `data`."""
    return State(StateType.COMPLETED, message=message, data=data)


def Cached(data: Any = None, message: str | None = None) -> State:
    """A run answered from the result store without running the function."""
    return State(StateType.COMPLETED, "Cached", message, data)


def Failed(
    exception: BaseException | None = None, message: str | None = None
) -> State:
    """A run that raised `exception` (after its retries)."""
    if message is None and exception is not None:
        message = _describe(exception)
    return State(StateType.FAILED, message=message, exception=exception)


def TimedOut(
    exception: BaseException | None = None, message: str | None = None
) -> State:
    """A run that exceeded its ``timeout_seconds`` (a FAILED state)."""
    if message is None and exception is not None:
        message = _describe(exception)
    return State(StateType.FAILED, "TimedOut", message, exception=exception)


def Crashed(
    exception: BaseException | None = None, message: str | None = None
) -> State:
    """A run stopped by something other than an ordinary exception (KeyboardInterrupt, ...)."""
    if message is None and exception is not None:
        message = _describe(exception)
    return State(StateType.CRASHED, message=message, exception=exception)


def _describe(exc: BaseException) -> str:
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
