"""Prefect 3's transactions: a group of task runs whose results are written together, or not.

``with transaction():`` opens a `Transaction`; a task run inside it stages its result instead of
writing it, and the records are written when the outermost transaction commits (``LAZY``, the
default), when the run's own transaction ends (``EAGER``), or never (``OFF``: the block must call
``txn.commit()``). A failure rolls the transaction back: no staged record is written and the
``on_rollback`` hooks of the staged runs are called, the last staged first. A transaction with a
``key`` writes a record of its own when it commits; finding that record when it begins means the
work was done already (`Transaction.is_committed`), which makes a keyed block idempotent.

``SERIALIZABLE`` isolation holds the key's compute-once lock (`blocks.results._locks.KeyLock`:
threads and processes of one machine and ``BLOCKS_HOME``) from the transaction's start to its
commit or rollback, so concurrent transactions with one key run one after the other and the
later ones find the record of the first. Locks held by one transaction tree are shared by its
members, so a key locked twice in one tree never waits for itself.

Nothing here runs for a task call outside any transaction: a task joins one only when a
transaction is open or when it has ``on_commit`` / ``on_rollback`` hooks.

Example:
    >>> with transaction(key="load-2024-06-01") as txn:
    ...     if not txn.is_committed():
    ...         load(extract())
"""

from __future__ import annotations

import asyncio
import contextvars
import copy
import enum
import inspect
import logging
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Generator, Iterator
from contextlib import asynccontextmanager, contextmanager
from datetime import timedelta
from typing import TYPE_CHECKING, Any, TypeVar

from blocks.errors import ConfigurationError
from blocks.results import _persistence as persistence
from blocks.results._locks import KeyLock, lock_name
from blocks.runtime._context import FlowRun, TaskRun, get_current
from blocks.runtime._logging import run_logger
from blocks.runtime.engine._steps import run_coroutine

if TYPE_CHECKING:
    from blocks.results import Hit, ResultStore

__all__ = [
    "CURRENT",
    "AsyncTransaction",
    "CommitMode",
    "IsolationLevel",
    "StagedRecord",
    "Transaction",
    "TransactionState",
    "atransaction",
    "get_transaction",
    "rollback_current",
    "transaction",
]

_logger = logging.getLogger("blocks.transactions")

TransactionHook = Callable[["Transaction"], Any]


class IsolationLevel(enum.StrEnum):
    """What a transaction sees of concurrent ones with the same key.

    ``READ_COMMITTED``: records committed before it began; two may compute one key at once (the
    last write wins). ``SERIALIZABLE``: one at a time per key, through the compute-once lock.
    """

    READ_COMMITTED = "READ_COMMITTED"
    SERIALIZABLE = "SERIALIZABLE"


class CommitMode(enum.StrEnum):
    """When a transaction writes: ``EAGER`` as it ends, ``LAZY`` (default) when the outermost
    transaction ends, ``OFF`` only when ``commit()`` is called (else it rolls back)."""

    EAGER = "EAGER"
    LAZY = "LAZY"
    OFF = "OFF"


class TransactionState(enum.StrEnum):
    PENDING = "PENDING"
    ACTIVE = "ACTIVE"
    STAGED = "STAGED"
    COMMITTED = "COMMITTED"
    ROLLED_BACK = "ROLLED_BACK"


_ENDED = (TransactionState.COMMITTED, TransactionState.ROLLED_BACK)

E = TypeVar("E", bound=enum.Enum)


def _member(kind: type[E], value: Any, option: str) -> E | None:
    """`value` as a member of `kind` (its name works too); None stays None (inherited)."""
    if value is None or isinstance(value, kind):
        return value
    try:
        return kind(value)
    except ValueError:
        names = ", ".join(f"{kind.__name__}.{m.name}" for m in kind)
        raise ConfigurationError(f"{option} must be one of {names}; got {value!r}.") from None


