"""Storage of block types, schemas and documents: SQLite by default, PostgreSQL for teams.

One set of SQLAlchemy Core tables serves both dialects. The embedded default is a SQLite file
under ``$BLOCKS_HOME`` (created with mode 0600), in WAL mode with a busy timeout, so many
processes may save and load at once; writes take the lock up front (``BEGIN IMMEDIATE``) so a
reader turning writer never fails with "database is locked". Loads and document saves on a
SQLite file skip the engine: they run on kept per-thread `sqlite3` connections
(`blocks.core._sqlite_reads`, `blocks.core._registry_writes`, which say why), so a load never
imports SQLAlchemy (`blocks.core._registry_tables` holds the tables); type registration, deletes,
listings, migrations and rotation go through SQLAlchemy, as everything does on PostgreSQL.

SQLite settings (applied to every connection):

============  =======  ==========================================================
pragma        value    why
============  =======  ==========================================================
journal_mode  WAL      readers never block the writer, nor the writer readers
synchronous   NORMAL   durable across process crashes; WAL keeps the file sound
busy_timeout  30000    wait up to 30 s for another process's write to finish
foreign_keys  ON       a referenced block cannot vanish under its parent
============  =======  ==========================================================

Every document is stored with a *version* (1 on first save, +1 on each overwrite) and a *seal*
(a keyed MAC, see `blocks.core._encryption`) over its type, name, id, version and every stored
column, computed inside the write transaction. Saves and key changes coordinate through the
registry: a save checks, in its own transaction, that it sealed under the registry's recorded
active key (`StaleKey` otherwise: it re-seals and retries); `block key rotate` re-seals every
document and switches the recorded key in ONE transaction that holds the key lock exclusively
(on SQLite the write lock; on PostgreSQL an advisory lock that saves take shared).

Example:
    >>> registry = Registry.default()
    >>> registry.list_documents("secret")
    [DocumentRow(type_slug='secret', name='my-api-key', ...)]
"""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import re
import sqlite3
import threading
import uuid
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import FrozenInstanceError
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from blocks import settings
from blocks.core import _sqlite_reads as sqlite_reads
from blocks.core._document_bytes import document_message
from blocks.core._document_bytes import loads_compact as _loads
from blocks.errors import (
    BlockAlreadyExists,
    BlockInUse,
    BlockNotFound,
    BlocksError,
    ConfigurationError,
    InvalidBlockData,
    MissingDependency,
    RegistryCorrupt,
    RegistryReadOnly,
    TamperedDocument,
)


class _Lazy:
    """A module imported on its first attribute use, then bound in place of this stand-in.

    Loading from a SQLite registry runs on raw `sqlite3` and never touches SQLAlchemy, whose
    import was ~70% of a cold ``Secret.load`` (0.13 s): writes and PostgreSQL import it when
    they first need it.
    """

    def __init__(self, module: str, bound_as: str) -> None:
        self._module = module
        self._bound_as = bound_as

    def __getattr__(self, attr: str) -> Any:
        import importlib

        module = importlib.import_module(self._module)
        globals()[self._bound_as] = module
        return getattr(module, attr)


_TABLE_NAMES = frozenset(
    {
        "metadata",
        "registry_meta",
        "block_types",
        "block_schemas",
        "block_documents",
        "block_references",
    }
)


