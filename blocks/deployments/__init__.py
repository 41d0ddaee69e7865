"""Deployments: schedules, deployments, the run store, the scheduler and workers (layer L5,
between `runtime` and `cli`).

The registry (SQLite on one machine, PostgreSQL for a team) is the one source of truth for
deployments, scheduled runs and run history; workers claim runs from it and run them. Names are
imported on first use.

Example:
    >>> from blocks.deployments import CronSchedule, Deployment
    >>> CronSchedule(cron="0 6 * * *").get_dates(n=2)
    >>> Deployment.build_from_flow(flow=etl, name="daily", work_pool_name="my-pool").apply()
    >>> serve(etl.to_deployment("hourly", interval=3600))  # Prefect 3: schedule and run here
    >>> run_deployment("etl/daily", parameters={"day": "2024-01-01"}, timeout=0)
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from blocks._lazy import lazy_exports

if TYPE_CHECKING:
    from blocks.deployments._deployment import Deployment
    from blocks.deployments._run_deployment import run_deployment
    from blocks.deployments._serve import deploy, serve, to_deployment
    from blocks.deployments._states import RunState
    from blocks.deployments._store import FlowRun, RunStore, WorkPool
    from blocks.deployments.schedules import (
        Cron,
        CronSchedule,
        Interval,
        IntervalSchedule,
        RRule,
        RRuleSchedule,
        Schedule,
    )

__all__ = [
    "Cron",
    "CronSchedule",
    "Deployment",
    "FlowRun",
    "Interval",
    "IntervalSchedule",
    "RRule",
    "RRuleSchedule",
    "RunState",
    "RunStore",
    "Schedule",
    "WorkPool",
    "deploy",
    "run_deployment",
    "serve",
    "to_deployment",
]

_EXPORTS = {
    "Cron": "blocks.deployments.schedules",
    "CronSchedule": "blocks.deployments.schedules",
    "Interval": "blocks.deployments.schedules",
    "IntervalSchedule": "blocks.deployments.schedules",
    "RRule": "blocks.deployments.schedules",
    "RRuleSchedule": "blocks.deployments.schedules",
    "Schedule": "blocks.deployments.schedules",
    "Deployment": "blocks.deployments._deployment",
    "RunState": "blocks.deployments._states",
    "FlowRun": "blocks.deployments._store",
    "RunStore": "blocks.deployments._store",
    "WorkPool": "blocks.deployments._store",
    "deploy": "blocks.deployments._serve",
    "run_deployment": "blocks.deployments._run_deployment",
    "serve": "blocks.deployments._serve",
    "to_deployment": "blocks.deployments._serve",
}


__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, globals())
