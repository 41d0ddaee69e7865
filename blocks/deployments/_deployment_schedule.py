"""Prefect 3's schedule objects: `Cron(...)`, `Interval(...)` and `RRule(...)` return a
`Schedule` - one schedule plus its own `active` switch, `slug` and parameter overrides, as a
deployment holds them (Prefect's ``DeploymentScheduleCreate``)."""

from __future__ import annotations

import hashlib
import json
from datetime import datetime, timedelta
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from blocks.deployments._cron import CronSchedule
from blocks.deployments._interval import IntervalSchedule
from blocks.deployments._rrule import RRuleSchedule
from blocks.deployments._schedule_kinds import SCHEDULE_TYPES, AnySchedule, construct_schedule
from blocks.deployments._schedule_model import schedule_error
from blocks.errors import ScheduleError

_FLAT = ("interval", "cron", "rrule", "timezone", "anchor_date", "day_or")
_EXAMPLE = 'Cron("0 6 * * *", timezone="Europe/Berlin", slug="daily")'


class Schedule(BaseModel):
    """A deployment's schedule: which dates (`schedule`), whether it makes runs (`active`), a
    stable name among the deployment's schedules (`slug`) and the parameters its runs override.

    Built by `Cron`, `Interval` and `RRule`, or as Prefect's flat dataclass:
    ``Schedule(cron="0 6 * * *", timezone="Europe/Berlin")``.

    Example:
        >>> Cron("0 6 * * *", timezone="Europe/Berlin", parameters={"full": True}).get_dates(2)
    """

    model_config: ClassVar[ConfigDict] = ConfigDict(extra="forbid", frozen=True)

    schedule: AnySchedule
    active: bool = True
    slug: str | None = Field(default=None, max_length=200)
    parameters: dict[str, Any] = Field(default_factory=dict)

    def __init__(self, /, **data: Any) -> None:
        try:
            super().__init__(**data)
        except ValidationError as exc:
            raise schedule_error(exc, "Schedule", _EXAMPLE) from None

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Schedule:
        """The schedule a `model_dump(mode="json")` wrote, with one-line errors."""
        try:
            return cls.model_validate(data)
        except ValidationError as exc:
            raise schedule_error(exc, "Schedule", _EXAMPLE) from None

    @model_validator(mode="before")
    @classmethod
    def _flat_form(cls, data: Any) -> Any:
        # Prefect's `Schedule(cron=..., timezone=...)`: the schedule's own fields beside active/
        # slug/parameters. Rebuilt into {"schedule": ..., ...}.
        if not isinstance(data, dict) or "schedule" in data:
            return data
        inner = {key: data[key] for key in _FLAT if data.get(key) is not None}
        rest = {key: value for key, value in data.items() if key not in _FLAT}
        day_or = inner.pop("day_or", None)
        schedule: SCHEDULE_TYPES = construct_schedule(**inner)
        if day_or is not None:
            if not isinstance(schedule, CronSchedule):
                raise ScheduleError(
                    "day_or goes with a cron schedule only, for example " + _EXAMPLE
                )
            schedule = CronSchedule(cron=schedule.cron, timezone=schedule.timezone, day_or=day_or)
        return {"schedule": schedule, **rest}

    @field_validator("slug")
    @classmethod
    def _slug(cls, value: str | None) -> str | None:
        if value is not None and (not value.strip() or not value.isprintable()):
            raise ScheduleError(
                f"A schedule's slug is a short printable name, for example slug='daily'; got "
                f"{value!r}."
            )
        return value

    @property
    def key(self) -> str:
        """The slug, or a name made from the schedule itself (``cron-3f2a9c01d4``): the same for
        the same schedule on every deploy, so a redeploy finds its slots again."""
        if self.slug is not None:
            return self.slug
        canonical = json.dumps(self.schedule.model_dump(mode="json"), sort_keys=True)
        digest = hashlib.sha256(canonical.encode()).hexdigest()[:10]
        kind = type(self.schedule).__name__.removesuffix("Schedule").lower()
        return f"{kind}-{digest}"

    # Prefect 3's `Schedule` dataclass reads these straight off the object.
    @property
    def cron(self) -> str | None:
        return self.schedule.cron if isinstance(self.schedule, CronSchedule) else None

    @property
    def interval(self) -> timedelta | None:
        return self.schedule.interval if isinstance(self.schedule, IntervalSchedule) else None

    @property
    def rrule(self) -> str | None:
        return self.schedule.rrule if isinstance(self.schedule, RRuleSchedule) else None

    @property
    def timezone(self) -> str | None:
        return self.schedule.timezone

    @property
    def anchor_date(self) -> datetime | None:
        return self.schedule.anchor_date if isinstance(self.schedule, IntervalSchedule) else None

    @property
    def day_or(self) -> bool:
        return self.schedule.day_or if isinstance(self.schedule, CronSchedule) else True

    def get_dates(
        self, n: int | None = None, start: datetime | None = None, end: datetime | None = None
    ) -> list[datetime]:
        """The dates of `schedule` (see `CronSchedule.get_dates`), whether active or not."""
        return self.schedule.get_dates(n=n, start=start, end=end)


def Cron(  # Prefect 3's name
    cron: str,
    /,
    timezone: str | None = None,
    day_or: bool = True,
    active: bool = True,
    parameters: dict[str, Any] | None = None,
    slug: str | None = None,
) -> Schedule:
    """A cron schedule for a deployment: ``Cron("0 8 * * 1", timezone="America/New_York")``."""
    return Schedule(
        schedule=CronSchedule(cron=cron, timezone=timezone, day_or=day_or),
        active=active,
        parameters=parameters or {},
        slug=slug,
    )


def Interval(  # Prefect 3's name
    interval: timedelta | float,
    /,
    anchor_date: datetime | None = None,
    timezone: str | None = None,
    active: bool = True,
    parameters: dict[str, Any] | None = None,
    slug: str | None = None,
) -> Schedule:
    """An interval schedule for a deployment; a number is seconds: ``Interval(3600)``.

    Without `anchor_date`, slots count from 2020-01-01 00:00 in `timezone` (UTC), so they are the
    same on every deploy; Prefect anchors on the time of the call.
    """
    return Schedule(
        schedule=construct_schedule(interval=interval, anchor_date=anchor_date, timezone=timezone),
        active=active,
        parameters=parameters or {},
        slug=slug,
    )


def RRule(  # Prefect 3's name
    rrule: str,
    /,
    timezone: str | None = None,
    active: bool = True,
    parameters: dict[str, Any] | None = None,
    slug: str | None = None,
) -> Schedule:
    """An RRule schedule for a deployment: ``RRule("FREQ=MONTHLY;BYDAY=2FR")``."""
    return Schedule(
        schedule=RRuleSchedule(rrule=rrule, timezone=timezone),
        active=active,
        parameters=parameters or {},
        slug=slug,
    )
