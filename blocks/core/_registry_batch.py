"""Many registry writes in ONE transaction: what `block apply` commits, all or nothing.

A batch holds the key lock shared for its whole transaction, as a single save does (SQLite:
the write lock from BEGIN IMMEDIATE; PostgreSQL: the shared advisory lock, so no rotation
interleaves), and writes each document through the registry's own save steps
(`Registry._upsert_row`, `Registry._write_references`): the same id and version rules, the
same canonical bytes under the same seal. Nothing is visible to other processes until the
batch commits; any error rolls every write of it back.

This module is the registry's friend: it calls the registry's underscored steps so that a
batch can never seal or order a write differently from `save`.

Example:
    >>> with open_batch(registry, keyset) as batch:
    ...     batch.save("secret", "db", checksum, {}, {"value": b"s..."}, {})
    ...     batch.delete("secret", "old")
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from blocks.core._documents import secret_aad
from blocks.core._registry import StaleKey, _dumps, _NewDocument

if TYPE_CHECKING:
    from sqlalchemy.engine import Connection

    from blocks.core._encryption import Keyset
    from blocks.core._registry import Registry
    from blocks.core._registry_writes import SqlAlchemyWrites


class Batch:
    """The writes of one open batch (see `open_batch`)."""

    def __init__(
        self, registry: Registry, conn: Connection, writes: SqlAlchemyWrites, keyset: Keyset
    ) -> None:
        self._registry = registry
        self._conn = conn
        self._writes = writes
        self._keyset = keyset
        self.registered: list[str] = []

    def current(self, type_slug: str, name: str) -> tuple[str, int] | None:
        """The id and version stored under a name, as this transaction sees it."""
        found = self._writes.current(type_slug, name)
        return None if found is None else (found[0], found[1])

    def register_type(self, *, slug: str, checksum: str, **described: Any) -> None:
        """Record a block type and schema (as `Registry.register_type`, in this transaction)."""
        if checksum in self.registered or self._registry.knows_schema(checksum):
            return
        schema = {
            "checksum": checksum,
            "type_slug": slug,
            "version": described.pop("version"),
            "fields": described.pop("fields"),
        }
        self._registry._write_type_on(self._conn, slug, described, schema)
        self.registered.append(checksum)

    def save(
        self,
        type_slug: str,
        name: str,
        schema_checksum: str,
        data: dict[str, Any],
        secrets: dict[str, bytes],
        refs: dict[str, str],
    ) -> str:
        """Create or overwrite one document, secrets sealed under the batch's key; its id."""
        sealed = {
            path: self._keyset.encrypt(plain, aad=secret_aad(type_slug, name, path))
            for path, plain in secrets.items()
        }
        document = _NewDocument(
            type_slug, name, schema_checksum, _dumps(data), _dumps(sealed), _dumps(refs), refs
        )
        document_id = self._registry._upsert_row(self._writes, document, True, self._keyset.seal)
        self._registry._write_references(self._writes, document, document_id)
        return document_id

    def delete(self, type_slug: str, name: str) -> None:
        """Delete one document; `BlockInUse` if a block left in place references it."""
        self._registry._delete_on(self._conn, type_slug, name)


@contextmanager
def open_batch(registry: Registry, keyset: Keyset) -> Iterator[Batch]:
    """A batch sealing under `keyset`; `StaleKey` (nothing written) if that is no longer the
    registry's active key (a rotation committed since it was read)."""
    from blocks.core._registry_writes import SqlAlchemyWrites

    with registry.write() as conn:
        registry._key_lock(conn, exclusive=False)
        writes = SqlAlchemyWrites(conn)
        record = registry._key_record_from(writes.key_rows())
        if record is None or record.active_key_id != keyset.active_id:
            raise StaleKey(keyset.active_id)
        batch = Batch(registry, conn, writes, keyset)
        yield batch
    for checksum in batch.registered:  # committed: `register_type` may skip them from now on
        registry._registered_schemas.add(checksum)
