"""The registry itself: file creation, many processes at once, schema version, PostgreSQL."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import sqlalchemy as sa

from blocks.errors import ConfigurationError
from blocks.registry import SCHEMA_VERSION, Registry, normalize_url
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
