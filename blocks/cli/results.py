"""``block results``: list, inspect and prune stored task results.

Each command resolves the storage (``--storage``: a path, a URL or ``TYPE/NAME`` of a saved
filesystem block; default ``BLOCKS_RESULTS_STORAGE``), calls `blocks.results`, and prints.

Example (shell):
    $ block results ls --storage s3/prod
    $ block results inspect etl/extract-3f2a --show-value
    $ block results prune --older-than 7d --dry-run
    $ block results why price-3f2a...          # what changed since the previous record
    $ block results rm --task price --flow nightly --dry-run
    $ block results export etl/sales sales.parquet   # a plain file DuckDB or pandas opens
"""

from __future__ import annotations

import re
import sys
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

import click

from blocks.cli._output import (
    echo_json,
    echo_json_array,
    local_time,
    note,
    print_pairs,
    print_table,
)
from blocks.cli._progress import progress
from blocks.cli._records import (
    expires_text,
    list_records,
    prune_summary,
    prune_yes,
    size_text,
    store_at,
)
from blocks.errors import BlocksError
from blocks.results import ResultStore
from serializers.errors import SerializationError

_F = TypeVar("_F", bound=Callable[..., Any])

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*$")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}
#: Show a progress bar when deleting at least this many records.
PROGRESS_THRESHOLD = 20
#: Characters of a value shown by ``inspect --show-value``.
PREVIEW_CHARS = 2000


def parse_duration(text: str) -> timedelta:
    """``30s``, ``15m``, ``12h``, ``7d``, ``2w`` (decimals allowed) -> `timedelta`.

    Example:
        >>> parse_duration("1.5h")
        datetime.timedelta(seconds=5400)
    """
    match = _DURATION.match(text)
    if not match:
        raise ValueError(
            f"Invalid duration {text!r}: use a number and a unit, e.g. 30s, 15m, 12h, 7d or 2w."
        )
    try:
        duration = timedelta(**{_UNITS[match.group(2)]: float(match.group(1))})
        datetime.now(UTC) - duration  # the cutoff prune computes must be a date
    except OverflowError:
        raise ValueError(
            f"Duration {text!r} is too long: reach back no further than year 1, "
            "e.g. 36500d for a hundred years."
        ) from None
    return duration


class DurationType(click.ParamType):  # type: ignore[type-arg]
    name = "duration"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        if isinstance(value, timedelta):
            return value
        try:
            return parse_duration(str(value))
        except ValueError as exc:
            self.fail(str(exc), param, ctx)


@contextmanager
def _errors() -> Iterator[None]:
    """Our errors become one ``Error: ...`` line and exit 1, never a traceback."""
    try:
        yield
    except (BlocksError, SerializationError) as exc:
        raise click.ClickException(str(exc)) from None


def _storage_option(func: _F) -> _F:
    return click.option(
        "--storage",
        "-s",
        metavar="STORAGE",
        default=None,
        help="Path, URL (s3://..., memory://...) or TYPE/NAME of a saved filesystem block. "
        "Default: BLOCKS_RESULTS_STORAGE.",
    )(func)


_store = store_at
_size = size_text
_expires = expires_text


@click.group("results")
def results() -> None:
    """Inspect and prune stored task results."""


@results.command("ls")
@_storage_option
@click.option("--prefix", default="", help="Only keys at or below this prefix.")
@click.option(
    "--all",
    "show_all",
    is_flag=True,
    help="Also list temp files of writes in flight or interrupted (pruned by `prune`).",
)
@click.option(
    "--task", "task_name", default=None, metavar="NAME", help="Only records of this task."
)
@click.option(
    "--leases",
    is_flag=True,
    help="List the compute-once leases held in the storage instead: owner, key, expires in.",
)
@click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")
def ls(
    storage: str | None,
    prefix: str,
    show_all: bool,
    task_name: str | None,
    leases: bool,
    as_json: bool,
) -> None:
    """List result records: key, size, created, expires, task and serializer.

    Reads each record's header only, never a payload; rows print as they are read (piped,
    tab-separated; the count goes to stderr). `--all` adds the temp files of writes in flight
    or interrupted. `--leases` lists the leases of keys being computed now (across machines).
    """
    with _errors():
        store = _store(storage)
        if leases:
            _ls_leases(store, prefix, as_json)
            return
        list_records(store, prefix, show_all, task_name, as_json)


