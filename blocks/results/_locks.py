"""The "compute once" lock of a cache key: one thread per process, one process per machine, a
private lock file, and a wait that ends.

`KeyLock(store, key)` is what the runtime takes around a cache miss: whoever gets it second
finds the record the first one wrote. Threads of one process queue on an in-process lock per
key, processes on one byte of a POSIX record lock in ``$BLOCKS_HOME/locks/keys.lock``.

- **Private.** The folder is 0700 and the file 0600, created that way whatever the umask; a
  folder or file with lax modes (an older version made them 0755 and 0644) is replaced by a
  fresh private one, and one owned by another user, or a symlink, is refused with a
  `StorageError` that says what to remove. Another local user cannot open the file, so cannot
  hold a key's lock.
- **A wait that ends.** A waiter gives up after ``BLOCKS_LOCK_TIMEOUT`` seconds (a holder
  that is stopped or hung) and computes the value itself, as a lone writer would: the record
  is written atomically, so a reader sees one whole value or none, never a wrong one. A
  warning on the ``blocks.results`` logger says so, naming the holder's pid. Waiters that
  give up together take the key over together: they queue on a second byte of the key, so
  one computes and the others read its record.
- **One lock file at a time.** After taking a key's byte, the holder checks that the path
  still names the file it locked (``stat`` against ``fstat``); if the file was deleted or
  replaced meanwhile, it lets go and starts over on the file the path names now. A new lock
  file is only ever created (or a lax one replaced) under an exclusive ``flock`` of the
  folder, which every process holds shared while it holds or waits for a key through that
  folder: so it is created only once nobody holds a key on the old one, and a file deleted
  while held never gives two holders.
- **One name per storage.** The lock's name is the storage's real identity and the key: a
  local folder by its real path (symlinks resolved), a remote one by its normalized URL, so
  two paths to one storage share one lock.

Example:
    >>> lock = KeyLock(store, "etl/extract-3f2a")
    >>> lock.acquire()
    True
    >>> lock.release()
"""

from __future__ import annotations

import errno
import hashlib
import logging
import os
import re
import shutil
import stat
import struct
import sys
import tempfile
import threading
import time
from contextlib import suppress
from typing import TYPE_CHECKING, Any

from blocks import settings
from blocks.errors import StorageError

if TYPE_CHECKING:
    from blocks.results._store import ResultStore

__all__ = ["KeyLock", "lock_name", "storage_identity"]

# -- how it is built ----------------------------------------------------------------------------
#
# A key's lock is one byte of a POSIX record lock (``fcntl.lockf``) in a single file, at an
# offset taken from the key's hash. Why not a `filelock.FileLock` per key (what this was):
# filelock 4 probes the folder for flock support and walks its own registries on every
# acquire, ~230 µs per miss here, and it leaves one lock file per key ever computed; a byte-range
# lock is one ``fcntl`` call (~1.5 µs) in one file. Like flock, the kernel drops a record lock
# when its process dies (SIGKILL included), so a crashed computation never blocks the key.
# Two rules of POSIX record locks shape the code:
#
# - they belong to the process, not to a thread or a descriptor: threads of one process queue
#   on an in-process `threading.Lock` per key first, and closing *any* descriptor of the file
#   drops all of the process's locks on it, so the file stays open while one of them is held
#   or wanted, and a process opens one descriptor per real file;
# - there is no timed wait: a waiter tries without blocking and sleeps between tries (from
#   1 ms, doubling, to 20 ms), which also keeps the kernel's per-process deadlock check
#   (EDEADLK, blind to threads) out of the way.
#
# The folder's flock (the "gate") is what makes a deleted lock file safe: the alternative,
# checking the path only after locking, lets a newcomer create a second file and lock the same
# key in it while the first holder still computes. A process holds the gate shared from before
# it tries a key's byte until it lets go of its last key there, and creates or replaces the
# file only while holding it exclusively: two holders of one key in two files would need the
# second file to be created while the first holder held the gate shared. Deleting the whole
# ``locks`` folder while keys are held is not covered (the gate goes with it). The file and
# the gate stay open between uses (one per process, for its current home), so a miss costs two
# ``flock`` calls, two ``lockf`` calls and one ``stat`` rather than an ``open``/``close``.
#
# Without fcntl (Windows), a `filelock.FileLock` per key, as before.

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

