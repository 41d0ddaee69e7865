"""Attempts and retries, one loop for task runs and flow runs.

An attempt is an engine (a generator of steps) that returns the run's state or raises. A
timeout becomes ``TimedOut``, a returned failed state (`ReturnedFailure`) or an exception
``Failed``; then, while retries remain, the loop logs the failure, waits the option's delay
and tries again.

Example:
    >>> state = drive(attempts(run, lambda: one_attempt(), options))
"""

from __future__ import annotations

import random
from collections.abc import Callable, Generator
from typing import Any, Protocol

from blocks.errors import TaskTimeout
from blocks.runtime._logging import run_logger
from blocks.runtime._states import Failed, State, TimedOut
from blocks.runtime.engine._steps import Engine, Sleep, Step

__all__ = ["Retrying", "ReturnedFailure", "attempts", "retry_delay"]


class Retrying(Protocol):
    """The options the loop reads (`TaskOptions` and `FlowOptions` both have them)."""

    @property
    def retries(self) -> int: ...

    @property
    def retry_delays(self) -> tuple[float, ...]: ...

    @property
    def retry_jitter_factor(self) -> float | None: ...


class ReturnedFailure(Exception):
    """The function returned a failed state: the attempt failed (and may be retried)."""

    def __init__(self, state: State) -> None:
        super().__init__(state.message)
        self.state = state


def retry_delay(
    delays: tuple[float, ...] | list[float], attempt: int, jitter: float | None
) -> float:
    """Seconds to wait after failed `attempt` (1-based); lists shorter than retries repeat the last.

    A jitter factor ``j`` spreads the delay uniformly over ``[d*(1-j), d*(1+j)]``.
    """
    delay = delays[min(attempt - 1, len(delays) - 1)]
    if jitter:
        delay = random.uniform(max(0.0, delay * (1 - jitter)), delay * (1 + jitter))
    return delay


def attempts(
    run: Any,
    attempt: Callable[[], Engine],
    options: Retrying,
    after_failure: Callable[[bool], Generator[Step, Any, None]] | None = None,
) -> Engine:
    """Run `attempt` until it succeeds or the retries are spent; return the last state.

    `run` (a task or flow run) counts the attempts in ``run_count``. `after_failure(timed_out)`
    is an engine run after each failed attempt (a flow run settles what the attempt
    submitted), before the retry or the end.
    """
    while True:
        run.run_count += 1
        timed_out = False
        try:
            return (yield from attempt())
        except TaskTimeout as exc:
            timed_out = True
            state: State = TimedOut(exc)
        except ReturnedFailure as failure:
            state = failure.state
        except Exception as exc:
            state = Failed(exc)
        if after_failure is not None:
            yield from after_failure(timed_out)
        if run.run_count > options.retries:
            return state
        delay = retry_delay(options.retry_delays, run.run_count, options.retry_jitter_factor)
        run_logger(run).info(
            "Attempt %d failed with %s - retry %d/%d in %.3g second(s)",
            run.run_count,
            state.message,
            run.run_count,
            options.retries,
            delay,
        )
        if delay > 0:
            yield Sleep(delay)
