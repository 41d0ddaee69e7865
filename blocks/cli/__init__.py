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

import os
import sys
from typing import Any

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


def __getattr__(name: str) -> Any:
    # The click group is built only when a command needs it (`blocks.cli._fast` runs the
    # listing commands without importing click).
    if name in ("cli", "LazyGroup"):
        from blocks.cli import _group

        return getattr(_group, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def main(argv: list[str] | None = None) -> None:
    """Entry point of the ``block`` console script."""
    # Like `python -m`, let `-m my_project.blocks` find modules of the current folder; appended,
    # so a file in the current folder never shadows an installed module.
    if os.getcwd() not in sys.path:
        sys.path.append(os.getcwd())
    from blocks.cli._fast import fast_command

    # `block results ls` and friends with plain options run without click (~30 ms to
    # import); anything else (help, a usage mistake, every other command) goes through it.
    fast = fast_command(sys.argv[1:] if argv is None else argv)
    try:
        result = fast() if fast is not None else _click_main(argv)
    except KeyboardInterrupt:
        _fail("Interrupted.", 130)
    except BrokenPipeError:
        # The reader went away (`block ls | head`): stop quietly, as other tools do.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        sys.exit(1)
    except Exception as exc:
        _handle(exc)
    sys.exit(result if isinstance(result, int) else 0)


def _click_main(argv: list[str] | None) -> Any:
    from blocks.cli._group import cli

    return cli.main(args=argv, prog_name="block", standalone_mode=False)


def _handle(exc: Exception) -> None:
    """Say `exc` (raised by a command) as one error line and exit; called while handling it."""
    import click

    if isinstance(exc, click.UsageError):
        message = exc.format_message().rstrip()
        if not message.endswith((".", "!", "?")):
            message += "."
        hint = f" See '{exc.ctx.command_path} --help'." if exc.ctx is not None else ""
        _fail(message + hint, exc.exit_code)
    elif isinstance(exc, click.ClickException):
        _fail(exc.format_message(), exc.exit_code)
    elif isinstance(exc, click.Abort):
        _fail("Aborted.", 1)
    else:
        _fail(_describe(exc), 1)


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
        import click

        click.echo(f"Warning: {exc} Tracebacks stay off.", err=True)
        return False


def _fail(message: str, code: int) -> None:
    if sys.exc_info()[0] is not None and _debug():
        import traceback  # only here: every command start-up would pay for it

        traceback.print_exc()
    import click

    line = " ".join(part.strip() for part in message.splitlines() if part.strip())
    click.echo(f"Error: {line}", err=True)
    sys.exit(code)
