"""``block key init | info | rotate | generate``: the master key that encrypts secrets.

Only key ids (short public hashes) are printed, except by `block key generate`, whose whole
purpose is to print a new key.
"""

from __future__ import annotations

import click

from blocks.cli._output import echo_json, print_pairs


@click.group()
def key() -> None:
    """The master key that encrypts secret fields."""


@key.command()
@click.option("--json", "as_json", is_flag=True, help="JSON for scripts.")
def info(as_json: bool) -> None:
    """Where the master key is kept and the id of the active key.

    Fails (KeyMismatch) when the registry records a key that no key source here provides.
    """
    from blocks.core._encryption import KeyManager
    from blocks.core._registry import Registry
    from blocks.errors import KeyManagementError

    registry = Registry.default()
    manager = KeyManager.for_registry(registry.url)
    record = registry.key_record()
    try:
        keyset = manager.keyset() if record is None else manager.recorded_keyset(record)
    except KeyManagementError:
        if record is not None:
            raise  # KeyMismatch: the registry has a key, and this shell cannot reach it
        where = manager.writable_source().describe()
        if as_json:
            echo_json({"source": None, "active_key_id": None, "key_ids": [], "created_in": where})
        else:
            click.echo(f"No master key yet: one is created in {where} when a secret is saved.")
        return
    if as_json:
        echo_json(
            {"source": keyset.source, "active_key_id": keyset.active_id, "key_ids": keyset.ids}
        )
        return
    print_pairs(
        (
            ("source", keyset.source),
            ("active key", keyset.active_id),
            ("older keys", ", ".join(keyset.ids[1:]) or "none"),
        ),
        title="master key",
    )


@key.command()
def init() -> None:
    """Create this registry's master key (once), or check that this shell has it.

    Racing `init`s and first saves from many processes all end up with one key. If the
    registry already records a key that this shell's key source does not hold, this fails
    (KeyMismatch) and says how to fix it.
    """
    from blocks.core._rotation import init_master_key

    done = init_master_key()
    if done.created:
        click.echo(f"Created master key {done.key_id} in {done.source}.")
    else:
        click.echo(f"Master key {done.key_id} is in {done.source}; this registry records it.")


@key.command()
def rotate() -> None:
    """Re-encrypt every secret under a new master key, losing none.

    With BLOCKS_MASTER_KEY, first set it to NEW,OLD (NEW from `block key generate`).
    """
    from blocks.cli._progress import progress
    from blocks.core._encryption import EnvKeySource
    from blocks.core._rotation import rotate_master_key

    with progress("Re-encrypting secrets") as bar:
        report = rotate_master_key(progress=bar.update)
    old = ", ".join(report.old_key_ids)
    if not report.old_key_ids:
        click.echo(
            f"{report.source} holds a single key, so there is no new key to rotate to "
            f"({report.counted()} re-encrypted under key {report.new_key_id}). "
            f"Set it to NEW,OLD (NEW from `block key generate`) and run `block key rotate` again."
        )
    elif report.retired:
        click.echo(
            f"Rotated the master key in {report.source}: {report.counted()} re-encrypted "
            f"under new key {report.new_key_id}; retired key(s) {old}."
        )
    elif report.source == EnvKeySource().describe():
        click.echo(
            f"Re-encrypted {report.counted()} under key {report.new_key_id}. "
            f"Old key(s) {old} are no longer needed: remove them from {report.source}."
        )
    else:
        click.echo(
            f"Re-encrypted {report.counted()} under key {report.new_key_id} "
            f"({report.source}); some secrets saved meanwhile still use key(s) {old}, which "
            "are kept: run `block key rotate` again to retire them."
        )


@key.command()
def generate() -> None:
    """Print a new random master key (for BLOCKS_MASTER_KEY). Keep it secret.

    \b
    export BLOCKS_MASTER_KEY="$(block key generate),$BLOCKS_MASTER_KEY"
    block key rotate
    """
    from blocks.core._encryption import format_keys, generate_key

    click.echo(format_keys([generate_key()]))
