"""``block register | ls | inspect | create | delete``: block types and saved blocks."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING

import click

from blocks.cli._blocks_ls import document_json as _document_json
from blocks.cli._blocks_ls import list_blocks
from blocks.cli._complete import block_types, saved_blocks
from blocks.cli._output import (
    echo_json,
    local_time,
    print_pairs,
    print_table,
)

if TYPE_CHECKING:
    pass


@click.command()
@click.option(
    "-m", "--module", metavar="MODULE", help="Dotted module name, e.g. my_project.blocks."
)
@click.option("-f", "--file", "path", metavar="FILE", help="Path of a .py file.")
def register(module: str | None, path: str | None) -> None:
    """Record every Block type a module (or file) defines.

    Then `block create TYPE NAME` finds those types by slug, importing the module again.

    \b
    block register -m my_project.blocks
    block register -f ./blocks_def.py
    """
    from blocks.core._discovery import register_blocks_from

    if (module is None) == (path is None):
        raise click.UsageError("Pass either -m MODULE or -f FILE.")
    target = module if module is not None else str(Path(path or "").expanduser().absolute())
    from blocks.cli._progress import progress

    with progress(f"Registering block types from {target}") as bar:
        found = register_blocks_from(target, bar.update)
    for cls in found:
        secrets = cls.secret_fields()
        detail = f"; secret fields: {', '.join(secrets)}" if secrets else ""
        click.echo(
            f"Registered block type {cls.get_block_type_slug()} "
            f"({cls.__module__}.{cls.__qualname__}{detail})"
        )


@click.command("ls")
@click.option("--type", "type_slug", metavar="TYPE", help="Only blocks of this type.")
@click.option("--json", "as_json", is_flag=True, help="JSON for scripts (never secret values).")
def ls(type_slug: str | None, as_json: bool) -> None:
    """List saved blocks: type, name, secret fields, created, updated.

    Piped, the table is tab-separated (a line of column names, then a line per block).
    """
    list_blocks(type_slug, as_json)


@click.command()
@click.argument("slug", metavar="TYPE/NAME", shell_complete=saved_blocks)
@click.option("--show-secrets", is_flag=True, help="Print secret values in clear.")
@click.option("--json", "as_json", is_flag=True, help="JSON for scripts.")
def inspect(slug: str, show_secrets: bool, as_json: bool) -> None:
    """Show a saved block's fields; secrets are masked unless --show-secrets.

    Fields that hold another saved block show its TYPE/NAME.

    \b
    block inspect secret/my-api-key
    """
    from blocks.cli._text_fields import inspect_block

    row, values = inspect_block(slug, reveal_secrets=show_secrets)
    if as_json:
        echo_json({**_document_json(row), "schema_checksum": row.schema_checksum, "fields": values})
        return
    print_pairs(
        (
            ("id", row.id),
            ("created", local_time(row.created)),
            ("updated", local_time(row.updated)),
            ("schema", row.schema_checksum),
        ),
        title=row.slug,
    )
    print_table(("field", "value"), values.items())


@click.command()
@click.argument("type_slug", metavar="TYPE", shell_complete=block_types)
@click.argument("name")
@click.option(
    "--set",
    "assignments",
    multiple=True,
    metavar="FIELD=VALUE",
    help="A field value (JSON when it parses, else text); FIELD.KEY for a dict key; "
    "TYPE/NAME of a saved block for a field holding a block. Repeatable.",
)
@click.option(
    "--stdin",
    "stdin_field",
    metavar="FIELD",
    help="Read FIELD's value from standard input (keeps a secret out of shell history).",
)
@click.option("--overwrite", is_flag=True, help="Replace a block saved under NAME.")
def create(
    type_slug: str,
    name: str,
    assignments: tuple[str, ...],
    stdin_field: str | None,
    overwrite: bool,
) -> None:
    """Save a new block of TYPE under NAME.

    Required fields not given with --set are prompted for (secret ones hidden, asked twice).

    \b
    block create secret my-api-key
    block create string region --set value=eu-west-1
    block create s3 results --set bucket_path=my-bucket/results \\
        --set credentials=aws-credentials/prod
    """
    from blocks.cli._text_fields import block_from_text, missing_fields
    from blocks.core._block import block_class_for, validate_name
    from blocks.core._registry import Registry
    from blocks.errors import BlockAlreadyExists

    validate_name(type_slug, what="block type slug")
    validate_name(name)
    cls = block_class_for(type_slug, import_registered=True)
    fields = dict(_assignment(text) for text in assignments)
    if stdin_field is not None:
        fields[stdin_field] = _read_stdin()
    if not overwrite and Registry.default().get_document(type_slug, name) is not None:
        # Checked before prompting, so nobody types a secret for nothing.
        raise BlockAlreadyExists(
            f"A {type_slug} block named '{name}' already exists. Pass --overwrite to replace it."
        )
    missing = missing_fields(cls, fields)
    if missing:
        if not sys.stdin.isatty():
            raise click.UsageError(
                f"Missing required field(s) of {type_slug}: {', '.join(missing)}. Pass "
                + " ".join(f"--set {field}=VALUE" for field in missing)
                + " (or --stdin FIELD), or run in a terminal to be prompted."
            )
        secret = set(cls.secret_fields())
        for field in missing:
            description = cls.model_fields[field].description
            label = field + (" (secret)" if field in secret else "")
            label += f" - {description}" if description else ""
            fields[field] = click.prompt(
                label, hide_input=field in secret, confirmation_prompt=field in secret
            )
    block = block_from_text(cls, fields)
    block.save(name, overwrite=overwrite)
    click.echo(f"Saved {type_slug}/{name}.")


def _assignment(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        # The text may hold a secret: name the problem, not the value.
        raise click.BadParameter("expected FIELD=VALUE", param_hint="'--set'")
    return key.strip(), value


def _read_stdin() -> str:
    text = sys.stdin.read()
    return text[:-1] if text.endswith("\n") else text


@click.command()
@click.argument("slug", metavar="TYPE/NAME", shell_complete=saved_blocks)
@click.option("--yes", "-y", is_flag=True, help="Do not ask for confirmation.")
def delete(slug: str, yes: bool) -> None:
    """Delete a saved block (refused while another block references it)."""
    from blocks.core._block import Block, split_slug
    from blocks.core._registry import Registry
    from blocks.errors import BlockNotFound

    type_slug, name = split_slug(slug)
    if not yes:
        if not sys.stdin.isatty():
            raise click.UsageError(f"Pass --yes to delete {slug} without a terminal to confirm.")
        if Registry.default().get_document(type_slug, name) is None:
            raise BlockNotFound(f"No {type_slug} block named '{name}' to delete.")
        click.confirm(f"Delete {slug}?", abort=True)
    Block.delete(slug)
    click.echo(f"Deleted {slug}.")
