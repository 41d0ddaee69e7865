"""Daylight saving: cron, interval and rrule schedules across spring-forward and fall-back nights
in New York, Berlin and Sydney, every date written out.

The rules (Prefect's documented behaviour, `blocks/deployments/_wallclock.py`):
- cron follows the wall clock: an hourly cron fires on each new local hour (a two-hour pause
  when clocks go back); a fixed time that occurs twice fires once, the first time; a fixed time
  that clocks skip (02:30) fires at 03:30, the instant 02:30 would have been;
- intervals under 24 h keep absolute spacing (two runs both read 01:00 when clocks go back);
  a day or more keeps the local hour;
- an rrule follows the zone it starts in, with the cron rules for skipped and repeated times.

2024 transitions: New York 10 Mar 02:00 EST -> 03:00 EDT and 3 Nov 02:00 EDT -> 01:00 EST;
Berlin 31 Mar 02:00 CET -> 03:00 CEST and 27 Oct 03:00 CEST -> 02:00 CET; Sydney (southern
hemisphere) 6 Oct 02:00 AEST -> 03:00 AEDT and 7 Apr 03:00 AEDT -> 02:00 AEST.

A failure here is a run at the wrong hour, a run twice for one slot, or a run lost.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from dateutil import rrule as du
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from blocks.schedules import CronSchedule, IntervalSchedule, RRuleSchedule

NY, BERLIN, SYDNEY = "America/New_York", "Europe/Berlin", "Australia/Sydney"
# The day before each transition (local).
SPRING = {NY: datetime(2024, 3, 9), BERLIN: datetime(2024, 3, 30), SYDNEY: datetime(2024, 10, 5)}
FALL = {NY: datetime(2024, 11, 2), BERLIN: datetime(2024, 10, 26), SYDNEY: datetime(2024, 4, 6)}


def iso(dates: list[datetime]) -> list[str]:
    return [date.isoformat() for date in dates]


def daily_0230(zone: str, kind: str) -> CronSchedule | IntervalSchedule | RRuleSchedule:
    if kind == "cron":
        return CronSchedule(cron="30 2 * * *", timezone=zone)
    if kind == "interval":
        anchor = datetime(2024, 1, 1, 2, 30)
        return IntervalSchedule(interval=timedelta(days=1), anchor_date=anchor, timezone=zone)
    return RRuleSchedule(rrule="FREQ=DAILY;BYHOUR=2;BYMINUTE=30", timezone=zone)


# -- a job at 02:30 every day ----------------------------------------------------------------

SPRING_0230 = {
    NY: ["2024-03-09T02:30:00-05:00", "2024-03-10T03:30:00-04:00", "2024-03-11T02:30:00-04:00"],
    BERLIN: ["2024-03-30T02:30:00+01:00", "2024-03-31T03:30:00+02:00", "2024-04-01T02:30:00+02:00"],
    SYDNEY: ["2024-10-05T02:30:00+10:00", "2024-10-06T03:30:00+11:00", "2024-10-07T02:30:00+11:00"],
}
FALL_0230 = {
    NY: ["2024-11-02T02:30:00-04:00", "2024-11-03T02:30:00-05:00", "2024-11-04T02:30:00-05:00"],
    BERLIN: ["2024-10-26T02:30:00+02:00", "2024-10-27T02:30:00+02:00", "2024-10-28T02:30:00+01:00"],
    SYDNEY: ["2024-04-06T02:30:00+11:00", "2024-04-07T02:30:00+11:00", "2024-04-08T02:30:00+10:00"],
}


@pytest.mark.parametrize("kind", ["cron", "interval", "rrule"])
@pytest.mark.parametrize("zone", [NY, BERLIN, SYDNEY])
def test_a_0230_job_runs_at_0330_on_the_spring_forward_night_and_once_on_fall_back(
    zone: str, kind: str
) -> None:
    schedule = daily_0230(zone, kind)
    spring = schedule.get_dates(n=3, start=SPRING[zone])
    fall = schedule.get_dates(n=3, start=FALL[zone])
    print(f"{zone} {kind}: spring {iso(spring)}; fall {iso(fall)}")
    assert iso(spring) == SPRING_0230[zone]
    # New York's 02:30 is after its repeated hour (01:xx), Berlin's and Sydney's is inside it:
    # either way one run, the first time the clock reads 02:30.
    assert iso(fall) == FALL_0230[zone]
    assert all(date.tzinfo == ZoneInfo(zone) for date in spring + fall)


# -- every hour: cron (wall clock), interval and rrule -----------------------------------------

CRON_HOURLY_SPRING = {
    NY: ["-03-10T00:00:00-05:00", "-03-10T01:00:00-05:00", "-03-10T03:00:00-04:00"],
    BERLIN: ["-03-31T00:00:00+01:00", "-03-31T01:00:00+01:00", "-03-31T03:00:00+02:00"],
    SYDNEY: ["-10-06T00:00:00+10:00", "-10-06T01:00:00+10:00", "-10-06T03:00:00+11:00"],
}
CRON_HOURLY_FALL = {
    NY: ["-11-03T00:00:00-04:00", "-11-03T01:00:00-04:00", "-11-03T02:00:00-05:00"],
    BERLIN: ["-10-27T01:00:00+02:00", "-10-27T02:00:00+02:00", "-10-27T03:00:00+01:00"],
    SYDNEY: ["-04-07T01:00:00+11:00", "-04-07T02:00:00+11:00", "-04-07T03:00:00+10:00"],
}


def hourly_start(zone: str, day: dict[str, datetime], fall: bool) -> datetime:
    # New York changes at 02:00 local; Berlin and Sydney repeat their 02:xx hour.
    first_hour = 0 if zone == NY or not fall else 1
    return day[zone] + timedelta(days=1, hours=first_hour)


@pytest.mark.parametrize("zone", [NY, BERLIN, SYDNEY])
def test_an_hourly_cron_skips_the_missing_hour_and_fires_each_repeated_hour_once(
    zone: str,
) -> None:
    cron = CronSchedule(cron="0 * * * *", timezone=zone)
    spring = cron.get_dates(n=3, start=hourly_start(zone, SPRING, fall=False))
    fall = cron.get_dates(n=3, start=hourly_start(zone, FALL, fall=True))
    print(f"{zone} hourly cron: spring {iso(spring)}; fall {iso(fall)}")
    assert iso(spring) == ["2024" + text for text in CRON_HOURLY_SPRING[zone]]
    assert iso(fall) == ["2024" + text for text in CRON_HOURLY_FALL[zone]]
    # The repeated hour costs one run: two hours pass between the last two fall-back runs.
    assert fall[2].astimezone(UTC) - fall[1].astimezone(UTC) == timedelta(hours=2)


INTERVAL_HOURLY_FALL = {
    NY: ["2024-11-03T00:00:00-04:00", "2024-11-03T01:00:00-04:00", "2024-11-03T01:00:00-05:00"],
    BERLIN: ["2024-10-27T01:00:00+02:00", "2024-10-27T02:00:00+02:00", "2024-10-27T02:00:00+01:00"],
    SYDNEY: ["2024-04-07T01:00:00+11:00", "2024-04-07T02:00:00+11:00", "2024-04-07T02:00:00+10:00"],
}


@pytest.mark.parametrize("zone", [NY, BERLIN, SYDNEY])
def test_an_hourly_interval_keeps_absolute_spacing_so_fall_back_shows_one_hour_twice(
    zone: str,
) -> None:
    interval = IntervalSchedule(interval=timedelta(hours=1), timezone=zone)
    spring = interval.get_dates(n=3, start=hourly_start(zone, SPRING, fall=False))
    fall = interval.get_dates(n=3, start=hourly_start(zone, FALL, fall=True))
    print(f"{zone} hourly interval: spring {iso(spring)}; fall {iso(fall)}")
    assert iso(spring) == ["2024" + text for text in CRON_HOURLY_SPRING[zone]]
    assert iso(fall) == INTERVAL_HOURLY_FALL[zone]
    for dates in (spring, fall):
        gaps = {b.astimezone(UTC) - a.astimezone(UTC) for a, b in itertools.pairwise(dates)}
        assert gaps == {timedelta(hours=1)}


@pytest.mark.parametrize("zone", [NY, BERLIN, SYDNEY])
def test_an_hourly_rrule_in_a_zone_follows_the_wall_clock_like_cron(zone: str) -> None:
    rule = RRuleSchedule(rrule="FREQ=HOURLY", timezone=zone)
    spring = rule.get_dates(n=3, start=hourly_start(zone, SPRING, fall=False))
    fall = rule.get_dates(n=3, start=hourly_start(zone, FALL, fall=True))
    print(f"{zone} hourly rrule: spring {iso(spring)}; fall {iso(fall)}")
    assert iso(spring) == iso(CronSchedule(cron="0 * * * *", timezone=zone).get_dates(3, spring[0]))
    assert iso(fall) == iso(CronSchedule(cron="0 * * * *", timezone=zone).get_dates(3, fall[0]))


def test_a_half_hourly_cron_on_the_spring_forward_night_in_berlin() -> None:
    cron = CronSchedule(cron="*/30 * * * *", timezone=BERLIN)
    dates = cron.get_dates(n=6, start=datetime(2024, 3, 31, 1, 0))
    print(iso(dates))
    assert iso(dates) == [
        "2024-03-31T01:00:00+01:00",
        "2024-03-31T01:30:00+01:00",
        # 02:00 and 02:30 do not exist; they land on 03:00 and 03:30, which run once each
        "2024-03-31T03:00:00+02:00",
        "2024-03-31T03:30:00+02:00",
        "2024-03-31T04:00:00+02:00",
        "2024-03-31T04:30:00+02:00",
    ]


# -- a day or more keeps the local hour ---------------------------------------------------------

DAILY_9AM = {
    NY: (
        ["2024-03-09T09:00:00-05:00", "2024-03-10T09:00:00-04:00", "2024-03-11T09:00:00-04:00"],
        ["2024-11-02T09:00:00-04:00", "2024-11-03T09:00:00-05:00", "2024-11-04T09:00:00-05:00"],
    ),
    BERLIN: (
        ["2024-03-30T09:00:00+01:00", "2024-03-31T09:00:00+02:00", "2024-04-01T09:00:00+02:00"],
        ["2024-10-26T09:00:00+02:00", "2024-10-27T09:00:00+01:00", "2024-10-28T09:00:00+01:00"],
    ),
    SYDNEY: (
        ["2024-10-05T09:00:00+10:00", "2024-10-06T09:00:00+11:00", "2024-10-07T09:00:00+11:00"],
        ["2024-04-06T09:00:00+11:00", "2024-04-07T09:00:00+10:00", "2024-04-08T09:00:00+10:00"],
    ),
}


@pytest.mark.parametrize("zone", [NY, BERLIN, SYDNEY])
def test_a_daily_9am_schedule_stays_at_9am_local_through_both_changes(zone: str) -> None:
    anchor = datetime(2024, 1, 1, 9, tzinfo=ZoneInfo(zone))  # zone taken from the anchor
    schedules = [
        CronSchedule(cron="0 9 * * *", timezone=zone),
        IntervalSchedule(interval=timedelta(days=1), anchor_date=anchor),
        RRuleSchedule.from_rrule(du.rrule(du.DAILY, dtstart=anchor)),
    ]
    spring_expected, fall_expected = DAILY_9AM[zone]
    for schedule in schedules:
        spring = schedule.get_dates(n=3, start=SPRING[zone])
        fall = schedule.get_dates(n=3, start=FALL[zone])
        assert iso(spring) == spring_expected, type(schedule).__name__
        assert iso(fall) == fall_expected, type(schedule).__name__
    print(f"{zone}: cron, interval and rrule all at 09:00 local across both changes")


def test_a_daily_rrule_started_in_utc_stays_at_9am_utc_and_moves_in_new_york() -> None:
    rule = RRuleSchedule.from_rrule(du.rrule(du.DAILY, dtstart=datetime(2024, 3, 8, 9, tzinfo=UTC)))
    dates = rule.get_dates(n=4, start=datetime(2024, 3, 8, tzinfo=UTC))
    assert rule.timezone == "UTC"
    assert {date.hour for date in dates} == {9}
    assert [date.astimezone(ZoneInfo(NY)).hour for date in dates] == [4, 4, 5, 5]


def test_a_36_hour_interval_keeps_its_local_times_across_a_change() -> None:
    anchor = datetime(2024, 3, 29, 9)  # local Berlin time
    interval = IntervalSchedule(interval=timedelta(hours=36), anchor_date=anchor, timezone=BERLIN)
    dates = interval.get_dates(n=4, start=anchor)
    print(iso(dates))
    assert iso(dates) == [
        "2024-03-29T09:00:00+01:00",
        "2024-03-30T21:00:00+01:00",
        "2024-04-01T09:00:00+02:00",  # 35 elapsed hours: the clock moved forward one
        "2024-04-02T21:00:00+02:00",
    ]


def test_an_every_48_hours_interval_keeps_the_local_hour_like_every_2_days() -> None:
    # Prefect's "intervals greater than 24 hours follow DST conventions"
    anchor = datetime(2024, 3, 29, 9, tzinfo=ZoneInfo(BERLIN))
    hours = IntervalSchedule(interval=timedelta(hours=48), anchor_date=anchor)
    days = IntervalSchedule(interval=timedelta(days=2), anchor_date=anchor)
    assert iso(hours.get_dates(n=3, start=anchor)) == iso(days.get_dates(n=3, start=anchor))
    assert iso(hours.get_dates(n=3, start=anchor))[1] == "2024-03-31T09:00:00+02:00"


# -- asked from anywhere, a schedule names the same slots ---------------------------------------

WINDOWS = {
    NY: [datetime(2024, 3, 9, 20, tzinfo=UTC), datetime(2024, 11, 2, 20, tzinfo=UTC)],
    BERLIN: [datetime(2024, 3, 30, 20, tzinfo=UTC), datetime(2024, 10, 26, 20, tzinfo=UTC)],
    SYDNEY: [datetime(2024, 10, 5, 10, tzinfo=UTC), datetime(2024, 4, 6, 10, tzinfo=UTC)],
}
KINDS: list[Callable[[str], CronSchedule | IntervalSchedule | RRuleSchedule]] = [
    lambda zone: CronSchedule(cron="*/20 * * * *", timezone=zone),
    lambda zone: CronSchedule(cron="15 1-3 * * *", timezone=zone),
    lambda zone: IntervalSchedule(interval=timedelta(minutes=25), timezone=zone),
    lambda zone: IntervalSchedule(
        interval=timedelta(days=1), anchor_date=datetime(2024, 1, 1, 2, 10), timezone=zone
    ),
    lambda zone: RRuleSchedule(rrule="FREQ=MINUTELY;INTERVAL=20", timezone=zone),
    lambda zone: RRuleSchedule(rrule="FREQ=DAILY;BYHOUR=1,2,3;BYMINUTE=45", timezone=zone),
]


# CI size; BLOCKS_SOAK_SCHEDULE_EXAMPLES=5000 for a longer search.
EXAMPLES = int(os.environ.get("BLOCKS_SOAK_SCHEDULE_EXAMPLES", "150"))


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    zone=st.sampled_from([NY, BERLIN, SYDNEY]),
    which=st.integers(0, len(KINDS) - 1),
    window=st.integers(0, 1),
    minutes=st.integers(0, 36 * 60),
    seconds=st.integers(0, 59),
)
def test_the_slots_after_any_start_are_the_slots_of_the_whole_night(
    zone: str, which: int, window: int, minutes: int, seconds: int
) -> None:
    # The run store keys a slot by its instant: two scheduler passes that ask from different
    # times must name the same instants, or a slot runs twice or never (Prefect #7381, #7461).
    schedule = KINDS[which](zone)
    night_start = WINDOWS[zone][window]
    night = schedule.get_dates(end=night_start + timedelta(hours=40), start=night_start)
    start = night_start + timedelta(minutes=minutes, seconds=seconds)
    expected = [date for date in night if date >= start][:5]
    got = schedule.get_dates(n=5, start=start)
    assert iso(got[: len(expected)]) == iso(expected)
    instants = [date.astimezone(UTC) for date in night]
    assert instants == sorted(set(instants))  # in order, no slot twice


def test_a_half_hour_change_and_a_whole_skipped_day_follow_the_same_rules() -> None:
    # Lord Howe Island moves its clocks by 30 minutes (02:00 -> 02:30 on 6 Oct 2024).
    lord_howe = CronSchedule(cron="*/15 2 * * *", timezone="Australia/Lord_Howe")
    assert iso(lord_howe.get_dates(n=4, start=datetime(2024, 10, 6))) == [
        "2024-10-06T02:30:00+11:00",  # 02:00 and 02:30 on the clock: one run
        "2024-10-06T02:45:00+11:00",  # 02:15 and 02:45: one run
        "2024-10-07T02:00:00+11:00",
        "2024-10-07T02:15:00+11:00",
    ]
    # Samoa skipped 30 December 2011 (UTC-10 to UTC+14): a daily noon run lands on the 31st's
    # noon, which runs once; 12-hourly runs keep their elapsed spacing.
    noon = datetime(2011, 12, 1, 12)
    daily = [
        CronSchedule(cron="0 12 * * *", timezone="Pacific/Apia"),
        IntervalSchedule(interval=timedelta(days=1), anchor_date=noon, timezone="Pacific/Apia"),
        RRuleSchedule(rrule="DTSTART:20111201T120000\nRRULE:FREQ=DAILY", timezone="Pacific/Apia"),
    ]
    for schedule in daily:
        assert iso(schedule.get_dates(n=3, start=datetime(2011, 12, 29))) == [
            "2011-12-29T12:00:00-10:00",
            "2011-12-31T12:00:00+14:00",
            "2012-01-01T12:00:00+14:00",
        ], type(schedule).__name__
    half_day = IntervalSchedule(
        interval=timedelta(hours=12), anchor_date=noon, timezone="Pacific/Apia"
    )
    assert iso(half_day.get_dates(n=3, start=datetime(2011, 12, 29, 12))) == [
        "2011-12-29T12:00:00-10:00",
        "2011-12-31T00:00:00+14:00",
        "2011-12-31T12:00:00+14:00",
    ]
