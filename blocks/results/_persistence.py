"""Persisting results for the runtime: resolved stores, one write with a clear error, and the
"compute once" lock of a key.

The runtime hands over a storage spec, a serializer spec, a key and a value; nothing here
knows what a task or a flow is (a task is only a name in an error message):

- `result_store`: `ResultStore.resolve` built once per distinct (storage, serializer) and
  settings, so a cache hit does not rebuild a store;
- `persist`: write one record that expires after a duration; any failure is a `StorageError`
  naming the storage, never a credential;
- `KeyLock` / `key_lock`: concurrent computations of one key compute once. Threads of one
  process queue on an in-process lock, processes on a byte-range lock in a private
  ``$BLOCKS_HOME/locks/keys.lock``, for at most ``BLOCKS_LOCK_TIMEOUT`` seconds (see
  `blocks.results._locks`); whoever gets the lock second finds the record the first one wrote.

Example:
    >>> store = result_store(None, "json")
    >>> with key_lock(store, "etl/extract-3f2a"):
    ...     if store.read("etl/extract-3f2a") is None:
    ...         persist(store, "etl/extract-3f2a", [1, 2], timedelta(hours=1), "extract")
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, NoReturn

from blocks import settings
from blocks.errors import BlocksError, SerializationError, StorageError

# The machine lock, and then the key's lease across machines (`blocks.results._leases`).
from blocks.results._leases import SharedKeyLock as KeyLock

if TYPE_CHECKING:
    from blocks.results._store import ResultStore

__all__ = [
    "KeyLock",
    "clear_store_cache",
    "key_lock",
    "persist",
    "result_store",
]

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
    the default storage and serializer: `settings.result_store_stamp`) are part of the cache
    key, read as one cheap stamp per call.
    """
    key = (_spec_key(storage), _spec_key(serializer), settings.result_store_stamp())
    entry = _stores.get(key)
    if entry is None:
        from blocks.results._store import ResultStore

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
) -> datetime | None:
    """Write `value` under `key`, expiring after `expiration`; failures become `StorageError`.

    Returns when the record expires (None: never), as its header says.

    The message names the storage (bucket, endpoint) and never a credential: secret fields
    of the storage block are masked in whatever the backend said.
    """
    expires = None if expiration is None else datetime.now(UTC) + expiration
    try:
        store.write(key, value, expires=expires, task=task, components=components, flow=flow)
        return expires
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


# -- compute once: the lock lives in `blocks.results._locks` ----------------------------------


@contextmanager
def key_lock(store: ResultStore, key: str) -> Iterator[None]:
    """Hold the lock of `key` in `store` for the ``with`` block (see `KeyLock`: after a wait
    past ``BLOCKS_LOCK_TIMEOUT`` the block runs without it)."""
    lock = KeyLock(store, key)
    lock.acquire()
    try:
        yield
    finally:
        lock.release()
