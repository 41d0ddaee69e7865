"""Persisting results for the runtime: resolved stores, one write with a clear error, and the
"compute once" lock of a key.

The runtime hands over a storage spec, a serializer spec, a key and a value; nothing here
knows what a task or a flow is (a task is only a name in an error message):

- `result_store`: `ResultStore.resolve` built once per distinct (storage, serializer) and
  settings, so a cache hit does not rebuild a store;
- `persist`: write one record that expires after a duration; any failure is a `StorageError`
  naming the storage, never a credential;
- `KeyLock` / `key_lock`: concurrent computations of one key compute once. Threads of one
  process queue on an in-process lock, processes on a byte-range lock in
  ``$BLOCKS_HOME/locks/keys.lock`` (see "compute once" below); whoever gets the lock second
  finds the record the first one wrote.

Example:
    >>> store = result_store(None, "json")
    >>> with key_lock(store, "etl/extract-3f2a"):
    ...     if store.read("etl/extract-3f2a") is None:
    ...         persist(store, "etl/extract-3f2a", [1, 2], timedelta(hours=1), "extract")
"""

from __future__ import annotations

import errno
import hashlib
import os
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

from blocks import settings
from blocks.errors import BlocksError, SerializationError, StorageError

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


# -- compute once --------------------------------------------------------------------------------
#
# Across processes, a key's lock is one byte of a POSIX record lock (``fcntl.lockf``) in a single
# file, ``$BLOCKS_HOME/locks/keys.lock``, at an offset taken from the key's hash. Why not a
# `filelock.FileLock` per key (what this was): filelock 4 probes the folder for flock support
# and walks its own registries on every acquire, ~230 µs per miss here, and it leaves one lock
# file per key ever computed; a byte-range lock is one ``fcntl`` call (~1.5 µs) in one file.
# Like flock, the kernel drops a record lock when its process dies (SIGKILL included), so a
# crashed computation never blocks the key. Two rules of POSIX record locks shape the code:
#
# - they belong to the process, not to a thread or a descriptor: threads of one process queue
#   on an in-process `threading.Lock` per key first, and closing *any* descriptor of the file
#   drops all of the process's locks on it, so the file stays open while one of them is held;
# - the kernel's deadlock check (EDEADLK) sees processes, not threads, and can refuse a wait
#   that would in fact end: such a wait is retried after a short sleep.
#
# Without fcntl (Windows), a `filelock.FileLock` per key, as before.

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

_key_locks: dict[str, list[Any]] = {}  # lock name -> [threading.Lock, users]
_key_locks_guard = threading.Lock()
_lock_files: dict[str, list[int]] = {}  # folder -> [descriptor, locks held or wanted through it]
_LOCK_FILE = "keys.lock"
_OPEN_FLAGS = os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_NOFOLLOW", 0)


def _forget_after_fork() -> None:
    # A forked child holds none of its parent's locks, in-process or record locks, and must not
    # wait for threads that do not exist in it.
    global _key_locks_guard
    _key_locks_guard = threading.Lock()
    _key_locks.clear()
    for fd, _ in _lock_files.values():
        with suppress(OSError):
            os.close(fd)  # the child's copy: its parent's locks are not the child's to drop
    _lock_files.clear()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_after_fork)