def _ls_leases(store: ResultStore, prefix: str, as_json: bool) -> None:
    """Print the compute-once leases held in `store`'s storage (`blocks.results._leases`)."""
    import time

    from blocks.results._leases import live_leases

    now = time.time()
    found = [lease for lease in live_leases(store.storage) if lease.key.startswith(prefix)]
    if as_json:
        echo_json_array(
            {
                "owner": lease.owner,
                "key": lease.key,
                "expires_in": round(lease.expires - now, 1),
                "lease_seconds": lease.seconds,
            }
            for lease in found
        )
        return
    rows = (
        (
            lease.owner,
            lease.key,
            f"{lease.expires - now:.1f} s"
            if lease.expires > now
            else f"expired {now - lease.expires:.1f} s ago",
        )
        for lease in found
    )
    count = print_table(("Owner", "Key", "Expires in"), rows)
    note(f"{count} lease(s) in {store.storage.describe()}")


@results.command("inspect")
@click.argument("key")
@_storage_option
@click.option(
    "--show-value",
    is_flag=True,
    help="Also deserialize the value and show a preview (runs the record's serializer).",
)
@click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")
def inspect(key: str, storage: str | None, show_value: bool, as_json: bool) -> None:
    """Show one record's header (and, with --show-value, its value)."""
    with _errors():
        store = _store(storage)
        try:
            header = store.load_header(key)
        except FileNotFoundError:
            raise click.ClickException(
                f"No result record under {key!r} in {store.storage.describe()}. "
                "List them with `block results ls`."
            ) from None
        preview = _preview(store, key) if show_value else None
    data: dict[str, Any] = {"header": header.as_dict()}
    if show_value:
        data["value"] = preview
    if as_json:
        echo_json(data)
        return
    pairs: list[tuple[str, Any]] = [
        ("size", f"{_size(header.payload_size)} ({header.payload_size} bytes)"),
        ("created", local_time(header.created)),
        ("expires", _expires(header)),
        ("task", header.task or "-"),
        ("serializer", header.serializer),
        ("checksum", header.checksum),
        ("format", header.format_version),
    ]
    if header.flow is not None:
        pairs.append(("flow", header.flow))
    if header.components:
        # Digests only: a parameter's value is never in the header.
        pairs.append(
            (
                "key components",
                "\n".join(f"{name} = {value}" for name, value in sorted(header.components.items())),
            )
        )
    if show_value:
        pairs.append(("value", preview))
    print_pairs(pairs, title=f"{key}  ({store.storage.describe()})")


def _preview(store: ResultStore, key: str) -> str:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        hit = store.read(key)
    if hit is None:
        why = "; ".join(str(w.message) for w in caught) or "the record has expired"
        return f"(not available: {why})"
    text = repr(hit.value)
    return text if len(text) <= PREVIEW_CHARS else text[:PREVIEW_CHARS] + "... (truncated)"