_FOLDER = "locks"
_LOCK_FILE = "keys.lock"
_FOLDER_MODE = 0o700
_FILE_MODE = 0o600
_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_CLOEXEC = getattr(os, "O_CLOEXEC", 0)
_DIR_FLAGS = os.O_RDONLY | getattr(os, "O_DIRECTORY", 0) | _NOFOLLOW | _CLOEXEC
_FILE_FLAGS = os.O_RDWR | _NOFOLLOW | _CLOEXEC
_FIRST_PAUSE, _LAST_PAUSE = 0.001, 0.02
_TAKEOVERS = 1  # after a timed-out wait, one more (on the byte of those that gave up)

_logger = logging.getLogger("blocks.results")

_key_locks: dict[str, list[Any]] = {}  # lock name -> [threading.Lock, users]
_key_locks_guard = threading.Lock()


class _LockFile:
    """A process's open lock file in one home: the file, its folder's gate (held shared while
    the entry has users: locks held or wanted through it), kept open between uses."""

    __slots__ = ("fd", "gate", "guard", "home", "identity", "path", "retired", "users")

    def __init__(self, home: str, fd: int, gate: int, identity: tuple[int, int]) -> None:
        self.home, self.fd, self.gate, self.identity = home, fd, gate, identity
        self.path = os.path.join(home, _FOLDER, _LOCK_FILE)
        self.users = 0
        self.retired = False  # no longer handed out: closed by its last user
        self.guard = threading.Lock()  # users, retired and the gate's flock change under it

    def still_named(self) -> bool:
        """Whether the lock file's path still names this file (not deleted, not replaced)."""
        try:
            info = os.stat(self.path, follow_symlinks=False)
        except OSError:
            return False
        return (info.st_dev, info.st_ino) == self.identity

    def close(self) -> None:
        os.close(self.fd)  # drops this process's record locks on it: none are left
        os.close(self.gate)  # and the gate's flock with it


_lock_files: dict[str, _LockFile] = {}  # real home -> the lock file in use there


def _forget_after_fork() -> None:
    # A forked child holds none of its parent's locks, in-process or record locks, and must not
    # wait for threads that do not exist in it. Closing its copies of the descriptors drops
    # nothing of the parent's: record locks are the parent's, the gate's flock is released
    # only when the parent closes its own copy too.
    global _key_locks_guard, _opening
    _key_locks_guard, _opening = threading.Lock(), threading.Lock()
    _key_locks.clear()
    for entry in _lock_files.values():
        with suppress(OSError):
            entry.close()
    _lock_files.clear()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_after_fork)


# -- the lock's name ----------------------------------------------------------------------------

_identities: dict[str, str] = {}
_SCHEME_ALIASES = {"s3a": "s3", "gcs": "gs", "local": "file"}
_SLASHES = re.compile(r"/{2,}")


def storage_identity(described: str) -> str:
    """One name per real storage, from its ``describe()``: a local folder's real path
    (symlinks resolved), else the URL normalized (scheme and host lowercased, doubled and
    trailing slashes dropped, ``s3a://`` as ``s3://``, ``gcs://`` as ``gs://``).

    Resolved once per process and description (a symlink retargeted under a running process
    keeps the old name in it).

    Example:
        >>> storage_identity("S3A://bucket//results/")
        's3://bucket/results'
    """
    found = _identities.get(described)
    if found is None:
        found = _identity(described)
        if len(_identities) >= 256:
            _identities.clear()
        _identities[described] = found
    return found


def _identity(described: str) -> str:
    scheme, sep, rest = described.partition("://")
    if not sep:
        return os.path.realpath(described)
    scheme = scheme.lower()
    scheme = _SCHEME_ALIASES.get(scheme, scheme)
    if scheme == "file":
        return "file://" + os.path.realpath(rest or "/")
    rest, sep, endpoint = rest.partition(" (endpoint ")
    where, _, path = rest.partition("/")
    path = _SLASHES.sub("/", path).strip("/")
    text = f"{scheme}://{where.lower()}" + (f"/{path}" if path else "")
    if sep:
        text += f" (endpoint {_identity(endpoint.rstrip(')').strip())})"
    return text


def lock_name(described: str, key: str) -> str:
    """The name of `key`'s lock in the storage `described`: 32 hex digits."""
    identity = storage_identity(described)
    return hashlib.blake2b(f"{identity}\x00{key}".encode(), digest_size=16).hexdigest()