_NOT_SET: Any = object()

#: The open transaction of this context (a task run's own while it runs); the engine reads it
#: directly (``CURRENT.get()``: no call frame on a cached hit).
CURRENT: contextvars.ContextVar[Transaction | None] = contextvars.ContextVar(
    "blocks_transaction", default=None
)
_current = CURRENT


def rollback_current() -> None:
    """Roll back the open transaction, if any: a task run inside it failed (called only on
    a failure, so a plain task call pays nothing for transactions)."""
    txn = _current.get()
    if txn is not None:
        _drive(txn._rollback())  # an `AsyncTransaction`'s too: this is sync code


def get_transaction() -> Transaction | None:
    """The innermost open transaction (inside a task that joined one: the task's own), or None."""
    return _current.get()


class StagedRecord:
    """What a task run staged: its value and how to write it."""

    __slots__ = ("components", "expiration", "flow", "task", "value")

    def __init__(
        self,
        value: Any,
        expiration: timedelta | None,
        task: str,
        components: dict[str, str] | None,
        flow: str | None,
    ) -> None:
        self.value, self.expiration, self.task = value, expiration, task
        self.components, self.flow = components, flow


class _Tree:
    """What the transactions nested in one outermost transaction share: a guard for their
    children and states, and the key locks they hold (by lock name)."""

    __slots__ = ("guard", "held")

    def __init__(self) -> None:
        self.guard = threading.RLock()
        self.held: dict[str, KeyLock | None] = {}  # None: claimed, being acquired


