"""`CronSchedule`: a cron string read on the wall clock of a time zone (croniter does the cron
math on naive local times; `_wallclock` maps each to its instant)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from croniter import CroniterError, croniter
from pydantic import Field, field_validator

from blocks.deployments import _wallclock
from blocks.deployments._schedule_model import ScheduleModel
from blocks.errors import ScheduleError

_CRON_EXAMPLE = '"0 6 * * *" (every day at 06:00) or "*/15 * * * MON-FRI"'
# croniter's random ("R") and hashed ("H") fields fire at a different time on each machine, or
# need a seed the registry does not have; Prefect refuses them too.
_RANDOM_OR_HASHED = re.compile(r"^[HhRr](?:\(|/|$)")


def validate_cron(cron: str) -> str:
    """`cron` unchanged when croniter reads it; else a `ScheduleError` with a right example."""
    if not isinstance(cron, str) or not cron.strip():
        raise ScheduleError(f"A cron schedule needs a cron string, for example {_CRON_EXAMPLE}.")
    if any(_RANDOM_OR_HASHED.match(field) for field in cron.split()):
        raise ScheduleError(
            f"Cron string {cron!r} uses a random (R) or hashed (H) field, which schedules do "
            f"not support: give fixed values, for example {_CRON_EXAMPLE}."
        )
    if not croniter.is_valid(cron):
        raise ScheduleError(
            f"Invalid cron string {cron!r}: expected five fields (minute hour day-of-month "
            f"month day-of-week), for example {_CRON_EXAMPLE}."
        )
    return cron


class CronSchedule(ScheduleModel):
    """Runs at the times a cron string names, on the wall clock of `timezone` (UTC if None).

    Daylight saving: an hourly cron fires on each new local hour, not each elapsed hour; when
    clocks go back, a local time that occurs twice fires once, the first time. A local time
    that clocks skip (02:30 on a spring-forward night) fires when the clock has moved past it,
    at 03:30 - the same instant 02:30 would have been without the change.

    Example:
        >>> CronSchedule(cron="0 6 * * *", timezone="Europe/Berlin")
    """

    example = 'CronSchedule(cron="0 6 * * *", timezone="Europe/Berlin")'

    cron: str = Field(examples=["0 0 * * *"])
    timezone: str | None = Field(default=None, examples=["America/New_York"])
    day_or: bool = Field(
        default=True,
        description=(
            "How a day-of-month and a day-of-week field combine: True (cron's OR) runs on "
            "either, False (fcron's AND) only when both match, e.g. the 2nd Friday."
        ),
    )

    @field_validator("cron")
    @classmethod
    def _valid_cron(cls, value: str) -> str:
        return validate_cron(value)

    @field_validator("timezone")
    @classmethod
    def _valid_timezone(cls, value: str | None) -> str | None:
        if value is not None:
            _wallclock.zone(value)
        return value

    def _dates(self, n: int, start: datetime, end: datetime | None, tz: ZoneInfo) -> list[datetime]:
        return _wallclock.collect(self._walls(_wallclock.scan_start(start, tz)), tz, start, end, n)

    def _walls(self, begin: datetime) -> Iterator[datetime]:
        # croniter returns times strictly after the one it is given: start a second early so a
        # matching `begin` counts, after rounding a fraction of a second up.
        if begin.microsecond:
            begin = begin.replace(microsecond=0) + timedelta(seconds=1)
        iterator = croniter(self.cron, begin - timedelta(seconds=1), day_or=self.day_or)
        while True:
            try:
                value: Any = iterator.get_next(datetime)
            except CroniterError:  # no date matches (e.g. "0 0 31 2 *"), or past year 9999
                return
            yield value
