"""Schedules for deployments: Prefect's `CronSchedule`, `IntervalSchedule` and `RRuleSchedule`
(pydantic models, the JSON a deployment stores), and Prefect 3's `Cron`, `Interval` and `RRule`
with per-schedule `active`, `slug` and `parameters`.

Example:
    >>> from blocks.schedules import CronSchedule, Interval
    >>> CronSchedule(cron="0 6 * * *", timezone="Europe/Berlin").get_dates(n=3)
    >>> Interval(3600, slug="hourly", parameters={"source": "api"})
"""

from blocks.deployments._cron import CronSchedule
from blocks.deployments._deployment_schedule import Cron, Interval, RRule, Schedule
from blocks.deployments._interval import IntervalSchedule
from blocks.deployments._rrule import RRuleSchedule
from blocks.deployments._rrule_text import MAX_RRULE_LENGTH
from blocks.deployments._schedule_kinds import (
    SCHEDULE_TYPES,
    AnySchedule,
    construct_schedule,
    schedule_from_json,
)
from blocks.deployments._wallclock import MAX_ITERATIONS

__all__ = [
    "MAX_ITERATIONS",
    "MAX_RRULE_LENGTH",
    "SCHEDULE_TYPES",
    "AnySchedule",
    "Cron",
    "CronSchedule",
    "Interval",
    "IntervalSchedule",
    "RRule",
    "RRuleSchedule",
    "Schedule",
    "construct_schedule",
    "schedule_from_json",
]
