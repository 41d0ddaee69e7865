"""Schedules: Prefect's three models and their `get_dates` rules, the JSON a deployment stores,
one-line errors for bad input, and Prefect 3's `Cron` / `Interval` / `RRule` objects.

Daylight saving has its own file, `test_schedules_dst.py`.
"""

from __future__ import annotations

import itertools
import json
import os
import re
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from dateutil import rrule as du
from hypothesis import given, settings
from hypothesis import strategies as st

from blocks.errors import BlocksError, ScheduleError
from blocks.schedules import (
    MAX_ITERATIONS,
    MAX_RRULE_LENGTH,
    SCHEDULE_TYPES,
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

JAN_1 = datetime(2024, 1, 1, tzinfo=UTC)
# CI size; BLOCKS_SOAK_SCHEDULE_EXAMPLES=5000 for a longer search.
EXAMPLES = int(os.environ.get("BLOCKS_SOAK_SCHEDULE_EXAMPLES", "150"))


def iso(dates: list[datetime]) -> list[str]:
    return [date.isoformat() for date in dates]


def every_kind() -> list[SCHEDULE_TYPES]:
    return [
        CronSchedule(cron="*/10 * * * *", timezone="Europe/Berlin"),
        IntervalSchedule(interval=timedelta(minutes=10), anchor_date=JAN_1),
        RRuleSchedule(rrule="FREQ=MINUTELY;INTERVAL=10"),
    ]


# -- get_dates: n, start, end, MAX_ITERATIONS (Prefect's rules) ---------------------------------


@pytest.mark.parametrize("schedule", every_kind(), ids=lambda s: type(s).__name__)
def test_get_dates_gives_one_date_without_n_or_end(schedule: SCHEDULE_TYPES) -> None:
    assert len(schedule.get_dates(start=JAN_1)) == 1
    now = datetime.now(UTC)
    (next_one,) = schedule.get_dates()  # start defaults to now
    assert now - timedelta(seconds=1) <= next_one <= now + timedelta(minutes=10)


@pytest.mark.parametrize("schedule", every_kind(), ids=lambda s: type(s).__name__)
def test_get_dates_with_only_an_end_gives_every_date_up_to_max_iterations(
    schedule: SCHEDULE_TYPES,
) -> None:
    day = schedule.get_dates(start=JAN_1, end=JAN_1 + timedelta(days=1))
    assert len(day) == 6 * 24 + 1  # both ends included
    assert day[0] == JAN_1 and day[-1] == JAN_1 + timedelta(days=1)
    month = schedule.get_dates(start=JAN_1, end=JAN_1 + timedelta(days=31))
    asked = schedule.get_dates(n=5000, start=JAN_1)
    print(f"{type(schedule).__name__}: a month of 10-minute slots -> {len(month)} dates")
    assert len(month) == len(asked) == MAX_ITERATIONS == 1000
    assert month[-1] == JAN_1 + timedelta(minutes=10 * 999)


@pytest.mark.parametrize("schedule", every_kind(), ids=lambda s: type(s).__name__)
def test_start_is_included_and_n_bounds_the_count(schedule: SCHEDULE_TYPES) -> None:
    dates = schedule.get_dates(n=3, start=JAN_1)
    assert [date.astimezone(UTC) for date in dates] == [
        JAN_1,
        JAN_1 + timedelta(minutes=10),
        JAN_1 + timedelta(minutes=20),
    ]
    later = schedule.get_dates(n=2, start=JAN_1 + timedelta(seconds=1))
    assert later[0] == JAN_1 + timedelta(minutes=10)
    assert schedule.get_dates(n=0, start=JAN_1) == []
    assert schedule.get_dates(n=10, start=JAN_1, end=JAN_1 + timedelta(minutes=25)) == dates


@pytest.mark.parametrize("schedule", every_kind(), ids=lambda s: type(s).__name__)
def test_dates_are_aware_in_the_schedules_zone_and_naive_bounds_are_local(
    schedule: SCHEDULE_TYPES,
) -> None:
    zone = ZoneInfo(schedule.timezone or "UTC")
    naive = datetime(2024, 6, 1, 12, 0)
    dates = schedule.get_dates(n=2, start=naive, end=naive + timedelta(minutes=10))
    assert all(date.tzinfo == zone for date in dates)
    assert dates[0] == naive.replace(tzinfo=zone)
    assert len(dates) == 2


def test_a_bad_n_is_a_schedule_error() -> None:
    with pytest.raises(ScheduleError, match="n must be a count"):
        CronSchedule(cron="0 6 * * *").get_dates(n=-1)


# -- cron -------------------------------------------------------------------------------------


def test_cron_in_a_zone_runs_on_that_zones_clock() -> None:
    dates = CronSchedule(cron="0 6 * * *", timezone="Asia/Tokyo").get_dates(n=2, start=JAN_1)
    # midnight UTC is already 09:00 in Tokyo: the first 06:00 is the next day's
    assert iso(dates) == ["2024-01-02T06:00:00+09:00", "2024-01-03T06:00:00+09:00"]
    assert iso(CronSchedule(cron="0 6 * * *").get_dates(n=1, start=JAN_1)) == [
        "2024-01-01T06:00:00+00:00"
    ]


def test_day_or_false_runs_only_when_day_and_weekday_both_match() -> None:
    # the 2nd Friday of the month: a Friday between the 8th and the 14th
    second_friday = CronSchedule(cron="0 9 8-14 * FRI", day_or=False)
    assert iso(second_friday.get_dates(n=3, start=JAN_1)) == [
        "2024-01-12T09:00:00+00:00",
        "2024-02-09T09:00:00+00:00",
        "2024-03-08T09:00:00+00:00",
    ]
    either = CronSchedule(cron="0 9 8-14 * FRI").get_dates(n=3, start=JAN_1)
    assert iso(either) == [  # cron's OR: Friday the 5th, then every day from the 8th
        "2024-01-05T09:00:00+00:00",
        "2024-01-08T09:00:00+00:00",
        "2024-01-09T09:00:00+00:00",
    ]


@pytest.mark.parametrize(
    ("cron", "first"),
    [
        ("@daily", "2024-01-01T00:00:00+00:00"),
        ("@hourly", "2024-01-01T00:00:00+00:00"),
        ("0 0 L * *", "2024-01-31T00:00:00+00:00"),
        ("30 8 * * MON-FRI", "2024-01-01T08:30:00+00:00"),
        ("*/15 * * * * 30", "2024-01-01T00:00:30+00:00"),  # croniter's seconds field
    ],
)
def test_cron_keywords_and_croniter_extensions(cron: str, first: str) -> None:
    assert iso(CronSchedule(cron=cron).get_dates(n=1, start=JAN_1)) == [first]


def test_a_cron_that_never_matches_gives_no_dates_instead_of_hanging() -> None:
    assert CronSchedule(cron="0 0 31 2 *").get_dates(n=3, start=JAN_1) == []


def test_a_start_on_the_day_clocks_change_but_before_the_change_keeps_the_local_time() -> None:
    # Prefect's regression (croniter given a start between midnight and the 02:00 change)
    start = datetime(2023, 3, 12, 5, 10, 2, tzinfo=UTC)  # 00:10:02 EST, clocks change at 02:00
    dates = CronSchedule(cron="10 0 * * *", timezone="America/Montreal").get_dates(n=3, start=start)
    assert iso(dates) == [
        "2023-03-13T00:10:00-04:00",
        "2023-03-14T00:10:00-04:00",
        "2023-03-15T00:10:00-04:00",
    ]


def test_a_short_interval_from_a_long_ago_anchor_never_gives_a_date_before_the_start() -> None:
    # Prefect's regression: months and a DST change between anchor and start, 75 s apart
    anchor = datetime.fromtimestamp(1582002945.964696, ZoneInfo("US/Pacific"))
    start = datetime.fromtimestamp(1593643144.233938, UTC)
    every_75s = IntervalSchedule(interval=timedelta(seconds=75), anchor_date=anchor)
    dates = every_75s.get_dates(n=4, start=start)
    assert every_75s.timezone == "US/Pacific"
    assert start <= dates[0] < start + timedelta(seconds=75)
    assert all(b - a == timedelta(seconds=75) for a, b in itertools.pairwise(dates))
    assert all((date - anchor) % timedelta(seconds=75) == timedelta(0) for date in dates)


def test_a_fraction_of_a_second_past_a_slot_moves_to_the_next_slot() -> None:
    start = datetime(2024, 1, 1, 6, 0, 0, 1, tzinfo=UTC)
    assert iso(CronSchedule(cron="0 6 * * *").get_dates(n=1, start=start)) == [
        "2024-01-02T06:00:00+00:00"
    ]


# -- interval ---------------------------------------------------------------------------------


def test_interval_dates_count_from_the_anchor_forwards_and_backwards() -> None:
    anchor = datetime(2030, 2, 2, 5, 24, tzinfo=UTC)  # in the future: counted backwards
    every_17h = IntervalSchedule(interval=timedelta(hours=17), anchor_date=anchor)
    dates = every_17h.get_dates(n=3, start=datetime(2021, 7, 1, tzinfo=UTC))
    assert iso(dates) == [
        "2021-07-01T07:24:00+00:00",
        "2021-07-02T00:24:00+00:00",
        "2021-07-02T17:24:00+00:00",
    ]
    assert all((date - anchor) % every_17h.interval == timedelta(0) for date in dates)


def test_interval_without_an_anchor_counts_from_2020_in_its_zone_on_every_deploy() -> None:
    first = IntervalSchedule(interval=timedelta(hours=1), timezone="Europe/Berlin")
    again = IntervalSchedule(interval=timedelta(hours=1), timezone="Europe/Berlin")
    assert first == again  # a redeploy names the same slots (Prefect anchors on "now")
    assert first.anchor_date.isoformat() == "2020-01-01T00:00:00+01:00"
    assert IntervalSchedule(interval=timedelta(minutes=1)).anchor_date == datetime(
        2020, 1, 1, tzinfo=UTC
    )
    start = datetime(2024, 5, 5, 10, 17, tzinfo=UTC)
    assert iso(first.get_dates(n=1, start=start)) == ["2024-05-05T13:00:00+02:00"]


def test_interval_timezone_comes_from_the_anchor_or_is_utc() -> None:
    berlin = datetime(2024, 1, 1, 9, tzinfo=ZoneInfo("Europe/Berlin"))
    assert IntervalSchedule(interval=timedelta(days=1), anchor_date=berlin).timezone == (
        "Europe/Berlin"
    )
    fixed = datetime(2024, 1, 1, 9, tzinfo=timezone(timedelta(hours=9)))
    assert IntervalSchedule(interval=timedelta(days=1), anchor_date=fixed).timezone == "UTC"
    given = IntervalSchedule(interval=timedelta(days=1), anchor_date=fixed, timezone="Asia/Tokyo")
    assert iso(given.get_dates(n=1, start=JAN_1)) == ["2024-01-01T09:00:00+09:00"]


def test_a_naive_anchor_is_a_local_time_in_the_schedules_zone() -> None:
    interval = IntervalSchedule(
        interval=timedelta(days=1), anchor_date=datetime(2024, 1, 1, 9), timezone="Europe/Berlin"
    )
    assert interval.anchor_date.isoformat() == "2024-01-01T09:00:00+01:00"
    stored = interval.model_dump(mode="json")
    naive_json = {**stored, "anchor_date": "2024-01-01T09:00:00"}
    assert schedule_from_json(naive_json) == interval


@pytest.mark.parametrize("interval", [600, 600.0, "PT10M", "00:10:00", timedelta(minutes=10)])
def test_an_interval_may_be_seconds_an_iso_duration_or_a_timedelta(interval: Any) -> None:
    assert IntervalSchedule(interval=interval).interval == timedelta(minutes=10)


# -- rrule ------------------------------------------------------------------------------------


def test_rrule_from_and_to_dateutil_keeps_the_dates_and_the_zone() -> None:
    sydney = ZoneInfo("Australia/Sydney")
    rule = du.rrule(
        du.WEEKLY,
        byweekday=(du.MO, du.WE),
        dtstart=datetime(2024, 3, 25, 9, tzinfo=sydney),
        until=datetime(2024, 4, 10, 9, tzinfo=sydney),
    )
    schedule = RRuleSchedule.from_rrule(rule)
    assert schedule.timezone == "Australia/Sydney"
    assert "DTSTART:20240325T090000" in schedule.rrule
    back = schedule.to_rrule()
    assert list(back) == list(rule)
    assert iso(schedule.get_dates(end=datetime(2025, 1, 1, tzinfo=UTC), start=JAN_1)) == [
        "2024-03-25T09:00:00+11:00",
        "2024-03-27T09:00:00+11:00",
        "2024-04-01T09:00:00+11:00",
        "2024-04-03T09:00:00+11:00",
        # Sydney's clocks went back on 7 April: still 9 AM, an hour later in UTC
        "2024-04-08T09:00:00+10:00",
        "2024-04-10T09:00:00+10:00",
    ]


def test_rrule_sets_with_exrules_rdates_and_exdates_round_trip() -> None:
    berlin = ZoneInfo("Europe/Berlin")
    start = datetime(2024, 3, 29, 9, tzinfo=berlin)
    rules = du.rruleset()
    rules.rrule(du.rrule(du.DAILY, dtstart=start, until=datetime(2024, 4, 5, 9, tzinfo=berlin)))
    rules.exrule(du.rrule(du.WEEKLY, dtstart=start, byweekday=du.SU))
    rules.rdate(datetime(2024, 4, 10, 10, tzinfo=UTC))  # another zone: written as Berlin time
    rules.exdate(datetime(2024, 4, 2, 9, tzinfo=berlin))
    schedule = RRuleSchedule.from_rrule(rules)
    print(schedule.rrule.replace("\n", " | "))
    assert schedule.rrule.splitlines() == [
        "DTSTART:20240329T090000",
        "RRULE:FREQ=DAILY;UNTIL=20240405T090000",
        "EXRULE:FREQ=WEEKLY;BYDAY=SU",
        "RDATE:20240410T120000",
        "EXDATE:20240402T090000",
    ]
    assert list(schedule.to_rrule()) == list(rules)
    again = schedule_from_json(json.loads(json.dumps(schedule.model_dump(mode="json"))))
    assert again == schedule
    assert iso(again.get_dates(n=10, start=start)) == [
        "2024-03-29T09:00:00+01:00",
        "2024-03-30T09:00:00+01:00",
        "2024-04-01T09:00:00+02:00",
        "2024-04-03T09:00:00+02:00",
        "2024-04-04T09:00:00+02:00",
        "2024-04-05T09:00:00+02:00",
        "2024-04-10T12:00:00+02:00",
    ]


def test_rrule_sets_with_several_zones_or_starts_are_refused() -> None:
    rules = du.rruleset()
    rules.rrule(du.rrule(du.DAILY, dtstart=datetime(2024, 1, 1, tzinfo=ZoneInfo("Europe/Berlin"))))
    rules.rrule(du.rrule(du.DAILY, dtstart=datetime(2024, 1, 1, tzinfo=ZoneInfo("Asia/Tokyo"))))
    with pytest.raises(ScheduleError, match="one time zone"):
        RRuleSchedule.from_rrule(rules)
    rules = du.rruleset()
    rules.rrule(du.rrule(du.DAILY, dtstart=datetime(2024, 1, 1)))
    rules.rrule(du.rrule(du.DAILY, dtstart=datetime(2024, 1, 2)))
    with pytest.raises(ScheduleError, match="one dtstart"):
        RRuleSchedule.from_rrule(rules)
    with pytest.raises(ScheduleError, match="takes a dateutil rrule"):
        RRuleSchedule.from_rrule("FREQ=DAILY")


def test_a_dtstart_at_a_fixed_offset_is_kept_as_the_same_instants_in_utc() -> None:
    tokyo_offset = timezone(timedelta(hours=9))
    rule = du.rrule(du.DAILY, dtstart=datetime(2024, 1, 1, 9, tzinfo=tokyo_offset), count=2)
    schedule = RRuleSchedule.from_rrule(rule)
    assert schedule.timezone == "UTC"
    assert schedule.get_dates(n=5, start=datetime(2023, 1, 1, tzinfo=UTC)) == list(rule)


def test_a_tzid_in_the_rule_names_the_zone_when_none_is_given() -> None:
    text = "DTSTART;TZID=America/New_York:20240101T090000\nRRULE:FREQ=DAILY;COUNT=3"
    schedule = RRuleSchedule(rrule=text)
    assert schedule.timezone == "America/New_York"
    assert iso(schedule.get_dates(n=5, start=JAN_1)) == [
        "2024-01-01T09:00:00-05:00",
        "2024-01-02T09:00:00-05:00",
        "2024-01-03T09:00:00-05:00",
    ]
    assert RRuleSchedule(rrule=text, timezone="UTC").get_dates(n=1, start=JAN_1)[0].hour == 9


def test_a_rule_without_dtstart_counts_from_2020_and_a_fine_rule_skips_ahead() -> None:
    assert iso(RRuleSchedule(rrule="FREQ=DAILY").get_dates(n=1, start=JAN_1)) == [
        "2024-01-01T00:00:00+00:00"
    ]
    # every 7 seconds since 2020-01-01: the slot lattice stays put although iteration starts
    # near the asked start (tens of millions of seconds later)
    every_7s = RRuleSchedule(rrule="FREQ=SECONDLY;INTERVAL=7")
    dates = every_7s.get_dates(n=3, start=datetime(2026, 12, 7, 13, 0, tzinfo=UTC))
    epoch = datetime(2020, 1, 1, tzinfo=UTC)
    assert all((date - epoch) % timedelta(seconds=7) == timedelta(0) for date in dates)
    assert dates[1] - dates[0] == timedelta(seconds=7)


def test_a_count_limits_the_rule_wherever_the_start_is() -> None:
    rule = RRuleSchedule(rrule="DTSTART:20240101T000000\nRRULE:FREQ=HOURLY;COUNT=5")
    assert len(rule.get_dates(n=10, start=datetime(2020, 1, 1, tzinfo=UTC))) == 5
    assert iso(rule.get_dates(n=10, start=datetime(2024, 1, 1, 3, tzinfo=UTC))) == [
        "2024-01-01T03:00:00+00:00",
        "2024-01-01T04:00:00+00:00",
    ]


# -- JSON form --------------------------------------------------------------------------------


def test_the_stored_json_is_prefects() -> None:
    assert CronSchedule(cron="0 6 * * *").model_dump(mode="json") == {
        "cron": "0 6 * * *",
        "timezone": None,
        "day_or": True,
    }
    interval = IntervalSchedule(interval=timedelta(minutes=90), anchor_date=JAN_1)
    assert interval.model_dump(mode="json") == {
        "interval": 5400.0,
        "anchor_date": "2024-01-01T00:00:00Z",
        "timezone": "UTC",
    }
    assert RRuleSchedule(rrule="FREQ=DAILY").model_dump(mode="json") == {
        "rrule": "FREQ=DAILY",
        "timezone": "UTC",
    }


@pytest.mark.parametrize("schedule", every_kind(), ids=lambda s: type(s).__name__)
def test_every_schedule_round_trips_through_json_text(schedule: SCHEDULE_TYPES) -> None:
    text = schedule.model_dump_json()
    loaded = schedule_from_json(json.loads(text))
    assert loaded == schedule and type(loaded) is type(schedule)
    assert type(schedule).from_json(json.loads(text)) == schedule
    assert loaded.get_dates(n=3, start=JAN_1) == schedule.get_dates(n=3, start=JAN_1)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({}, r"exactly one of 'cron', 'interval' or 'rrule'; got \[\]"),
        ({"cron": "0 6 * * *", "rrule": "FREQ=DAILY"}, "exactly one of"),
        ("0 6 * * *", "got str"),
        ({"cron": "0 6 * * *", "colour": "red"}, "CronSchedule has no field 'colour'"),
        ({"interval": -60}, "An interval must be positive, got -60 seconds"),
        ({"interval": "soon"}, "IntervalSchedule: 'interval': Input should be a valid timedelta"),
    ],
)
def test_bad_stored_json_is_one_schedule_error_line(data: Any, message: str) -> None:
    with pytest.raises(ScheduleError, match=message) as caught:
        schedule_from_json(data)
    assert "\n" not in str(caught.value) and "for example" in str(caught.value)