class Transaction:
    """One transaction: a key and store for its record, a commit mode, an isolation level,
    values shared with its hooks (`set` / `get`), what it staged, and its nested transactions.

    Use it through `transaction(...)` (or ``with Transaction(...)``). ``is_committed()`` right
    after it begins says its key's record already exists: the work was done before.
    """

    def __init__(
        self,
        key: str | None = None,
        store: ResultStore | None = None,
        commit_mode: CommitMode | None = None,
        isolation_level: IsolationLevel | None = None,
        overwrite: bool = False,
        write_on_commit: bool = True,
        logger: logging.Logger | logging.LoggerAdapter[Any] | None = None,
    ) -> None:
        self.key = key
        self.store = store
        if key is not None and not isinstance(key, str):
            raise ConfigurationError(
                f"A transaction's key is a string (a result-store key), not a {type(key).__name__}."
            )
        self.commit_mode = _member(CommitMode, commit_mode, "commit_mode")
        self.isolation_level = _member(IsolationLevel, isolation_level, "isolation_level")
        self.overwrite = overwrite
        self.write_on_commit = write_on_commit
        self.logger: logging.Logger | logging.LoggerAdapter[Any] = logger or _logger
        self.state = TransactionState.PENDING
        self.children: list[Transaction] = []
        self.on_commit_hooks: list[TransactionHook] = []
        self.on_rollback_hooks: list[TransactionHook] = []
        self._values: dict[str, Any] = {}
        self._staged: Any = None
        self._parent: Transaction | None = None
        self._tree: _Tree | None = None
        self._token: contextvars.Token[Transaction | None] | None = None
        self._lock: KeyLock | None = None
        self._claim: str | None = None  # the lock name this transaction claimed in its tree

    def __repr__(self) -> str:
        return f"Transaction(key={self.key!r}, state={self.state.value})"

    # -- values shared within the transaction ---------------------------------------------------

    def set(self, name: str, value: Any) -> None:
        """Keep `value` under `name` for this transaction, its nested ones and their hooks."""
        self._values[name] = value

    def get(self, name: str, default: Any = _NOT_SET) -> Any:
        """A copy of the value set under `name` here or in an enclosing transaction; `default`
        if none was (`ValueError` without a default). Change it with `set`."""
        txn: Transaction | None = self
        while txn is not None:
            if name in txn._values:
                return copy.deepcopy(txn._values[name])
            txn = txn._parent
        if default is not _NOT_SET:
            return default
        raise ValueError(f"Could not retrieve value for unknown key: {name}")

    # -- state ------------------------------------------------------------------------------------

    def is_committed(self) -> bool:
        return self.state is TransactionState.COMMITTED

    def is_rolled_back(self) -> bool:
        return self.state is TransactionState.ROLLED_BACK

    def is_staged(self) -> bool:
        return self.state is TransactionState.STAGED

    def is_pending(self) -> bool:
        return self.state is TransactionState.PENDING

    def is_active(self) -> bool:
        return self.state is TransactionState.ACTIVE

    def get_parent(self) -> Transaction | None:
        return self._parent

    @classmethod
    def get_active(cls) -> Transaction | None:
        """The innermost open transaction (`get_transaction`)."""
        return _current.get()

    def add_child(self, child: Transaction) -> None:
        self.children.append(child)

    # -- the life of a transaction ----------------------------------------------------------------

    def __enter__(self) -> Transaction:
        self.open()
        if self.store is not None and self.key:  # begin: the key's lock, then its record
            if self.needs_lock():
                lock = KeyLock(self.store, self.key)
                lock.acquire()
                self.hold(lock)
            if not self.overwrite and self.store.exists(self.key):
                self.state = TransactionState.COMMITTED
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        self.close(failed=exc_type is not None)

    def open(self) -> None:
        """Begin: take the enclosing transaction's modes where none was given, and become the
        current transaction (the key's lock and record are checked by the caller)."""
        if self._token is not None:
            raise RuntimeError("This transaction is already open; transactions do not re-enter.")
        parent = _current.get()
        self._parent = parent
        if self.commit_mode is None:
            self.commit_mode = parent.commit_mode if parent is not None else CommitMode.LAZY
        if self.isolation_level is None:
            self.isolation_level = (
                parent.isolation_level if parent is not None else IsolationLevel.READ_COMMITTED
            )
        self._tree = parent._tree if parent is not None else _Tree()
        self.state = TransactionState.ACTIVE
        self._token = _current.set(self)

    def needs_lock(self) -> bool:
        """Whether this transaction must take its key's lock: SERIALIZABLE, and no member of
        its transaction tree has claimed that lock (this call claims it, so two members never
        wait for each other; `hold` then keeps the lock taken)."""
        if self.isolation_level is not IsolationLevel.SERIALIZABLE:
            return False
        if self.store is None or not self.key:
            return False
        assert self._tree is not None
        name = lock_name(self.store.storage.describe(), self.key)
        with self._tree.guard:
            if name in self._tree.held:
                return False
            self._tree.held[name] = None
        self._claim = name
        return True

    def hold(self, lock: KeyLock) -> None:
        """Keep `lock` (claimed by `needs_lock`) until this transaction commits or rolls back."""
        assert self._tree is not None
        self._lock = lock
        with self._tree.guard:
            self._tree.held[lock.name] = lock

    def close(self, failed: bool) -> None:
        """End the ``with`` block: `end`, then stop being the current transaction."""
        try:
            self.end(failed)
        finally:
            self.detach()

    def end(self, failed: bool) -> None:
        """Roll back on failure; else commit as the mode says, or leave it to the enclosing
        transaction (which commits or rolls it back with itself)."""
        _drive(self._end(failed))

    def _end(self, failed: bool) -> Generator[Awaitable[Any], None, None]:
        if self.state is TransactionState.PENDING:
            raise RuntimeError("This transaction was never opened.")
        if failed:
            yield from self._rollback()
        elif self.commit_mode is CommitMode.EAGER:
            yield from self._commit()
        parent = self._parent
        if parent is None:
            if not failed and self.commit_mode is CommitMode.OFF:
                yield from self._rollback()  # nobody committed it
            elif not failed:
                yield from self._commit()
            self._release_all()
            return
        assert self._tree is not None
        with self._tree.guard:
            outcome = parent.state if parent.state in _ENDED else None
            if outcome is None and self.state is not TransactionState.ROLLED_BACK:
                parent.add_child(self)  # the parent commits or rolls it back
        if self.state is TransactionState.ROLLED_BACK:
            yield from parent._rollback()
        elif outcome is TransactionState.COMMITTED:
            yield from self._commit()  # ended after its parent had committed (a late task)
        elif outcome is TransactionState.ROLLED_BACK:
            yield from self._rollback()

    def detach(self) -> None:
        """Stop being the current transaction of this context (the enclosing one is again)."""
        token, self._token = self._token, None
        if token is not None:
            _current.reset(token)

    @property
    def staged_value(self) -> Any:
        """What `stage` was last given (None before)."""
        return self._staged

    def stage(
        self,
        value: Any,
        on_rollback_hooks: list[TransactionHook] | None = None,
        on_commit_hooks: list[TransactionHook] | None = None,
    ) -> None:
        """Stage `value` as this transaction's record (written when it commits) and add
        hooks; nothing happens if it has ended (committed: the work was done; rolled back: a
        failure inside it undid it)."""
        if self.state in _ENDED:
            return
        self._staged = value
        self.on_rollback_hooks += on_rollback_hooks or []
        self.on_commit_hooks += on_commit_hooks or []
        self.state = TransactionState.STAGED

    def commit(self) -> bool:
        """Commit the nested transactions, call the ``on_commit`` hooks, write the staged record
        (a key and a store given); False if it had ended, or if this failed: then it rolls back
        from there (one nested transaction that fails to commit rolls back the rest).

        Records are written one object at a time: a process that dies between two writes
        leaves the first record whole and the second absent (see the README).
        """
        return _drive(self._commit())

    def rollback(self) -> bool:
        """Call the ``on_rollback`` hooks (the last added first), then roll back the nested
        transactions (the last first); False if it had already ended. Nothing staged is
        written."""
        return _drive(self._rollback())

    # The steps of commit and rollback, each hook's awaitable yielded: `commit` runs it to its
    # end in a loop of its own, `AsyncTransaction.commit` awaits it on the caller's loop.

    def _commit(self) -> Generator[Awaitable[Any], None, bool]:
        with self._guard():
            if self.state in _ENDED:
                self._release()
                return False
            try:
                for child in list(self.children):
                    if not (yield from child._commit()) and child.is_rolled_back():
                        raise RuntimeError(f"nested transaction {child.key!r} did not commit")
                for hook in self.on_commit_hooks:
                    yield from self._hook(hook, "commit")
                if self.store is not None and self.key and self.write_on_commit:
                    self._write()
            except Exception:
                self.logger.exception("Could not commit transaction %r; rolling back.", self.key)
                yield from self._rollback()
                return False
            self.state = TransactionState.COMMITTED
            self._release()
            return True

    def _rollback(self) -> Generator[Awaitable[Any], None, bool]:
        with self._guard():
            if self.state in _ENDED:
                return False
            try:
                for hook in reversed(self.on_rollback_hooks):
                    try:
                        yield from self._hook(hook, "rollback")
                    except Exception:
                        self.logger.exception(
                            "A rollback hook of transaction %r failed; rolling back the rest.",
                            self.key,
                        )
                self.state = TransactionState.ROLLED_BACK
                for child in reversed(self.children):
                    yield from child._rollback()
            finally:
                self._release()
            return True

    def read(self) -> Hit | None:
        """The record under this transaction's key (a `blocks.results.Hit`: ``.value``, also
        ``.result``), or None. Under READ_COMMITTED it waits for a SERIALIZABLE writer of the
        key in this machine to finish first."""
        if self.store is None or not self.key:
            return None
        if self._lock is None and (self._tree is None or not self._held_in_tree()):
            lock = KeyLock(self.store, self.key)
            lock.acquire()  # a committed record, not one half way through its transaction
            lock.release()
        return self.store.read(self.key)

    # -- helpers ---------------------------------------------------------------------------------

    def _guard(self) -> threading.RLock:
        if self._tree is None:
            self._tree = _Tree()
        return self._tree.guard

    def _held_in_tree(self) -> bool:
        assert self._tree is not None and self.store is not None and self.key
        return lock_name(self.store.storage.describe(), self.key) in self._tree.held

    def _write(self) -> None:
        assert self.store is not None and self.key
        staged = self._staged
        if isinstance(staged, StagedRecord):
            persistence.persist(
                self.store,
                self.key,
                staged.value,
                staged.expiration,
                staged.task,
                staged.components,
                staged.flow,
            )
        else:
            persistence.persist(self.store, self.key, staged, None, "transaction")

    def run_hook(self, hook: TransactionHook, kind: str) -> None:
        """Call ``hook(self)`` (run to its end if it is async), logging it as a `kind` hook."""
        _drive(self._hook(hook, kind))

    def _hook(self, hook: TransactionHook, kind: str) -> Generator[Awaitable[Any], None, None]:
        name = getattr(hook, "__name__", repr(hook))
        self.logger.info("Running %s hook %r", kind, name)
        outcome = hook(self)
        if inspect.isawaitable(outcome):
            yield outcome

    def _release(self) -> None:
        lock, self._lock = self._lock, None
        claim, self._claim = self._claim, None
        if claim is not None and self._tree is not None:
            with self._tree.guard:
                self._tree.held.pop(claim, None)
        if lock is not None:
            lock.release()

    def _release_all(self) -> None:
        """At the outermost transaction's end: let go of any lock still held in the tree (a
        nested transaction nobody committed or rolled back)."""
        tree = self._tree
        if tree is None:
            return
        with tree.guard:
            left = [lock for lock in tree.held.values() if lock is not None]
            tree.held.clear()
        for lock in left:
            lock.release()


