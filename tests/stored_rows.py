"""Read and edit a saved document's row with raw SQL, as someone with write access to a shared
registry could (the tamper tests).

Example:
    >>> tamper("secret", "alice", secrets=row_columns("secret", "mallory")["secrets"])
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa

from blocks.core._registry import Registry, block_documents


def row_columns(type_slug: str, name: str) -> dict[str, Any]:
    """Every stored column of the document `type_slug/name`."""
    with Registry.default().engine.connect() as conn:
        row = conn.execute(
            sa.select(block_documents).where(
                block_documents.c.type_slug == type_slug, block_documents.c.name == name
            )
        ).one()
    return dict(row._mapping)


def tamper(type_slug: str, name: str, **values: Any) -> None:
    """Overwrite columns of the document `type_slug/name` behind the registry's back."""
    with Registry.default().engine.begin() as conn:
        conn.execute(
            block_documents.update()
            .where(block_documents.c.type_slug == type_slug, block_documents.c.name == name)
            .values(**values)
        )
