"""`DatabaseCredentials` and `SqlAlchemyConnector` on SQLite and on a real PostgreSQL.

The attack each test guards against: the database password escaping into a repr, a log line
or an error message (SQLAlchemy hides it in a URL's repr, but ``render_as_string``, a URL that
does not parse, and driver messages can carry it).
"""

from __future__ import annotations

import logging
import pickle
import traceback
import uuid
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from blocks.databases import ConnectionComponents, DatabaseCredentials, SqlAlchemyConnector
from blocks.errors import ConfigurationError, DatabaseError


def _texts(exc: BaseException) -> list[str]:
    """Everything a user could see of an exception: str, repr, the whole printed chain."""
    return [str(exc), repr(exc), "".join(traceback.format_exception(exc))]


@pytest.fixture(params=["sqlite", "postgres"])
def connector(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[SqlAlchemyConnector, str]:
    """A connector on a fresh database with a secret password (PostgreSQL's test cluster trusts
    local logins, so any password is accepted and still travels in the URL; SQLite takes none)."""
    password = f"pw-{uuid.uuid4().hex}"
    if request.param == "sqlite":
        creds = DatabaseCredentials(driver="sqlite+pysqlite", database=str(tmp_path / "app.db"))
    else:
        url = sa.make_url(request.getfixturevalue("postgres_db_url"))
        creds = DatabaseCredentials(
            driver="postgresql+psycopg",
            username=url.username,
            password=password,
            host=url.host,
            port=url.port,
            database=url.database,
        )
    return SqlAlchemyConnector(connection_info=creds, fetch_size=2), password


@pytest.fixture
def pg_connector(postgres_db_url: str) -> tuple[SqlAlchemyConnector, str]:
    """A PostgreSQL connector whose credentials carry a secret password."""
    password = f"pw-{uuid.uuid4().hex}"
    url = sa.make_url(postgres_db_url)
    creds = DatabaseCredentials(
        driver="postgresql+psycopg",
        username=url.username,
        password=password,
        host=url.host,
        port=url.port,
        database=url.database,
    )
    return SqlAlchemyConnector(connection_info=creds, fetch_size=2), password


def test_every_call_against_the_database(connector: tuple[SqlAlchemyConnector, str]) -> None:
    db, _ = connector
    with db:
        db.execute("CREATE TABLE customers (name varchar(40), n int)")
        db.execute("INSERT INTO customers VALUES (:name, :n)", {"name": "Marvin", "n": 0})
        db.execute_many(
            "INSERT INTO customers VALUES (:name, :n)",
            [{"name": f"c{i}", "n": i} for i in range(1, 10)],
        )
        query = "SELECT name, n FROM customers ORDER BY n"
        assert tuple(db.fetch_one(query) or ()) == ("Marvin", 0)
        # The same call pages on: fetch_size rows, then an explicit size, then the rest.
        assert [r.n for r in db.fetch_many(query)] == [1, 2]
        assert [r.n for r in db.fetch_many(query, size=3)] == [3, 4, 5]
        assert [r.n for r in db.fetch_all(query)] == [6, 7, 8, 9]
        assert db.fetch_many(query) == []
        assert db.fetch_one(query) is None
        # Different parameters are a different result.
        assert db.fetch_all("SELECT n FROM customers WHERE n > :m ORDER BY n", {"m": 7}) == [
            (8,),
            (9,),
        ]
        db.reset_connections()
        assert [r.n for r in db.fetch_many(query)] == [0, 1]  # from the start again
        engine = db.get_engine()
        assert db.get_engine() is engine
        with db.get_connection(begin=False) as conn:
            assert conn.execute(sa.text("SELECT count(*) FROM customers")).scalar() == 10
    assert db._engine is None and db._results == {}
    print(f"\n{db.connection_info.driver}: 10 rows written, paged 1+2+3+4, reset, re-read")


def test_a_failed_statement_rolls_back_only_its_own_transaction(
    connector: tuple[SqlAlchemyConnector, str],
) -> None:
    db, _ = connector
    with db:
        db.execute("CREATE TABLE t (x int PRIMARY KEY)")
        db.execute("INSERT INTO t VALUES (1)")
        with pytest.raises(sa.exc.IntegrityError):
            db.execute_many("INSERT INTO t VALUES (:x)", [{"x": 2}, {"x": 1}])
        assert db.fetch_all("SELECT x FROM t") == [(1,)]


def test_the_password_is_in_no_repr_log_or_error(
    pg_connector: tuple[SqlAlchemyConnector, str], caplog: pytest.LogCaptureFixture
) -> None:
    db, password = pg_connector
    caplog.set_level(logging.DEBUG)  # every logger: ours, SQLAlchemy's engine and pool, drivers
    seen: list[str] = [repr(db), str(db), repr(db.connection_info), db.model_dump_json()]
    failures: list[BaseException] = []
    with db:
        db.get_engine(echo="debug")
        seen += [repr(db.get_engine()), str(db.get_engine().url)]
        db.execute("CREATE TABLE t (x int)")
        db.execute_many("INSERT INTO t VALUES (:x)", [{"x": i} for i in range(3)])
        db.fetch_all("SELECT x FROM t")
        for bad in ("SELEC 1", "SELECT * FROM missing_table", "INSERT INTO t VALUES (1, 2)"):
            with pytest.raises(Exception) as info:
                db.execute(bad)
            failures.append(info.value)
        # A parameter that holds the password itself: the error message repeats it. (The echo
        # log would print it too, as any parameter: echo off for this one.)
        db.get_engine().echo = False
        with pytest.raises(DatabaseError) as leaked:
            db.execute("INSERT INTO missing_table VALUES (:x)", {"x": password})
        failures.append(leaked.value)
        assert "**********" in str(leaked.value)
    # Saved and loaded: sealed at rest, still masked.
    db.save("orders-db")
    loaded = SqlAlchemyConnector.load("orders-db")
    seen.append(repr(loaded))
    pickled = pickle.loads(pickle.dumps(loaded))
    assert pickled._engine is None
    texts = seen + [t for f in failures for t in _texts(f)]
    logs = [r.getMessage() for r in caplog.records] + [caplog.text]
    for text in texts + logs:
        assert password not in text
    print(
        f"\n{db.connection_info.driver}: {len(texts)} reprs/error texts, "
        f"{len(caplog.records)} log records checked: no password"
    )


def test_unreachable_database_errors_carry_no_password(postgres_server: Any) -> None:
    password = f"pw-{uuid.uuid4().hex}"
    dead = DatabaseCredentials(
        driver="postgresql+psycopg",
        username="nobody",
        password=password,
        host="127.0.0.1",
        port=1,
        database="nowhere",
    )
    missing = dead.model_copy(update={"port": postgres_server.port})
    checked = 0
    for creds in (dead, missing):
        db = SqlAlchemyConnector(connection_info=creds)
        with pytest.raises(Exception) as info:
            db.fetch_one("SELECT 1")
        for text in _texts(info.value):
            assert password not in text
            checked += 1
    print(f"\ndead port and missing database: {checked} error texts, no password")


def test_a_url_string_is_kept_as_a_secret(tmp_path: Path) -> None:
    db = SqlAlchemyConnector(connection_info=f"sqlite+pysqlite:///{tmp_path}/u.db")
    assert db.connection_info.url is not None
    assert "u.db" not in repr(db)
    assert db.fetch_one("SELECT 1") == (1,)
    db.close()


def test_a_malformed_url_error_does_not_repeat_it() -> None:
    db = SqlAlchemyConnector(connection_info="not a url with hunter22 inside")
    with pytest.raises(ConfigurationError) as info:
        db.get_engine()
    assert "hunter22" not in "".join(_texts(info.value))


def test_bad_configurations_are_refused_clearly() -> None:
    with pytest.raises(ValueError, match="driver"):
        DatabaseCredentials(username="x")
    with pytest.raises(ValueError, match="not both"):
        DatabaseCredentials(driver="sqlite+pysqlite", url="sqlite://")
    with pytest.raises(ValueError):
        SqlAlchemyConnector(connection_info="sqlite://", fetch_size=0)
    db = SqlAlchemyConnector(
        connection_info=ConnectionComponents(driver="postgresql+asyncpg", database="x")
    )
    with pytest.raises(ConfigurationError, match="asynchronous"):
        db.get_engine()
