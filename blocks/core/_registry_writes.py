"""The statements a document save runs, for each way of running them.

`Registry.save_document` says the write order once; the statements come from one of:

* `SqlAlchemyWrites`: SQLAlchemy Core statements built once (PostgreSQL, in-memory SQLite);
* `SqliteWrites`: constant SQL on the `sqlite3` connection under the same SQLAlchemy
  transaction (BEGIN IMMEDIATE, commit and rollback stay the engine's). A save through the
  engine spent ~3/4 of its time in SQLAlchemy's execute machinery (compiled-cache lookup,
  events, result set-up) around four ~5 µs statements; this runs the same statements without
  it. Errors are mapped to the typed ones the engine's error hook gives.

Timestamps are written as SQLAlchemy's SQLite `DateTime` writes them (naive UTC text), so rows
read the same whichever path wrote them.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterable
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from blocks.core import _registry_tables as tables


class SqlAlchemyWrites:
    """The save's statements as SQLAlchemy Core, on a connection inside a transaction."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn

    def key_rows(self) -> dict[str, str]:
        return {key: value for key, value in self.conn.execute(tables._KEY_RECORD)}

    def current(self, type_slug: str, name: str) -> tuple[str, int, str] | None:
        row = self.conn.execute(
            tables._CURRENT_DOCUMENT, {"type_slug": type_slug, "name": name}
        ).first()
        return None if row is None else (row[0], int(row[1]), row[2])

    def insert(self, values: dict[str, Any]) -> None:
        self.conn.execute(tables._INSERT_DOCUMENT, values)

    def update(self, document_id: str, values: dict[str, Any]) -> None:
        self.conn.execute(tables._UPDATE_DOCUMENT, {"document_id": document_id} | values)

    def delete_references(self, document_id: str) -> None:
        self.conn.execute(tables._DELETE_REFERENCES, {"document_id": document_id})

    def existing(self, ids: set[str]) -> set[str]:
        documents = tables.block_documents
        query = sa.select(documents.c.id).where(documents.c.id.in_(ids))
        return set(self.conn.execute(query).scalars())

    def children(self, parents: set[str]) -> set[str]:
        references = tables.block_references
        query = sa.select(references.c.child_id).where(references.c.parent_id.in_(parents))
        return set(self.conn.execute(query).scalars())

    def insert_references(self, rows: list[dict[str, str]]) -> None:
        self.conn.execute(tables._INSERT_REFERENCES, rows)


_COLUMNS = (
    "id",
    "type_slug",
    "name",
    "schema_checksum",
    "data",
    "secrets",
    "refs",
    "created",
    "updated",
    "version",
    "mac",
)
_UPDATED = ("schema_checksum", "data", "secrets", "refs", "updated", "version", "mac")
_INSERT = (
    f"INSERT INTO block_documents ({', '.join(_COLUMNS)}) "
    f"VALUES ({', '.join('?' for _ in _COLUMNS)})"
)
_UPDATE = f"UPDATE block_documents SET {', '.join(f'{c} = ?' for c in _UPDATED)} WHERE id = ?"
# A save's whole transaction in one statement, when the saving process knows the row's id and
# version (`Registry.save_document`'s known-version path): the row is rewritten only if it is
# still that version, still has no references, and the sealing key is still the recorded
# active one; otherwise nothing is written (no row matches) and the save runs in full.
UPDATE_KNOWN = (
    f"UPDATE block_documents SET {', '.join(f'{c} = ?' for c in _UPDATED)}"
    " WHERE id = ? AND version = ? AND type_slug = ? AND name = ? AND refs = '{}'"
    " AND (SELECT value FROM registry_meta WHERE key = ?) = ?"
)
_CURRENT = "SELECT id, version, refs FROM block_documents WHERE type_slug = ? AND name = ?"
_KEY_ROWS = "SELECT key, value FROM registry_meta WHERE key IN (?, ?, ?, ?)"
_DELETE_REFERENCES = "DELETE FROM block_references WHERE parent_id = ?"
_INSERT_REFERENCE = "INSERT INTO block_references (parent_id, field, child_id) VALUES (?, ?, ?)"


def sqlite_time(value: datetime) -> str:
    """A timestamp as SQLAlchemy's SQLite `DateTime` stores it (naive, microseconds)."""
    return value.replace(tzinfo=None).isoformat(" ", "microseconds")  # ~3x strftime's speed


class SqliteWrites:
    """The save's statements as constant SQL on the transaction's `sqlite3` connection."""

    def __init__(
        self,
        raw: sqlite3.Connection,
        meta_keys: tuple[str, str, str, str],
        problem: Callable[[BaseException], Exception | None],
    ) -> None:
        self.raw = raw
        self.meta_keys = meta_keys
        self.problem = problem

    def _run(self, sql: str, params: Iterable[Any] = ()) -> sqlite3.Cursor:
        try:
            return self.raw.execute(sql, tuple(params))
        except sqlite3.Error as exc:
            problem = self.problem(exc)
            if problem is not None:
                raise problem from None
            raise

    def key_rows(self) -> dict[str, str]:
        return dict(self._run(_KEY_ROWS, self.meta_keys).fetchall())

    def current(self, type_slug: str, name: str) -> tuple[str, int, str] | None:
        row = self._run(_CURRENT, (type_slug, name)).fetchone()
        return None if row is None else (row[0], int(row[1]), row[2])

    def insert(self, values: dict[str, Any]) -> None:
        values = values | {
            "created": sqlite_time(values["created"]),
            "updated": sqlite_time(values["updated"]),
        }
        self._run(_INSERT, [values[c] for c in _COLUMNS])

    def update(self, document_id: str, values: dict[str, Any]) -> None:
        values = values | {"updated": sqlite_time(values["updated"])}
        self._run(_UPDATE, [*(values[c] for c in _UPDATED), document_id])

    def delete_references(self, document_id: str) -> None:
        self._run(_DELETE_REFERENCES, (document_id,))

    def existing(self, ids: set[str]) -> set[str]:
        marks = ", ".join("?" for _ in ids)
        query = f"SELECT id FROM block_documents WHERE id IN ({marks})"
        return {row[0] for row in self._run(query, ids)}

    def children(self, parents: set[str]) -> set[str]:
        marks = ", ".join("?" for _ in parents)
        query = f"SELECT child_id FROM block_references WHERE parent_id IN ({marks})"
        return {row[0] for row in self._run(query, parents)}

    def insert_references(self, rows: list[dict[str, str]]) -> None:
        for row in rows:
            self._run(_INSERT_REFERENCE, (row["parent_id"], row["field"], row["child_id"]))


DocumentWrites = SqlAlchemyWrites | SqliteWrites