# -- validation errors ------------------------------------------------------------------------

BAD = [
    (CronSchedule, {"cron": "61 * * * *"}, "Invalid cron string '61 \\* \\* \\* \\*'"),
    (CronSchedule, {"cron": "0 6 * *"}, "expected five fields"),
    (CronSchedule, {"cron": ""}, "needs a cron string"),
    (CronSchedule, {"cron": "H 6 * * *"}, "random \\(R\\) or hashed \\(H\\)"),
    (CronSchedule, {"cron": "R 6 * * *"}, "random \\(R\\) or hashed \\(H\\)"),
    (CronSchedule, {}, "CronSchedule needs 'cron'"),
    (CronSchedule, {"cron": "0 6 * * *", "timezone": "Mars/Olympus"}, "Unknown timezone"),
    (CronSchedule, {"cron": "0 6 * * *", "timezone": ""}, "must be an IANA name"),
    (IntervalSchedule, {"interval": timedelta(0)}, "must be positive, got 0 seconds"),
    (IntervalSchedule, {"interval": timedelta(minutes=-5)}, "must be positive, got -300"),
    (IntervalSchedule, {"interval": 60, "timezone": "Europe/Berlinn"}, "Unknown timezone"),
    (IntervalSchedule, {}, "IntervalSchedule needs 'interval'"),
    (RRuleSchedule, {"rrule": "FREQ=SOMETIMES"}, "Invalid RRule string 'FREQ=SOMETIMES'"),
    (RRuleSchedule, {"rrule": "FREQ=DAILY;BYHOUR=25"}, "hour must be in 0..23"),
    (RRuleSchedule, {"rrule": "every day"}, "each part is NAME=VALUE"),
    (RRuleSchedule, {"rrule": "BYHOUR=9"}, "FREQ is missing"),
    (RRuleSchedule, {"rrule": "FREQ=DAILY;INTERVAL=0"}, "INTERVAL must be 1 or more"),
    (RRuleSchedule, {"rrule": "FREQ=DAILY;FOO=1"}, "unknown parameter 'FOO'"),
    (RRuleSchedule, {"rrule": "FREQ=DAILY", "timezone": "Nowhere"}, "Unknown timezone"),
    (RRuleSchedule, {"rrule": "RDATE:" + "20240101T000000," * 500}, "over the limit of 6500"),
]


