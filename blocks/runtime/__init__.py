"""The task/flow runtime: ``@task``, ``@flow``, states, futures, task runners, cache policies.

Example:
    >>> from blocks.runtime import flow, task
    >>> @task(retries=2)
    ... def double(x: int) -> int:
    ...     return 2 * x
    >>> @flow
    ... def pipeline() -> int:
    ...     return double(21)

This module is the public facade of the package; its modules are internal (``_``-prefixed).
Names are imported on first use, so importing one runtime module stays cheap. The layers
inside, each importing only the ones below it (checked by import-linter, see pyproject.toml):
``_tasks``/``_flows`` → ``runners/`` → ``engine/`` → ``keys/``, ``_futures``, ``_logging`` →
``_context`` → ``_states``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from blocks._lazy import lazy_exports

_EXPORTS: dict[str, str] = {
    # tasks and flows
    "Task": "blocks.runtime._tasks",
    "task": "blocks.runtime._tasks",
    "task_input_hash": "blocks.runtime._tasks",
    "exponential_backoff": "blocks.runtime._tasks",
    "Flow": "blocks.runtime._flows",
    "flow": "blocks.runtime._flows",
    # states
    "State": "blocks.runtime._states",
    "StateType": "blocks.runtime._states",
    "Cached": "blocks.runtime._states",
    "Cancelled": "blocks.runtime._states",
    "Completed": "blocks.runtime._states",
    "Crashed": "blocks.runtime._states",
    "Failed": "blocks.runtime._states",
    "NotReady": "blocks.runtime._states",
    "Pending": "blocks.runtime._states",
    "Running": "blocks.runtime._states",
    "TimedOut": "blocks.runtime._states",
    # run context and logging
    "FlowRun": "blocks.runtime._context",
    "TaskRun": "blocks.runtime._context",
    "RunName": "blocks.runtime._context",
    "current_run": "blocks.runtime._context",
    "current_flow_run": "blocks.runtime._context",
    "current_task_run": "blocks.runtime._context",
    "get_run_logger": "blocks.runtime._logging",
    # futures and annotations
    "TaskFuture": "blocks.runtime._futures",
    "TaskFutureList": "blocks.runtime._futures",
    "PrefectFutureList": "blocks.runtime._futures",
    "DoneAndNotDoneFutures": "blocks.runtime._futures",
    "as_completed": "blocks.runtime._futures",
    "wait": "blocks.runtime._futures",
    "BaseAnnotation": "blocks.runtime._annotations",
    "allow_failure": "blocks.runtime._annotations",
    "opaque": "blocks.runtime._annotations",
    "quote": "blocks.runtime._annotations",
    "unmapped": "blocks.runtime._annotations",
    # task runners
    "TaskRunner": "blocks.runtime.runners._base",
    "SequentialTaskRunner": "blocks.runtime.runners._base",
    "ConcurrentTaskRunner": "blocks.runtime.runners._base",
    "ThreadPoolTaskRunner": "blocks.runtime.runners._base",
    "DaskTaskRunner": "blocks.runtime.runners._dask",
    # transactions
    "AsyncTransaction": "blocks.runtime.engine._transactions",
    "CommitMode": "blocks.runtime.engine._transactions",
    "atransaction": "blocks.runtime.engine._transactions",
    "IsolationLevel": "blocks.runtime.engine._transactions",
    "Transaction": "blocks.runtime.engine._transactions",
    "get_transaction": "blocks.runtime.engine._transactions",
    "transaction": "blocks.runtime.engine._transactions",
}

__all__ = [
    "AsyncTransaction",
    "BaseAnnotation",
    "Cached",
    "Cancelled",
    "CommitMode",
    "Completed",
    "ConcurrentTaskRunner",
    "Crashed",
    "DaskTaskRunner",
    "DoneAndNotDoneFutures",
    "Failed",
    "Flow",
    "FlowRun",
    "IsolationLevel",
    "NotReady",
    "Pending",
    "PrefectFutureList",
    "RunName",
    "Running",
    "SequentialTaskRunner",
    "State",
    "StateType",
    "Task",
    "TaskFuture",
    "TaskFutureList",
    "TaskRun",
    "TaskRunner",
    "ThreadPoolTaskRunner",
    "TimedOut",
    "Transaction",
    "allow_failure",
    "as_completed",
    "atransaction",
    "current_flow_run",
    "current_run",
    "current_task_run",
    "exponential_backoff",
    "flow",
    "get_run_logger",
    "get_transaction",
    "opaque",
    "quote",
    "task",
    "task_input_hash",
    "transaction",
    "unmapped",
    "wait",
]

if TYPE_CHECKING:
    from blocks.runtime._annotations import BaseAnnotation, allow_failure, opaque, quote, unmapped
    from blocks.runtime._context import (
        FlowRun,
        RunName,
        TaskRun,
        current_flow_run,
        current_run,
        current_task_run,
    )
    from blocks.runtime._flows import Flow, flow
    from blocks.runtime._futures import (
        DoneAndNotDoneFutures,
        PrefectFutureList,
        TaskFuture,
        TaskFutureList,
        as_completed,
        wait,
    )
    from blocks.runtime._logging import get_run_logger
    from blocks.runtime._states import (
        Cached,
        Cancelled,
        Completed,
        Crashed,
        Failed,
        NotReady,
        Pending,
        Running,
        State,
        StateType,
        TimedOut,
    )
    from blocks.runtime._tasks import Task, exponential_backoff, task, task_input_hash
    from blocks.runtime.engine._transactions import (
        AsyncTransaction,
        CommitMode,
        IsolationLevel,
        Transaction,
        atransaction,
        get_transaction,
        transaction,
    )
    from blocks.runtime.runners._base import (
        ConcurrentTaskRunner,
        SequentialTaskRunner,
        TaskRunner,
        ThreadPoolTaskRunner,
    )
    from blocks.runtime.runners._dask import DaskTaskRunner


__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, globals())