@contextmanager
def transaction(
    key: str | None = None,
    store: Any = None,
    commit_mode: CommitMode | None = None,
    isolation_level: IsolationLevel | None = None,
    overwrite: bool = False,
    write_on_commit: bool = True,
    logger: logging.Logger | logging.LoggerAdapter[Any] | None = None,
) -> Iterator[Transaction]:
    """Open a transaction for the ``with`` block (see the module's docstring).

    `key`: the transaction's own record, written when it commits; found when it begins, the
    transaction is already committed. `store`: a `blocks.results.ResultStore`, or a storage as
    ``result_storage=`` takes it (a block, ``"type/name"``, a path or URL); by default the
    current task's or flow's result storage, else ``BLOCKS_RESULTS_STORAGE``. `overwrite`:
    ignore an existing record. `write_on_commit=False`: commit without writing the record.

    Example:
        >>> with transaction(key="nightly", isolation_level=IsolationLevel.SERIALIZABLE) as txn:
        ...     if not txn.is_committed():
        ...         rebuild()
    """
    options = (commit_mode, isolation_level, overwrite, write_on_commit)
    with _made(Transaction, key, store, logger, *options) as txn:
        yield txn


class AsyncTransaction(Transaction):
    """A transaction for async code (`atransaction`): its key's lock is waited for without
    blocking the event loop, and async ``on_commit`` / ``on_rollback`` hooks are awaited on
    the caller's loop. Records are written as in `Transaction` (one object at a time)."""

    async def __aenter__(self) -> AsyncTransaction:
        self.open()
        if self.store is not None and self.key:
            if self.needs_lock():
                lock = KeyLock(self.store, self.key)
                pause = 0.005
                while not lock.acquire(blocking=False):
                    await asyncio.sleep(pause)
                    pause = min(pause * 2, 0.1)
                self.hold(lock)
            if not self.overwrite and self.store.exists(self.key):
                self.state = TransactionState.COMMITTED
        return self

    async def __aexit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        try:
            await _adrive(self._end(failed=exc_type is not None))
        finally:
            self.detach()

    async def commit(self) -> bool:  # type: ignore[override]
        """`Transaction.commit`, its async hooks awaited on this loop."""
        return await _adrive(self._commit())

    async def rollback(self) -> bool:  # type: ignore[override]
        """`Transaction.rollback`, its async hooks awaited on this loop."""
        return await _adrive(self._rollback())