@pytest.mark.parametrize(("model", "fields", "message"), BAD)
def test_bad_input_is_one_schedule_error_line_with_a_right_example(
    model: type[SCHEDULE_TYPES], fields: dict[str, Any], message: str
) -> None:
    with pytest.raises(ScheduleError, match=message) as caught:
        model(**fields)
    text = str(caught.value)
    print(text)
    assert "\n" not in text and ("for example" in text or "split it" in text)
    assert isinstance(caught.value, ValueError) and isinstance(caught.value, BlocksError)
    assert caught.value.__cause__ is None and caught.value.__suppress_context__


def test_schedules_are_values_that_cannot_be_changed_in_place() -> None:
    cron = CronSchedule(cron="0 6 * * *")
    with pytest.raises(Exception, match="frozen"):
        cron.cron = "61 * * * *"  # type: ignore[misc]
    assert cron == CronSchedule(cron="0 6 * * *") and hash(cron) == hash(
        CronSchedule(cron="0 6 * * *")
    )
    assert len(MAX_RRULE_LENGTH * "x") == 6500


# -- Prefect 3's Cron / Interval / RRule and Schedule ------------------------------------------


def test_prefect3_helpers_make_schedules_with_active_slug_and_parameters() -> None:
    cron = Cron("0 8 * * 1", timezone="America/New_York", slug="monday", parameters={"x": 1})
    assert isinstance(cron.schedule, CronSchedule)
    assert (cron.cron, cron.timezone, cron.day_or) == ("0 8 * * 1", "America/New_York", True)
    assert (cron.active, cron.slug, cron.parameters) == (True, "monday", {"x": 1})
    assert cron.interval is None and cron.rrule is None and cron.anchor_date is None

    hourly = Interval(3600, active=False)
    assert hourly.interval == timedelta(hours=1) and hourly.active is False
    assert hourly.slug is None and hourly.parameters == {}
    assert Interval(timedelta(days=1), anchor_date=JAN_1).anchor_date == JAN_1

    second_friday = RRule("FREQ=MONTHLY;BYDAY=2FR", timezone="America/Chicago")
    assert second_friday.rrule == "FREQ=MONTHLY;BYDAY=2FR"
    assert iso(second_friday.get_dates(n=1, start=JAN_1)) == ["2024-01-12T00:00:00-06:00"]


