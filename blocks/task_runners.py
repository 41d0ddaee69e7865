"""Compatibility path (Prefect's ``prefect.task_runners``): ``from blocks.task_runners import
...`` keeps working; the code lives in `blocks.runtime.runners` and `blocks.runtime` is the
public facade."""

from typing import TYPE_CHECKING, Any

from blocks.runtime.engine._steps import call_with_timeout
from blocks.runtime.runners._base import (
    ConcurrentTaskRunner,
    SequentialTaskRunner,
    TaskRunner,
    ThreadPoolTaskRunner,
)

if TYPE_CHECKING:
    from blocks.runtime.runners._dask import DaskTaskRunner

__all__ = [
    "ConcurrentTaskRunner",
    "DaskTaskRunner",
    "SequentialTaskRunner",
    "TaskRunner",
    "ThreadPoolTaskRunner",
    "call_with_timeout",
]


def __getattr__(name: str) -> Any:
    # `from blocks.task_runners import DaskTaskRunner` without importing Dask for everyone else.
    if name == "DaskTaskRunner":
        from blocks.runtime.runners._dask import DaskTaskRunner

        return DaskTaskRunner
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