R = TypeVar("R")


def _drive(steps: Generator[Awaitable[Any], None, R]) -> R:
    """Run `steps` from sync code: each awaitable it yields is run to its end."""
    try:
        awaitable = next(steps)
        while True:
            run_coroutine(awaitable)
            awaitable = steps.send(None)
    except StopIteration as done:
        return done.value  # type: ignore[no-any-return]


async def _adrive(steps: Generator[Awaitable[Any], None, R]) -> R:
    """Run `steps` on the running loop: each awaitable it yields is awaited here."""
    try:
        awaitable = next(steps)
        while True:
            await awaitable
            awaitable = steps.send(None)
    except StopIteration as done:
        return done.value  # type: ignore[no-any-return]


@asynccontextmanager
async def atransaction(
    key: str | None = None,
    store: Any = None,
    commit_mode: CommitMode | None = None,
    isolation_level: IsolationLevel | None = None,
    overwrite: bool = False,
    write_on_commit: bool = True,
    logger: logging.Logger | logging.LoggerAdapter[Any] | None = None,
) -> AsyncIterator[AsyncTransaction]:
    """`transaction` for async code (Prefect's ``atransaction``): ``async with``, the key's
    lock waited for without blocking the loop, async hooks awaited on it.

    Example:
        >>> async with atransaction(key="nightly") as txn:
        ...     if not txn.is_committed():
        ...         await rebuild()
    """
    options = (commit_mode, isolation_level, overwrite, write_on_commit)
    async with _made(AsyncTransaction, key, store, logger, *options) as txn:
        yield txn


