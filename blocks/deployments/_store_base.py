"""What every part of the run store shares: the registry it lives in, its tables, its seals."""

from __future__ import annotations

import threading
from typing import Any, ClassVar

import sqlalchemy as sa

from blocks.core._encryption import KeyManager
from blocks.core._registry import Registry
from blocks.core._registry_tables import registry_meta
from blocks.core._rotation import RESEALER_META_PREFIX
from blocks.deployments import _reseal
from blocks.deployments import _tables as t
from blocks.deployments._records import insert_ignore


class StoreBase:
    """The registry's engine and the seal helpers; the tables are made on first use."""

    _ready: ClassVar[set[str]] = set()
    _ready_lock = threading.Lock()

    def __init__(self, registry: Registry, *, create_tables: bool = True) -> None:
        """`create_tables=False`: the tables exist already (a worker's run process, whose
        worker made them): no DDL, whose locks would queue behind the workers' writes."""
        self.registry = registry
        self.engine = registry.engine
        self.is_sqlite = registry.is_sqlite
        if create_tables:
            self._ensure_tables()

    def _ensure_tables(self) -> None:
        url = self.registry.url
        if url in self._ready and self.registry.is_shared():
            return
        with self._ready_lock, self.registry.write() as conn:
            self.registry.schema_lock(conn)
            for table in t.metadata.sorted_tables:
                conn.execute(sa.schema.CreateTable(table, if_not_exists=True))
                for index in table.indexes:
                    conn.execute(sa.schema.CreateIndex(index, if_not_exists=True))
            _add_missing_columns(conn)
            # Replaced by ix_flow_runs_due (the same columns first, and the scheduler's).
            conn.execute(sa.text("DROP INDEX IF EXISTS ix_flow_runs_claim"))
            # `block key rotate` imports the hook that re-seals these tables' rows.
            conn.execute(
                insert_ignore(self.is_sqlite, registry_meta, ["key"]).values(
                    key=RESEALER_META_PREFIX + _reseal.MODULE, value="1"
                )
            )
            self._ready.add(url)

    def _sealing(self) -> Any:
        return KeyManager.for_registry(self.registry.url).sealing_keyset(self.registry)

    def _verify(self, message: bytes, seal: str, what: str) -> None:
        KeyManager.for_registry(self.registry.url).keyset().verify(message, seal, what=what)


def _add_missing_columns(conn: sa.Connection) -> None:
    """Add the nullable columns a newer version declares to tables an older one made."""
    inspector = sa.inspect(conn)
    for table in t.metadata.sorted_tables:
        have = {column["name"] for column in inspector.get_columns(table.name)}
        for column in table.columns:
            if column.name not in have and column.nullable:
                kind = column.type.compile(dialect=conn.dialect)
                conn.execute(sa.text(f'ALTER TABLE {table.name} ADD COLUMN "{column.name}" {kind}'))
