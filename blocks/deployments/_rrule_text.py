"""Reading and writing RFC 5545 recurrence rules with `dateutil.rrule`, as local wall times.

A rule's dates (DTSTART, UNTIL, RDATE, EXDATE) are local times in the schedule's time zone, as
Prefect reads them: the text carries no zone of its own (a ``TZID`` on DTSTART names the
schedule's zone when it gives none; a trailing ``Z`` is read as a local time too).

dateutil has no public accessors for the parts of an `rruleset`; its ``_rrule``, ``_exrule``,
``_rdate`` and ``_exdate`` lists (and an rrule's ``_dtstart``, ``_until``, ``_count``, ``_freq``,
``_interval``, ``_bysetpos``) are read here and nowhere else. python-dateutil has kept them from
2.0 to 4.0 (tests/deployments run on both 2.9 and 4.0).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import UTC, datetime, timedelta, tzinfo
from typing import Any, TypeAlias

from dateutil import rrule as du

from blocks.errors import ScheduleError

MAX_RRULE_LENGTH = 6500
"""The longest rule string accepted (about a year of RDATEs), as in Prefect."""

DEFAULT_DTSTART = datetime(2020, 1, 1)
"""A rule without DTSTART counts from 2020-01-01 00:00 local time (Prefect's anchor)."""

RRULE_EXAMPLE = '"FREQ=DAILY;BYHOUR=9;BYMINUTE=0" (every day at 09:00)'
_TZID = re.compile(r"^DTSTART;TZID=([^:;\r\n]+):", re.MULTILINE)
_STAMP = "%Y%m%dT%H%M%S"
# Frequencies whose periods are a fixed count of naive seconds, so a rule can start any whole
# number of periods later with the same dates (see `advanced`). Months and years differ in
# length (a rule from 31 January skips short months), so those rules are left as they are.
_FIXED_PERIOD = {
    du.SECONDLY: 1,
    du.MINUTELY: 60,
    du.HOURLY: 3600,
    du.DAILY: 86400,
    du.WEEKLY: 7 * 86400,
}

# A dateutil `rrule` or `rruleset`; dateutil is untyped here (no stubs installed).
Rule: TypeAlias = Any


def tzid(text: str) -> str | None:
    """The zone a rule's ``DTSTART;TZID=...`` names, if any."""
    found = _TZID.search(text)
    return found.group(1) if found else None


def parse(text: str) -> Rule:
    """The rule `text` describes, with naive (local) dates; a `ScheduleError` if it is not one."""
    if not isinstance(text, str) or not text.strip():
        raise ScheduleError(f"An rrule schedule needs a rule string, for example {RRULE_EXAMPLE}.")
    if len(text) > MAX_RRULE_LENGTH:
        raise ScheduleError(
            f"RRule string {text[:40]!r}... is {len(text)} characters, over the limit of "
            f"{MAX_RRULE_LENGTH}: split it, or use UNTIL instead of listing dates."
        )
    try:
        rule: Rule = du.rrulestr(
            _TZID.sub("DTSTART:", text), dtstart=DEFAULT_DTSTART, ignoretz=True, cache=False
        )
    except (ValueError, TypeError, KeyError, IndexError, AttributeError) as exc:
        raise ScheduleError(
            f"Invalid RRule string {text[:80]!r}: {_plain(exc)}; for example {RRULE_EXAMPLE}."
        ) from None
    parts = [rule] if isinstance(rule, du.rrule) else [*rule._rrule, *rule._exrule]
    if any(part._interval < 1 for part in parts):
        raise ScheduleError(
            f"Invalid RRule string {text[:80]!r}: INTERVAL must be 1 or more; for example "
            f"{RRULE_EXAMPLE}."
        )
    return rule


def _plain(exc: Exception) -> str:
    """dateutil's words, except where they describe its own code rather than the rule."""
    message = str(exc)
    if "required positional argument: 'freq'" in message:
        return "FREQ is missing (FREQ=DAILY, WEEKLY, ...)"
    if "values to unpack" in message:
        return "each part is NAME=VALUE, separated by ';'"
    return message


def localized(rule: Rule, zone: tzinfo | None) -> Rule:
    """A copy of `rule` whose dates carry `zone` (None: naive again)."""
    return _mapped(rule, lambda value: value.replace(tzinfo=zone))


def advanced(rule: Rule, before: datetime) -> Rule:
    """`rule` with each part of a fixed period (weekly or finer, without COUNT) restarted at its
    last period start at or before `before`: the same dates from then on, without stepping
    through every minute since 2020 (a COUNT counts from the real start, so it stays)."""
    if isinstance(rule, du.rrule):
        return _advanced_one(rule, before)
    result = du.rruleset()
    for part in rule._rrule:
        result.rrule(_advanced_one(part, before))
    for part in rule._exrule:
        result.exrule(_advanced_one(part, before))
    for value in rule._rdate:
        result.rdate(value)
    for value in rule._exdate:
        result.exdate(value)
    return result


def _advanced_one(rule: du.rrule, before: datetime) -> du.rrule:
    unit = _FIXED_PERIOD.get(rule._freq)
    # dateutil's first week runs from DTSTART to the week's end; BYSETPOS counts within it, so
    # a weekly rule with BYSETPOS must keep its real first week.
    partial_first_week = rule._freq == du.WEEKLY and rule._bysetpos
    if unit is None or rule._count is not None or partial_first_week:
        return rule
    step = timedelta(seconds=unit * rule._interval)
    steps = (before - rule._dtstart) // step
    if steps <= 0:
        return rule
    return rule.replace(dtstart=rule._dtstart + steps * step)


def _mapped(rule: Rule, change: Callable[[datetime], datetime]) -> Rule:
    def one(part: du.rrule) -> du.rrule:
        until = part._until
        return part.replace(
            dtstart=change(part._dtstart), until=None if until is None else change(until)
        )

    if isinstance(rule, du.rrule):
        return one(rule)
    result = du.rruleset()
    for part in rule._rrule:
        result.rrule(one(part))
    for part in rule._exrule:
        result.exrule(one(part))
    for value in rule._rdate:
        result.rdate(change(value))
    for value in rule._exdate:
        result.exdate(change(value))
    return result


def text_of(rule: Any, zone_of: Callable[[tzinfo | None], str | None]) -> tuple[str, str]:
    """The rule string and time zone name of a dateutil `rrule` or `rruleset`.

    Dates become local times in the zone of the (first) DTSTART; a DTSTART at a fixed offset
    with no zone name is written in UTC, the same instants.
    """
    if isinstance(rule, du.rrule):
        parts, exparts, rdates, exdates = [rule], [], [], []
    elif isinstance(rule, du.rruleset):
        parts, exparts = list(rule._rrule), list(rule._exrule)
        rdates, exdates = list(rule._rdate), list(rule._exdate)
    else:
        raise ScheduleError(
            f"RRuleSchedule.from_rrule takes a dateutil rrule or rruleset, got "
            f"{type(rule).__name__}; for example rrule(DAILY, dtstart=datetime(2024, 1, 1, 9))."
        )
    starts = {part._dtstart for part in parts + exparts}
    zones = {part._dtstart.tzinfo for part in parts + exparts if part._dtstart.tzinfo}
    if len({zone_of(tz) or repr(tz) for tz in zones}) > 1:
        raise ScheduleError(
            "An rruleset's rules must start in one time zone; got several: give every rule's "
            "dtstart the same tzinfo, for example ZoneInfo('Europe/Berlin')."
        )
    if len({_instant(value) for value in starts}) > 1:
        raise ScheduleError(
            "An rruleset's rules must share one dtstart (the schedule stores one DTSTART); "
            "give every rule the same dtstart."
        )
    first = (parts + exparts)[0]._dtstart if parts + exparts else None
    zone = first.tzinfo if first is not None else None
    name = zone_of(zone) if zone is not None else "UTC"
    target: tzinfo | None = zone if name is not None else UTC
    name = name or "UTC"

    def local(value: datetime) -> datetime:
        if value.tzinfo is None or target is None:
            return value.replace(tzinfo=None)
        return value.astimezone(target).replace(tzinfo=None)

    lines = [f"DTSTART:{local(first).strftime(_STAMP)}"] if first is not None else []
    lines += [_rule_line(part, local, "RRULE") for part in parts]
    lines += [_rule_line(part, local, "EXRULE") for part in exparts]
    if rdates:
        lines.append("RDATE:" + ",".join(local(value).strftime(_STAMP) for value in rdates))
    if exdates:
        lines.append("EXDATE:" + ",".join(local(value).strftime(_STAMP) for value in exdates))
    return "\n".join(lines), name


def _rule_line(part: du.rrule, local: Callable[[datetime], datetime], kind: str) -> str:
    until = part._until
    naive = part.replace(
        dtstart=local(part._dtstart), until=None if until is None else local(until)
    )
    line = next(line for line in str(naive).splitlines() if line.startswith("RRULE:"))
    return kind + line[len("RRULE") :]


def _instant(value: datetime) -> datetime:
    return value if value.tzinfo is None else value.astimezone(UTC).replace(tzinfo=None)