@results.command("prune")
@_storage_option
@click.option(
    "--expired/--all",
    "expired",
    default=True,
    help="Delete expired records (default), or every record (limited by --older-than).",
)
@click.option(
    "--older-than",
    type=DurationType(),
    default=None,
    help="Also delete records created longer ago than this: 30s, 15m, 12h, 7d, 2w. "
    "With --all, only those.",
)
@click.option(
    "--stale-temp",
    is_flag=True,
    help="Only delete stale temp files of interrupted writes, no records.",
)
@click.option(
    "--temp-grace",
    type=DurationType(),
    default="1h",
    show_default=True,
    help="Temp files older than this are stale (sooner if their writer on this host is gone).",
)
@click.option("--dry-run", is_flag=True, help="Show what would be deleted; delete nothing.")
@click.option("--yes", "-y", is_flag=True, help="Do not ask for confirmation.")
def prune(
    storage: str | None,
    expired: bool,
    older_than: timedelta | None,
    stale_temp: bool,
    temp_grace: timedelta,
    dry_run: bool,
    yes: bool,
) -> None:
    """Delete expired (or old) result records and stale temp files of interrupted writes.
    Files that are not records are never touched; deletes never follow symlinks."""
    with _errors():
        store = _store(storage)
        where = store.storage.describe()
        if yes and not dry_run:
            # Nothing to confirm: records are deleted as the scan verifies them (one pass).
            prune_yes(store, expired, older_than, stale_temp, temp_grace)
            return
        with progress(f"Scanning {where}", threshold=0):
            selected = (
                [] if stale_temp else list(store.prunable(expired=expired, older_than=older_than))
            )
            temps = store.prune_temp(temp_grace, dry_run=True)
        summary = prune_summary(
            where, len(selected), sum(header.payload_size for _, header in selected), temps
        )
        if dry_run:
            for key in [key for key, _ in selected] + [t.key for t in temps]:
                click.echo(key)
            click.echo(f"Would delete {summary}.")
            return
        if not selected and not temps:
            click.echo(f"Nothing to prune in {where}.")
            return
        click.confirm(f"Delete {summary}?", abort=True, err=True)
        if temps:  # a second walk only when the first found stale temp files
            store.prune_temp(temp_grace)
        with progress("Deleting", total=len(selected), threshold=PROGRESS_THRESHOLD) as bar:
            for _ in store.delete_keys(key for key, _ in selected):
                bar.advance()
    click.echo(f"Deleted {summary}.")


@results.command("why")
@click.argument("key", required=False)
@click.option(
    "--task",
    "task_name",
    default=None,
    metavar="NAME",
    help="Explain the task's newest record instead of KEY.",
)
@_storage_option
@click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")
def why(key: str | None, task_name: str | None, storage: str | None, as_json: bool) -> None:
    """Say what changed between a record (KEY, or --task's newest) and the task's previous one.

    Names the parts that differ (code and which helper or global, each parameter, the
    version, the flow run); never a parameter's value.
    """
    from blocks.runtime.keys import why as explain

    if (key is None) == (task_name is None):
        raise click.UsageError("Give a KEY or --task NAME (one of them).")
    with _errors():
        store = _store(storage)
        try:
            explanation = explain(store, key=key, task=task_name)
        except FileNotFoundError:
            what = f"under {key!r}" if key is not None else f"of task {task_name!r}"
            raise click.ClickException(
                f"No result record {what} in {store.storage.describe()}. "
                "List them with `block results ls`."
            ) from None
    if as_json:
        echo_json(
            {
                "key": explanation.key,
                "task": explanation.task,
                "compared_with": explanation.against,
                "changes": explanation.reasons,
            }
        )
        return
    click.echo(explanation.line())


@results.command("rm")
@click.option(
    "--task", "task_name", required=True, metavar="NAME", help="Delete the records of this task."
)
@click.option(
    "--flow",
    "flow_name",
    default=None,
    metavar="NAME",
    help="Only those written in runs of this flow.",
)
@_storage_option
@click.option("--dry-run", is_flag=True, help="Show what would be deleted; delete nothing.")
@click.option("--yes", "-y", is_flag=True, help="Do not ask for confirmation.")
def rm(
    task_name: str, flow_name: str | None, storage: str | None, dry_run: bool, yes: bool
) -> None:
    """Delete a task's cached results (the next call recomputes)."""
    from blocks.runtime.keys import task_records

    with _errors():
        store = _store(storage)
        where = store.storage.describe()
        selected = task_records(store, task_name, flow_name)
        total = sum(header.payload_size for _, header in selected)
        summary = f"{len(selected)} record(s) of task {task_name!r}, {_size(total)}, from {where}"
        if dry_run:
            for key, _ in selected:
                click.echo(key)
            click.echo(f"Would delete {summary}.")
            return
        if not selected:
            click.echo(f"No records of task {task_name!r} in {where}.")
            return
        if not yes:
            click.confirm(f"Delete {summary}?", abort=True, err=True)
        for key, _ in selected:
            store.delete(key)
    click.echo(f"Deleted {summary}.")


