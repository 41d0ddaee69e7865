"""Compatibility path: ``from blocks.futures import ...`` keeps working.

As Prefect's ``prefect.futures``. The code lives in `blocks.runtime._futures`; `blocks.runtime` is
the public facade.
"""

from blocks.runtime._futures import (
    DoneAndNotDoneFutures,
    LoopJob,
    PrefectFutureList,
    TaskFuture,
    TaskFutureList,
    aresolve_futures,
    as_completed,
    enable_argument_resolution,
    futures_to_states,
    resolve_futures,
    resolve_futures_to_results,
    resolve_futures_to_states,
    wait,
)

__all__ = [
    "DoneAndNotDoneFutures",
    "LoopJob",
    "PrefectFutureList",
    "TaskFuture",
    "TaskFutureList",
    "aresolve_futures",
    "as_completed",
    "enable_argument_resolution",
    "futures_to_states",
    "resolve_futures",
    "resolve_futures_to_results",
    "resolve_futures_to_states",
    "wait",
]
