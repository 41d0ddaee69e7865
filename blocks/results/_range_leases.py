"""Compute-once leases of a local or NFS folder as byte-range locks: no file per cache miss.

A lease of a folder (`blocks.results._leases`) used to be a file per key in ``.blocks-leases``
(created, renamed aside and unlinked: three journaled directory operations per cache miss).
Where byte-range locks are trusted, it is one byte of a POSIX record lock (``fcntl.lockf``)
in ONE long-lived file, ``.blocks-leases/.keys.lock``, at an offset taken from the key's lock
name (60 bits, as the machine lock's: a collision only makes two keys wait for each other):

- **Held while the holder lives.** The kernel drops a record lock when its process dies
  (SIGKILL included), so a waiter takes a killed holder's key over at its next try, with no
  lease length to wait out and no heartbeat; on NFS the lock is the server's (NLM or NFSv4
  locks), so it excludes other machines too.
- **Trusted only where it excludes.** Linux, and the folder's mount (``/proc/self/mountinfo``)
  a local file system or an NFS one that forwards locks (not ``nolock``/``local_lock=``
  ``posix|all``, where a lock is local to one client). Elsewhere (other systems, FUSE, SMB...)
  the lease files, unchanged.
- **Record locks, not OFD locks.** A record lock belongs to the process: a forked child does not
  inherit it (an OFD lock would be kept by a child that outlives a killed parent). Closing any
  descriptor of the file drops all of a process's locks on it, so each process opens the file
  once per folder and keeps it open; threads of one process are kept apart by the machine
  lock's in-process lock of the key, taken first.
- **Who holds what.** Each process that holds a lease writes the keys it holds into its own
  holder file ``.blocks-leases/.holder-<id>`` (created once per process, rewritten in place:
  no directory operation per miss), locked for the process's life; `held_leases` lists the
  keys whose byte is locked now (``block results ls --leases``) and removes the holder files
  of processes that are gone.
- **Older versions.** A process of an older version knows only lease files: a lease file of a
  key (``.blocks-leases/<lock name>``), live, is honoured here (one read-only look-up per
  miss, no write); the other way round, an older process does not see these locks, so while
  both versions run on one folder a key may be computed by one of each (never a wrong value:
  records are written atomically).

Example:
    >>> leases = range_leases("/srv/shared", "/srv/shared")
    >>> leases is None or leases.waiter("3f2a...", "etl/extract-3f2a").acquire(True)
    True
"""

from __future__ import annotations

import atexit
import errno
import json
import os
import sys
import threading
import time
import uuid
from contextlib import suppress
from typing import Any

from blocks.filesystems._conditional import LEASES_FOLDER
from blocks.results._locks import holder_pid as _holder_pid

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

__all__ = ["HOLDER_PREFIX", "LOCK_FILE", "RangeFolder", "held_leases", "range_folder"]

LOCK_FILE = ".keys.lock"
HOLDER_PREFIX = ".holder-"
_FLAGS = os.O_RDWR | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)

#: File systems whose record locks exclude every process that can open the folder.
_LOCAL = frozenset(
    [
        "ext2",
        "ext3",
        "ext4",
        "xfs",
        "btrfs",
        "tmpfs",
        "zfs",
        "f2fs",
        "jfs",
        "reiserfs",
        "bcachefs",
        "overlay",
    ]
)
_NFS = frozenset(("nfs", "nfs4"))


def offset_of(name: str) -> int:
    """The byte of a key's lock name (32 hex digits) in the lock file: 60 bits of it."""
    return int(name[:15], 16)


# -- whether a folder's byte-range locks are trusted --------------------------------------------


def trusted(folder: str) -> bool:
    """Whether record locks in `folder` exclude every process that can reach it (Linux: a local
    file system, or NFS that forwards locks to its server)."""
    if fcntl is None or sys.platform != "linux":
        return False
    try:
        with open("/proc/self/mountinfo", encoding="utf-8", errors="replace") as source:
            mounts = source.read()
    except OSError:
        return False
    return mount_trusted(os.path.realpath(folder), mounts)


def mount_trusted(real: str, mounts: str) -> bool:
    """Whether the mount of the real path `real` in `mounts` (``/proc/self/mountinfo``'s text)
    forwards or keeps record locks for every process that can reach it."""
    best: tuple[int, str, str] | None = None
    for line in mounts.splitlines():
        fields = line.split()
        try:
            point = _unescape(fields[4])
            dash = fields.index("-")
            kind, options = fields[dash + 1], f"{fields[5]},{fields[dash + 3]}"
        except (IndexError, ValueError):
            continue
        inside = real == point or real.startswith(point.rstrip("/") + "/")
        if inside and (best is None or len(point) >= best[0]):
            best = (len(point), kind, options)
    if best is None:
        return False
    _, kind, options = best
    if kind in _LOCAL:
        return True
    if kind in _NFS:
        flags = set(options.split(","))
        return not flags & {"nolock", "local_lock=posix", "local_lock=all"}
    return False


