"""The run store's tables made on first use, beside processes already writing them.

A CLI call or a new worker opens a `RunStore` while workers write runs and logs. Checking the
tables must take no lock on them: on PostgreSQL `CREATE INDEX IF NOT EXISTS` takes a SHARE lock
on its table even when the index exists, and a worker writing logs then runs (the other order)
deadlocked with it (a CI failure: `block flow-run logs --follow` beside a worker).
"""

from __future__ import annotations

import threading

import sqlalchemy as sa

from blocks.core._registry import Registry
from blocks.deployments import _tables as t
from blocks.deployments._store import RunStore
from blocks.deployments._store_base import StoreBase


def test_opening_a_store_takes_no_table_lock_beside_a_writer_of_two_tables(
    store: RunStore, backend: str
) -> None:
    registry = store.registry
    StoreBase._ready.discard(registry.url)  # as a new process: nothing known yet
    opened: list[RunStore] = []
    with registry.engine.connect() as writer, writer.begin():
        # A worker's transaction: a log line first (its table's ROW EXCLUSIVE lock) ...
        writer.execute(
            sa.update(t.flow_run_logs).where(sa.false()).values(level=t.flow_run_logs.c.level)
        )
        other = threading.Thread(target=lambda: opened.append(RunStore(registry)), daemon=True)
        other.start()
        other.join(30)
        assert opened, f"opening a RunStore waited on a writer's transaction ({backend})"
        # ... then its run (the other table): nothing of the opener's may hold it.
        writer.execute(sa.update(t.flow_runs).where(sa.false()).values(state=t.flow_runs.c.state))
    print(f"\n[{backend}] RunStore opened beside an open two-table write: no lock taken")


def test_a_store_missing_a_table_makes_it_and_the_next_open_does_no_ddl(
    store: RunStore, backend: str
) -> None:
    registry: Registry = store.registry
    with registry.write() as conn:
        conn.execute(sa.text("DROP TABLE flow_run_task_runs"))
    StoreBase._ready.discard(registry.url)
    RunStore(registry)
    assert "flow_run_task_runs" in sa.inspect(registry.engine).get_table_names()
    statements: list[str] = []

    def seen(conn: object, cursor: object, statement: str, *args: object) -> None:
        statements.append(statement)

    StoreBase._ready.discard(registry.url)
    sa.event.listen(registry.engine, "before_cursor_execute", seen)
    try:
        RunStore(registry)
    finally:
        sa.event.remove(registry.engine, "before_cursor_execute", seen)
    ddl = [s for s in statements if s.lstrip().upper().startswith(("CREATE", "ALTER", "DROP"))]
    assert ddl == [], ddl