def __getattr__(name: str) -> Any:
    # `from blocks.core._registry import block_documents` (tests, tools) still works.
    if name in _TABLE_NAMES:
        from blocks.core import _registry_tables

        return getattr(_registry_tables, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


if TYPE_CHECKING:
    import sqlalchemy as sa
    from sqlalchemy.engine import Connection, Engine

    from blocks.core import _registry_tables as tables
    from blocks.core import _registry_writes as statements
    from blocks.core._registry_writes import DocumentWrites
else:
    sa = _Lazy("sqlalchemy", "sa")
    tables = _Lazy("blocks.core._registry_tables", "tables")
    statements = _Lazy("blocks.core._registry_writes", "statements")

SCHEMA_VERSION = 2
"""2: documents carry a version and a seal; the registry records its key id and fingerprint."""

# PostgreSQL advisory lock ids (arbitrary constants): saves take KEY_LOCK shared, key creation
# and rotation exclusive; ROTATION_LOCK (session-level) keeps a whole rotation alone.
KEY_LOCK = 0x626C6B6B
ROTATION_LOCK = 0x626C6B72
# Taken (transaction-level, exclusive) around DDL: PostgreSQL's CREATE ... IF NOT EXISTS is not
# safe against a concurrent CREATE of the same name (a unique violation on pg_type).
SCHEMA_LOCK = 0x626C6B73

META_KEY_ID = "key.active_id"
META_KEY_FINGERPRINT = "key.fingerprint"
META_KEY_SOURCE = "key.source"
META_SEALED = "documents_sealed"
"""Written when every document is sealed, for people reading the database; never read to decide
whether a seal is required (anyone who can blank a seal can delete this row): always required."""
_META_KEYS = (META_KEY_ID, META_KEY_FINGERPRINT, META_KEY_SOURCE, META_SEALED)

SQLITE_PRAGMAS: dict[str, str] = {
    "journal_mode": "WAL",
    "synchronous": "NORMAL",
    "busy_timeout": "30000",
    "foreign_keys": "ON",
}

#: Database backends the registry runs on (SQLAlchemy backend names).
SUPPORTED_BACKENDS = ("sqlite", "postgresql")


# Records below are plain classes with slots, not `@dataclass(slots=True)`: building a dataclass
# (its generated methods compiled, the class made twice for its slots) cost ~5M instructions
# each, ~28M (~9 ms) of every cold `Secret.load` for these six. `_Row` gives them a dataclass's
# equality, hash and repr; `_FrozenRow` refuses changes as a frozen dataclass does.
class _Row:
    __slots__: tuple[str, ...] = ()

    def _values(self) -> tuple[Any, ...]:
        return tuple(getattr(self, name) for name in self.__slots__)

    def __eq__(self, other: object) -> bool:
        if type(other) is not type(self):
            return NotImplemented
        return self._values() == other._values()

    def __hash__(self) -> int:
        return hash(self._values())

    def __repr__(self) -> str:
        fields = ", ".join(f"{name}={getattr(self, name)!r}" for name in self.__slots__)
        return f"{type(self).__name__}({fields})"


class _FrozenRow(_Row):
    __slots__ = ()

    def __setattr__(self, name: str, value: Any) -> None:
        raise FrozenInstanceError(f"cannot assign to field {name!r}")

    def __delattr__(self, name: str) -> None:
        raise FrozenInstanceError(f"cannot delete field {name!r}")


def _set(row: _Row, arguments: dict[str, Any]) -> None:
    """Set a frozen row's fields from its `__init__`'s ``locals()``."""
    for name in row.__slots__:
        object.__setattr__(row, name, arguments[name])


class TypeRow(_FrozenRow):
    __slots__ = ("created", "description", "module", "name", "slug", "updated")
    slug: str
    name: str
    description: str
    module: str
    created: datetime
    updated: datetime

    def __init__(
        self,
        slug: str,
        name: str,
        description: str,
        module: str,
        created: datetime,
        updated: datetime,
    ) -> None:
        _set(self, locals())


class SchemaRow(_FrozenRow):
    __slots__ = ("checksum", "created", "fields", "type_slug", "version")
    checksum: str
    type_slug: str
    version: str
    fields: dict[str, Any]
    created: datetime

    def __init__(
        self, checksum: str, type_slug: str, version: str, fields: dict[str, Any], created: datetime
    ) -> None:
        _set(self, locals())


# Not frozen: a frozen row sets each of its 12 fields through object.__setattr__, which made
# building a row cost more than the SELECT that read it. Treat rows as read-only.
class DocumentRow(_Row):
    """One saved block: plain field values, encrypted secrets (by dotted path), references.

    ``stored_created`` / ``stored_updated``: as the driver gave them (SQLite: ISO text),
    parsed by `created` / `updated` only when asked for. ``message``: the canonical bytes the
    seal covers (built from the stored columns as read).
    """

    __slots__ = (
        "data",
        "id",
        "message",
        "name",
        "refs",
        "schema_checksum",
        "seal",
        "secrets",
        "stored_created",
        "stored_updated",
        "type_slug",
        "version",
    )
    id: str
    type_slug: str
    name: str
    schema_checksum: str
    data: dict[str, Any]
    secrets: dict[str, str]
    refs: dict[str, str]
    stored_created: datetime | str
    stored_updated: datetime | str
    version: int
    seal: str
    message: bytes

    def __init__(
        self,
        id: str,
        type_slug: str,
        name: str,
        schema_checksum: str,
        data: dict[str, Any],
        secrets: dict[str, str],
        refs: dict[str, str],
        stored_created: datetime | str,
        stored_updated: datetime | str,
        version: int = 0,
        seal: str = "",
        message: bytes = b"",
    ) -> None:
        self.id = id
        self.type_slug = type_slug
        self.name = name
        self.schema_checksum = schema_checksum
        self.data = data
        self.secrets = secrets
        self.refs = refs
        self.stored_created = stored_created
        self.stored_updated = stored_updated
        self.version = version
        self.seal = seal
        self.message = message

    @property
    def slug(self) -> str:
        return f"{self.type_slug}/{self.name}"

    def missing_seal(self) -> str:
        """Why this unsealed document is refused, and what to do."""
        return (
            f"{self.slug} (version {self.version}) has no seal: it was written or altered outside "
            "blocks (or by a development build from before seals). Delete and re-create it."
        )

    @property
    def created(self) -> datetime:
        return _timestamp(self.stored_created)

    @property
    def updated(self) -> datetime:
        return _timestamp(self.stored_updated)


class DocumentSummary(_FrozenRow):
    """One saved block as listed: where its secrets are, not its values."""

    __slots__ = ("created", "id", "name", "secret_fields", "type_slug", "updated")
    id: str
    type_slug: str
    name: str
    secret_fields: tuple[str, ...]
    created: datetime
    updated: datetime

    def __init__(
        self,
        id: str,
        type_slug: str,
        name: str,
        secret_fields: tuple[str, ...],
        created: datetime,
        updated: datetime,
    ) -> None:
        setattr = object.__setattr__  # one of these per listed row: no `_set` loop
        setattr(self, "id", id)
        setattr(self, "type_slug", type_slug)
        setattr(self, "name", name)
        setattr(self, "secret_fields", secret_fields)
        setattr(self, "created", created)
        setattr(self, "updated", updated)

    @property
    def slug(self) -> str:
        return f"{self.type_slug}/{self.name}"


class KeyRecord(_FrozenRow):
    """What the registry records about its master key: public ids only, never the key."""

    __slots__ = ("active_key_id", "fingerprint", "source")
    active_key_id: str
    fingerprint: str
    source: str

    def __init__(self, active_key_id: str, fingerprint: str, source: str) -> None:
        _set(self, locals())


class StaleKey(Exception):
    """Internal: a save sealed under a key that is no longer the registry's active key."""


# Not frozen, as DocumentRow: a frozen row's per-field object.__setattr__ was ~2 µs of every
# save. Treat it as read-only.
class _NewDocument(_Row):
    """What a save writes, its JSON columns encoded once (a retry reuses them)."""

    __slots__ = ("data", "name", "refs", "refs_text", "schema_checksum", "secrets", "type_slug")
    type_slug: str
    name: str
    schema_checksum: str
    data: str
    secrets: str
    refs_text: str
    refs: dict[str, str]

    def __init__(
        self,
        type_slug: str,
        name: str,
        schema_checksum: str,
        data: str,
        secrets: str,
        refs_text: str,
        refs: dict[str, str],
    ) -> None:
        self.type_slug = type_slug
        self.name = name
        self.schema_checksum = schema_checksum
        self.data = data
        self.secrets = secrets
        self.refs_text = refs_text
        self.refs = refs


# A save retried after losing a first-insert race (PostgreSQL) finds the winner's row: two
# attempts suffice; three leave room for a reference deleted concurrently.
_SAVE_ATTEMPTS = 3
# Documents whose id and version a registry object remembers from its saves (`_save_known`).
_SAVED_MAX = 1024


def _already_exists(type_slug: str, name: str) -> BlockAlreadyExists:
    return BlockAlreadyExists(
        f"A {type_slug} block named '{name}' already exists. "
        "Pass overwrite=True (CLI: --overwrite) to replace it."
    )


def _integrity_errors() -> tuple[type[Exception], ...]:
    """What a unique or foreign key violation raises: through the engine, or raw sqlite3."""
    return (sa.exc.IntegrityError, sqlite3.IntegrityError)


def _utc(value: datetime) -> datetime:
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def _timestamp(value: datetime | str) -> datetime:
    return _utc(value if isinstance(value, datetime) else datetime.fromisoformat(value))


def _now() -> datetime:
    return datetime.now(UTC)


# json.dumps with `separators` builds a new encoder per call (~1/2 of a small dump): one, kept.
_ENCODER = json.JSONEncoder(separators=(",", ":"))


def _dumps(value: Any) -> str:
    # Key order kept: documents and schemas list fields in the order the class declares them.
    if not value and type(value) is dict:
        return "{}"  # no secrets, no references: most saves, and json.dumps costs ~2 µs
    return _ENCODER.encode(value)


def _document(row: Any) -> DocumentRow:
    try:
        # "{}" (no secrets, no references; a Secret's data) is the common case: skip its parse.
        data = {} if row[4] == "{}" else _loads(row[4])
        secrets = {} if row[5] == "{}" else _loads(row[5])
        refs = {} if row[6] == "{}" else _loads(row[6])
        if not (isinstance(data, dict) and isinstance(secrets, dict) and isinstance(refs, dict)):
            raise ValueError("not an object")
    except ValueError:
        raise TamperedDocument(
            f"{row[1]}/{row[2]} in the registry is not a valid document (altered outside "
            "blocks). Delete and re-create it."
        ) from None
    # Positional (the field order above): keywords cost ~1 µs more per row.
    return DocumentRow(
        row[0],
        row[1],
        row[2],
        row[3],
        data,
        secrets,
        refs,
        row[7],  # created, updated: raw SQLite reads give ISO text, parsed when asked for
        row[8],
        row[9],
        row[10],
        document_message(row[1], row[2], row[0], row[9], row[3], row[4], row[5], row[6]),
    )


def normalize_url(url: str) -> str:
    """Pick the psycopg 3 driver for bare ``postgresql://`` URLs."""
    for prefix in ("postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix) :]
    return url


class Registry:
    """The block registry behind one database URL; `Registry.default()` is the configured one."""

    _instances: ClassVar[dict[str, Registry]] = {}
    _closed_at_exit: ClassVar[bool] = False
    _instances_lock = threading.Lock()

    def __init__(self, url: str) -> None:
        self.url = normalize_url(url)
        self._registered_schemas: set[str] = set()
        # (type slug, name) -> (id, version) of documents this object saved (`_save_known`).
        self._saved: dict[tuple[str, str], tuple[str, int]] = {}
        self._rotation_thread_lock = threading.Lock()
        self._shared_as = ""
        self._engine: Engine | None = None
        self._engine_lock = threading.Lock()
        # A plain SQLite file URL is read without SQLAlchemy (its engine is made on the first
        # write); any other URL gets its engine now, which also validates it.
        self._reads = _plain_sqlite_reads(self.url)
        if self._reads is not None:
            self.is_sqlite = True
        else:
            self._engine = self._create_engine(self.url)
            self.is_sqlite = self._engine.dialect.name == "sqlite"
            self._reads = _sqlite_reads(self._engine) if self.is_sqlite else None
        self._ensure_schema()

    @property
    def engine(self) -> Engine:
        """The SQLAlchemy engine (created, and SQLAlchemy imported, on first use)."""
        engine = self._engine
        if engine is None:
            with self._engine_lock:
                if self._engine is None:
                    self._engine = self._create_engine(self.url)
                engine = self._engine
        return engine

    # -- construction -----------------------------------------------------------------------

    @classmethod
    def default(cls) -> Registry:
        """The registry named by ``BLOCKS_REGISTRY_URL`` (or the SQLite file under BLOCKS_HOME)."""
        return cls.for_url(settings.registry_url())

    @classmethod
    def for_url(cls, url: str) -> Registry:
        registry = cls._instances.get(url)
        if registry is None:
            with cls._instances_lock:
                registry = cls._instances.get(url)
                if registry is None:
                    if not Registry._closed_at_exit:
                        Registry._closed_at_exit = True
                        # Closed at exit, not left to the interpreter's shutdown, which frees
                        # objects in no set order and may never close a connection: SQLite
                        # folds its WAL into the file only when the last one closes.
                        # Only in this process: a forked child's copies are the parent's.
                        atexit.register(_dispose_at_exit, os.getpid())
                    registry = cls._instances[url] = cls(url)
                    registry._shared_as = url
        return registry

    def is_shared(self) -> bool:
        """Whether `for_url` still hands out this registry (not disposed of since)."""
        return self._instances.get(self._shared_as) is self

    @classmethod
    def dispose_all(cls) -> None:
        """Close every pooled connection (tests, forks)."""
        with cls._instances_lock:
            for registry in cls._instances.values():
                if registry._reads is not None:
                    registry._reads.close()
                if registry._engine is not None:
                    registry._engine.dispose()
            cls._instances.clear()

    @staticmethod
    def _create_engine(url: str) -> Engine:
        try:
            parsed = sa.engine.make_url(url)
        except sa.exc.ArgumentError:
            raise ConfigurationError(
                f"BLOCKS_REGISTRY_URL is not a database URL: {url!r}. "
                "Use sqlite:///path/registry.db or postgresql://user@host/db."
            ) from None
        if parsed.get_backend_name() == "sqlite":
            return _sqlite_engine(parsed)
        if parsed.get_backend_name() not in SUPPORTED_BACKENDS:
            raise ConfigurationError(
                f"BLOCKS_REGISTRY_URL uses {parsed.get_backend_name()}://, which blocks does not "
                "support: use sqlite:///path/registry.db (the default, one machine) or "
                "postgresql://user@host/db (a team; pip install 'blocks[postgres]')."
            )
        try:
            return sa.create_engine(url, pool_pre_ping=True, future=True)
        except ModuleNotFoundError as exc:
            raise MissingDependency(
                f"The registry URL needs the {exc.name!r} package: pip install 'blocks[postgres]'"
            ) from None

    def _schema_version(self) -> str | None:
        """The recorded schema version; None when the registry has no tables yet."""
        if self._reads is not None:
            try:
                row = self._reads.one(sqlite_reads.SCHEMA_VERSION)
            except sqlite3.OperationalError as exc:
                if "no such table" not in str(exc):
                    raise
                return None
            return None if row is None else str(row[0])
        try:
            with self.engine.connect() as conn:
                found = conn.execute(tables._SCHEMA_VERSION).scalar()
        except sa.exc.OperationalError as exc:
            if not _is_missing_table(exc):
                raise
            return None
        except sa.exc.ProgrammingError:
            return None
        return None if found is None else str(found)

    def _ensure_schema(self) -> None:
        found = self._schema_version()
        if found is None:
            with self.write() as conn:
                self.schema_lock(conn)
                for table in tables.metadata.sorted_tables:
                    conn.execute(sa.schema.CreateTable(table, if_not_exists=True))
                    for index in table.indexes:
                        conn.execute(sa.schema.CreateIndex(index, if_not_exists=True))
                exists = conn.execute(tables._SCHEMA_VERSION).scalar()
                if exists is None:
                    conn.execute(
                        tables.registry_meta.insert(),
                        [
                            {"key": "schema_version", "value": str(SCHEMA_VERSION)},
                            # A new registry seals every document from the start.
                            {"key": META_SEALED, "value": "1"},
                        ],
                    )
            return
        if int(found) > SCHEMA_VERSION:
            raise ConfigurationError(
                f"The registry at {self.describe()} has schema version {found}, newer than this "
                f"blocks release understands ({SCHEMA_VERSION}). Upgrade blocks."
            )
        if int(found) < SCHEMA_VERSION:
            self._migrate()

    def _migrate(self) -> None:
        """Version 1 -> 2: add each document's version and seal. Its documents stay unsealed
        (version 0) and are refused until re-created: nothing can tell them from a forgery."""
        with self.write() as conn:
            self._key_lock(conn, exclusive=True)
            found = conn.execute(tables._SCHEMA_VERSION).scalar()
            if found is None or int(found) >= 2:
                return  # another process migrated it meanwhile
            conn.exec_driver_sql(
                "ALTER TABLE tables.block_documents ADD COLUMN version INTEGER NOT NULL DEFAULT 0"
            )
            conn.exec_driver_sql(
                "ALTER TABLE tables.block_documents ADD COLUMN mac TEXT NOT NULL DEFAULT ''"
            )
            conn.execute(
                tables.registry_meta.update()
                .where(tables.registry_meta.c.key == "schema_version")
                .values(value=str(SCHEMA_VERSION))
            )
            if not conn.execute(sa.select(tables.block_documents.c.id).limit(1)).first():
                conn.execute(tables.registry_meta.insert().values(key=META_SEALED, value="1"))

    # -- the master key's record and locks --------------------------------------------------

    def schema_lock(self, conn: Connection) -> None:
        """Serialise table creation between processes for the rest of `conn`'s transaction.

        SQLite needs nothing more: the write transaction already holds the one write lock.
        """
        if not self.is_sqlite:
            conn.execute(sa.text("SELECT pg_advisory_xact_lock(:k)"), {"k": SCHEMA_LOCK})

    def _key_lock(self, conn: Connection, *, exclusive: bool) -> None:
        """Saves take the key lock shared, key creation and rotation exclusively.

        SQLite needs nothing more: every write transaction already holds the one write lock.
        """
        if not self.is_sqlite:
            which = "pg_advisory_xact_lock" if exclusive else "pg_advisory_xact_lock_shared"
            conn.execute(sa.text(f"SELECT {which}(:k)"), {"k": KEY_LOCK})

    def _read_key_record(self, conn: Connection) -> KeyRecord | None:
        rows = {key: value for key, value in conn.execute(tables._KEY_RECORD)}
        return self._key_record_from(rows)

    def _key_record_from(self, rows: dict[str, str]) -> KeyRecord | None:
        if META_KEY_ID not in rows:
            return None
        return KeyRecord(
            rows[META_KEY_ID], rows.get(META_KEY_FINGERPRINT, ""), rows.get(META_KEY_SOURCE, "")
        )

    def key_record(self) -> KeyRecord | None:
        """The recorded active key id, fingerprint and source, or None for a new registry."""
        if self._reads is not None:
            return self._key_record_from(dict(self._reads.all(sqlite_reads.GET_META, _META_KEYS)))
        with self.read() as conn:
            return self._read_key_record(conn)

    def _write_key_record(self, conn: Connection, record: KeyRecord) -> None:
        values = {
            META_KEY_ID: record.active_key_id,
            META_KEY_FINGERPRINT: record.fingerprint,
            META_KEY_SOURCE: record.source,
        }
        conn.execute(
            tables.registry_meta.delete().where(tables.registry_meta.c.key.in_(list(values)))
        )
        conn.execute(
            tables.registry_meta.insert(), [{"key": k, "value": v} for k, v in values.items()]
        )

    def record_key_once(self, create: Callable[[], KeyRecord]) -> KeyRecord:
        """The recorded key; if none, `create()` (under the exclusive key lock) and record it.

        Racing first saves all run this; exactly one calls `create`, the others find its record.
        """
        with self.write() as conn:
            self._key_lock(conn, exclusive=True)
            record = self._read_key_record(conn)
            if record is None:
                record = create()
                self._write_key_record(conn, record)
        return record

    @contextmanager
    def rotation_lock(self) -> Iterator[None]:
        """Held for a whole key rotation, so two rotations never interleave.

        SQLite: an `flock` on a file beside the database (released by the kernel if the
        process dies). PostgreSQL: a session advisory lock on a dedicated connection.
        """
        with self._rotation_thread_lock:
            if self.is_sqlite:
                database = sa.engine.make_url(self.url).database
                if not database or database == ":memory:":
                    yield
                    return
                import fcntl

                fd = os.open(f"{database}.keylock", os.O_RDWR | os.O_CREAT, 0o600)
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX)
                    yield
                finally:
                    os.close(fd)
                return
            with self.engine.connect() as conn:
                conn.execute(sa.text("SELECT pg_advisory_lock(:k)"), {"k": ROTATION_LOCK})
                conn.commit()
                try:
                    yield
                finally:
                    conn.execute(sa.text("SELECT pg_advisory_unlock(:k)"), {"k": ROTATION_LOCK})
                    conn.commit()

    # -- transactions -----------------------------------------------------------------------

    @contextmanager
    def write(self) -> Iterator[Connection]:
        """A write transaction; on SQLite it takes the write lock at BEGIN."""
        with self.engine.connect() as conn:
            conn = conn.execution_options(blocks_write=True)
            with conn.begin():
                yield conn

    @contextmanager
    def read(self) -> Iterator[Connection]:
        with self.engine.connect() as conn:
            yield conn

    def describe(self) -> str:
        """The URL without any password."""
        return sa.engine.make_url(self.url).render_as_string(hide_password=True)

    # -- types and schemas ------------------------------------------------------------------

    def knows_schema(self, checksum: str) -> bool:
        """Whether this registry object recorded the schema already (`register_type` would
        return at once)."""
        return checksum in self._registered_schemas

    def register_type(
        self,
        *,
        slug: str,
        name: str,
        description: str,
        module: str,
        checksum: str,
        version: str,
        fields: dict[str, Any],
    ) -> None:
        """Record a block type and one of its schemas (idempotent)."""
        if checksum in self._registered_schemas:
            return
        described = {"name": name, "description": description, "module": module}
        schema = {"checksum": checksum, "type_slug": slug, "version": version, "fields": fields}
        for attempt in range(2):
            try:
                self._write_type(slug, described, schema)
                break
            except sa.exc.IntegrityError:
                # Another process registered the same type or schema first (PostgreSQL takes
                # no write lock up front as SQLite does): it exists now; check once more.
                if attempt:
                    raise
        self._registered_schemas.add(checksum)

    def _write_type(self, slug: str, described: dict[str, str], schema: dict[str, Any]) -> None:
        """Insert or update the type row, and insert the schema row if it is new."""
        with self.write() as conn:
            self._write_type_on(conn, slug, described, schema)

    @staticmethod
    def _write_type_on(
        conn: Connection, slug: str, described: dict[str, str], schema: dict[str, Any]
    ) -> None:
        """`_write_type`'s statements, on a write transaction already open (also a batch's)."""
        now = _now()
        current = conn.execute(
            sa.select(
                tables.block_types.c.name,
                tables.block_types.c.description,
                tables.block_types.c.module,
            ).where(tables.block_types.c.slug == slug)
        ).first()
        if current is None:
            conn.execute(
                tables.block_types.insert().values(slug=slug, created=now, updated=now, **described)
            )
        elif tuple(current) != tuple(described.values()):
            conn.execute(
                tables.block_types.update()
                .where(tables.block_types.c.slug == slug)
                .values(updated=now, **described)
            )
        has_schema = conn.execute(
            sa.select(tables.block_schemas.c.checksum).where(
                tables.block_schemas.c.checksum == schema["checksum"]
            )
        ).first()
        if has_schema is None:
            conn.execute(
                tables.block_schemas.insert().values(
                    created=now, **{**schema, "fields": _dumps(schema["fields"])}
                )
            )

    def get_type(self, slug: str) -> TypeRow | None:
        with self.read() as conn:
            query = sa.select(tables.block_types).where(tables.block_types.c.slug == slug)
            row = conn.execute(query).first()
        return None if row is None else _type_row(row)

    def list_types(self) -> list[TypeRow]:
        with self.read() as conn:
            query = sa.select(tables.block_types).order_by(tables.block_types.c.slug)
            rows = conn.execute(query).all()
        return [_type_row(row) for row in rows]

    def list_schemas(self, slug: str) -> list[SchemaRow]:
        """Every schema recorded for a type, newest first."""
        with self.read() as conn:
            rows = conn.execute(
                sa.select(tables.block_schemas)
                .where(tables.block_schemas.c.type_slug == slug)
                .order_by(tables.block_schemas.c.created.desc())
            ).all()
        return [
            SchemaRow(r.checksum, r.type_slug, r.version, json.loads(r.fields), _utc(r.created))
            for r in rows
        ]

    # -- documents --------------------------------------------------------------------------

    def get_document(self, type_slug: str, name: str) -> DocumentRow | None:
        if self._reads is not None:  # SQLite file: the sqlite3 module directly (see there)
            row = self._reads.one(sqlite_reads.GET_DOCUMENT, (type_slug, name))
        else:
            with self.engine.connect() as conn:
                params = {"type_slug": type_slug, "name": name}
                row = conn.execute(tables._GET_DOCUMENT, params).first()
        return None if row is None else _document(row)

    def load_columns(self, type_slug: str, name: str) -> tuple[Any, ...] | None:
        """What a load reads, raw: id, schema_checksum, data, secrets, refs, version, seal.

        With the type and name, every byte the seal covers: a load that finds them equal to
        bytes it verified before may reuse that answer (`blocks.core._block`); otherwise
        `loaded_document` makes them a `DocumentRow` to verify.
        """
        if self._reads is not None:
            return self._reads.one(sqlite_reads.LOAD_DOCUMENT, (type_slug, name))
        with self.engine.connect() as conn:
            params = {"type_slug": type_slug, "name": name}
            row = conn.execute(tables._LOAD_DOCUMENT, params).first()
        return None if row is None else tuple(row)

    def documents_stamp(self) -> tuple[int, ...] | None:
        """A value that changes whenever any document may have changed since it was taken,
        in this process or another (`SqliteReads.stamp`), cheaper than a SELECT; None where
        that cannot be told (PostgreSQL, an in-memory or immutable SQLite file): read."""
        return None if self._reads is None else self._reads.stamp()

    @staticmethod
    def loaded_document(type_slug: str, name: str, columns: tuple[Any, ...]) -> DocumentRow:
        """The `DocumentRow` of `load_columns`' answer. Its timestamps were not read: they are
        empty, and its `created` / `updated` must not be asked for."""
        document_id, checksum, data, secrets, refs, version, seal = columns
        row = (document_id, type_slug, name, checksum, data, secrets, refs, "", "", version, seal)
        return _document(row)

    def get_document_by_id(self, document_id: str) -> DocumentRow | None:
        if self._reads is not None:
            row = self._reads.one(sqlite_reads.GET_DOCUMENT_BY_ID, (document_id,))
        else:
            with self.engine.connect() as conn:
                row = conn.execute(tables._GET_DOCUMENT_BY_ID, {"document_id": document_id}).first()
        return None if row is None else _document(row)

    def list_documents(self, type_slug: str | None = None) -> list[DocumentRow]:
        query = sa.select(*tables._DOC_COLUMNS).order_by(
            tables.block_documents.c.type_slug, tables.block_documents.c.name
        )
        if type_slug is not None:
            query = query.where(tables.block_documents.c.type_slug == type_slug)
        with self.read() as conn:
            return [_document(row) for row in conn.execute(query)]

    def document_names(self, type_slug: str) -> list[str]:
        """The names saved under one type, sorted: what a "not found" error suggests (a missed
        load, such as the results-key lookup of every `block results` command, reads it)."""
        if self._reads is not None:
            return [name for (name,) in self._reads.all(sqlite_reads.LIST_NAMES, (type_slug,))]
        with self.read() as conn:
            return list(
                conn.execute(
                    sa.select(tables.block_documents.c.name)
                    .where(tables.block_documents.c.type_slug == type_slug)
                    .order_by(tables.block_documents.c.name)
                ).scalars()
            )

    def document_counts(self) -> dict[str, int]:
        """How many documents each type has (types with none are absent)."""
        with self.read() as conn:
            rows = conn.execute(
                sa.select(tables.block_documents.c.type_slug, sa.func.count()).group_by(
                    tables.block_documents.c.type_slug
                )
            ).all()
        return {slug: count for slug, count in rows}

    def list_document_summaries(self, type_slug: str | None = None) -> list[DocumentSummary]:
        """Every saved block (or those of one type) without decoding its fields: what
        ``block ls`` shows. Sorted by type, then name; the filter runs in SQL."""
        rows: Iterable[tuple[Any, ...]]
        if self._reads is not None:  # SQLite file: `block ls` never imports SQLAlchemy
            if type_slug is None:
                rows = self._reads.all(sqlite_reads.LIST_SUMMARIES)
            else:
                rows = self._reads.all(sqlite_reads.LIST_SUMMARIES_OF_TYPE, (type_slug,))
        else:
            # Timestamps come back as the driver gives them (SQLite: ISO text, parsed below by
            # datetime.fromisoformat, ~4x faster than SQLAlchemy's per-row processor).
            query = sa.select(
                tables.block_documents.c.id,
                tables.block_documents.c.type_slug,
                tables.block_documents.c.name,
                tables.block_documents.c.secrets,
                sa.type_coerce(tables.block_documents.c.created, sa.String),
                sa.type_coerce(tables.block_documents.c.updated, sa.String),
            ).order_by(tables.block_documents.c.type_slug, tables.block_documents.c.name)
            if type_slug is not None:
                query = query.where(tables.block_documents.c.type_slug == type_slug)
            with self.read() as conn:
                rows = conn.execute(query).all()
        # Only the secrets' paths are read (their tokens are never decrypted); "{}" is the
        # common case and skips the JSON parse.
        return [
            DocumentSummary(
                id=id,
                type_slug=slug,
                name=name,
                secret_fields=() if secrets == "{}" else tuple(sorted(json.loads(secrets))),
                created=_timestamp(created),
                updated=_timestamp(updated),
            )
            for id, slug, name, secrets, created, updated in rows
        ]

    def page_documents(
        self,
        type_slug: str | None = None,
        *,
        search: str = "",
        limit: int = 50,
        offset: int = 0,
    ) -> tuple[list[DocumentRow], int]:
        """One page of documents (by type, then name) whose name contains `search`, and how
        many match in all: a list of 10,000 blocks shows 50 without decoding the rest."""
        where = []
        if type_slug is not None:
            where.append(tables.block_documents.c.type_slug == type_slug)
        if search:
            escaped = search.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
            where.append(tables.block_documents.c.name.like(f"%{escaped}%", escape="\\"))
        query = (
            sa.select(*tables._DOC_COLUMNS)
            .where(*where)
            .order_by(tables.block_documents.c.type_slug, tables.block_documents.c.name)
            .limit(limit)
            .offset(offset)
        )
        count = sa.select(sa.func.count()).select_from(tables.block_documents).where(*where)
        with self.read() as conn:
            total = conn.execute(count).scalar_one()
            return [_document(row) for row in conn.execute(query)], total

    def save_document(
        self,
        *,
        type_slug: str,
        name: str,
        schema_checksum: str,
        data: dict[str, Any],
        secrets: dict[str, str],
        refs: dict[str, str],
        overwrite: bool,
        key_id: str | None,
        seal: Callable[[bytes], str],
    ) -> str:
        """Insert or (with `overwrite`) replace a document; return its id.

        `key_id` is the key `secrets` were sealed under: if it is not the registry's active key
        (a rotation committed meanwhile), `StaleKey` and nothing is written. `seal` makes the
        document's seal from its canonical bytes, once its id and version are known.
        """
        document = _NewDocument(
            type_slug, name, schema_checksum, _dumps(data), _dumps(secrets), _dumps(refs), refs
        )
        if overwrite and key_id is not None and not refs:
            document_id = self._save_known(document, key_id, seal)
            if document_id is not None:
                return document_id
        # The write order, all in ONE transaction (SQLite: BEGIN IMMEDIATE, the write lock
        # from the start; PostgreSQL: the key lock taken shared, so no rotation interleaves):
        #   1. the key check: `key_id` must still be the recorded active key, else StaleKey
        #      and nothing is written (a rotation committed after we sealed the secrets);
        #   2. read the name's current row (id, version, refs): an overwrite keeps the id, so
        #      references to the block stay valid, and bumps the version; the seal covers
        #      both, so it can only be computed here, inside the transaction;
        #   3. the row: INSERT a new one, or UPDATE it in place (never delete + insert, which
        #      the foreign keys of blocks referencing it would refuse);
        #   4. its reference rows, after the row they hang from: the old ones deleted (only if
        #      the stored refs had any), the new ones checked to exist, then inserted.
        # Rejected: INSERT ... ON CONFLICT DO UPDATE in one statement. The seal needs the id
        # and version before the write, which an upsert only gives after it.
        # On PostgreSQL (no write lock up front) two first saves of one name can both find no
        # row in step 2; the loser's INSERT fails on the unique name. It then runs again:
        # it finds the winner's row and overwrites it, or (no overwrite) says it exists.
        for attempt in range(_SAVE_ATTEMPTS):
            try:
                with self._document_writes() as writes:
                    if key_id is not None:
                        record = self._key_record_from(writes.key_rows())
                        if record is None or record.active_key_id != key_id:
                            raise StaleKey(key_id)
                    document_id = self._upsert_row(writes, document, overwrite, seal)
                    self._write_references(writes, document, document_id)
                return document_id
            except _integrity_errors():
                if not overwrite:
                    raise _already_exists(type_slug, name) from None
                if attempt == _SAVE_ATTEMPTS - 1:
                    raise
        raise AssertionError("unreachable")

    def _save_known(
        self, document: _NewDocument, key_id: str, seal: Callable[[bytes], str]
    ) -> str | None:
        """An overwrite of a row this registry object saved last (id and version known, no
        references), as ONE statement: the UPDATE itself checks, as it writes, that the row is
        still that version with no references and that `key_id` is still the active key (the
        checks `save_document`'s transaction makes by two SELECTs first). The document id, or
        None when no row matched (another writer, a rotation, a delete): nothing was written,
        and the caller saves in full. SQLite files only; nothing is sealed for a name this
        object has not saved."""
        reads = self._reads
        known = self._saved.get((document.type_slug, document.name))
        if reads is None or known is None:
            return None
        document_id, version = known
        mac = seal(
            document_message(
                document.type_slug,
                document.name,
                document_id,
                version + 1,
                document.schema_checksum,
                document.data,
                document.secrets,
                document.refs_text,
            )
        )
        params = (
            document.schema_checksum,
            document.data,
            document.secrets,
            document.refs_text,
            statements.sqlite_time(_now()),
            version + 1,
            mac,
            document_id,
            version,
            document.type_slug,
            document.name,
            META_KEY_ID,
            key_id,
        )
        if reads.write_one(statements.UPDATE_KNOWN, params) != 1:
            return None
        self._saved[(document.type_slug, document.name)] = (document_id, version + 1)
        return document_id

    @contextmanager
    def _document_writes(self) -> Iterator[DocumentWrites]:
        """A write transaction holding the key lock shared, and the save's statements on it."""
        reads = self._reads
        if reads is not None:  # a SQLite file: its kept sqlite3 connection (see SqliteWrites)
            with reads.transaction() as raw:
                yield statements.SqliteWrites(
                    raw, _META_KEYS, lambda exc: _sqlite_problem(exc, reads.path)
                )
            return
        with self.write() as conn:
            self._key_lock(conn, exclusive=False)
            yield statements.SqlAlchemyWrites(conn)

    def _upsert_row(
        self,
        writes: DocumentWrites,
        document: _NewDocument,
        overwrite: bool,
        seal: Callable[[bytes], str],
    ) -> str:
        """Steps 2 and 3 of `save_document`: read the current row, write the new one."""
        current = writes.current(document.type_slug, document.name)
        if current is not None and not overwrite:
            raise _already_exists(document.type_slug, document.name)
        document_id = uuid.uuid4().hex if current is None else current[0]
        version = 1 if current is None else current[1] + 1
        now = _now()
        values: dict[str, Any] = {
            "schema_checksum": document.schema_checksum,
            "data": document.data,
            "secrets": document.secrets,
            "refs": document.refs_text,
            "updated": now,
            "version": version,
            "mac": seal(
                document_message(
                    document.type_slug,
                    document.name,
                    document_id,
                    version,
                    document.schema_checksum,
                    document.data,
                    document.secrets,
                    document.refs_text,
                )
            ),
        }
        if current is None:
            writes.insert(
                values
                | {
                    "id": document_id,
                    "type_slug": document.type_slug,
                    "name": document.name,
                    "created": now,
                }
            )
            self._note_saved(document, document_id, version)
            return document_id
        self._refuse_cycle(writes, document.type_slug, document.name, document_id, document.refs)
        writes.update(document_id, values)
        self._note_saved(document, document_id, version)
        if current[2] != "{}":  # a document stored with no references has none to delete
            writes.delete_references(document_id)
        return document_id

    def _note_saved(self, document: _NewDocument, document_id: str, version: int) -> None:
        """Remember the id and version just written (inside the transaction: if it rolls back,
        the next `_save_known` matches no row and saves in full), for `_save_known`."""
        saved = self._saved
        if len(saved) >= _SAVED_MAX:
            saved.clear()
        saved[(document.type_slug, document.name)] = (document_id, version)

    @staticmethod
    def _write_references(writes: DocumentWrites, document: _NewDocument, document_id: str) -> None:
        """Step 4 of `save_document`: the reference rows of the row just written."""
        if not document.refs:
            return
        wanted = set(document.refs.values())
        if wanted - writes.existing(wanted):
            raise BlockNotFound(
                f"Cannot save {document.type_slug}/{document.name}: a block it references was "
                "deleted. Save the nested block again first."
            )
        writes.insert_references(
            [
                {"parent_id": document_id, "field": field, "child_id": child}
                for field, child in document.refs.items()
            ]
        )

    def _refuse_cycle(
        self,
        writes: DocumentWrites,
        type_slug: str,
        name: str,
        document_id: str,
        refs: dict[str, str],
    ) -> None:
        """`InvalidBlockData` if a referenced block leads back to this one (a -> b -> a)."""
        frontier, seen = set(refs.values()), set()
        while frontier:
            if document_id in frontier:
                raise InvalidBlockData(
                    f"Cannot save {type_slug}/{name}: a block it references refers back to it "
                    "(a reference cycle). Nest a copy instead of the saved block, or break the "
                    "cycle."
                )
            seen |= frontier
            frontier = writes.children(frontier) - seen

    def delete_document(self, type_slug: str, name: str) -> None:
        """Delete a document; `BlockInUse` if another block references it."""
        with self.write() as conn:
            self._delete_on(conn, type_slug, name)

    @staticmethod
    def _delete_on(conn: Connection, type_slug: str, name: str) -> None:
        """`delete_document`'s statements, on a write transaction already open."""
        document_id = conn.execute(
            sa.select(tables.block_documents.c.id).where(
                tables.block_documents.c.type_slug == type_slug,
                tables.block_documents.c.name == name,
            )
        ).scalar()
        if document_id is None:
            raise BlockNotFound(f"No {type_slug} block named '{name}' to delete.")
        parents = conn.execute(
            sa.select(tables.block_documents.c.type_slug, tables.block_documents.c.name)
            .join(
                tables.block_references,
                tables.block_references.c.parent_id == tables.block_documents.c.id,
            )
            .where(tables.block_references.c.child_id == document_id)
            .order_by(tables.block_documents.c.type_slug, tables.block_documents.c.name)
        ).all()
        if parents:
            users = ", ".join(f"{slug}/{parent}" for slug, parent in parents)
            raise BlockInUse(
                f"Cannot delete {type_slug}/{name}: it is referenced by {users}. "
                "Delete or re-save those blocks first."
            )
        documents = tables.block_documents
        conn.execute(documents.delete().where(documents.c.id == document_id))

    def reseal_all(
        self,
        rewrite: Callable[[DocumentRow], dict[str, str]],
        seal: Callable[[bytes], str],
        record: KeyRecord,
        progress: Callable[[int, int], None] | None = None,
        also: Callable[[Connection], object] | None = None,
    ) -> int:
        """Re-seal every document and record `record` as the active key, in ONE transaction.

        Holds the key lock exclusively, so no save interleaves: a save that sealed under the old
        key before this commits is re-sealed here; one that commits after finds the new key
        recorded and re-seals itself (`StaleKey`). `rewrite` gets each document (it verifies
        the old seal) and returns its new secret tokens. If it raises, nothing changes.
        Returns how many documents had secrets. `progress(done, total)` is called after each
        document. `also(conn)` runs in the same transaction before the key is recorded (the
        re-seal hooks of rows sealed outside the documents).
        """
        changed = 0
        with self.write() as conn:
            self._key_lock(conn, exclusive=True)
            rows = conn.execute(sa.select(*tables._DOC_COLUMNS)).all()
            for done, row in enumerate(rows, 1):
                document = _document(row)
                secrets_text = _dumps(rewrite(document))
                mac = seal(
                    document_message(
                        document.type_slug,
                        document.name,
                        document.id,
                        document.version,
                        document.schema_checksum,
                        row[4],
                        secrets_text,
                        row[6],
                    )
                )
                conn.execute(
                    tables.block_documents.update()
                    .where(tables.block_documents.c.id == document.id)
                    .values(secrets=secrets_text, mac=mac)
                )
                changed += bool(document.secrets)
                if progress is not None:
                    progress(done, len(rows))
            if also is not None:
                also(conn)
            self._write_key_record(conn, record)
            meta = tables.registry_meta
            conn.execute(meta.delete().where(meta.c.key == META_SEALED))
            conn.execute(tables.registry_meta.insert().values(key=META_SEALED, value="1"))
        return changed


def _type_row(row: sa.Row[Any]) -> TypeRow:
    return TypeRow(
        slug=row.slug,
        name=row.name,
        description=row.description,
        module=row.module,
        created=_utc(row.created),
        updated=_utc(row.updated),
    )


def _is_missing_table(exc: sa.exc.OperationalError) -> bool:
    return "no such table" in str(exc.orig)


def _sqlite_engine(url: sa.engine.URL) -> Engine:
    database = url.database
    read_only = False
    if database and database != ":memory:" and not database.startswith("file:"):
        path = Path(database).expanduser()
        read_only = _prepare_sqlite_file(path)
        if read_only:
            # Listing and loading still work; writes fail with RegistryReadOnly (below).
            # `immutable` when even the WAL index (-shm) cannot be made beside the file.
            flags = "mode=ro" if os.access(path.parent, os.W_OK) else "immutable=1"
            url = url.set(database=f"file:{path}?{flags}", query={"uri": "true"})
        else:
            url = url.set(database=str(path))
    engine = sa.create_engine(url, future=True, connect_args={"check_same_thread": False})
    where = str(database)

    @sa.event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Let us issue BEGIN ourselves (pysqlite's implicit BEGIN is deferred).
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        for name, value in SQLITE_PRAGMAS.items():
            if read_only and name in ("journal_mode", "synchronous"):
                continue  # both would write to the file
            cursor.execute(f"PRAGMA {name}={value}")
        cursor.close()

    @sa.event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        # Writes take the lock up front; reads run in autocommit (one SELECT is atomic).
        if conn.get_execution_options().get("blocks_write", False):
            conn.exec_driver_sql("BEGIN IMMEDIATE")

    @sa.event.listens_for(engine, "handle_error")
    def _on_error(context: sa.engine.ExceptionContext) -> None:
        # sqlite3's own words ("file is not a database") do not say what to do.
        problem = _sqlite_problem(context.original_exception, where)
        if problem is not None:
            raise problem from None

    return engine


# sqlite:///PATH with nothing SQLAlchemy would decode or read as options: parsed here, so a
# load need not import SQLAlchemy to find its file. Anything else goes to `sa.engine.make_url`.
_PLAIN_SQLITE_URL = re.compile(r"sqlite:///([^?#%]+)")


def _plain_sqlite_reads(url: str) -> sqlite_reads.SqliteReads | None:
    """The raw read path for a plain SQLite file URL (the default registry), prepared as
    `_sqlite_engine` prepares its file; None for any other URL."""
    match = _PLAIN_SQLITE_URL.fullmatch(url)
    if match is None or match.group(1) == ":memory:" or match.group(1).startswith("file:"):
        return None
    path = Path(match.group(1)).expanduser()
    read_only = _prepare_sqlite_file(path)
    target, uri = str(path), False
    if read_only:
        flags = "mode=ro" if os.access(path.parent, os.W_OK) else "immutable=1"
        target, uri = f"file:{path}?{flags}", True
    return sqlite_reads.SqliteReads(
        str(path),
        target,
        uri=uri,
        busy_timeout_ms=int(SQLITE_PRAGMAS["busy_timeout"]),
        problem=lambda exc: _sqlite_problem(exc, str(path)),
        pragmas=_pragmas(read_only),
    )


def _pragmas(read_only: bool) -> tuple[str, ...]:
    """The SQLITE_PRAGMAS statements for a new connection (as the engine's connect hook)."""
    return tuple(
        f"PRAGMA {name}={value}"
        for name, value in SQLITE_PRAGMAS.items()
        if not (read_only and name in ("journal_mode", "synchronous"))
    )


def _sqlite_reads(engine: Engine) -> sqlite_reads.SqliteReads | None:
    """The raw read path for a SQLite file registry (None for an in-memory one, where each
    connection would see its own empty database)."""
    url = engine.url
    database = url.database
    if not database or database == ":memory:" or "mode=memory" in database:
        return None
    uri = url.query.get("uri") == "true"
    path = database.removeprefix("file:").split("?", 1)[0] if uri else database
    return sqlite_reads.SqliteReads(
        path,
        database,
        uri=uri,
        busy_timeout_ms=int(SQLITE_PRAGMAS["busy_timeout"]),
        problem=lambda exc: _sqlite_problem(exc, str(path)),
        pragmas=_pragmas(uri and ("mode=ro" in database or "immutable=1" in database)),
    )


def _prepare_sqlite_file(path: Path) -> bool:
    """Create the registry file (private) and its folder if missing; True if it is read-only."""
    if path.is_dir():
        raise ConfigurationError(
            f"The registry path {path} is a folder: BLOCKS_REGISTRY_URL must name a file, "
            f"e.g. sqlite:///{path / 'registry.db'}."
        )
    for folder in (path.parent, *path.parent.parents):
        if folder.exists():
            if not folder.is_dir():
                raise ConfigurationError(
                    f"Cannot keep the registry under {path.parent}: {folder} is a file, not a "
                    "folder. Point BLOCKS_HOME (or BLOCKS_REGISTRY_URL) at a folder."
                )
            break
    if path.exists():
        return not os.access(path, os.W_OK) or not _can_create_in(path.parent)
    try:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        # Create the file ourselves so it is private from the first byte.
        with contextlib.suppress(FileExistsError):
            os.close(os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))
    except OSError as exc:
        raise ConfigurationError(
            f"Cannot create the registry {path}: {exc.strerror or exc}. Point BLOCKS_HOME "
            "(or BLOCKS_REGISTRY_URL) at a folder you can write."
        ) from None
    return False


def _can_create_in(folder: Path) -> bool:
    # SQLite in WAL mode writes its -wal and -shm files beside the database.
    return os.access(folder, os.W_OK | os.X_OK)


def _sqlite_problem(exc: BaseException, where: str) -> BlocksError | None:
    """The typed error for a SQLite failure a user can fix, or None for the rest."""
    import sqlite3

    text = str(exc).lower()
    if isinstance(exc, sqlite3.DatabaseError) and (
        "not a database" in text or "malformed" in text or "corrupt" in text
    ):
        return RegistryCorrupt(
            f"The registry {where} is not a SQLite database or is damaged ({exc}). "
            f"Move it aside (mv {where} {where}.broken) to start an empty registry, or "
            "restore it from a backup."
        )
    if isinstance(exc, sqlite3.OperationalError) and "readonly" in text.replace("-", ""):
        return RegistryReadOnly(
            f"The registry {where} is read-only: listing and loading work, saving does not. "
            "Make the file and its folder writable, or point BLOCKS_HOME at a writable folder."
        )
    return None


def _dispose_at_exit(pid: int) -> None:
    """Close the registries' connections as the process that opened them exits."""
    if os.getpid() == pid:
        Registry.dispose_all()