def test_prefect3_helpers_take_the_schedule_positionally_only() -> None:
    with pytest.raises(TypeError):
        Cron(cron="0 6 * * *")  # type: ignore[call-arg]


def test_prefects_flat_schedule_form_builds_the_same_object() -> None:
    flat = Schedule(cron="0 6 * * *", timezone="Europe/Berlin", day_or=False, slug="daily")
    assert flat == Cron("0 6 * * *", timezone="Europe/Berlin", day_or=False, slug="daily")
    assert Schedule(interval=timedelta(hours=1)) == Interval(3600)
    assert Schedule(rrule="FREQ=DAILY", active=False) == RRule("FREQ=DAILY", active=False)
    with pytest.raises(ScheduleError, match="Give one of interval, cron or rrule, not cron and"):
        Schedule(cron="0 6 * * *", rrule="FREQ=DAILY")
    with pytest.raises(ScheduleError, match="day_or goes with a cron schedule only"):
        Schedule(interval=60, day_or=False)


def test_a_schedule_object_round_trips_through_json_with_its_options() -> None:
    original = Interval(
        timedelta(minutes=30),
        timezone="Australia/Sydney",
        slug="half-hourly",
        parameters={"source": "api", "limit": 10},
        active=False,
    )
    stored = json.loads(original.model_dump_json())
    assert stored["schedule"]["interval"] == 1800.0 and stored["slug"] == "half-hourly"
    assert Schedule.from_json(stored) == original
    assert Schedule.model_validate(stored).get_dates(n=2, start=JAN_1) == original.get_dates(
        n=2, start=JAN_1
    )


