"""Deployments, work pools, the run store, the scheduler and workers (layer 5: above runtime).

The registry (SQLite on one machine, PostgreSQL for a team) is the one source of truth for
deployments, scheduled runs and run history; workers claim runs from it and run them.

Example:
    >>> from blocks.deployments import Deployment
    >>> Deployment.build_from_flow(flow=etl, name="daily", work_pool_name="my-pool").apply()
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from blocks.deployments._states import RunState
    from blocks.deployments._store import FlowRun, RunStore, WorkPool

__all__ = ["FlowRun", "RunState", "RunStore", "WorkPool"]

_EXPORTS = {
    "RunState": "_states",
    "FlowRun": "_store",
    "RunStore": "_store",
    "WorkPool": "_store",
}


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'blocks.deployments' has no attribute {name!r}")
    return getattr(importlib.import_module(f"blocks.deployments.{module}"), name)
