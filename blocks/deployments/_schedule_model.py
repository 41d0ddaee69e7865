"""What the three schedule models share: pydantic settings, one-line `ScheduleError`s instead of
pydantic's multi-line `ValidationError`, and the `get_dates` entry point."""

from __future__ import annotations

from datetime import datetime
from typing import Any, ClassVar, Self
from zoneinfo import ZoneInfo

from pydantic import BaseModel, ConfigDict, ValidationError

from blocks.deployments import _wallclock
from blocks.errors import ScheduleError


def schedule_error(exc: ValidationError, model: str, example: str) -> ScheduleError:
    """One line for the first problem pydantic found; our own `ScheduleError` when a validator
    raised one (pydantic wraps it)."""
    for error in exc.errors(include_url=False):
        raised = (error.get("ctx") or {}).get("error")
        if isinstance(raised, ScheduleError):
            return raised
    first = exc.errors(include_url=False, include_input=False)[0]
    field = ".".join(str(part) for part in first["loc"]) or "value"
    if first["type"] == "missing":
        return ScheduleError(f"{model} needs {field!r}, for example {example}.")
    if first["type"] == "extra_forbidden":
        return ScheduleError(f"{model} has no field {field!r}; for example {example}.")
    return ScheduleError(f"{model}: {field!r}: {first['msg']}; for example {example}.")


class ScheduleModel(BaseModel):
    """A schedule: a pydantic model whose bad input raises one `ScheduleError` line."""

    model_config: ClassVar[ConfigDict] = ConfigDict(
        extra="forbid", frozen=True, ser_json_timedelta="float"
    )
    example: ClassVar[str] = ""

    def __init__(self, /, **data: Any) -> None:
        try:
            super().__init__(**data)
        except ValidationError as exc:
            raise schedule_error(exc, type(self).__name__, self.example) from None

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Self:
        """The schedule a `model_dump(mode="json")` wrote (stored JSON), with one-line errors."""
        try:
            return cls.model_validate(data)
        except ValidationError as exc:
            raise schedule_error(exc, cls.__name__, cls.example) from None

    @property
    def zone(self) -> ZoneInfo:
        """The schedule's time zone (UTC when it names none)."""
        return _wallclock.zone(getattr(self, "timezone", None) or "UTC")

    def get_dates(
        self, n: int | None = None, start: datetime | None = None, end: datetime | None = None
    ) -> list[datetime]:
        """The schedule's next dates, oldest first, as aware datetimes in its time zone.

        `n` dates at or after `start` (default now), none after `end`; `n` is 1 when neither is
        given and up to MAX_ITERATIONS (1,000) with only `end`. Naive `start`/`end` are local
        times in the schedule's zone.

        Example:
            >>> CronSchedule(cron="0 6 * * *", timezone="Europe/Berlin").get_dates(
            ...     n=2, start=datetime(2024, 3, 30))
            [datetime(2024, 3, 30, 6, 0, tzinfo=ZoneInfo('Europe/Berlin')), ...]
        """
        tz = self.zone
        count, first, last = _wallclock.resolve_bounds(n, start, end, tz)
        return self._dates(count, first, last, tz)

    def _dates(self, n: int, start: datetime, end: datetime | None, tz: ZoneInfo) -> list[datetime]:
        raise NotImplementedError
