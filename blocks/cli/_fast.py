"""The listing commands without click: ``block ls``, ``block results ls`` and
``block results prune --yes`` with plain options run here, before click (~30 ms to import)
or the command modules are.

Only arguments this module fully understands are taken (`fast_command`); anything else (help,
another option, a usage mistake, a value that looks like an option) returns None and goes
through click as before. Both paths print through `blocks.cli._records` (or
`blocks.cli._blocks_ls`), so the output is the same bytes; an error is raised as the click
command raises it.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import timedelta

_BLOCKS_VALUES = {"--type": "type"}
_BLOCKS_FLAGS = {"--json": "as_json", "-q": "quiet", "--quiet": "quiet"}
#: Options that take a value, by spelling, and the parameter each sets.
_LS_VALUES = {"-s": "storage", "--storage": "storage", "--prefix": "prefix", "--task": "task"}
_LS_FLAGS = {"--all": "show_all", "--json": "as_json", "-q": "quiet", "--quiet": "quiet"}
_PRUNE_VALUES = {"-s": "storage", "--storage": "storage"}
_PRUNE_FLAGS = {
    "--yes": "yes",
    "-y": "yes",
    "--expired": "expired",
    "-q": "quiet",
    "--quiet": "quiet",
}
#: The variable click's shell completion sets (`blocks.cli._complete`).
_COMPLETION = "_BLOCK_COMPLETE"
#: ``prune --temp-grace``'s default.
_TEMP_GRACE = timedelta(hours=1)


def fast_command(argv: list[str]) -> Callable[[], None] | None:
    """The command `argv` asks for, if it runs without click; else None."""
    if _COMPLETION in os.environ:  # click's shell completion asks, whatever the arguments
        return None
    if argv[:1] == ["ls"]:
        blocks = _parse(argv[1:], _BLOCKS_VALUES, _BLOCKS_FLAGS)
        if blocks is None:
            return None
        return lambda: _blocks(blocks)
    if argv[:2] == ["results", "ls"]:
        listing = _parse(argv[2:], _LS_VALUES, _LS_FLAGS)
        if listing is None:
            return None
        return lambda: _ls(listing)
    if argv[:2] == ["results", "prune"]:
        pruning = _parse(argv[2:], _PRUNE_VALUES, _PRUNE_FLAGS)
        if pruning is None or not pruning.get("yes"):
            return None  # a dry run or a confirmation: click's path
        return lambda: _prune(pruning)
    return None


def _parse(
    args: list[str], values: dict[str, str], flags: dict[str, str]
) -> dict[str, str | bool] | None:
    """`args` as parameters, or None if one is not plain (click then parses and words it)."""
    found: dict[str, str | bool] = {}
    rest = iter(args)
    for arg in rest:
        name, equals, value = arg.partition("=")
        if arg in flags:
            found[flags[arg]] = True
        elif name in values and name.startswith("--") and equals:
            found[values[name]] = value  # --storage=PATH
        elif arg in values:
            value = next(rest, "-")
            if value.startswith("-"):  # missing, or what click may read otherwise
                return None
            found[values[arg]] = value  # the last one counts, as in click
        else:
            return None
    return found


@contextmanager
def _errors() -> Iterator[None]:
    """As `blocks.cli.results._errors`: our errors become click's one-line error."""
    from blocks.errors import BlocksError
    from serializers.errors import SerializationError

    try:
        yield
    except (BlocksError, SerializationError) as exc:
        import click

        raise click.ClickException(str(exc)) from None


def _quiet(options: dict[str, str | bool]) -> None:
    if options.get("quiet"):
        from blocks.cli._progress import set_quiet

        set_quiet(True)


def _text(options: dict[str, str | bool], name: str) -> str | None:
    value = options.get(name)
    return value if isinstance(value, str) else None


def _blocks(options: dict[str, str | bool]) -> None:
    _quiet(options)
    from blocks.cli._blocks_ls import list_blocks

    list_blocks(_text(options, "type"), bool(options.get("as_json")))


def _ls(options: dict[str, str | bool]) -> None:
    _quiet(options)
    with _errors():
        from blocks.cli._records import list_records, store_at

        list_records(
            store_at(_text(options, "storage")),
            _text(options, "prefix") or "",
            bool(options.get("show_all")),
            _text(options, "task"),
            bool(options.get("as_json")),
        )


def _prune(options: dict[str, str | bool]) -> None:
    _quiet(options)
    with _errors():
        from blocks.cli._records import prune_yes, store_at

        prune_yes(store_at(_text(options, "storage")), True, None, False, _TEMP_GRACE)