def _unescape(text: str) -> str:
    # mountinfo writes a space, tab, newline and backslash in a path as octal escapes
    for code in ("\\040", "\\011", "\\012", "\\134"):
        text = text.replace(code, chr(int(code[1:], 8)))
    return text


# -- one folder's lock file and this process's holder file -------------------------------------


class RangeFolder:
    """The lock file of one real ``.blocks-leases`` folder, open in this process, and the
    holder file naming the keys this process holds there."""

    def __init__(self, folder: str) -> None:
        self.folder = folder
        self.guard = threading.Lock()
        self.held: dict[str, dict[str, Any]] = {}  # lock name -> what the holder file says
        self.fd = -1
        self.identity = (0, 0)
        self.holder_fd = -1
        self.holder_path = os.path.join(folder, f"{HOLDER_PREFIX}{_holder_id}")
        self.written = 0

    def _open(self) -> None:
        for _ in range(100):  # another process may remove the (empty) folder meanwhile
            os.makedirs(self.folder, mode=0o700, exist_ok=True)
            try:
                fd = os.open(os.path.join(self.folder, LOCK_FILE), _FLAGS | os.O_CREAT, 0o600)
                break
            except FileNotFoundError:
                continue
        else:  # pragma: no cover - someone removes the folder in a loop
            raise FileNotFoundError(self.folder)
        info = os.fstat(fd)
        self.fd, self.identity = fd, (info.st_dev, info.st_ino)

    def try_lock(self, offset: int) -> int:
        """Lock the byte at `offset` without waiting: the descriptor it was locked through
        (for `unlock`), or -1 if another process holds it."""
        with self.guard:
            for _ in range(100):
                if self.fd < 0:
                    self._open()
                try:
                    fcntl.lockf(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB, 1, offset)
                except OSError as exc:
                    if exc.errno in (errno.EAGAIN, errno.EACCES):
                        return -1
                    raise
                if self._still_named():
                    return self.fd
                # Deleted or replaced: unlock and start over on the file the path names now.
                # The old descriptor stays open (closing it would drop this process's other
                # locks in it, still held by other threads, which unlock through it).
                fcntl.lockf(self.fd, fcntl.LOCK_UN, 1, offset)
                self.fd = -1
            raise FileNotFoundError(self.folder)  # pragma: no cover - replaced in a loop

    def _still_named(self) -> bool:
        try:
            info = os.stat(os.path.join(self.folder, LOCK_FILE), follow_symlinks=False)
        except OSError:
            return False
        return (info.st_dev, info.st_ino) == self.identity

    def unlock(self, fd: int, offset: int) -> None:
        """Let go of the byte at `offset` locked through `fd` (`try_lock`'s answer)."""
        fcntl.lockf(fd, fcntl.LOCK_UN, 1, offset)

    def holder(self, offset: int) -> str:
        """Who holds the byte at `offset`, for a log line."""
        with self.guard:
            pid = _holder_pid(self.fd, offset) if self.fd >= 0 else None
        return "another process" if not pid else f"process {pid} (or a process of another host)"

    def hold(self, name: str, fields: dict[str, Any]) -> None:
        """Name `name` among the keys this process holds (its holder file, rewritten in place:
        no directory operation after the first)."""
        with self.guard:
            self.held[name] = fields
            self._write()

    def beat(self, name: str) -> None:
        """Count a heartbeat of the held key `name` in the holder file (a stopped holder's
        count stands still: `beats_of`)."""
        with self.guard:
            fields = self.held.get(name)
            if fields is not None:
                fields["beat"] = int(fields.get("beat", 0)) + 1
                self._write()

    def drop(self, name: str) -> None:
        # Not written: a reader checks each listed key's byte, a released one is not shown.
        with self.guard:
            self.held.pop(name, None)

    def _write(self) -> None:
        body = json.dumps(list(self.held.values())).encode()
        if self.holder_fd < 0:
            fd = os.open(self.holder_path, _FLAGS | os.O_CREAT, 0o600)
            fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB, 1, 0)  # alive while locked
            self.holder_fd, self.written = fd, 0
        # Padded with spaces over what was there (JSON ignores them): one write, no truncate.
        os.pwrite(self.holder_fd, body.ljust(self.written), 0)
        self.written = max(self.written, len(body))

    def close(self) -> None:
        """At exit: remove the holder file, and the lock file and folder if no process holds
        a byte of it (a whole-file lock taken without waiting); a process that opened it
        before finds it no longer named after locking, and starts over on a new one."""
        with self.guard:
            if self.holder_fd >= 0:
                with suppress(OSError):
                    os.unlink(self.holder_path)
                with suppress(OSError):
                    os.close(self.holder_fd)
                self.holder_fd = -1
            if self.fd >= 0 and not self.held:
                with suppress(OSError):
                    fcntl.lockf(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB, 0, 0)
                    if self._still_named():
                        os.unlink(os.path.join(self.folder, LOCK_FILE))
                    os.rmdir(self.folder)  # only if empty: another process's files stay
                with suppress(OSError):
                    os.close(self.fd)  # drops the whole-file lock
                self.fd = -1


