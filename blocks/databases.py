"""SQL databases: `DatabaseCredentials` and `SqlAlchemyConnector` (prefect-sqlalchemy's names).

A connector holds its credentials (the password sealed at rest, masked in every repr) and builds
one SQLAlchemy engine on first use. ``execute``/``execute_many`` run in a transaction of their
own and commit; ``fetch_one``/``fetch_many``/``fetch_all`` keep the result of each distinct
query open, so repeated calls page through it, until ``reset_connections()`` (or the end of a
``with`` block) closes them. Only synchronous drivers are supported.

The password never leaves in a message: a driver error whose text contains it is re-raised as
`DatabaseError` with the password masked; other driver errors pass through unchanged (their
SQLAlchemy types still catch them).

Example:
    >>> creds = DatabaseCredentials(driver="postgresql+psycopg", username="etl",
    ...                             password="s3cr3t", host="db", port=5432, database="prod")
    >>> with SqlAlchemyConnector(connection_info=creds, fetch_size=100) as db:
    ...     db.execute("CREATE TABLE IF NOT EXISTS t (x int)")
    ...     db.execute_many("INSERT INTO t VALUES (:x)", [{"x": 1}, {"x": 2}])
    ...     db.fetch_all("SELECT x FROM t")
    [(1,), (2,)]
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import ExitStack, contextmanager
from typing import TYPE_CHECKING, Any, Self, TypeVar

from pydantic import Field, PrivateAttr, SecretStr, field_validator, model_validator

from blocks.core._block import Block
from blocks.core._documents import mask_userinfo
from blocks.errors import BlocksError, ConfigurationError, DatabaseError

if TYPE_CHECKING:
    import sqlalchemy as sa
    from sqlalchemy.engine import Connection, CursorResult, Engine, Row

logger = logging.getLogger("blocks.databases")

_T = TypeVar("_T")

#: Drivers SQLAlchemy drives through asyncio only; the connector is synchronous.
ASYNC_DRIVERS = frozenset(
    {"postgresql+asyncpg", "postgresql+psycopg_async", "sqlite+aiosqlite", "mysql+aiomysql",
     "mysql+asyncmy", "oracle+oracledb_async", "mssql+aioodbc"}
)  # fmt: skip

_MASK = "**********"


class DatabaseCredentials(Block):
    """Where a database is and how to log in: the parts of a SQLAlchemy URL, or a whole URL.

    The password (and a whole `url`, which may hold one) is secret: encrypted at rest, masked
    in reprs and never in an error message.

    Example:
        >>> DatabaseCredentials(driver="postgresql+psycopg", username="etl", password="pw",
        ...                     host="db.internal", port=5432, database="prod").save("prod-db")
        >>> DatabaseCredentials(driver="sqlite+pysqlite", database="/tmp/app.db")
    """

    _block_type_name = "Database Credentials"
    _description = "A SQL database's driver, host, port, database, user and password."

    driver: str | None = None
    """SQLAlchemy's ``dialect+driver``, e.g. ``postgresql+psycopg``, ``sqlite+pysqlite``."""
    username: str | None = None
    password: SecretStr | None = None
    host: str | None = None
    port: int | None = None
    database: str | None = None
    query: dict[str, str] | None = None
    """Driver options appended to the URL (``{"sslmode": "require"}``)."""
    url: SecretStr | None = None
    """A whole SQLAlchemy URL instead of the parts (secret: it may hold a password)."""

    @model_validator(mode="after")
    def _driver_or_url(self) -> Self:
        if self.url is None and not self.driver:
            raise ValueError("give driver (and the other parts) or a whole url")
        if self.url is not None and self.driver:
            raise ValueError("give either url or driver and the other parts, not both")
        return self

    def create_url(self) -> sa.URL:
        """The SQLAlchemy URL (its repr and ``str()`` hide the password)."""
        import sqlalchemy as sa

        if self.url is not None:
            try:
                return sa.make_url(self.url.get_secret_value())
            except Exception:
                # SQLAlchemy's message repeats the whole URL, password and all.
                raise ConfigurationError(
                    "DatabaseCredentials.url is not a SQLAlchemy URL "
                    "(dialect+driver://user:password@host:port/database)."
                ) from None
        return sa.URL.create(
            str(self.driver),
            username=self.username,
            password=self.password.get_secret_value() if self.password else None,
            host=self.host,
            port=self.port,
            database=self.database,
            query=self.query or {},
        )

    def secret_values(self) -> list[str]:
        """The strings no message may contain: the password (given or in the URL), the URL."""
        found = []
        if self.password is not None:
            found.append(self.password.get_secret_value())
        if self.url is not None:
            found.append(self.url.get_secret_value())
            try:
                password = self.create_url().password
            except ConfigurationError:
                password = None
            if password:
                found.append(str(password))
        return [s for s in found if len(s) >= 3]


