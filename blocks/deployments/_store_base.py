"""What every part of the run store shares: the registry it lives in, its tables, its seals."""

from __future__ import annotations

import threading
from typing import Any, ClassVar

import sqlalchemy as sa

from blocks.core._encryption import KeyManager
from blocks.core._registry import Registry
from blocks.deployments import _tables as t


class StoreBase:
    """The registry's engine and the seal helpers; the tables are made on first use."""

    _ready: ClassVar[set[str]] = set()
    _ready_lock = threading.Lock()

    def __init__(self, registry: Registry) -> None:
        self.registry = registry
        self.engine = registry.engine
        self.is_sqlite = registry.is_sqlite
        self._ensure_tables()

    def _ensure_tables(self) -> None:
        url = self.registry.url
        if url in self._ready and self.registry.is_shared():
            return
        with self._ready_lock, self.registry.write() as conn:
            for table in t.metadata.sorted_tables:
                conn.execute(sa.schema.CreateTable(table, if_not_exists=True))
                for index in table.indexes:
                    conn.execute(sa.schema.CreateIndex(index, if_not_exists=True))
            self._ready.add(url)

    def _sealing(self) -> Any:
        return KeyManager.for_registry(self.registry.url).sealing_keyset(self.registry)

    def _verify(self, message: bytes, seal: str, what: str) -> None:
        KeyManager.for_registry(self.registry.url).keyset().verify(message, seal, what=what)