# -- the lock -----------------------------------------------------------------------------------


class KeyLock:
    """The lock of one key in one store: one thread per process, one process per machine,
    for at most ``BLOCKS_LOCK_TIMEOUT`` seconds of waiting.

    ``acquire(blocking=False)`` never waits, so an event loop can poll it between sleeps
    instead of parking a worker thread on it; ``release()`` may run in any thread.

    A wait, blocking or polled (timed from the first refused try), ends after the timeout with
    a warning: the waiters that gave up on a stuck holder then queue on a second byte of the
    key, so one of them computes and the others read its record. A second wait past the
    timeout (or one for a run of this same process) makes `acquire` return True *without*
    the lock (`held` is False): the caller computes and writes as a lone writer would.
    """

    __slots__ = ("_entry", "_generation", "_since", "_thread", "key", "name", "storage")

    def __init__(self, store: ResultStore, key: str) -> None:
        self.storage = store.storage.describe()
        self.key = key
        self.name = lock_name(self.storage, key)
        self._entry: Any = None  # the _LockFile whose byte is held (a FileLock on Windows)
        self._thread = False  # whether the in-process lock is held
        self._since: float | None = None  # when the first try was refused
        self._generation = 0  # 1: waiting on the byte of those that took the key over

    @property
    def _offset(self) -> int:
        # 60 bits of the name: a distinct byte per key (a collision needs ~2^30 keys held at
        # once); the waiters that took a key over from a stuck holder use the next generation's.
        if not self._generation:
            return int(self.name[:15], 16)
        taken = hashlib.blake2b(f"{self.name}/{self._generation}".encode(), digest_size=8)
        return int(taken.hexdigest()[:15], 16)

    @property
    def held(self) -> bool:
        """Whether this process holds the key's lock across processes (False after a wait
        that timed out)."""
        return self._entry is not None

    def acquire(self, blocking: bool = True) -> bool:
        """Take the lock (waiting for it, unless not `blocking`); whether to go on.

        True: the lock is held, or the wait timed out and the caller computes alone.
        """
        with _key_locks_guard:
            entry = _key_locks.get(self.name)
            if entry is None:
                entry = _key_locks[self.name] = [threading.Lock(), 0]
            entry[1] += 1
        done = False
        try:
            if not entry[0].acquire(False):
                if not blocking and not self._expired():
                    return False
                if not entry[0].acquire(timeout=self._left()):
                    self._give_up(None, "computing it without the lock")
                    done = True
                    return True
            self._thread = True
            try:
                done = self._acquire_file(blocking)
            finally:
                if not done:
                    self._thread = False
                    entry[0].release()
            return done
        finally:
            if not done:
                self._leave()

    def _left(self) -> float:
        """Seconds left to wait (-1: forever, as `threading.Lock.acquire` wants it)."""
        timeout = settings.lock_timeout()
        if timeout == float("inf"):
            return -1
        if self._since is None:
            self._since = time.monotonic()
        return max(0.0, self._since + timeout - time.monotonic())

    def _expired(self) -> bool:
        return self._left() == 0.0

    def _acquire_file(self, blocking: bool) -> bool:
        home = _real_home()
        if fcntl is None:  # pragma: no cover - Windows
            return self._acquire_filelock(home, blocking)
        lock_file: _LockFile | None = _open_lock_file(home, self)
        pause = _FIRST_PAUSE
        try:
            while True:
                assert lock_file is not None
                if _try_lock(lock_file.fd, self._offset):
                    if lock_file.still_named():
                        self._entry, lock_file = lock_file, None
                        return True
                    # Deleted or replaced while we waited: let go, and start over on the
                    # file the path names now (never two holders in two files).
                    fcntl.lockf(lock_file.fd, fcntl.LOCK_UN, 1, self._offset)
                    retired, lock_file = lock_file, None
                    _retire(retired)
                    _close_lock_file(retired)
                    lock_file = _open_lock_file(home, self)
                    continue
                if not self._expired():
                    if not blocking:
                        return False
                    time.sleep(pause)
                    pause = min(pause * 2, _LAST_PAUSE)
                    continue
                holder = holder_pid(lock_file.fd, self._offset)
                if self._generation < _TAKEOVERS:
                    # The waiters that gave up queue on the key's next byte: one of them
                    # computes, the others read its record (one more wait at most).
                    self._give_up(holder, "taking the key over")
                    self._generation += 1
                    self._since, pause = None, _FIRST_PAUSE
                    continue
                self._give_up(holder, "computing it without the lock")
                return True
        finally:
            if lock_file is not None:
                _close_lock_file(lock_file)

    def _give_up(self, pid: int | None, then: str) -> None:
        waited = 0.0 if self._since is None else time.monotonic() - self._since
        if pid is None:
            holder = "a run in this process"
        elif pid == 0:
            holder = "a process outside this PID namespace"
        else:
            holder = f"process {pid}"
        _logger.warning(
            "Waited %.1f s for the compute-once lock of key %r in %s, held by %s (stopped or "
            "hung?): %s (BLOCKS_LOCK_TIMEOUT=%s s). The record is written atomically.",
            waited,
            self.key,
            self.storage,
            holder,
            then,
            settings.lock_timeout(),
        )

    def _acquire_filelock(self, home: str, blocking: bool) -> bool:  # pragma: no cover
        from filelock import FileLock, Timeout

        folder = os.path.join(home, _FOLDER)
        os.makedirs(folder, mode=_FOLDER_MODE, exist_ok=True)
        file_lock = FileLock(os.path.join(folder, f"{self.name}.lock"), thread_local=False)
        left = self._left() if blocking else 0
        try:
            file_lock.acquire(timeout=left)
        except Timeout:
            if not blocking and not self._expired():
                return False
            self._give_up(None, "computing it without the lock")
            return True
        self._entry = file_lock
        return True

    def release(self) -> None:
        """Let the next thread or process in (a no-op after the last release)."""
        held, self._entry = self._entry, None
        thread, self._thread = self._thread, False
        offset = self._offset
        self._since, self._generation = None, 0
        if held is None and not thread:
            return
        try:
            if isinstance(held, _LockFile):
                try:
                    fcntl.lockf(held.fd, fcntl.LOCK_UN, 1, offset)
                finally:
                    _close_lock_file(held)
            elif held is not None:  # pragma: no cover - Windows
                held.release()
        finally:
            if thread:
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