_holder_id = uuid.uuid4().hex[:16]
_folders: dict[str, RangeFolder] = {}
_folders_guard = threading.Lock()


def range_folder(root: str) -> RangeFolder:
    """This process's `RangeFolder` of the storage at `root` (one per real folder: a second
    descriptor of the lock file, once closed, would drop the locks taken through the first)."""
    folder = os.path.join(os.path.realpath(root), LEASES_FOLDER)
    found = _folders.get(folder)
    if found is None:
        with _folders_guard:
            found = _folders.get(folder)
            if found is None:
                found = _folders[folder] = RangeFolder(folder)
    return found


@atexit.register
def _close_all() -> None:
    """Remove this process's holder files (a killed process's go with the next listing), and
    the lock files nobody holds a byte of (an idle storage keeps no lease file)."""
    for found in list(_folders.values()):
        found.close()


def _after_fork() -> None:
    # A child holds none of its parent's record locks; its copies of the descriptors are
    # closed (that drops only the child's locks, none) and it gets its own holder id.
    global _holder_id, _folders_guard
    for found in _folders.values():
        for fd in (found.fd, found.holder_fd):
            if fd >= 0:
                with suppress(OSError):
                    os.close(fd)
    _folders.clear()
    _holder_id, _folders_guard = uuid.uuid4().hex[:16], threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork)


# -- listing ------------------------------------------------------------------------------------


def held_leases(root: str) -> list[dict[str, Any]]:
    """What the holder files of the folder at `root` say about the keys held now (their byte
    locked), one entry per key; the holder files of processes that are gone are removed."""
    if fcntl is None:  # pragma: no cover - Windows
        return []
    mine = range_folder(root)
    try:
        names = [n for n in os.listdir(mine.folder) if n.startswith(HOLDER_PREFIX)]
    except (FileNotFoundError, NotADirectoryError):
        return []
    found: dict[str, dict[str, Any]] = {}
    with mine.guard:  # this process's descriptor of the lock file: another, closed, would
        if mine.fd >= 0 and not mine._still_named():  # drop the locks held through it;
            mine.fd = -1  # removed by the last process out: look at the file named now
        if mine.fd < 0:
            mine._open()
        for name in names:
            path = os.path.join(mine.folder, name)
            if path == mine.holder_path:
                entries: Any = list(mine.held.values())
            else:
                entries = _read_holder(path)
            for entry in entries if isinstance(entries, list) else []:
                with suppress(KeyError, TypeError, ValueError, IndexError):
                    key, lock = str(entry["key"]), str(entry["name"])
                    pid = _holder_pid(mine.fd, offset_of(lock))
                    if pid is None and path != mine.holder_path:
                        continue  # released since
                    if key not in found or str(pid) == str(entry["owner"]).split(":")[-2]:
                        found[key] = {**entry, "expires": time.time() + float(entry["seconds"])}
    return list(found.values())


def beats_of(mine: RangeFolder, name: str) -> list[tuple[str, int]]:
    """The heartbeat counts that other processes' holder files give the lock name `name`:
    what a waiter watches to tell a stalled holder (the count stands still) from a live one."""
    try:
        names = sorted(n for n in os.listdir(mine.folder) if n.startswith(HOLDER_PREFIX))
    except OSError:
        return []
    beats = []
    for file in names:
        path = os.path.join(mine.folder, file)
        if path == mine.holder_path:
            continue
        entries = _read_holder(path)
        for entry in entries if isinstance(entries, list) else []:
            with suppress(KeyError, TypeError, ValueError):
                if entry["name"] == name:
                    beats.append((file, int(entry.get("beat", 0))))
    return beats


def _read_holder(path: str) -> Any:
    """What another process's holder file says (None once removed: its process is gone)."""
    try:
        fd = os.open(path, _FLAGS)
    except OSError:
        return None
    try:
        if _holder_pid(fd, 0) is None:
            with suppress(OSError):
                os.unlink(path)  # nobody holds its byte: its process is gone
            return None
        try:
            return json.loads(os.pread(fd, 1 << 20, 0) or b"[]")
        except ValueError:
            return None
    finally:
        os.close(fd)  # another process's file: no lock of ours is dropped
