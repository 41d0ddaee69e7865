"""The ``block`` group of click: commands imported when used (`blocks.cli.COMMANDS`), and
``--quiet`` taken by every command wherever it is put."""

from __future__ import annotations

import importlib
from typing import Any

import click

from blocks import __version__
from blocks.cli import COMMANDS


class LazyGroup(click.Group):
    """A group whose commands are imported only when run (or listed by ``--help``)."""

    def __init__(self, *args: Any, lazy: dict[str, str], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.lazy = lazy

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), *self.lazy})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name in self.lazy and cmd_name not in self.commands:
            module, _, attribute = self.lazy[cmd_name].partition(":")
            command = getattr(importlib.import_module(module), attribute)
            if not isinstance(command, click.Command):
                raise TypeError(f"{self.lazy[cmd_name]} is not a click command")
            _add_quiet_option(command)
            self.add_command(command, cmd_name)
        return super().get_command(ctx, cmd_name)


def _set_quiet(_ctx: click.Context, _param: click.Parameter, value: bool) -> None:
    if value:
        from blocks.cli._progress import set_quiet

        set_quiet(True)


def _quiet_option() -> click.Option:
    return click.Option(
        ["--quiet", "-q"],
        is_flag=True,
        expose_value=False,
        is_eager=True,
        callback=_set_quiet,
        help="Draw no progress bars (results and errors are still printed).",
    )


def _add_quiet_option(command: click.Command) -> None:
    """Every command takes --quiet, wherever the user puts it: `block results prune -q`."""
    if isinstance(command, click.Group):
        for sub in command.commands.values():
            _add_quiet_option(sub)
    elif not any("--quiet" in param.opts for param in command.params):
        command.params.append(_quiet_option())


@click.group(cls=LazyGroup, lazy=COMMANDS, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, "--version", prog_name="block", message="%(prog)s %(version)s")
@click.option(
    "--quiet",
    "-q",
    is_flag=True,
    expose_value=False,
    is_eager=True,
    callback=_set_quiet,
    help="Draw no progress bars (results and errors are still printed).",
)
def cli() -> None:
    """Typed configuration blocks and encrypted secrets.

    \b
    block register -m my_project.blocks    record the Block types a module defines
    block create secret my-api-key         save a block (prompts for missing fields)
    block ls                               list saved blocks
    block inspect secret/my-api-key        show one (secrets masked)
    """