# -- the lock file --------------------------------------------------------------------------------


def _real_home() -> str:
    return _resolved_home(str(settings.blocks_home()))


_homes: dict[str, str] = {}


def _resolved_home(home: str) -> str:
    # One descriptor per real file: with two in one process, closing one would drop the locks
    # taken through the other (a home reached through a symlink, say).
    real = _homes.get(home)
    if real is None:
        if len(_homes) >= 256:
            _homes.clear()
        real = _homes[home] = os.path.realpath(home)
    return real


def _try_lock(fd: int, offset: int) -> bool:
    """Lock one byte at `offset` of `fd` for writing, without waiting; False if held."""
    try:
        fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB, 1, offset)
    except OSError as exc:
        if exc.errno in (errno.EAGAIN, errno.EACCES):
            return False
        raise
    return True


def holder_pid(fd: int, offset: int) -> int | None:
    """Which process holds the byte at `offset` of `fd` (Linux: ``F_GETLK``; 0 outside this
    machine's PID namespace), None if nobody holds it (or not on Linux)."""
    if sys.platform != "linux":
        return None
    query = struct.pack("hhqqi", fcntl.F_WRLCK, os.SEEK_SET, offset, 1, 0)
    try:
        answer = fcntl.fcntl(fd, fcntl.F_GETLK, query)
    except OSError:
        return None
    kind, _, _, _, pid = struct.unpack("hhqqi", answer)
    return None if kind == fcntl.F_UNLCK else int(pid)


def _open_lock_file(home: str, lock: KeyLock) -> _LockFile:
    """The lock file in use in `home`, opened (and made safe) if needed, counted as in use
    (its gate held shared) until `_close_lock_file`."""
    with _key_locks_guard:
        entry = _lock_files.get(home)
    if entry is not None and _enter(entry, lock):
        return entry
    # One thread opens at a time (a second descriptor of the file, closed, would drop the
    # locks taken through the first), without the guard: opening may wait for the gate, and
    # threads holding keys must be able to release meanwhile.
    with _opening:
        with _key_locks_guard:
            entry = _lock_files.get(home)
        if entry is not None and _enter(entry, lock):
            return entry
        entry = _open_safely(home, lock)
        entry.users = 1
        with _key_locks_guard:
            idle = [e for h, e in _lock_files.items() if h != home and not e.users]
            _lock_files[home] = entry
        for other in idle:  # a process that moves between homes keeps one open
            _retire(other)
        return entry


