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
        with self._ready_lock:
            # Read the catalog first: it takes no lock on the tables. `CREATE INDEX IF NOT
            # EXISTS` on PostgreSQL takes a SHARE lock on its table even when the index exists,
            # held to the end of the transaction: one process's DDL over several tables and a
            # worker's transaction writing two of them in the other order deadlock.
            with self.registry.read() as conn:
                complete = _schema_is_complete(conn)
            if not complete:
                self._create_tables()
            self._ready.add(url)

    def _create_tables(self) -> None:
        for attempt in range(_DDL_ATTEMPTS):
            try:
                with self.registry.write() as conn:
                    self.registry.schema_lock(conn)
                    _create_missing(conn)
                return
            except sa.exc.OperationalError as exc:
                # Only at a first use or an upgrade, beside running workers: PostgreSQL broke
                # a lock cycle by failing this side, which changed nothing. Try again.
                if attempt + 1 == _DDL_ATTEMPTS or not _is_deadlock(exc):
                    raise

    def _sealing(self) -> Any:
        return KeyManager.for_registry(self.registry.url).sealing_keyset(self.registry)

    def _verify(self, message: bytes, seal: str, what: str) -> None:
        KeyManager.for_registry(self.registry.url).keyset().verify(message, seal, what=what)


_DDL_ATTEMPTS = 5
_RETIRED_INDEXES = ("ix_flow_runs_claim",)  # replaced by ix_flow_runs_due


def _schema_is_complete(conn: sa.Connection) -> bool:
    """Whether every table, index, column and meta row of this version is there already
    (catalog reads only: no lock on any table)."""
    inspector = sa.inspect(conn)
    have_tables = set(inspector.get_table_names())
    for table in t.metadata.sorted_tables:
        if table.name not in have_tables:
            return False
        have_indexes = {index["name"] for index in inspector.get_indexes(table.name)}
        if any(index.name not in have_indexes for index in table.indexes):
            return False
        if any(name in have_indexes for name in _RETIRED_INDEXES):
            return False
        have_columns = {column["name"] for column in inspector.get_columns(table.name)}
        if any(column.name not in have_columns for column in table.columns):
            return False
    marker = sa.select(registry_meta.c.key).where(
        registry_meta.c.key == RESEALER_META_PREFIX + _reseal.MODULE
    )
    return conn.execute(marker).first() is not None


def _create_missing(conn: sa.Connection) -> None:
    for table in t.metadata.sorted_tables:
        conn.execute(sa.schema.CreateTable(table, if_not_exists=True))
        for index in table.indexes:
            conn.execute(sa.schema.CreateIndex(index, if_not_exists=True))
    _add_missing_columns(conn)
    for name in _RETIRED_INDEXES:
        conn.execute(sa.text(f"DROP INDEX IF EXISTS {name}"))
    # `block key rotate` imports the hook that re-seals these tables' rows.
    conn.execute(
        insert_ignore(conn.dialect.name == "sqlite", registry_meta, ["key"]).values(
            key=RESEALER_META_PREFIX + _reseal.MODULE, value="1"
        )
    )


def _is_deadlock(exc: sa.exc.OperationalError) -> bool:
    code = getattr(exc.orig, "sqlstate", None) or getattr(exc.orig, "pgcode", None)
    return code == "40P01"


def _add_missing_columns(conn: sa.Connection) -> None:
    """Add the nullable columns a newer version declares to tables an older one made."""
    inspector = sa.inspect(conn)
    for table in t.metadata.sorted_tables:
        have = {column["name"] for column in inspector.get_columns(table.name)}
        for column in table.columns:
            if column.name not in have and column.nullable:
                kind = column.type.compile(dialect=conn.dialect)
                conn.execute(sa.text(f'ALTER TABLE {table.name} ADD COLUMN "{column.name}" {kind}'))
