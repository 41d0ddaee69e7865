"""Any one of the three schedules: the tagged union a stored schedule loads through, and
Prefect's `construct_schedule` for ``cron=`` / ``interval=`` / ``rrule=`` keywords."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Annotated, Any

from pydantic import Discriminator, Tag, TypeAdapter, ValidationError

from blocks.deployments._cron import CronSchedule
from blocks.deployments._interval import IntervalSchedule
from blocks.deployments._rrule import RRuleSchedule
from blocks.deployments._schedule_model import schedule_error
from blocks.errors import ScheduleError

SCHEDULE_TYPES = IntervalSchedule | CronSchedule | RRuleSchedule
"""Prefect's name for "any schedule" (for annotations and isinstance checks)."""

_KINDS: dict[str, type[IntervalSchedule | CronSchedule | RRuleSchedule]] = {
    "interval": IntervalSchedule,
    "cron": CronSchedule,
    "rrule": RRuleSchedule,
}
_EXAMPLE = '{"cron": "0 6 * * *", "timezone": "Europe/Berlin"}'


def schedule_kind(value: Any) -> str | None:
    """Which schedule a model or its JSON is: the one field that names it (Prefect's JSON has no
    type tag: ``{"cron": ...}``, ``{"interval": ...}`` or ``{"rrule": ...}``)."""
    if isinstance(value, dict):
        found = [kind for kind in _KINDS if kind in value]
        return found[0] if len(found) == 1 else None
    for kind, model in _KINDS.items():
        if isinstance(value, model):
            return kind
    return None


AnySchedule = Annotated[
    Annotated[IntervalSchedule, Tag("interval")]
    | Annotated[CronSchedule, Tag("cron")]
    | Annotated[RRuleSchedule, Tag("rrule")],
    Discriminator(schedule_kind),
]
"""A field type for "one of the three schedules", loaded from its JSON by its field name."""

_ADAPTER: TypeAdapter[IntervalSchedule | CronSchedule | RRuleSchedule] = TypeAdapter(AnySchedule)


def schedule_from_json(data: dict[str, Any] | SCHEDULE_TYPES) -> SCHEDULE_TYPES:
    """The schedule a stored JSON object describes (`model_dump(mode="json")` of any of them).

    Example:
        >>> schedule_from_json({"cron": "0 6 * * *", "timezone": "Europe/Berlin", "day_or": True})
        CronSchedule(cron='0 6 * * *', timezone='Europe/Berlin', day_or=True)
    """
    if isinstance(data, IntervalSchedule | CronSchedule | RRuleSchedule):
        return data
    if not isinstance(data, dict) or schedule_kind(data) is None:
        keys = sorted(data) if isinstance(data, dict) else type(data).__name__
        raise ScheduleError(
            f"A stored schedule is a JSON object with exactly one of 'cron', 'interval' or "
            f"'rrule'; got {keys}; for example {_EXAMPLE}."
        )
    model = _KINDS[schedule_kind(data) or ""]
    try:
        return _ADAPTER.validate_python(data)
    except ValidationError as exc:
        # the union's error names the tag in its location; the model's own is plainer
        error = schedule_error(exc, model.__name__, model.example)
    raise error


def construct_schedule(
    interval: timedelta | float | None = None,
    anchor_date: datetime | str | None = None,
    cron: str | None = None,
    rrule: str | None = None,
    timezone: str | None = None,
) -> SCHEDULE_TYPES:
    """One schedule from Prefect's keywords (``flow.serve(cron=...)``); a number is seconds."""
    choices = (("interval", interval), ("cron", cron), ("rrule", rrule))
    given = [name for name, value in choices if value is not None]
    if len(given) > 1:
        raise ScheduleError(
            f"Give one of interval, cron or rrule, not {' and '.join(given)}: for example "
            f'cron="0 6 * * *".'
        )
    if anchor_date is not None and interval is None:
        raise ScheduleError(
            "anchor_date goes with an interval schedule only: for example "
            "interval=3600, anchor_date=datetime(2024, 1, 1, 9)."
        )
    if interval is not None:
        if isinstance(interval, int | float) and not isinstance(interval, bool):
            interval = timedelta(seconds=interval)
        return IntervalSchedule(interval=interval, anchor_date=anchor_date, timezone=timezone)
    if cron is not None:
        return CronSchedule(cron=cron, timezone=timezone)
    if rrule is not None:
        return RRuleSchedule(rrule=rrule, timezone=timezone)
    raise ScheduleError('Give one of interval, cron or rrule: for example cron="0 6 * * *".')
