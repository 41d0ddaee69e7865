"""`RRuleSchedule`: an iCalendar (RFC 5545) recurrence rule, computed by `dateutil.rrule` on
the wall clock of the schedule's time zone."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from dateutil import rrule as du
from pydantic import Field, field_validator, model_validator

from blocks.deployments import _rrule_text, _wallclock
from blocks.deployments._schedule_model import ScheduleModel


class RRuleSchedule(ScheduleModel):
    """Runs at the dates of an RRule string, read as local times in `timezone` (default UTC).

    Daylight saving: a rule follows the zone it starts in. A daily 9 AM rule in
    ``America/New_York`` stays at 9 AM local through DST; the same rule in UTC stays at 9 AM
    UTC. Local times that clocks skip or repeat follow the cron rules (forward by the gap; the
    first of the two).

    Example:
        >>> RRuleSchedule(rrule="FREQ=WEEKLY;BYDAY=MO,WE,FR;BYHOUR=9;BYMINUTE=0",
        ...               timezone="Australia/Sydney")
        >>> RRuleSchedule.from_rrule(rrule(DAILY, dtstart=datetime(2024, 1, 1, 9,
        ...                                tzinfo=ZoneInfo("Europe/Berlin"))))
    """

    example = 'RRuleSchedule(rrule="FREQ=DAILY;BYHOUR=9;BYMINUTE=0", timezone="Europe/Berlin")'

    rrule: str = Field(examples=["FREQ=DAILY;BYHOUR=9;BYMINUTE=0"])
    timezone: str = Field(default="UTC", examples=["America/New_York"])

    @model_validator(mode="before")
    @classmethod
    def _zone_from_tzid(cls, data: Any) -> Any:
        # A rule that says DTSTART;TZID=Europe/Berlin means Berlin unless told otherwise
        # (Prefect would read it in UTC and shift every run).
        if isinstance(data, dict) and data.get("timezone") is None:
            text = data.get("rrule")
            named = _rrule_text.tzid(text) if isinstance(text, str) else None
            data = {**data, "timezone": named or "UTC"}
        return data

    @field_validator("rrule")
    @classmethod
    def _valid_rule(cls, value: str) -> str:
        _rrule_text.parse(value)
        return value

    @field_validator("timezone")
    @classmethod
    def _valid_timezone(cls, value: str) -> str:
        _wallclock.zone(value)
        return value

    @classmethod
    def from_rrule(cls, rrule: du.rrule | du.rruleset) -> RRuleSchedule:
        """The schedule of a dateutil `rrule` or `rruleset`, in the zone of its dtstart."""
        text, timezone = _rrule_text.text_of(rrule, _wallclock.zone_name)
        return cls(rrule=text, timezone=timezone)

    def to_rrule(self) -> du.rrule | du.rruleset:
        """The dateutil rule, its dates aware in the schedule's time zone."""
        return _rrule_text.localized(_rrule_text.parse(self.rrule), self.zone)

    def _dates(self, n: int, start: datetime, end: datetime | None, tz: ZoneInfo) -> list[datetime]:
        return _wallclock.collect(self._walls(_wallclock.scan_start(start, tz)), tz, start, end, n)

    def _walls(self, begin: datetime) -> Iterator[datetime]:
        rule = _rrule_text.advanced(_rrule_text.parse(self.rrule), begin)
        yield from rule.xafter(begin, count=None, inc=True)
