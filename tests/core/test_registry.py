"""The registry itself: file creation, many processes at once, schema version, PostgreSQL."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import sqlalchemy as sa

from blocks.core._registry import SCHEMA_VERSION, Registry, normalize_url
from blocks.errors import ConfigurationError
from blocks.system import Secret

WORKER = r"""
import json, sys
from blocks.system import Secret, String
worker, rounds = int(sys.argv[1]), int(sys.argv[2])
errors = []
for i in range(rounds):
    try:
        Secret(value=f"w{worker}-{i}").save(f"w{worker}", overwrite=True)
        String(value=f"shared-{worker}-{i}").save("shared", overwrite=True)
        assert Secret.load(f"w{worker}").get() == f"w{worker}-{i}"
        String.load("shared").get()
        if i % 10 == 0:
            Secret.list()
    except Exception as exc:
        errors.append(f"{type(exc).__name__}: {exc}")
print(json.dumps(errors))
"""


def run_workers(count: int, rounds: int) -> list[str]:
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", WORKER, str(n), str(rounds)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=os.environ.copy(),
        )
        for n in range(count)
    ]
    errors: list[str] = []
    for proc in procs:
        out, err = proc.communicate(timeout=240)
        assert proc.returncode == 0, err
        errors.extend(json.loads(out))
    return errors


def test_eight_processes_saving_and_loading_at_once_make_no_errors() -> None:
    Registry.default()  # create the file before the race, as any first use would
    errors = run_workers(8, 200)
    assert errors == []
    for n in range(8):
        assert Secret.load(f"w{n}").get() == f"w{n}-199"
    from blocks.system import String

    assert String.load("shared").get().endswith("-199")


def test_processes_racing_to_create_a_new_registry(blocks_home: Path) -> None:
    assert not blocks_home.exists()
    assert run_workers(4, 5) == []
    assert (blocks_home / "registry.db").stat().st_mode & 0o777 == 0o600


def test_newer_registry_schema_is_refused(blocks_home: Path) -> None:
    registry = Registry.default()
    with registry.write() as conn:
        conn.execute(
            sa.text("update registry_meta set value = :v where key = 'schema_version'"),
            {"v": str(SCHEMA_VERSION + 1)},
        )
    Registry.dispose_all()
    with pytest.raises(ConfigurationError, match="Upgrade blocks"):
        Registry.default()


def test_bad_registry_url_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BLOCKS_REGISTRY_URL", "not a url")
    with pytest.raises(ConfigurationError, match="BLOCKS_REGISTRY_URL"):
        Registry.default()


def test_postgres_urls_use_psycopg3() -> None:
    assert normalize_url("postgresql://u@h/db") == "postgresql+psycopg://u@h/db"
    assert normalize_url("postgres://u@h/db") == "postgresql+psycopg://u@h/db"
    assert normalize_url("sqlite:///x.db") == "sqlite:///x.db"


def test_postgres_registry_shared_by_processes(
    postgres_db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("BLOCKS_REGISTRY_URL", postgres_db_url)
    Secret(value="team-secret").save("shared-key")
    errors = run_workers(4, 25)
    assert errors == []
    assert Secret.load("shared-key").get() == "team-secret"
    assert Secret.load("w3").get() == "w3-24"
    engine = sa.create_engine(normalize_url(postgres_db_url))
    with engine.connect() as conn:
        raw = conn.execute(sa.text("select secrets from block_documents")).scalars().all()
    engine.dispose()
    assert raw and all("team-secret" not in value for value in raw)


def test_raw_sqlite_file_holds_no_plaintext(blocks_home: Path) -> None:
    Secret(value="very-secret-value-123").save("a")
    Secret(value={"pw": "very-secret-value-456"}).save("b")
    Registry.dispose_all()  # checkpoint the WAL into the file
    raw = b"".join(p.read_bytes() for p in blocks_home.glob("registry.db*"))
    assert b"very-secret-value" not in raw
    assert (blocks_home / "registry.db").stat().st_mode & 0o777 == 0o600


def test_document_counts_per_type() -> None:
    from blocks.system import String

    Secret(value="a").save("a")
    Secret(value="b").save("b")
    String(value="c").save("c")
    assert Registry.default().document_counts() == {"secret": 2, "string": 1}


def test_kept_read_connection_sees_a_registry_file_replaced_underneath(blocks_home: Path) -> None:
    import shutil
    import sqlite3

    db = blocks_home / "registry.db"
    Secret(value="before-restore").save("restored")
    Registry.dispose_all()  # checkpoint: the file alone holds the document
    shutil.copy2(db, blocks_home / "backup.db")
    Secret(value="after-backup").save("restored", overwrite=True)
    assert Secret.load("restored").get() == "after-backup"  # the read connection is now open
    with sqlite3.connect(db) as conn:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()
    os.replace(blocks_home / "backup.db", db)  # a restore from backup, as `mv` does it
    assert Secret.load("restored").get() == "before-restore"


def test_threads_load_on_their_own_kept_connections_while_another_saves() -> None:
    import threading

    Secret(value="v0").save("threaded")
    errors: list[str] = []
    seen: set[str] = set()
    loads_per_thread, threads, saves = 150, 6, 60

    def load_many() -> None:
        for _ in range(loads_per_thread):
            try:
                seen.add(Secret.load("threaded").get())
            except Exception as exc:  # any error is a failure, reported below
                errors.append(f"{type(exc).__name__}: {exc}")

    workers = [threading.Thread(target=load_many) for _ in range(threads)]
    for worker in workers:
        worker.start()
    for i in range(1, saves + 1):
        Secret(value=f"v{i}").save("threaded", overwrite=True)
    for worker in workers:
        worker.join()
    print(f"{threads} threads x {loads_per_thread} loads, {saves} saves: {len(errors)} errors")
    assert errors == []
    assert seen <= {f"v{i}" for i in range(saves + 1)}
    assert Secret.load("threaded").get() == f"v{saves}"


def test_a_forked_child_loads_without_its_parents_read_connection() -> None:
    Secret(value="from-parent").save("forked")
    assert Secret.load("forked").get() == "from-parent"  # the parent's connection is open
    pid = os.fork()
    if pid == 0:  # the child: a connection must not cross a fork, so it opens its own
        try:
            ok = Secret.load("forked").get() == "from-parent"
            Secret(value="from-child").save("forked", overwrite=True)
        except BaseException:
            ok = False
        os._exit(0 if ok else 1)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert Secret.load("forked").get() == "from-child"


def test_a_cold_load_from_sqlite_never_imports_sqlalchemy() -> None:
    Secret(value="cold").save("cold")
    check = (
        "import sys\n"
        "from blocks.system import Secret\n"
        "assert Secret.load('cold').get() == 'cold'\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('sqlalchemy', 'asyncio')))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", check], env=os.environ.copy(), capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


def test_rows_saved_on_the_raw_connection_read_the_same_through_sqlalchemy() -> None:
    from blocks.system import String

    String(value="child").save("child")
    Secret(value="s").save("raw")
    Secret(value="t").save("raw", overwrite=True)
    registry = Registry.default()
    raw = registry.get_document("secret", "raw")  # sqlite3 directly
    engine_rows = {row.slug: row for row in registry.list_documents()}  # SQLAlchemy
    assert raw is not None and raw.version == 2
    through = engine_rows["secret/raw"]
    assert (through.id, through.seal, through.message) == (raw.id, raw.seal, raw.message)
    assert through.created == raw.created and through.updated == raw.updated
    assert raw.created.tzinfo is not None and raw.updated > raw.created
    with sa.create_engine(f"sqlite:///{registry._reads.path}").connect() as conn:  # type: ignore[union-attr]
        stamps = conn.exec_driver_sql("SELECT created, updated FROM block_documents").all()
    assert all(len(value) == 26 for row in stamps for value in row)  # SQLAlchemy's own format


def test_listings_on_sqlite3_equal_the_sqlalchemy_listings(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # `block ls` on a SQLite file reads with sqlite3 (no SQLAlchemy import); PostgreSQL and
    # other URLs take the SQLAlchemy query. Both must list the same rows, filter included.
    from blocks.system import JSON, String

    Secret(value={"user": "u", "password": "p"}).save("b-dict")
    Secret(value="s").save("a-plain")
    String(value="x").save("c")
    JSON(value={"k": 1}).save("d")
    registry = Registry.default()
    raw_all = registry.list_document_summaries()
    raw_secrets = registry.list_document_summaries("secret")
    raw_names = registry.document_names("secret")
    monkeypatch.setattr(registry, "_reads", None)  # the engine path
    assert registry.list_document_summaries() == raw_all
    assert registry.list_document_summaries("secret") == raw_secrets
    assert registry.document_names("secret") == raw_names == ["a-plain", "b-dict"]
    assert registry.document_names("nothing-saved") == []
    assert [(s.type_slug, s.name) for s in raw_all] == [
        ("json", "d"),
        ("secret", "a-plain"),
        ("secret", "b-dict"),
        ("string", "c"),
    ]
    assert [s.name for s in raw_secrets] == ["a-plain", "b-dict"]
    assert all(s.created.tzinfo is not None for s in raw_all)


def test_a_warm_process_follows_its_environment_and_a_disposed_registry(
    blocks_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    Secret(value="in-first").save("where")
    assert Secret.load("where").get() == "in-first"  # the first home is now cached
    monkeypatch.setenv("BLOCKS_HOME", str(blocks_home / "second"))
    Secret(value="in-second").save("where")
    assert Secret.load("where").get() == "in-second"
    monkeypatch.setenv("BLOCKS_HOME", str(blocks_home))
    assert Secret.load("where").get() == "in-first"
    Registry.dispose_all()
    for path in blocks_home.glob("registry.db*"):
        path.unlink()  # a new empty registry at the same path: the cache must not outlive it
    Secret(value="recreated").save("where")
    assert Secret.load("where").get() == "recreated"


def test_a_key_swapped_under_a_warm_process_is_still_refused(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import base64

    from blocks.errors import DecryptionFailed, KeyMismatch

    Secret(value="sealed").save("swap")
    assert Secret.load("swap").get() == "sealed"  # keyset and registry are now cached
    monkeypatch.setenv("BLOCKS_MASTER_KEY", base64.urlsafe_b64encode(os.urandom(32)).decode())
    with pytest.raises(DecryptionFailed):
        Secret.load("swap")
    with pytest.raises(KeyMismatch):
        Secret(value="forked").save("other")
