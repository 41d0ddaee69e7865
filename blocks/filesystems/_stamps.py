"""File stamps: a stat that stands for a local file's bytes, for memos of verified records.

A reader that verified a record's bytes may keep them and, while the file's stamp (inode,
device, size, modification and change times, mode) is unchanged, skip opening and reading
the file again (`blocks.results._store`). That is sound only if every change to the bytes
changes the stamp, which needs care:

- **The change time (ctime) is the witness.** Any ``write()``, ``truncate()``, ``chmod``,
  ``rename`` of or ``utime`` on a file sets its ctime to the current time, and no user
  process can set it back (``utime`` can reset mtime, not ctime). Our own writers never
  change a record in place: they rename a new file over it (a new inode).
- **Racy timestamps.** A ctime is the kernel's coarse clock, one tick (1-10 ms) apart, so a
  change in the same tick as the previous one keeps the stamp. A stamp is therefore only
  trusted (`settled`) when its ctime is older than `SETTLE_NS` before the reader looked
  (git's "racily clean" rule): any later change gets a ctime at least a tick later, so a
  different stamp. A record written just now is read in full until it has settled.
- **Only filesystems that keep fine ctimes on this machine's clock.** The comparison above
  uses this machine's clock; a network filesystem (NFS, SMB, FUSE) stamps with the server's
  and caches attributes, so it is never trusted. Nor is a filesystem with coarse times
  (ext3, FAT, HFS+: whole seconds), which shows as a ctime with no sub-millisecond digits.
  Filesystems come from ``/proc/self/mountinfo`` (Linux; elsewhere nothing is trusted).
- **Not covered:** a write through a shared ``mmap`` to a page already dirty updates no time
  until the page is written back. The caller trusts a stamp only for files that nobody but
  its own user can write (`LocalFolder.settled`), so only this user's own processes could do
  that, and this code never maps records for writing.

Example:
    >>> stamp = stamp_of("/srv/results/etl-3f2a")  # written a second ago
    >>> settled(stamp, time.time_ns())
    True
"""

from __future__ import annotations

import os
import stat
import threading

__all__ = ["SETTLE_NS", "Stamp", "settled", "stamp_of"]

#: A stamp: inode, device, size, mtime (ns), ctime (ns), mode, owner.
Stamp = tuple[int, int, int, int, int, int, int]

#: How much older than the look a stamp's ctime must be: several coarse-clock ticks
#: (10 ms at HZ=100) and the gap between that clock and ``time.time_ns()``.
SETTLE_NS = 50_000_000

#: Local filesystems with nanosecond times on this machine's clock.
_LOCAL_TYPES = frozenset(
    {"ext2", "ext4", "xfs", "btrfs", "tmpfs", "f2fs", "zfs", "bcachefs", "overlay", "ramfs"}
)

_types: dict[int, str] = {}
_types_guard = threading.Lock()


def stamp_of(path: str) -> Stamp | None:
    """The stamp of the regular file at `path` (a symlink is not followed); None if absent
    or not a regular file."""
    try:
        info = os.lstat(path)
    except OSError:
        return None
    if not stat.S_ISREG(info.st_mode):
        return None
    return (
        info.st_ino,
        info.st_dev,
        info.st_size,
        info.st_mtime_ns,
        info.st_ctime_ns,
        info.st_mode,
        info.st_uid,
    )


def settled(stamp: Stamp, looked_ns: int) -> bool:
    """Whether `stamp`, taken after ``time.time_ns()`` returned `looked_ns`, changes with
    any later change to the file's bytes (see the module docs)."""
    ctime = stamp[4]
    if ctime % 1_000_000 == 0:  # whole milliseconds or coarser: times too coarse to trust
        return False
    if ctime > looked_ns - SETTLE_NS:
        return False
    return _fs_type(stamp[1]) in _LOCAL_TYPES


def _fs_type(device: int) -> str:
    """The filesystem type of `device` (``""`` if unknown), from ``/proc/self/mountinfo``."""
    found = _types.get(device)
    if found is None:
        with _types_guard:
            _types.update(_mounted())
            found = _types.setdefault(device, "")
    return found


def _mounted() -> dict[int, str]:
    """Device number -> filesystem type of every mount (empty where there is no procfs)."""
    mounted: dict[int, str] = {}
    try:
        with open("/proc/self/mountinfo", encoding="utf-8", errors="replace") as source:
            for line in source:
                fields, _, rest = line.partition(" - ")
                parts = fields.split()
                kinds = rest.split()
                if len(parts) < 3 or not kinds:
                    continue
                major, _, minor = parts[2].partition(":")
                try:
                    mounted[os.makedev(int(major), int(minor))] = kinds[0]
                except ValueError:
                    continue
    except OSError:
        return {}
    return mounted
