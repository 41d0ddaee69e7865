"""``block export | apply | diff``: blocks as code, and moving a registry (a full backup).

\b
    $ block export -o config/blocks.yaml                     # no secret value in it
    $ block diff -f config/blocks.yaml                       # the plan; exit 1 when it changes
    $ block apply -f config/blocks.yaml [--dry-run] [--prune]
    $ block export --with-secrets --encrypt-to env:BACKUP_KEY -o backup.yaml
    $ BLOCKS_REGISTRY_URL=postgresql://... block apply -f backup.yaml --decrypt-with env:BACKUP_KEY
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import click

from blocks.cli._complete import block_types

if TYPE_CHECKING:
    from blocks.core._as_code import Plan
    from blocks.core._backup_key import BackupKey
    from blocks.core._blocks_file import BlocksFile


@click.command("export")
@click.option(
    "--type",
    "types",
    multiple=True,
    metavar="TYPE",
    shell_complete=block_types,
    help="Only blocks of this type. Repeatable.",
)
@click.option("-o", "--output", metavar="FILE", default="-", help="Write here (default: stdout).")
@click.option(
    "--with-secrets",
    is_flag=True,
    help="A full backup: every secret value, sealed under --encrypt-to's key.",
)
@click.option(
    "--encrypt-to",
    metavar="REF",
    help="Where the backup key is: env:NAME, file:PATH or aws-sm:NAME (never the key itself).",
)
def export(types: tuple[str, ...], output: str, with_secrets: bool, encrypt_to: str | None) -> None:
    """Write saved blocks as YAML: a secret as its reference, never its value.

    A secret that holds a value (no reference) is written as a placeholder that `block apply`
    refuses until filled. --with-secrets --encrypt-to REF writes every value, sealed under a
    key derived from the passphrase REF points at: a backup to restore elsewhere.

    \b
    block export -o config/blocks.yaml
    block export --type s3 --type aws-credentials
    block export --with-secrets --encrypt-to env:BACKUP_KEY -o backup.yaml
    """
    from blocks.core._block import validate_name
    from blocks.core._blocks_export import export_blocks
    from blocks.core._registry import Registry

    for slug in types:
        validate_name(slug, what="block type slug")
    if with_secrets != (encrypt_to is not None):
        raise click.UsageError(
            "A full backup takes both --with-secrets and --encrypt-to REF (secret values are "
            "never written in clear)."
        )
    backup = None
    if encrypt_to is not None:
        from blocks.core._backup_key import BackupKey, read_passphrase

        backup = BackupKey.create(read_passphrase(encrypt_to))
    text = export_blocks(Registry.default(), types, backup)
    # Every document starts with a line "---" (a value never does: it is indented or quoted).
    count = sum(line == "---" for line in text.splitlines()) - (backup is not None)
    if output == "-":
        click.echo(text, nl=False)
    else:
        _write_private(Path(output), text, private=backup is not None)
        what = "an encrypted backup of " if backup is not None else ""
        click.echo(f"Wrote {what}{count} block(s) to {output}.", err=True)


def _write_private(path: Path, text: str, *, private: bool) -> None:
    """Write `text` whole or not at all (temp file, fsync, rename); a backup is 0600."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600 if private else 0o666)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            out.write(text)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


_FILE = click.option(
    "-f",
    "--file",
    "path",
    metavar="FILE",
    required=True,
    help="The blocks file (from `block export`); - reads standard input.",
)
_PRUNE = click.option(
    "--prune",
    is_flag=True,
    help="Also delete saved blocks of the file's types that the file does not list.",
)
_DECRYPT = click.option(
    "--decrypt-with",
    metavar="REF",
    help="A backup's key: env:NAME, file:PATH or aws-sm:NAME (as given to --encrypt-to).",
)


@click.command("apply")
@_FILE
@click.option("--dry-run", is_flag=True, help="Print the plan; change nothing.")
@_PRUNE
@_DECRYPT
def apply(path: str, dry_run: bool, prune: bool, decrypt_with: str | None) -> None:
    """Make the registry match a blocks file, in one transaction (all of it or nothing).

    Prints the plan: + create, ~ update (with the fields), = unchanged, - delete (only with
    --prune). ${VAR} and ${VAR:-default} in values come from the environment.

    \b
    block apply -f config/blocks.yaml --dry-run
    block apply -f backup.yaml --decrypt-with env:BACKUP_KEY
    """
    from blocks.core._as_code import apply_blocks, plan_blocks
    from blocks.core._registry import Registry

    blocks_file = _read(path)
    key = _backup_key(blocks_file, decrypt_with)
    registry = Registry.default()
    if dry_run:
        plan = plan_blocks(blocks_file, registry, prune=prune, backup_key=key)
        _print(plan)
        click.echo(f"Dry run: {plan.summary()}. Nothing was written.")
        return
    shown: list[Plan] = []

    def show(plan: Plan) -> None:
        """The plan before it is written (and again if a block changed meanwhile)."""
        if shown:
            click.echo("A planned block changed while applying; the plan again:")
        shown.append(plan)
        _print(plan)

    plan = apply_blocks(blocks_file, registry, prune=prune, backup_key=key, show=show)
    if plan.has_changes:
        click.echo(
            f"Applied to {registry.describe()}: {plan.count('create')} created, "
            f"{plan.count('update')} updated, {plan.count('delete')} deleted, "
            f"{plan.count('unchanged')} unchanged."
        )
    else:
        click.echo(f"Nothing to change: {plan.count('unchanged')} block(s) already match.")


@click.command("diff")
@_FILE
@_PRUNE
@_DECRYPT
def diff(path: str, prune: bool, decrypt_with: str | None) -> None:
    """Print what `block apply` would change; exit 1 when it would change anything (for CI)."""
    from blocks.core._as_code import plan_blocks
    from blocks.core._registry import Registry

    blocks_file = _read(path)
    plan = plan_blocks(
        blocks_file,
        Registry.default(),
        prune=prune,
        backup_key=_backup_key(blocks_file, decrypt_with),
    )
    _print(plan)
    click.echo(f"{plan.summary()}.")
    if plan.has_changes:
        sys.exit(1)


def _read(path: str) -> BlocksFile:
    from blocks.core._blocks_file import read_blocks_file
    from blocks.errors import InvalidBlocksFile

    if path == "-":
        return read_blocks_file(sys.stdin.read(), "<stdin>", os.environ)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise InvalidBlocksFile(f"{path}: no such file.") from None
    except (OSError, UnicodeDecodeError) as exc:
        why = exc.strerror if isinstance(exc, OSError) and exc.strerror else type(exc).__name__
        raise InvalidBlocksFile(f"{path}: cannot read it ({why}).") from None
    return read_blocks_file(text, path, os.environ)


def _backup_key(blocks_file: BlocksFile, reference: str | None) -> BackupKey | None:
    """The key of a backup file, checked against its header before anything is read."""
    if reference is None or blocks_file.backup is None:
        return None  # the plan says what is missing or extra
    from blocks.core._backup_key import BackupKey, read_passphrase

    where = f"{blocks_file.source}:{blocks_file.backup_line}"
    return BackupKey.from_header(blocks_file.backup, read_passphrase(reference), where)


def _print(plan: Plan) -> None:
    for change in plan.changes:
        click.echo(change.line())
