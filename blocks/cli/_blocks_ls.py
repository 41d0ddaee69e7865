"""``block ls`` without click: the saved blocks as a table (piped: TSV) or JSON.

`blocks.cli.documents.ls` (the click command) and `blocks.cli._fast` (run before click is
imported) both list through `list_blocks`, so the two paths print the same bytes.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from blocks.cli._output import echo, echo_json_array, iso, local_time, print_table

if TYPE_CHECKING:
    from blocks.core._registry import DocumentRow, DocumentSummary


def list_blocks(type_slug: str | None, as_json: bool) -> None:
    """``block ls [--type TYPE] [--json]``."""
    from blocks.core._registry import Registry

    if type_slug is not None:
        from blocks.core._block import validate_name

        validate_name(type_slug, what="block type slug")
    rows = Registry.default().list_document_summaries(type_slug)
    if as_json:
        echo_json_array(map(document_json, rows))
        return
    if not rows:
        what = f"{type_slug} blocks" if type_slug else "blocks"
        echo(f"No {what} saved yet. Save one with `block create TYPE NAME`.")
        return
    print_table(
        ("type", "name", "secrets", "created", "updated"),
        (
            (
                row.type_slug,
                row.name,
                str(len(row.secret_fields)),
                local_time(row.created),
                local_time(row.updated),
            )
            for row in rows
        ),
    )


def document_json(row: DocumentRow | DocumentSummary) -> dict[str, Any]:
    """What `ls --json` and `inspect --json` say of a saved block: where its secrets are,
    never what they are."""
    secret_fields = row.secret_fields if hasattr(row, "secret_fields") else sorted(row.secrets)
    return {
        "slug": row.slug,
        "type": row.type_slug,
        "name": row.name,
        "id": row.id,
        "secret_fields": list(secret_fields),
        "created": iso(row.created),
        "updated": iso(row.updated),
    }