_opening = threading.Lock()


def _enter(entry: _LockFile, lock: KeyLock) -> bool:
    """Count a user of `entry` in, taking its gate shared for the first; False if retired."""
    with entry.guard:
        if entry.retired:
            return False
        if not entry.users and not _flock(entry.gate, fcntl.LOCK_SH, lock):
            _warn_gate(os.path.dirname(entry.path), "shared")
        entry.users += 1
        return True


def _close_lock_file(entry: _LockFile) -> None:
    """Count a user of `entry` out: the last one lets go of the gate (an idle process holds
    none) and closes a retired entry (closing drops all of this process's locks on the file,
    so never while one is held)."""
    with entry.guard:
        entry.users -= 1
        if entry.users:
            return
        if entry.retired:
            entry.close()
        else:
            fcntl.flock(entry.gate, fcntl.LOCK_UN)


def _retire(entry: _LockFile) -> None:
    """Stop handing out `entry` (its path names another file now, or it is idle in another
    home); closed now if unused, else by its last user."""
    with _key_locks_guard:
        if _lock_files.get(entry.home) is entry:
            del _lock_files[entry.home]
    with entry.guard:
        if entry.retired:
            return
        entry.retired = True
        if not entry.users:
            entry.close()


def _open_safely(home: str, lock: KeyLock) -> _LockFile:
    """Open `home`'s lock file with its folder's gate held shared, creating it or replacing a
    lax one with the gate held exclusively; refuse one that is not ours."""
    folder = os.path.join(home, _FOLDER)
    for _ in range(100):
        gate, lax = _open_folder(home, folder)
        try:
            if not _flock(gate, fcntl.LOCK_SH, lock):
                _warn_gate(folder, "shared")
            opened = None if lax else _open_file(gate, folder, create=False)
            if opened is None:  # missing or lax: create or replace it, gate held exclusively
                if not _flock(gate, fcntl.LOCK_EX, lock):
                    _warn_gate(folder, "exclusive")
                if not _names(folder, gate):
                    os.close(gate)  # replaced meanwhile by another process: start over
                    continue
                opened = None if lax else _open_file(gate, folder, create=True)
                if opened is None:
                    _replace_folder(home, folder)
                    os.close(gate)
                    continue
                if not _flock(gate, fcntl.LOCK_SH, lock):  # back to shared
                    _warn_gate(folder, "shared")
        except BaseException:
            os.close(gate)
            raise
        return _LockFile(home, opened[0], gate, opened[1])
    raise StorageError(  # pragma: no cover - something replaces the folder in a loop
        f"Could not open the compute-once lock file in {folder}: it keeps changing."
    )


def _flock(fd: int, operation: int, lock: KeyLock) -> bool:
    """`operation` on `fd`'s flock, waiting at most the lock timeout; whether it was taken."""
    pause = _FIRST_PAUSE
    while True:
        try:
            fcntl.flock(fd, operation | fcntl.LOCK_NB)
            return True
        except OSError as exc:
            if exc.errno not in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
                raise
        if lock._expired():
            return False
        time.sleep(pause)
        pause = min(pause * 2, _LAST_PAUSE)


def _warn_gate(folder: str, how: str) -> None:
    _logger.warning(
        "The lock folder %s stayed locked past BLOCKS_LOCK_TIMEOUT (%s s): going on without "
        "holding it %s; if its lock file was just deleted, a key may be computed twice.",
        folder,
        settings.lock_timeout(),
        how,
    )


def _open_folder(home: str, folder: str) -> tuple[int, bool]:
    """A descriptor of `folder` (created private if missing) and whether its modes are lax;
    refused if it is not ours or not a folder."""
    try:
        fd = os.open(folder, _DIR_FLAGS)
    except FileNotFoundError:
        try:
            os.makedirs(home, mode=_FOLDER_MODE, exist_ok=True)
            with suppress(FileExistsError):
                os.mkdir(folder, _FOLDER_MODE)  # never laxer than 0700, whatever the umask
        except OSError as exc:
            _open_or_refuse(folder, exc)
        fd = _open_or_refuse(folder)
    except OSError as exc:
        fd = _open_or_refuse(folder, exc)
    try:
        info = os.fstat(fd)
        _refuse_if_foreign(folder, info, "folder")
        mode = stat.S_IMODE(info.st_mode)
        if mode != _FOLDER_MODE and not mode & 0o077:
            os.fchmod(fd, _FOLDER_MODE)  # ours, too strict (a umask of 0277): usable, exactly
    except BaseException:
        os.close(fd)
        raise
    return fd, bool(mode & 0o077)


