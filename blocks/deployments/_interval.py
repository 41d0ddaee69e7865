"""`IntervalSchedule`: every `interval` from an `anchor_date`, in absolute time under a day and
on the local wall clock from a day up."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from pydantic import Field, field_validator, model_validator

from blocks.deployments import _wallclock
from blocks.deployments._schedule_model import ScheduleModel
from blocks.errors import ScheduleError

_INTERVAL_EXAMPLE = "timedelta(hours=1) or 3600 (seconds)"
_ONE_DAY = timedelta(days=1)


def default_anchor(timezone: str | None) -> datetime:
    """2020-01-01 00:00 in the schedule's zone: slots on round local times, the same on every
    deploy (Prefect anchors on the time of the call, so each redeploy moves every slot)."""
    return datetime(2020, 1, 1, tzinfo=_wallclock.zone(timezone or "UTC"))


class IntervalSchedule(ScheduleModel):
    """Runs every `interval`, counted from `anchor_date` (forwards and backwards).

    Daylight saving: intervals under 24 hours keep their absolute spacing (an hourly schedule
    fires every UTC hour, so after clocks go back two runs both read 1 AM local); intervals of a
    day or more keep the local hour (a daily 9 AM run stays at 9 AM). A naive `anchor_date` is a
    local time in `timezone`; without a `timezone`, the anchor's own zone is used, else UTC.

    Example:
        >>> IntervalSchedule(interval=timedelta(hours=1))
        >>> IntervalSchedule(interval=timedelta(days=1),
        ...                  anchor_date=datetime(2024, 1, 1, 9), timezone="Europe/Berlin")
    """

    example = "IntervalSchedule(interval=timedelta(hours=1))"

    interval: timedelta
    # The default is filled in the schedule's zone by `_fill_anchor_and_zone`.
    anchor_date: datetime = Field(
        default=datetime(2020, 1, 1, tzinfo=UTC), examples=["2020-01-01T00:00:00Z"]
    )
    timezone: str | None = Field(default=None, examples=["America/New_York"])

    @model_validator(mode="before")
    @classmethod
    def _fill_anchor_and_zone(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        data = dict(data)
        timezone = data.get("timezone")
        if timezone is not None:
            _wallclock.zone(timezone)
        anchor = data.get("anchor_date")
        if isinstance(anchor, str):
            with contextlib.suppress(ValueError):  # else pydantic words the error
                anchor = data["anchor_date"] = datetime.fromisoformat(anchor)
        if anchor is None:
            data["anchor_date"] = default_anchor(timezone)
        elif isinstance(anchor, datetime) and anchor.tzinfo is None:
            tz = _wallclock.zone(timezone or "UTC")
            data["anchor_date"] = _wallclock.localize(anchor, tz).astimezone(tz)
        if timezone is None:
            anchor = data["anchor_date"]
            named = _wallclock.zone_name(anchor.tzinfo) if isinstance(anchor, datetime) else None
            data["timezone"] = named or "UTC"
        return data

    @field_validator("interval")
    @classmethod
    def _positive(cls, value: timedelta) -> timedelta:
        if value <= timedelta(0):
            raise ScheduleError(
                f"An interval must be positive, got {value.total_seconds():g} seconds: use for "
                f"example {_INTERVAL_EXAMPLE}."
            )
        return value

    @field_validator("anchor_date")
    @classmethod
    def _aware(cls, value: datetime) -> datetime:
        # a naive anchor from stored JSON (the "before" step localizes datetime objects)
        return value if value.tzinfo is not None else value.replace(tzinfo=_wallclock.zone("UTC"))

    def _dates(self, n: int, start: datetime, end: datetime | None, tz: ZoneInfo) -> list[datetime]:
        if self.interval >= _ONE_DAY:
            walls = self._walls(_wallclock.scan_start(start, tz), tz)
            return _wallclock.collect(walls, tz, start, end, n)
        # Under a day: absolute spacing, so instant arithmetic in UTC (exact, in microseconds;
        # Python adds a timedelta to a zoned datetime on its wall clock).
        anchor = self.anchor_date.astimezone(UTC)
        steps = -((anchor - start) // self.interval)  # ceil((start - anchor) / interval)
        dates: list[datetime] = []
        for index in range(min(n, _wallclock.MAX_ITERATIONS)):
            instant = anchor + (steps + index) * self.interval
            if end is not None and instant > end:
                break
            dates.append(instant.astimezone(tz))
        return dates

    def _walls(self, begin: datetime, tz: ZoneInfo) -> Iterator[datetime]:
        anchor = _wallclock.wall(self.anchor_date, tz)
        index = (begin - anchor) // self.interval
        while True:
            try:
                yield anchor + index * self.interval
            except OverflowError:  # past year 9999
                return
            index += 1