def test_a_schedules_key_is_its_slug_or_a_name_made_from_the_schedule() -> None:
    assert Cron("0 6 * * *", slug="daily").key == "daily"
    unnamed = Cron("0 6 * * *").key
    assert unnamed == Cron("0 6 * * *", parameters={"other": 1}).key  # same dates, same key
    assert unnamed.startswith("cron-") and len(unnamed) == len("cron-") + 10
    assert unnamed != Cron("0 7 * * *").key
    assert Interval(60).key == Interval(60).key  # no "now" inside: stable across deploys
    for made in (Interval(timedelta(hours=1), timezone="Europe/Berlin"), RRule("FREQ=DAILY")):
        assert Schedule.from_json(json.loads(made.model_dump_json())).key == made.key
    with pytest.raises(ScheduleError, match="slug is a short printable name"):
        Cron("0 6 * * *", slug="two\nlines")


def test_construct_schedule_takes_prefects_keywords() -> None:
    assert construct_schedule(cron="0 6 * * *") == CronSchedule(cron="0 6 * * *")
    every_90s = construct_schedule(interval=90, timezone="UTC")
    assert isinstance(every_90s, IntervalSchedule) and every_90s.interval == timedelta(seconds=90)
    assert isinstance(construct_schedule(rrule="FREQ=DAILY"), RRuleSchedule)
    with pytest.raises(ScheduleError, match="anchor_date goes with an interval"):
        construct_schedule(cron="0 6 * * *", anchor_date=JAN_1)
    with pytest.raises(ScheduleError, match="Give one of interval, cron or rrule"):
        construct_schedule()


