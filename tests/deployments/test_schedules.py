"""Schedules: Prefect's three models, their JSON, validation errors and Prefect 3's objects."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from blocks.errors import ScheduleError
from blocks.schedules import (
    Cron,
    CronSchedule,
    Interval,
    IntervalSchedule,
    RRule,
    RRuleSchedule,
    schedule_from_json,
)


def iso(dates: list[datetime]) -> list[str]:
    return [date.isoformat() for date in dates]


def test_each_schedule_gives_dates_and_round_trips_through_json() -> None:
    start = datetime(2024, 1, 1, tzinfo=UTC)
    schedules = [
        CronSchedule(cron="0 6 * * *"),
        IntervalSchedule(interval=timedelta(hours=6)),
        RRuleSchedule(rrule="FREQ=DAILY;BYHOUR=6;BYMINUTE=0"),
    ]
    for schedule in schedules:
        dates = schedule.get_dates(n=2, start=start)
        assert len(dates) == 2 and dates[0] >= start
        assert schedule_from_json(schedule.model_dump(mode="json")) == schedule


def test_prefect3_objects_carry_active_slug_and_parameters() -> None:
    for made in (
        Cron("0 6 * * *", slug="a"),
        Interval(60, slug="a"),
        RRule("FREQ=HOURLY", slug="a"),
    ):
        assert made.active and made.slug == "a" and made.parameters == {}


def test_a_bad_cron_string_is_one_schedule_error_line() -> None:
    with pytest.raises(ScheduleError, match=r"Invalid cron string '61 \* \* \* \*'.*0 6 \* \* \*"):
        CronSchedule(cron="61 * * * *")