#: prefect-sqlalchemy's name for the URL parts.
ConnectionComponents = DatabaseCredentials


class SqlAlchemyConnector(Block):
    """A SQL database through SQLAlchemy: one engine, transactions, paged fetches.

    Example:
        >>> db = SqlAlchemyConnector(connection_info=DatabaseCredentials.load("prod-db"))
        >>> with db:
        ...     db.execute("INSERT INTO t VALUES (:x)", {"x": 3})
        ...     while rows := db.fetch_many("SELECT x FROM t", size=1000):
        ...         handle(rows)
    """

    _block_type_name = "SQLAlchemy Connector"
    _description = "Run SQL on a database through SQLAlchemy, with sealed credentials."

    connection_info: DatabaseCredentials
    """The credentials; a URL string is accepted and kept as a secret ``url``."""
    connect_args: dict[str, Any] | None = None
    """Keyword arguments for the DBAPI's ``connect()``."""
    fetch_size: int = Field(default=1, ge=1)
    """Rows `fetch_many` returns when no ``size`` is given."""

    _engine: Engine | None = PrivateAttr(default=None)
    _exit_stack: ExitStack = PrivateAttr(default_factory=ExitStack)
    _results: dict[str, CursorResult[Any]] = PrivateAttr(default_factory=dict)

    @field_validator("connection_info", mode="before")
    @classmethod
    def _url_as_secret(cls, value: Any) -> Any:
        if isinstance(value, str | SecretStr):
            return DatabaseCredentials(url=value)
        return value

    def __getstate__(self) -> dict[Any, Any]:
        # A pickled connector carries its settings, not its engine or open results.
        state = super().__getstate__()
        private = {
            **(state.get("__pydantic_private__") or {}),
            "_engine": None,
            "_exit_stack": ExitStack(),
            "_results": {},
        }
        return {**state, "__pydantic_private__": private}

    # -- engine and connections ------------------------------------------------------------
    def get_engine(self, **create_engine_kwargs: Any) -> Engine:
        """The connector's engine, created on the first call (later calls return the same)."""
        if self._engine is not None:
            return self._engine
        import sqlalchemy as sa

        url = self.connection_info.create_url()
        if url.drivername in ASYNC_DRIVERS:
            raise ConfigurationError(
                f"Driver {url.drivername!r} is asynchronous; SqlAlchemyConnector runs "
                "synchronous drivers (e.g. postgresql+psycopg, sqlite+pysqlite)."
            )
        kwargs = {"connect_args": self.connect_args or {}, **create_engine_kwargs}
        engine = self._guard(lambda: sa.create_engine(url, **kwargs))
        logger.debug("created an engine for %s", self._where())
        self._engine = engine
        return engine

    def get_connection(self, begin: bool = True, **connect_kwargs: Any) -> Any:
        """A context manager giving a `Connection`: in a transaction committed on a clean exit
        (``begin=True``, rolled back on an error), or a plain connection (``begin=False``)."""
        engine = self.get_engine()
        return engine.begin(**connect_kwargs) if begin else engine.connect(**connect_kwargs)

    @contextmanager
    def _transaction(self) -> Iterator[Connection]:
        with self._guarded(), self.get_connection(begin=True) as connection:
            yield connection

    # -- statements ----------------------------------------------------------------------
    def execute(
        self,
        operation: str,
        parameters: Mapping[str, Any] | None = None,
        execution_options: Mapping[str, Any] | None = None,
    ) -> CursorResult[Any]:
        """Run one statement in a transaction of its own and commit it."""
        from sqlalchemy import text

        with self._transaction() as connection:
            return connection.execute(
                text(operation), dict(parameters or {}), execution_options=execution_options
            )

    def execute_many(
        self,
        operation: str,
        seq_of_parameters: Sequence[Mapping[str, Any]],
        execution_options: Mapping[str, Any] | None = None,
    ) -> CursorResult[Any]:
        """Run one statement once per parameter set, all in one transaction, and commit."""
        from sqlalchemy import text

        with self._transaction() as connection:
            return connection.execute(
                text(operation),
                [dict(p) for p in seq_of_parameters],
                execution_options=execution_options,
            )

    def fetch_one(
        self,
        operation: str,
        parameters: Mapping[str, Any] | None = None,
        execution_options: Mapping[str, Any] | None = None,
    ) -> Row[Any] | None:
        """The next row of the query's result (``None`` when exhausted); the same call again
        continues where it stopped."""
        result = self._result(operation, parameters, execution_options)
        return self._guard(result.fetchone)

    def fetch_many(
        self,
        operation: str,
        parameters: Mapping[str, Any] | None = None,
        size: int | None = None,
        execution_options: Mapping[str, Any] | None = None,
    ) -> list[Row[Any]]:
        """The next `size` rows (default `fetch_size`); an empty list when exhausted."""
        result = self._result(operation, parameters, execution_options)
        return list(self._guard(lambda: result.fetchmany(size or self.fetch_size)))

    def fetch_all(
        self,
        operation: str,
        parameters: Mapping[str, Any] | None = None,
        execution_options: Mapping[str, Any] | None = None,
    ) -> list[Row[Any]]:
        """Every remaining row of the query's result."""
        result = self._result(operation, parameters, execution_options)
        return list(self._guard(result.fetchall))

    def _result(
        self,
        operation: str,
        parameters: Mapping[str, Any] | None,
        execution_options: Mapping[str, Any] | None,
    ) -> CursorResult[Any]:
        # One open result per distinct call: the same query and parameters page on.
        key = repr((operation, sorted((parameters or {}).items()), execution_options))
        result = self._results.get(key)
        if result is None:
            from sqlalchemy import text

            def run() -> CursorResult[Any]:
                connection: Connection = self._exit_stack.enter_context(
                    self.get_connection(begin=True)
                )
                return connection.execute(
                    text(operation), dict(parameters or {}), execution_options=execution_options
                )

            result = self._guard(run)
            self._results[key] = result
        return result

    # -- closing -------------------------------------------------------------------------
    def reset_connections(self) -> None:
        """Close the open fetch results and their connections (the engine stays)."""
        for key in list(self._results):
            result = self._results.pop(key)
            try:
                result.close()
            except Exception as exc:
                logger.warning("could not close a result: %s", self._clean(exc))
        stack, self._exit_stack = self._exit_stack, ExitStack()
        try:
            stack.close()
        except Exception as exc:
            logger.warning("could not close a connection: %s", self._clean(exc))

    def close(self) -> None:
        """Close every connection and dispose of the engine (a later call makes a new one)."""
        self.reset_connections()
        if self._engine is not None:
            self._engine.dispose()
            self._engine = None

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- never a password in a message -----------------------------------------------------
    def _where(self) -> str:
        try:
            url = self.connection_info.create_url()
        except ConfigurationError:
            return "the database (unreadable URL)"
        return self._clean_text(url.render_as_string(hide_password=True))

    def _clean_text(self, text: str) -> str:
        for secret in sorted(set(self.connection_info.secret_values()), key=len, reverse=True):
            text = text.replace(secret, _MASK)
        return mask_userinfo(text)

    def _clean(self, exc: BaseException) -> str:
        return self._clean_text(f"{type(exc).__name__}: {exc}")

    def _guard(self, call: Callable[[], _T]) -> _T:
        with self._guarded():
            return call()

    @contextmanager
    def _guarded(self) -> Iterator[None]:
        try:
            yield
        except BlocksError:
            raise
        except Exception as exc:
            if self._leaks(exc):
                raise DatabaseError(
                    f"Database error on {self._where()}: {self._clean(exc)}"
                ) from None
            raise

    def _leaks(self, exc: BaseException) -> bool:
        """Whether `exc` or anything chained to it names a secret."""
        secrets = self.connection_info.secret_values()
        seen: set[int] = set()
        current: BaseException | None = exc
        while current is not None and id(current) not in seen:
            seen.add(id(current))
            text = f"{current} {current.args!r}"
            if any(s in text for s in secrets):
                return True
            current = current.__cause__ or current.__context__
        return False


__all__ = ["ConnectionComponents", "DatabaseCredentials", "SqlAlchemyConnector"]