def _open_or_refuse(folder: str, exc: OSError | None = None) -> int:
    try:
        if exc is not None:
            raise exc
        return os.open(folder, _DIR_FLAGS)
    except OSError as error:
        if error.errno in (errno.ELOOP, errno.ENOTDIR):
            raise _unsafe(folder, "is a symlink or not a folder, or BLOCKS_HOME is not") from error
        raise StorageError(
            f"Could not open the compute-once lock folder {folder}: {error.strerror}. Check "
            "that BLOCKS_HOME is a folder this user can write."
        ) from error


def _open_file(gate: int, folder: str, *, create: bool) -> tuple[int, tuple[int, int]] | None:
    """The lock file's descriptor and (device, inode); None if lax (to replace), or missing
    and not to `create` (only with the gate held exclusively)."""
    path = os.path.join(folder, _LOCK_FILE)
    try:
        fd = os.open(_LOCK_FILE, _FILE_FLAGS, dir_fd=gate)
    except FileNotFoundError:
        if not create:
            return None
        fd = _create_file(gate)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise _unsafe(path, "is a symlink") from exc
        raise StorageError(
            f"Could not open the compute-once lock file {path}: {exc.strerror}."
        ) from exc
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise _unsafe(path, "is not a regular file")
        _refuse_if_foreign(path, info, "file")
        if info.st_mode & 0o077:
            os.close(fd)
            return None  # lax: whoever opened it then may still hold it open; replace it
    except BaseException:
        with suppress(OSError):
            os.close(fd)
        raise
    return fd, (info.st_dev, info.st_ino)


def _create_file(gate: int) -> int:
    """Create the lock file in the folder `gate` (held exclusively): 0600, whatever the umask."""
    fd = os.open(_LOCK_FILE, _FILE_FLAGS | os.O_CREAT | os.O_EXCL, _FILE_MODE, dir_fd=gate)
    os.fchmod(fd, _FILE_MODE)  # never laxer than 0600 on creation; exactly 0600 now
    return fd


def _names(folder: str, gate: int) -> bool:
    """Whether `folder` still names the folder open as `gate`."""
    try:
        there, ours = os.stat(folder, follow_symlinks=False), os.fstat(gate)
    except OSError:
        return False
    return (there.st_dev, there.st_ino) == (ours.st_dev, ours.st_ino)


def _replace_folder(home: str, folder: str) -> None:
    """Swap a lax lock folder (or one holding a lax lock file) for a fresh private one.

    Replaced, not chmod-ed: a descriptor opened while it was lax would keep working after a
    chmod. Called with the old folder's gate held exclusively (no process of ours holds a key
    in it); whoever kept a descriptor of it is left with a file nobody else locks.
    """
    fresh = tempfile.mkdtemp(prefix=f".{_FOLDER}-", dir=home)  # 0700
    old = f"{fresh}-old"
    try:
        os.chmod(fresh, _FOLDER_MODE)
        gate = os.open(fresh, _DIR_FLAGS)
        try:
            os.close(_create_file(gate))
        finally:
            os.close(gate)
        try:
            os.rename(folder, old)
        except FileNotFoundError:
            return  # another process replaced it first
        with suppress(OSError):  # another process made a new one in between: private too
            os.rename(fresh, folder)
        _logger.warning(
            "The compute-once lock folder %s or its lock file had lax modes (open to other "
            "users): replaced by a private one (folder 0700, file 0600).",
            folder,
        )
    finally:
        shutil.rmtree(fresh, ignore_errors=True)
        shutil.rmtree(old, ignore_errors=True)


def _refuse_if_foreign(path: str, info: os.stat_result, what: str) -> None:
    uid = os.geteuid()
    if info.st_uid != uid:
        raise _unsafe(
            path,
            f"is owned by user id {info.st_uid}, not by this user ({uid}): another user "
            f"could hold or fake the locks in this {what}",
        )


def _unsafe(path: str, why: str) -> StorageError:
    return StorageError(
        f"Refusing the compute-once lock {path}: it {why}. Remove it (as its owner or root; "
        "it holds no data, blocks recreates it private) and run again."
    )