#: The file extension of each payload format other tools open, by serializer type.
EXPORT_EXTENSIONS = {"parquet": ".parquet", "npy": ".npy", "json": ".json"}


@results.command("export")
@click.argument("key")
@click.argument("path", type=click.Path(dir_okay=True, writable=True))
@_storage_option
@click.option("--force", is_flag=True, help="Overwrite PATH if it exists.")
def export(key: str, path: str, storage: str | None, force: bool) -> None:
    """Write a record's payload as a plain .parquet, .npy or .json file.

    Any tool opens it (DuckDB, pandas, polars, numpy.load, jq); the payload is verified
    against its signature first and nothing is deserialized. PATH may be a folder (the file
    is named after the key). Compressed JSON records are decompressed; pickled ones are
    refused (no other tool reads them safely).
    """
    with _errors():
        store = _store(storage)
        try:
            payload = store.open_payload(key)
        except FileNotFoundError:
            raise click.ClickException(
                f"No result record under {key!r} in {store.storage.describe()}. "
                "List them with `block results ls`."
            ) from None
        with payload:
            target, kind = _export_payload(payload, key, path, force)
    click.echo(f"Exported {key} ({kind}, {_size(target.stat().st_size)}) to {target}")


def _export_payload(payload: Any, key: str, path: str, force: bool) -> tuple[Any, str]:
    """Copy (or decompress) `payload` to `path` atomically; return the file and its format."""
    import os
    import shutil
    import tempfile
    from pathlib import Path

    spec = payload.header.serializer
    kind = str(spec.get("type"))
    base, _, inner = kind.partition("/")
    fmt = inner if base == "compressed" else kind
    extension = EXPORT_EXTENSIONS.get(fmt)
    if extension is None:
        raise click.ClickException(
            f"Result {key!r} is stored as {kind}, which no other tool reads safely: read it "
            "in Python with ResultStore.read (records from 'parquet', 'npy', 'json' and "
            "'auto' serializers export)"
        )
    target = Path(path)
    if target.is_dir():
        target = target / (key.rsplit("/", 1)[-1] + extension)
    if target.exists() and not force:
        raise click.ClickException(f"{target} exists: pass --force to overwrite it")
    if target.suffix != extension:
        note(f"{target.name} does not end in {extension}; the file is {fmt} all the same")
    fd, temp = tempfile.mkstemp(prefix=f".{target.name}.", dir=target.parent or ".")
    try:
        with os.fdopen(fd, "wb") as out:
            if base == "compressed":
                _decompress(payload, out, str(spec.get("compressionlib", "zlib")))
            else:
                shutil.copyfileobj(payload, out, 1024 * 1024)
        os.replace(temp, target)
    except BaseException:
        os.unlink(temp)
        raise
    return target, fmt


def _decompress(source: Any, out: Any, lib: str) -> None:
    """Stream-decompress a compressed serializer's payload (zlib, lzma or bz2) into `out`."""
    import zlib

    if lib == "zlib":
        decompressor: Any = zlib.decompressobj()
    elif lib == "lzma":
        import lzma

        decompressor = lzma.LZMADecompressor()
    elif lib == "bz2":
        import bz2

        decompressor = bz2.BZ2Decompressor()
    else:
        raise click.ClickException(f"unknown compressionlib {lib[:20]!r} in the record")
    while chunk := source.read(1024 * 1024):
        out.write(decompressor.decompress(chunk))
    if lib == "zlib":
        out.write(decompressor.flush())


__all__ = ["parse_duration", "results"]


if __name__ == "__main__":  # pragma: no cover
    results(sys.argv[1:])
