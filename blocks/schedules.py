"""Public path: ``from blocks.schedules import CronSchedule, Cron, ...``.

As Prefect's ``prefect.schedules`` and ``prefect.client.schemas.schedules``. The code lives in
`blocks.deployments`; see `blocks.deployments.schedules`.
"""

from blocks.deployments.schedules import (
    MAX_ITERATIONS,
    MAX_RRULE_LENGTH,
    SCHEDULE_TYPES,
    AnySchedule,
    Cron,
    CronSchedule,
    Interval,
    IntervalSchedule,
    RRule,
    RRuleSchedule,
    Schedule,
    construct_schedule,
    schedule_from_json,
)

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
