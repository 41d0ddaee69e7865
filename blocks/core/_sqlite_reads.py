"""The SQLite registry's hot paths (loads, document saves) on the `sqlite3` module directly.

A `Block.load` through SQLAlchemy spent ~70% of its time in the engine (pool checkout and
return, events, statement compilation cache, result wrapping), ~10x the SELECT itself. Reads
here use one `sqlite3` connection per thread (``check_same_thread`` on), kept open, and
constant SQL strings (sqlite3 caches their prepared statements per connection).

What is kept from the engine path:

* autocommit: each read is one SELECT, atomic on its own; WAL means it never waits for a
  writer, and the busy timeout covers a checkpoint in progress;
* the same file and open flags (``mode=ro`` / ``immutable=1`` for a read-only registry);
* the typed errors for a damaged or unreadable file (`_sqlite_problem` in `blocks.core._registry`).

A document save runs on the same connection (`transaction`: BEGIN IMMEDIATE, COMMIT or
ROLLBACK; the statements are `blocks.core._registry_writes`'), which is why each new connection
gets the engine's pragmas (``foreign_keys``, ``synchronous`` ...). Other writes (types,
deletes, migrations, rotation) stay on SQLAlchemy. A kept connection would go on reading a
file that was replaced (restored from a backup, moved aside), so each use compares the path's
inode with the one opened (one ``stat``) and reopens on a change, or after a fork (a
connection must not cross one).

`stamp` says whether the file may have changed since an earlier stamp, without a SELECT: it
changes on any commit by any other connection, in this process or another (SQLite's
``PRAGMA data_version``, read on the kept connection; in WAL mode it opens a read transaction
that compares the WAL index header, as every SELECT does first), on any commit or rollback on
this object's own connections (a counter: a connection's own commits do not change its
``data_version``), on a new connection (a replaced file, a fork, `close`), and on any change of
the file's size or modification time (bytes written into the file by something that is not
SQLite, e.g. a backup copied over it in place: SQLite's own page cache would not see those
either). An ``immutable=1`` file has no stamp: SQLite promises nothing about its changes.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import sqlite3
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

# Column order is `blocks.core._registry._DOC_COLUMNS`'s: `_document` reads rows by position.
_COLUMNS = (
    "id, type_slug, name, schema_checksum, data, secrets, refs, created, updated, version, mac"
)
GET_DOCUMENT = f"SELECT {_COLUMNS} FROM block_documents WHERE type_slug = ? AND name = ?"
GET_DOCUMENT_BY_ID = f"SELECT {_COLUMNS} FROM block_documents WHERE id = ?"
# What a load compares with the bytes it verified before and, on a change, verifies: every
# column the seal covers, less the two the WHERE clause fixes (type_slug, name: BINARY
# equality, so the stored text is the parameter's) and the timestamps a load never reads. Each
# text column fetched costs about as much as the SELECT's lookup (`Registry.load_columns`).
LOAD_DOCUMENT = (
    "SELECT id, schema_checksum, data, secrets, refs, version, mac FROM block_documents"
    " WHERE type_slug = ? AND name = ?"
)
GET_META = "SELECT key, value FROM registry_meta WHERE key IN (?, ?, ?, ?)"
SCHEMA_VERSION = "SELECT value FROM registry_meta WHERE key = 'schema_version'"
_SUMMARY = "SELECT id, type_slug, name, secrets, created, updated FROM block_documents"
LIST_SUMMARIES = f"{_SUMMARY} ORDER BY type_slug, name"
LIST_NAMES = "SELECT name FROM block_documents WHERE type_slug = ? ORDER BY name"
LIST_SUMMARIES_OF_TYPE = f"{_SUMMARY} WHERE type_slug = ? ORDER BY type_slug, name"
DATA_VERSION = "PRAGMA data_version"

# Numbers every connection any `SqliteReads` opens, so a stamp names its connection (the
# numbering of `data_version` is per connection) and no two connections ever share one.
_serials = itertools.count(1)

# Bumped in a forked child, so connections inherited from the parent are dropped without a
# getpid() system call per read.
_generation = 0


def _after_fork() -> None:
    global _generation
    _generation += 1


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork)


class SqliteReads:
    """Per-thread kept connections to one SQLite registry file, for the load path."""

    def __init__(
        self,
        path: str,
        target: str,
        *,
        uri: bool,
        busy_timeout_ms: int,
        problem: Callable[[BaseException], Exception | None],
        pragmas: tuple[str, ...] = (),
    ) -> None:
        self.path = path  # what is stat'ed for replacement
        self._pragmas = pragmas  # run on each new connection (the engine's settings)
        self._target = target  # what sqlite3 opens (a path, or a file: URI with flags)
        self._uri = uri
        self._timeout = busy_timeout_ms / 1000
        self._problem = problem
        self._local = threading.local()
        self._lock = threading.Lock()
        self._writes = 0  # bumped after every transaction on these connections (`stamp`)
        self._stamped = "immutable=1" not in target

    def _connection(self) -> sqlite3.Connection:
        local = self._local
        try:
            st = os.stat(self.path)
            ident: tuple[int, int, int] = (st.st_dev, st.st_ino, _generation)
            local.file = (st.st_size, st.st_mtime_ns)
        except OSError:
            ident = (-1, -1, _generation)  # gone: sqlite3 below says what is wrong
            local.file = None
        conn: sqlite3.Connection | None = getattr(local, "conn", None)
        if conn is not None and local.ident == ident:
            return conn
        if conn is not None and local.ident[2] == ident[2]:
            conn.close()  # the file was replaced; after a fork the child just drops it
        local.conn = None
        conn = sqlite3.connect(
            self._target, uri=self._uri, timeout=self._timeout, isolation_level=None
        )
        for pragma in self._pragmas:
            conn.execute(pragma)
        local.conn, local.ident, local.serial = conn, ident, next(_serials)
        return conn

    def stamp(self) -> tuple[int, ...] | None:
        """A value that differs from every earlier one if the database may have changed in
        between (see the module's docstring); None when that cannot be told (an immutable
        file, an error: the caller reads as usual, and the read reports the error)."""
        if not self._stamped:
            return None
        try:
            conn = self._connection()
            version = conn.execute(DATA_VERSION).fetchone()[0]
        except sqlite3.Error:
            self._local.conn = None
            return None
        local = self._local
        if local.file is None:
            return None
        size, mtime = local.file
        return (local.serial, version, self._writes, size, mtime)

    def close(self) -> None:
        """Close this thread's connection; other threads' close as their locals are dropped."""
        conn = getattr(self._local, "conn", None)
        self._local = threading.local()
        if conn is not None:
            conn.close()

    def one(self, sql: str, params: tuple[str, ...] = ()) -> tuple[Any, ...] | None:
        """The first row of a constant SELECT, or None."""
        try:
            row: tuple[Any, ...] | None = self._connection().execute(sql, params).fetchone()
        except sqlite3.Error as exc:
            self._local.conn = None  # do not keep a connection that just failed
            problem = self._problem(exc)
            if problem is not None:
                raise problem from None
            raise
        return row

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """A write transaction on this thread's connection: BEGIN IMMEDIATE (the write lock up
        front, as the engine's writes), COMMIT on success, ROLLBACK on any error."""
        try:
            conn = self._connection()
            conn.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as exc:
            self._local.conn = None
            raise self._typed(exc) from None
        try:
            yield conn
            conn.execute("COMMIT")
        except BaseException as exc:
            with contextlib.suppress(sqlite3.Error):
                conn.execute("ROLLBACK")
            if isinstance(exc, sqlite3.Error):
                raise self._typed(exc) from None
            raise
        finally:
            # This connection's own commits leave its `data_version` as it was: a stamp
            # taken before this transaction must not match one taken after it.
            with self._lock:
                self._writes += 1

    def write_one(self, sql: str, params: tuple[Any, ...]) -> int:
        """Run one write statement as its own transaction (autocommit: SQLite takes the write
        lock when the statement starts, waiting up to the busy timeout, and commits or rolls
        back the statement as a whole); the number of rows it changed."""
        try:
            return self._connection().execute(sql, params).rowcount
        except sqlite3.Error as exc:
            self._local.conn = None
            raise self._typed(exc) from None
        finally:
            with self._lock:  # as `transaction`: our own commit leaves `data_version` alone
                self._writes += 1

    def _typed(self, exc: sqlite3.Error) -> Exception:
        problem = self._problem(exc)
        return exc if problem is None else problem

    def all(self, sql: str, params: tuple[str, ...] = ()) -> list[tuple[Any, ...]]:
        """Every row of a constant SELECT."""
        try:
            return self._connection().execute(sql, params).fetchall()
        except sqlite3.Error as exc:
            self._local.conn = None
            problem = self._problem(exc)
            if problem is not None:
                raise problem from None
            raise
