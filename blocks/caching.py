"""Cache keys, the result-store cache, and the "compute once" locks of cached tasks.

`task_input_hash` is the usual ``cache_key_fn``: a stable hash of the task's code fingerprint
(`blocks.fingerprints`) and of each bound parameter's deterministic digest (`blocks.hashing`);
it is the `blocks.cache_policies` ``INPUTS + TASK_SOURCE`` policy. Equal code and inputs give
the same key in every process, on every machine and Python version; an input that cannot be
hashed makes the call run uncached, with a warning.

Concurrent calls with one key compute once: threads of one process queue on an in-process lock,
processes on a `filelock.FileLock` under ``$BLOCKS_HOME/locks/``; whoever gets the lock second
finds the record the first one wrote.

Example:
    >>> @task(cache_key_fn=task_input_hash, cache_expiration=timedelta(hours=1))
    ... def extract(source: str) -> dict: ...
"""

from __future__ import annotations

import hashlib
import inspect
import json
import os
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, NoReturn

from blocks import settings
from blocks.errors import BlocksError, SerializationError, StorageError

if TYPE_CHECKING:
    from blocks.results import ResultStore
    from blocks.runtime._context import TaskRun

__all__ = [
    "KeyLock",
    "call_cache_key_fn",
    "key_lock",
    "persist",
    "result_store",
    "task_input_hash",
]

CacheKeyFn = Callable[..., str | None]


def function_identity(fn: Callable[..., Any]) -> bytes:
    """Bytes that identify a function's code: module, qualified name and bytecode.

    Kept for old callers; cache keys use `blocks.fingerprints.fingerprint` instead.
    """
    code = getattr(fn, "__code__", None)
    parts = [
        getattr(fn, "__module__", "") or "",
        getattr(fn, "__qualname__", "") or repr(fn),
        code.co_code.hex() if code is not None else "",
    ]
    return "\x00".join(parts).encode()


def hash_parameters(identity: bytes, parameters: dict[str, Any]) -> str:
    """A 32-hex-digit key from `identity` and `parameters` (JSON, else cloudpickle)."""
    try:
        payload = (
            b"J"
            + json.dumps(parameters, sort_keys=True, separators=(",", ":"), allow_nan=True).encode()
        )
    except (TypeError, ValueError):
        import cloudpickle

        payload = b"P" + cloudpickle.dumps(parameters, protocol=5)
    digest = hashlib.blake2b(identity, digest_size=16)
    digest.update(payload)
    return digest.hexdigest()


def task_input_hash(context: TaskRun, parameters: dict[str, Any]) -> str | None:
    """Cache key from the task's code and its inputs: same code + same inputs = hit.

    None (run uncached, with a `blocks.hashing.CacheKeyWarning`) when an input has no
    deterministic digest.

    Example:
        >>> @task(cache_key_fn=task_input_hash)
        ... def double(x: int) -> int:
        ...     return 2 * x
    """
    from blocks.runtime.keys._policies import DEFAULT_INPUT_HASH

    return DEFAULT_INPUT_HASH.resolve(context, parameters, {})[0]


def key_fn_arity(fn: CacheKeyFn) -> int:
    """0 if `fn` takes no arguments (``lambda: "static_key"``), else 2 ``(context, parameters)``."""
    try:
        params = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):
        return 2
    positional = [
        p
        for p in params
        if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD, p.VAR_POSITIONAL)
    ]
    return 0 if not positional else 2


def call_cache_key_fn(
    fn: CacheKeyFn, arity: int, run: TaskRun, parameters: dict[str, Any]
) -> str | None:
    """The key `fn` returns for this run (None: do not cache), validated as a storage key."""
    key = fn() if arity == 0 else fn(run, parameters)
    if key is None:
        return None
    from blocks.results import validate_key

    return validate_key(key)


# -- resolved result stores, one per (storage, serializer, settings) ---------------------------

_stores: dict[tuple[Any, ...], tuple[Any, Any, ResultStore]] = {}
_stores_lock = threading.Lock()


def _spec_key(spec: Any) -> Any:
    if spec is None or isinstance(spec, str):
        return spec
    if isinstance(spec, os.PathLike):
        return os.fspath(spec)
    return ("id", id(spec))  # a Block or Serializer instance: kept alive in the cache entry


