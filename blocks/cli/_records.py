"""``block results ls`` and ``prune --yes`` without click: the rows, the listing, the one-pass
prune and their summaries.

`blocks.cli.results` (the click commands) and `blocks.cli._fast` (the dispatch that runs the
listing commands before click is imported) both print through these, so the two paths write
the same bytes.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from blocks.cli._output import echo, echo_json_array, local_time, note, print_table
from blocks.cli._progress import progress
from blocks.results import RecordHeader, ResultStore
from blocks.results._store import TEMP_GRACE

if TYPE_CHECKING:
    from blocks.filesystems._keys import TempFile


def store_at(storage: str | None) -> ResultStore:
    """The store the CLI reads: `storage` (path, URL, TYPE/NAME; None: the setting)."""
    # Reading never depends on the store's serializer except to allow pickle records; the
    # CLI only decodes values on --show-value, which asks for trust explicitly.
    # A local path is a plain `LocalFolder`: no Block (pydantic) to import for it.
    return ResultStore.resolve(storage, "pickle", plain_local=True)


def size_text(n: int) -> str:
    """A byte count for people: ``22 B``, ``1.5 KB``, ``3.0 MB``."""
    value = float(n)
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if value < 1000 or unit == "TB":
            return f"{int(value)} B" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1000
    raise AssertionError("unreachable")


def expires_text(header: RecordHeader, now: datetime | None = None) -> str:
    """When a record expires, in local time, marked ``(expired)`` once it has (by `now`, an
    aware time; None: this moment)."""
    if header.expires is None:
        return "never"
    expired = header.is_expired() if now is None else now >= header.expires
    return local_time(header.expires) + (" (expired)" if expired else "")


def temp_row(temp: TempFile) -> dict[str, Any]:
    """A temp file of a write as a ``ls --json`` element."""
    return {
        "key": temp.key,
        "readable": False,
        "temp": True,
        "size": temp.size,
        "modified": temp.modified.isoformat(),
        "host": temp.host,
        "pid": temp.pid,
        "stale": temp.is_stale(TEMP_GRACE),
    }


def json_row(key: str, header: RecordHeader | None, now: datetime) -> dict[str, Any]:
    """A record (None: unreadable) as a ``ls --json`` element, expired or not by `now`."""
    if header is None:
        return {"key": key, "readable": False}
    return {
        "key": key,
        "readable": True,
        "size": header.payload_size,
        "created": header.created.isoformat(),
        "expires": header.expires.isoformat() if header.expires else None,
        "expired": header.expires is not None and now >= header.expires,
        "task": header.task,
        "serializer": header.serializer.get("type"),
    }


def list_records(
    store: ResultStore, prefix: str, show_all: bool, task_name: str | None, as_json: bool
) -> None:
    """``block results ls`` (records, not leases): rows as they are read, the count noted."""
    # The first record is read before anything prints: a storage that cannot be listed
    # is one error line, not a table heading followed by one.
    listing = iter(store.records(prefix))
    first = list(itertools.islice(listing, 1))
    records: Iterable[tuple[str, RecordHeader | None]] = itertools.chain(first, listing)
    if task_name is not None:
        records = ((k, h) for k, h in records if h is not None and h.task == task_name)
    temps = [t for t in store.temp_files() if t.key.startswith(prefix)] if show_all else []
    now = datetime.now(UTC)  # once: a listing is one moment's view (it was one per row)
    if as_json:
        echo_json_array(
            itertools.chain(
                (json_row(key, header, now) for key, header in records),
                (temp_row(t) for t in temps),
            )
        )
        return
    rows = itertools.chain(
        (
            (
                key,
                size_text(header.payload_size),
                local_time(header.created),
                expires_text(header, now),
                header.task or "-",
                str(header.serializer.get("type")),
            )
            if header is not None
            else (key, "-", "-", "-", "-", "unreadable")
            for key, header in records
        ),
        (
            (
                t.key,
                size_text(t.size),
                local_time(t.modified),
                "-",
                f"temp, pid {t.pid} on {t.host}" if t.pid is not None else "temp",
                "stale" if t.is_stale(TEMP_GRACE) else "in flight?",
            )
            for t in temps
        ),
    )
    count = print_table(("Key", "Size", "Created", "Expires", "Task", "Serializer"), rows)
    note(f"{count} result record(s) in {store.storage.describe()}")


def prune_now(
    store: ResultStore,
    expired: bool,
    older_than: timedelta | None,
    stale_temp: bool,
    temp_grace: timedelta,
) -> str | None:
    """``prune --yes``: delete in one pass; the summary of what went, None if nothing did."""
    where = store.storage.describe()
    count = total = 0
    # One spinner for scan and deletes (their count is unknown until the scan ends).
    with progress("Deleting", threshold=0) as bar:

        def deleted(_key: str, header: RecordHeader) -> None:
            nonlocal count, total
            count += 1
            total += header.payload_size
            bar.advance()

        if not stale_temp:
            store.prune(expired=expired, older_than=older_than, on_delete=deleted, temp_grace=None)
        bar.update(count, total=count)
        temps = store.prune_temp(temp_grace)
    if not count and not temps:
        return None
    return prune_summary(where, count, total, temps)


def prune_summary(where: str, count: int, total: int, temps: list[TempFile]) -> str:
    """``N record(s), SIZE, from WHERE[, and M stale temp file(s), SIZE]``."""
    summary = f"{count} record(s), {size_text(total)}, from {where}"
    if temps:
        summary += f", and {len(temps)} stale temp file(s), {size_text(sum(t.size for t in temps))}"
    return summary


def prune_yes(
    store: ResultStore,
    expired: bool,
    older_than: timedelta | None,
    stale_temp: bool,
    temp_grace: timedelta,
) -> None:
    """``block results prune --yes`` (not a dry run): prune, then say what went."""
    summary = prune_now(store, expired, older_than, stale_temp, temp_grace)
    echo(f"Deleted {summary}." if summary else f"Nothing to prune in {store.storage.describe()}.")