T = TypeVar("T", bound=Transaction)


def _made(
    kind: type[T],
    key: str | None,
    store: Any,
    logger: logging.Logger | logging.LoggerAdapter[Any] | None,
    commit_mode: CommitMode | None,
    isolation_level: IsolationLevel | None,
    overwrite: bool,
    write_on_commit: bool,
) -> T:
    """A `kind` of transaction as `transaction(...)` makes it: its store resolved (needed with
    a key) and, by default, the current run's logger."""
    resolved = _store(store) if key else (None if store is None else _store(store))
    if logger is None:
        run = get_current()
        logger = run_logger(run) if run is not None else _logger
    return kind(
        key=key,
        store=resolved,
        commit_mode=commit_mode,
        isolation_level=isolation_level,
        overwrite=overwrite,
        write_on_commit=write_on_commit,
        logger=logger,
    )


def _store(store: Any) -> ResultStore:
    """The result store `transaction(store=...)` names, or the current run's."""
    from blocks.results import ResultStore

    if isinstance(store, ResultStore):
        return store
    if store is not None:
        return persistence.result_store(store, None)
    run = get_current()
    storage = serializer = None
    if isinstance(run, TaskRun):
        storage, serializer = run.task.options.result_storage, run.task.options.result_serializer
        run_flow: FlowRun | None = run.flow_run
    else:
        run_flow = run
    if run_flow is not None:
        storage = storage if storage is not None else run_flow.result_storage
        serializer = serializer if serializer is not None else run_flow.result_serializer
    try:
        return persistence.result_store(storage, serializer)
    except Exception as exc:
        raise ConfigurationError(
            f"transaction(key=...) needs a result store and none could be resolved: {exc}. "
            "Pass store=... (a block, a path or a ResultStore) or set BLOCKS_RESULTS_STORAGE."
        ) from exc