def result_store(storage: Any, serializer: Any) -> ResultStore:
    """`ResultStore.resolve(storage, serializer)`, built once per distinct pair and settings.

    The settings that change what None or a slug means (``BLOCKS_HOME``, the registry URL,
    the default storage and serializer) are part of the cache key.
    """
    env = os.environ
    key = (
        _spec_key(storage),
        _spec_key(serializer),
        env.get("BLOCKS_HOME"),
        env.get("BLOCKS_REGISTRY_URL"),
        env.get("BLOCKS_RESULTS_STORAGE"),
        env.get("BLOCKS_RESULTS_SERIALIZER"),
    )
    entry = _stores.get(key)
    if entry is None:
        from blocks.results import ResultStore

        store = ResultStore.resolve(storage, serializer)
        with _stores_lock:
            entry = _stores.setdefault(key, (storage, serializer, store))
    return entry[2]


def clear_store_cache() -> None:
    """Forget resolved stores (after a saved storage block was changed, say)."""
    with _stores_lock:
        _stores.clear()


def persist(
    store: ResultStore,
    key: str,
    value: Any,
    expiration: timedelta | None,
    task: str,
    components: dict[str, str] | None = None,
    flow: str | None = None,
) -> None:
    """Write `value` under `key`, expiring after `expiration`; failures become `StorageError`.

    The message names the storage (bucket, endpoint) and never a credential: secret fields
    of the storage block are masked in whatever the backend said.
    """
    expires = None if expiration is None else datetime.now(UTC) + expiration
    try:
        store.write(key, value, expires=expires, task=task, components=components, flow=flow)
    except BlocksError as exc:
        if not isinstance(exc, SerializationError):
            raise  # ours already say where and never carry secrets
        # A SerializationError names neither the task nor the storage: wrapped as before it
        # joined the BlocksError tree.
        _persist_failed(store, task, exc)
    except Exception as exc:
        _persist_failed(store, task, exc)


def _persist_failed(store: ResultStore, task: str, exc: Exception) -> NoReturn:
    from blocks.filesystems.base import scrub

    raise StorageError(
        f"Could not persist the result of task {task!r} to {store.storage.describe()}: "
        f"{type(exc).__name__}: {scrub(str(exc), store.storage.secret_values())[:500]}. "
        "Check that the storage "
        "is reachable and writable."
    ) from exc


# -- compute once --------------------------------------------------------------------------------

_key_locks: dict[str, list[Any]] = {}  # lock name -> [threading.Lock, users]
_key_locks_guard = threading.Lock()


class KeyLock:
    """The lock of one key in one store: one thread per process, one process per machine.

    ``acquire(blocking=False)`` never waits, so an event loop can poll it between sleeps
    instead of parking a worker thread on it; ``release()`` may run in any thread.
    """

    __slots__ = ("_file", "name")

    def __init__(self, store: ResultStore, key: str) -> None:
        self.name = hashlib.blake2b(
            f"{store.storage.describe()}\x00{key}".encode(), digest_size=16
        ).hexdigest()
        self._file: Any = None

    def acquire(self, blocking: bool = True) -> bool:
        """Take the lock (waiting for it, unless not `blocking`); whether it was taken."""
        from filelock import FileLock, Timeout

        with _key_locks_guard:
            entry = _key_locks.get(self.name)
            if entry is None:
                entry = _key_locks[self.name] = [threading.Lock(), 0]
            entry[1] += 1
        taken = False
        try:
            if not entry[0].acquire(blocking):
                return False
            try:
                locks = settings.blocks_home() / "locks"
                locks.mkdir(parents=True, exist_ok=True)
                file_lock = FileLock(str(locks / f"{self.name}.lock"), thread_local=False)
                try:
                    file_lock.acquire(blocking=blocking)
                except Timeout:
                    return False
                self._file = file_lock
                taken = True
                return True
            finally:
                if not taken:
                    entry[0].release()
        finally:
            if not taken:
                self._leave()

    def release(self) -> None:
        """Let the next thread or process in."""
        file_lock, self._file = self._file, None
        if file_lock is None:
            return
        try:
            file_lock.release()
        finally:
            with _key_locks_guard:
                entry = _key_locks[self.name]
            entry[0].release()
            self._leave()

    def _leave(self) -> None:
        with _key_locks_guard:
            entry = _key_locks[self.name]
            entry[1] -= 1
            if entry[1] == 0:
                del _key_locks[self.name]


@contextmanager
def key_lock(store: ResultStore, key: str) -> Iterator[None]:
    """Hold the lock of `key` in `store` for the ``with`` block (see `KeyLock`)."""
    lock = KeyLock(store, key)
    lock.acquire()
    try:
        yield
    finally:
        lock.release()
