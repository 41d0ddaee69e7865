"""Wall-clock time in a named zone: zone lookup, turning a local time into an instant, and
collecting the dates a schedule yields in order.

Every schedule reads its dates as local wall times in its zone (cron fields, a daily interval,
an rrule) and maps each one to one instant by the same rule, Python's own (PEP 495, ``fold=0``;
the "compatible" choice of RFC 5545 and most date libraries):

- a local time that does not exist (the hour skipped when clocks go forward) moves forward by the
  length of the gap: 02:30 on a spring-forward day is 03:30;
- a local time that occurs twice (clocks go back) is its first occurrence.

So a slot's instant depends only on the schedule, never on when the dates were asked for: the
run store keys slots by that instant, and two scheduler passes agree on it.

Instants are compared and stored in UTC here: Python compares two datetimes of the *same* zone
by their local fields and ignores `fold`, so 01:30 EST would sort before 01:15 EDT (which is
45 minutes earlier) and the two 01:00s of a fall-back night would count as one.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime, timedelta, tzinfo
from functools import lru_cache
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from blocks.errors import ScheduleError

MAX_ITERATIONS = 1000
"""At most this many candidate dates are checked per `get_dates` call (Prefect's limit)."""

# Clocks moved forward within this span before a start may have pushed a local time that
# precedes the start onto an instant after it; scanning starts that much earlier in wall time.
_GAP_LOOKBACK = timedelta(hours=26)


@lru_cache(maxsize=512)
def zone(name: str) -> ZoneInfo:
    """The IANA zone `name` (``"Europe/Berlin"``), or a `ScheduleError` naming a right one."""
    example = 'for example "America/New_York", "Europe/Berlin" or "UTC"'
    if not isinstance(name, str) or not name.strip():
        raise ScheduleError(f"A schedule's timezone must be an IANA name, {example}.")
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        raise ScheduleError(f"Unknown timezone {name!r}: use an IANA name, {example}.") from None


def zone_name(tz: tzinfo | None) -> str | None:
    """The IANA name of a datetime's `tzinfo`, or None when it has none (a fixed offset)."""
    if tz is None:
        return None
    if isinstance(tz, ZoneInfo):
        return tz.key
    if tz is UTC or (tz.utcoffset(None) == timedelta(0) and tz.tzname(None) in ("UTC", "Z")):
        return "UTC"
    for attribute in ("key", "zone", "name"):  # pytz: zone; pendulum: name
        value = getattr(tz, attribute, None)
        if isinstance(value, str) and _is_zone(value):
            return value
    filename = getattr(tz, "_filename", None)  # dateutil's tz.gettz(...) keeps the file
    if isinstance(filename, str):
        for cut in range(filename.count("/") + 1):
            candidate = filename.split("/", cut)[-1]
            if _is_zone(candidate):
                return candidate
    return None


def _is_zone(name: str) -> bool:
    try:
        zone(name)
    except ScheduleError:
        return False
    return True


def localize(wall: datetime, tz: ZoneInfo) -> datetime:
    """The instant (in UTC) a naive local time stands for in `tz`."""
    return wall.replace(tzinfo=tz, fold=0).astimezone(UTC)


def to_utc(value: datetime, tz: ZoneInfo) -> datetime:
    """`value` in UTC; a naive `value` is read as a local time in `tz`."""
    if value.tzinfo is None:
        return localize(value, tz)
    return value.astimezone(UTC)


def wall(value: datetime, tz: ZoneInfo) -> datetime:
    """The naive local time of an aware `value` in `tz`."""
    return value.astimezone(tz).replace(tzinfo=None)


def scan_start(start: datetime, tz: ZoneInfo) -> datetime:
    """The earliest local time whose instant may fall at or after `start`.

    Usually `start`'s own local time; after clocks went forward, earlier by the gap, because a
    skipped local time (02:30) lands on an instant after the gap (03:30).
    """
    here = wall(start, tz)
    offset_before = (start.astimezone(UTC) - _GAP_LOOKBACK).astimezone(tz).utcoffset()
    offset_now = start.astimezone(tz).utcoffset()
    if offset_before is None or offset_now is None or offset_before >= offset_now:
        return here
    return here - (offset_now - offset_before)


def resolve_bounds(
    n: int | None, start: datetime | None, end: datetime | None, tz: ZoneInfo
) -> tuple[int, datetime, datetime | None]:
    """Prefect's `get_dates` rules: `n` is 1 without an `end`, else up to MAX_ITERATIONS;
    `start` defaults to now; naive bounds are local times in the schedule's zone. The bounds
    come back in UTC."""
    if n is not None and (isinstance(n, bool) or not isinstance(n, int) or n < 0):
        raise ScheduleError(f"n must be a count of dates (0 or more), for example n=5; got {n!r}.")
    first = datetime.now(UTC) if start is None else to_utc(start, tz)
    last = None if end is None else to_utc(end, tz)
    if n is None:
        n = 1 if last is None else MAX_ITERATIONS
    return min(n, MAX_ITERATIONS), first, last


def collect(
    walls: Iterable[datetime], tz: ZoneInfo, start: datetime, end: datetime | None, n: int
) -> list[datetime]:
    """The first `n` distinct instants at or after `start` (and not after `end`, both UTC) of a
    stream of increasing naive local times, in order, each shown in `tz`.

    Local times in a gap move forward and may pass the next few real local times (02:45 -> 03:45
    comes before 03:15 on the stream), so the stream is read until a real local time lies beyond
    the n-th instant kept: every later local time maps to a later instant. At most
    MAX_ITERATIONS local times are read.
    """
    if n <= 0:
        return []
    found: set[datetime] = set()
    for checked, local in enumerate(walls, start=1):
        instant = localize(local, tz)
        skipped = wall(instant, tz) != local
        if end is not None and instant > end:
            if not skipped:
                break
        elif instant >= start:
            found.add(instant)
        if not skipped and len(found) >= n and instant >= sorted(found)[n - 1]:
            break
        if checked >= MAX_ITERATIONS:
            break
    return [instant.astimezone(tz) for instant in sorted(found)[:n]]