class KeyLock:
    """The lock of one key in one store: one thread per process, one process per machine.

    ``acquire(blocking=False)`` never waits, so an event loop can poll it between sleeps
    instead of parking a worker thread on it; ``release()`` may run in any thread.
    """

    __slots__ = ("_file", "_folder", "name")

    def __init__(self, store: ResultStore, key: str) -> None:
        self.name = hashlib.blake2b(
            f"{store.storage.describe()}\x00{key}".encode(), digest_size=16
        ).hexdigest()
        self._file: Any = None
        self._folder = ""

    @property
    def _offset(self) -> int:
        # 60 bits of the name: a distinct byte per key (a collision needs ~2^30 keys held at once).
        return int(self.name[:15], 16)

    def acquire(self, blocking: bool = True) -> bool:
        """Take the lock (waiting for it, unless not `blocking`); whether it was taken."""
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
                taken = self._acquire_file(blocking)
                return taken
            finally:
                if not taken:
                    entry[0].release()
        finally:
            if not taken:
                self._leave()

    def _acquire_file(self, blocking: bool) -> bool:
        folder = _lock_folder(settings.blocks_home())
        if fcntl is None:  # pragma: no cover - Windows
            return self._acquire_filelock(folder, blocking)
        fd = _open_lock_file(folder)
        try:
            if _lock_range(fd, self._offset, blocking):
                self._file, self._folder = fd, folder
                return True
        except BaseException:
            _close_lock_file(folder)
            raise
        _close_lock_file(folder)
        return False

    def _acquire_filelock(self, folder: str, blocking: bool) -> bool:  # pragma: no cover
        from filelock import FileLock, Timeout

        os.makedirs(folder, exist_ok=True)
        file_lock = FileLock(os.path.join(folder, f"{self.name}.lock"), thread_local=False)
        try:
            file_lock.acquire(blocking=blocking)
        except Timeout:
            return False
        self._file = file_lock
        return True

    def release(self) -> None:
        """Let the next thread or process in."""
        held, self._file = self._file, None
        if held is None:
            return
        try:
            if isinstance(held, int):
                try:
                    fcntl.lockf(held, fcntl.LOCK_UN, 1, self._offset)
                finally:
                    _close_lock_file(self._folder)
            else:  # pragma: no cover - Windows
                held.release()
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


@lru_cache(maxsize=64)
def _lock_folder(home: Path) -> str:
    # One descriptor per real file: two of them in one process, closing one would drop the
    # locks taken through the other (a home reached through a symlink, say).
    return os.path.join(os.path.realpath(home), "locks")


def _open_lock_file(folder: str) -> int:
    """The descriptor of `folder`'s lock file, counted as in use until `_close_lock_file`."""
    with _key_locks_guard:
        entry = _lock_files.get(folder)
        if entry is None:
            path = os.path.join(folder, _LOCK_FILE)
            try:
                fd = os.open(path, _OPEN_FLAGS, 0o644)
            except FileNotFoundError:
                os.makedirs(folder, exist_ok=True)
                fd = os.open(path, _OPEN_FLAGS, 0o644)
            entry = _lock_files[folder] = [fd, 0]
        entry[1] += 1
        return entry[0]


def _close_lock_file(folder: str) -> None:
    # Closed when no lock of this process goes through it (closing drops them all): a
    # process that moves between homes keeps no descriptor open per home.
    with _key_locks_guard:
        entry = _lock_files[folder]
        entry[1] -= 1
        if entry[1] == 0:
            del _lock_files[folder]
            os.close(entry[0])


def _lock_range(fd: int, offset: int, blocking: bool) -> bool:
    """Lock one byte at `offset` of `fd` for writing; False if held and not `blocking`."""
    pause = 0.001
    while True:
        try:
            fcntl.lockf(fd, fcntl.LOCK_EX if blocking else fcntl.LOCK_EX | fcntl.LOCK_NB, 1, offset)
            return True
        except OSError as exc:
            if exc.errno in (errno.EAGAIN, errno.EACCES) and not blocking:
                return False
            if exc.errno != errno.EDEADLK:
                raise
        time.sleep(pause)  # a wait the kernel's per-process deadlock check refused: retry
        pause = min(pause * 2, 0.05)


@contextmanager
def key_lock(store: ResultStore, key: str) -> Iterator[None]:
    """Hold the lock of `key` in `store` for the ``with`` block (see `KeyLock`)."""
    lock = KeyLock(store, key)
    lock.acquire()
    try:
        yield
    finally:
        lock.release()