# -- the README's Schedules section -----------------------------------------------------------


def test_the_readme_schedules_example_runs_and_its_comments_hold() -> None:
    readme = (Path(__file__).parents[2] / "README.md").read_text()
    section = readme.split("### Schedules\n", 1)[1].split("\n## ", 1)[0]
    (code,) = re.findall(r"```python\n(.*?)```", section, flags=re.S)
    namespace: dict[str, Any] = {}
    exec(compile(code, "README.md", "exec"), namespace)
    dates = namespace["daily"].get_dates(n=2, start=datetime(2024, 3, 30))
    assert iso(dates) == ["2024-03-30T02:30:00+01:00", "2024-03-31T03:30:00+02:00"]
    assert namespace["stored"]["slug"] == "nightly"
    assert namespace["stored"]["schedule"]["cron"] == "0 3 * * *"
    (shown_error,) = re.findall(r"```\n(Invalid cron string.*?)\n```", section)
    with pytest.raises(ScheduleError) as caught:
        CronSchedule(cron="61 * * * *")
    assert str(caught.value) == shown_error


DAY = 86400
# Each rule with how far past 2020-01-01 the start may fall (dateutil's own answer, the oracle
# here, steps through every period since then).
RULES = [
    ("FREQ=SECONDLY;INTERVAL=17", 2 * DAY),
    ("FREQ=MINUTELY;INTERVAL=7;BYHOUR=9,10", 60 * DAY),
    ("FREQ=HOURLY;INTERVAL=5;BYMINUTE=0,30;BYSETPOS=-1", 2 * 365 * DAY),
    ("DTSTART:20210304T051500\nRRULE:FREQ=DAILY;INTERVAL=3;BYHOUR=6,18;BYSETPOS=2", 6 * 365 * DAY),
    ("DTSTART:20210304T051500\nRRULE:FREQ=WEEKLY;INTERVAL=2;BYDAY=MO,FR;BYSETPOS=1", 6 * 365 * DAY),
    ("DTSTART:20210303T000000\nRRULE:FREQ=WEEKLY;BYDAY=MO,WE,FR;BYHOUR=9", 6 * 365 * DAY),
    ("DTSTART:20210131T120000\nRRULE:FREQ=MONTHLY", 6 * 365 * DAY),
    (
        "DTSTART:20210131T120000\nRRULE:FREQ=DAILY;INTERVAL=10\nEXRULE:FREQ=WEEKLY;BYDAY=SA,SU",
        6 * 365 * DAY,
    ),
]


@settings(max_examples=EXAMPLES, deadline=None)
@given(which=st.integers(0, len(RULES) - 1), fraction=st.floats(0, 1))
def test_rules_started_near_the_asked_start_give_dateutils_own_dates(
    which: int, fraction: float
) -> None:
    # get_dates restarts a rule of a fixed period near the asked start instead of iterating from
    # 2020 (`_rrule_text.advanced`); the dates must be exactly the ones dateutil gives.
    rule, span = RULES[which]
    schedule = RRuleSchedule(rrule=rule)
    start = datetime(2020, 1, 1, tzinfo=UTC) + timedelta(seconds=int(span * fraction))
    expected = list(itertools.islice(schedule.to_rrule().xafter(start, inc=True), 5))
    assert schedule.get_dates(n=5, start=start) == expected
