"""The ``block`` command: register, list, inspect, create and delete blocks; manage keys.

Each command parses its arguments, calls the library and prints. Every error a user can cause
ends as one ``Error: ...`` line on stderr and a non-zero exit (2 for usage mistakes, 1 for the
rest), never a traceback; ``BLOCKS_DEBUG=1`` shows the traceback of unexpected errors.

Commands are imported when used, so ``block ls`` does not pay for the others.

Example (shell):
    $ block register -m my_project.blocks
    $ block create secret my-api-key          # prompts for the hidden value
    $ block inspect secret/my-api-key
"""

from __future__ import annotations

import importlib
import os
import sys
from typing import Any

import click

from blocks import __version__

# name -> "module:attribute" of each top-level command, imported on first use.
COMMANDS: dict[str, str] = {
    "register": "blocks.cli.documents:register",
    "ls": "blocks.cli.documents:ls",
    "inspect": "blocks.cli.documents:inspect",
    "create": "blocks.cli.documents:create",
    "delete": "blocks.cli.documents:delete",
    "type": "blocks.cli.block_types:type_group",
    "key": "blocks.cli.keys:key",
    "results": "blocks.cli.results:results",
    "ui": "blocks.cli.ui:ui",
    "worker": "blocks.cli.workers:worker",
    "work-pool": "blocks.cli.work_pools:work_pool",
    "deployment": "blocks.cli.deployments:deployment",
    "deploy": "blocks.cli.deploy:deploy",
    "init": "blocks.cli.deploy:init",
    "flow-run": "blocks.cli.flow_runs:flow_run",
    "export": "blocks.cli.as_code:export",
    "apply": "blocks.cli.as_code:apply",
    "diff": "blocks.cli.as_code:diff",
}

DEBUG_VARIABLE = "BLOCKS_DEBUG"


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


def main(argv: list[str] | None = None) -> None:
    """Entry point of the ``block`` console script."""
    # Like `python -m`, let `-m my_project.blocks` find modules of the current folder; appended,
    # so a file in the current folder never shadows an installed module.
    if os.getcwd() not in sys.path:
        sys.path.append(os.getcwd())
    try:
        result = cli.main(args=argv, prog_name="block", standalone_mode=False)
    except click.UsageError as exc:
        message = exc.format_message().rstrip()
        if not message.endswith((".", "!", "?")):
            message += "."
        hint = f" See '{exc.ctx.command_path} --help'." if exc.ctx is not None else ""
        _fail(message + hint, exc.exit_code)
    except click.ClickException as exc:
        _fail(exc.format_message(), exc.exit_code)
    except click.Abort:
        _fail("Aborted.", 1)
    except KeyboardInterrupt:
        _fail("Interrupted.", 130)
    except BrokenPipeError:
        # The reader went away (`block ls | head`): stop quietly, as other tools do.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        sys.exit(1)
    except Exception as exc:
        _fail(_describe(exc), 1)
    sys.exit(result if isinstance(result, int) else 0)


def _describe(exc: Exception) -> str:
    from blocks.errors import BlocksError

    if isinstance(exc, BlocksError):
        return str(exc)
    if _is_validation_error(exc):
        # pydantic's own text repeats the input, which may be a secret: never print it.
        from blocks.core._documents import field_problems

        return "invalid values: " + "; ".join(field_problems(exc))  # type: ignore[arg-type]
    return (
        f"unexpected {type(exc).__name__}: {exc}. "
        f"Rerun with {DEBUG_VARIABLE}=1 to see the traceback."
    )


def _is_validation_error(exc: Exception) -> bool:
    return any(
        cls.__module__.startswith("pydantic") and cls.__name__ == "ValidationError"
        for cls in type(exc).__mro__
    )


def _debug() -> bool:
    """BLOCKS_DEBUG as a boolean (0/false/no/off are off); a value that is neither is said
    on stderr and taken as off."""
    from blocks import settings
    from blocks.errors import ConfigurationError

    try:
        return settings.debug()
    except ConfigurationError as exc:
        click.echo(f"Warning: {exc} Tracebacks stay off.", err=True)
        return False


def _fail(message: str, code: int) -> None:
    if sys.exc_info()[0] is not None and _debug():
        import traceback  # only here: every command start-up would pay for it

        traceback.print_exc()
    line = " ".join(part.strip() for part in message.splitlines() if part.strip())
    click.echo(f"Error: {line}", err=True)
    sys.exit(code)
