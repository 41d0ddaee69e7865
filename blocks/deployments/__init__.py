"""Deployments: schedules, deployments, the run store, the scheduler and workers (layer L5,
between `runtime` and `cli`).

Example:
    >>> from blocks.deployments import CronSchedule
    >>> CronSchedule(cron="0 6 * * *").get_dates(n=2)
"""

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
    "Interval",
    "IntervalSchedule",
    "RRule",
    "RRuleSchedule",
    "Schedule",
]
