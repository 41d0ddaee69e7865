"""`LocalFolder`: files under one folder of the local disk, reached without following symlinks.

The plain file operations behind `LocalFileSystem` (which is a pydantic Block and delegates
here): atomic writes, reads, deletes and whole-store scans, all through directory
descriptors. No pydantic: ``block results ls`` / ``prune`` on a local path use a `LocalFolder`
directly and start without importing the Block machinery.

Example:
    >>> folder = LocalFolder("/tmp/results", fsync=False)
    >>> folder.write_path("etl/extract.bin", b"payload")
    '/tmp/results/etl/extract.bin'
    >>> folder.read_range("etl/extract.bin", 0, 3)
    b'pay'
"""

from __future__ import annotations

import errno
import operator
import os
import posixpath
import stat
from collections.abc import Iterable, Iterator
from contextlib import AbstractContextManager, contextmanager, suppress
from datetime import timedelta
from pathlib import Path
from typing import Any, BinaryIO

from blocks.errors import UnsafePath
from blocks.filesystems._keys import (
    LEASES_FOLDER,
    TEMP_PREFIX,
    KeyLike,
    TempFile,
    check_range,
    checked_key,
    key_in_base,
    key_text,
    temp_name_prefix,
    validate_key,
)
from blocks.filesystems._stamps import Stamp, settled, stamp_of

# Every folder below the base is opened one name at a time relative to its parent's descriptor
# and never through a symlink, so a folder swapped for a symlink between a check and the
# operation cannot redirect it (the kernel refuses with ELOOP; we decide what a link means).
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0)
# The base folder itself is configuration: a symlink in its own path is followed.
_BASE_FLAGS = os.O_RDONLY | os.O_DIRECTORY | getattr(os, "O_CLOEXEC", 0)
# O_NONBLOCK: a FIFO planted under a key must not hang the reader (no effect on files).
_FILE_FLAGS = (
    os.O_RDONLY | os.O_NOFOLLOW | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0)
)
_TEMP_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0)
# open(O_NOFOLLOW) of a symlink: ELOOP on Linux and macOS, EMLINK on FreeBSD; ENOTDIR when a
# file stands where a folder is expected (O_DIRECTORY).
_NOT_FOLLOWED = frozenset({errno.ELOOP, errno.EMLINK, errno.ENOTDIR})
#: Symlinks followed for one key before giving up (the kernel's own limit is 40).
MAX_SYMLINKS = 40


def _private(info: os.stat_result, euid: int) -> bool:
    """Owned by `euid`, writable by neither group nor others."""
    return info.st_uid == euid and not info.st_mode & (stat.S_IWGRP | stat.S_IWOTH)


class LocalFolder:
    """Objects stored as files under the absolute folder `root` (see `LocalFileSystem`, which
    documents the guarantees: atomic and durable writes, no symlink followed below the base).

    The same storage protocol as the filesystem blocks (`read_path`, `write_path`, `exists`,
    `delete`, `ls`, `open_read`, `open_head`, `read_range`, `open_atomic_write`, `size`,
    `walk_keys`, `temp_files`, `remove_temp_files`), plus `read_heads` and `delete_keys` for
    whole-store scans.
    """

    __slots__ = ("_root", "fsync")

    def __init__(self, root: str, *, fsync: bool = True) -> None:
        self._root = root
        self.fsync = fsync

    def __repr__(self) -> str:
        return f"LocalFolder({self._root!r}, fsync={self.fsync})"

    def secret_values(self) -> list[str]:
        """Strings error messages must not contain: a local folder holds no secret."""
        return []

    def root(self) -> Path:
        """The base folder (not created until the first write)."""
        return Path(self._root)

    def _root_text(self) -> str:
        return self._root

    def _key(self, path: KeyLike, *, allow_empty: bool = False) -> str:
        """`path` as a key: a ``file://`` URL or absolute path inside the base folder is made
        relative to it (what `write_path` returns reads back); outside, `UnsafePath`."""
        if isinstance(path, str) and not path.startswith("/") and "://" not in path:
            # A plain key (the hot path): no URL or absolute path to make relative.
            return validate_key(path, allow_empty=True) if allow_empty else checked_key(path)
        root = self._root_text()
        path = key_text(path)
        if path.startswith("/"):
            base = root.rstrip("/") + "/"
            if path == root:
                path = ""
            elif path.startswith(base):
                path = path[len(base) :].lstrip("/")
        path = key_in_base(path, f"file://{root}", self.describe)
        return validate_key(path, allow_empty=allow_empty)

    def _resolve(self, key: KeyLike, *, allow_empty: bool = False) -> Path:
        """The file for `key`, after checking that its real path stays under the root.

        A check by path, for listings only: reads, writes and deletes never go through a
        path, they walk from the base folder with descriptors (`_reach`)."""
        key = self._key(key, allow_empty=allow_empty)
        root = self.root()
        path = root / key if key else root
        real_root = os.path.realpath(root)
        real = os.path.realpath(path)
        if real != real_root and not real.startswith(real_root.rstrip(os.sep) + os.sep):
            raise UnsafePath(
                f"Refused key {key!r}: it resolves (through a symlink) to {real}, outside the "
                f"base path {real_root}. Keys must stay below the base path."
            )
        return path

    def _open_base(self, *, create: bool = False) -> int:
        root = self._root_text()
        try:
            return os.open(root, _BASE_FLAGS)
        except FileNotFoundError:
            if not create:
                raise
        os.makedirs(root, exist_ok=True)
        return os.open(root, _BASE_FLAGS)

    def _reach(self, key: str, *, mode: str) -> tuple[int, str, str]:
        """Walk to `key` from the base folder, one name at a time, never letting the kernel
        follow a symlink; return (descriptor, last name, key after links).

        `mode` ``"read"`` opens the file itself (the descriptor is the file's); ``"write"``
        creates missing folders and returns the folder's descriptor; ``"folder"`` only
        returns the folder's descriptor. A symlink met on the way is read with
        ``readlink(dir_fd=)`` and followed only if its target, taken relative to the real
        folders walked so far, stays inside the base; then the walk restarts from the base.
        A link that leads out, or more than `MAX_SYMLINKS` of them, is `UnsafePath`.
        Whatever a racing process swaps in, every open is relative to a folder we hold open,
        so nothing outside the base is ever opened, created or renamed over.
        """
        create = mode == "write"
        for _ in range(MAX_SYMLINKS + 1):
            parts = key.split("/")
            last = len(parts) - 1
            fd = self._open_base(create=create)
            link: str | None = None
            try:
                for i, part in enumerate(parts):
                    try:
                        if i == last:
                            if mode == "read":
                                file_fd = os.open(part, _FILE_FLAGS, dir_fd=fd)
                                os.close(fd)
                                return file_fd, part, key
                            if mode == "write":
                                # A symlink under the name: write where it leads (a racing
                                # swap after this check only replaces the link: rename never
                                # follows its target name).
                                link = _readlink(fd, part)
                                if link is not None:
                                    key = self._follow(key, parts[: i + 1], link, ())
                                    break
                            return fd, part, key
                        child = _open_folder_at(fd, part, create=create, durable=self.fsync)
                    except OSError as exc:
                        if exc.errno not in _NOT_FOLLOWED:
                            raise
                        link = _readlink(fd, part)
                        if link is None:
                            raise  # a file where a folder should be: absent
                        key = self._follow(key, parts[: i + 1], link, parts[i + 1 :])
                        break
                    os.close(fd)
                    fd = child
            except BaseException:
                os.close(fd)
                raise
            os.close(fd)
        raise UnsafePath(
            f"Refused key {key!r}: more than {MAX_SYMLINKS} symlinks on the way (a loop?); "
            "keys must name files below the base path."
        )

    def _follow(self, key: str, where: list[str], link: str, rest: Any) -> str:
        """The key that the symlink at `where` (names from the base; its target `link`)
        leads to, with the `rest` of the key below it; `UnsafePath` if it leads outside.

        The folders above the link were opened without following links, so they are real
        folders and a ``..`` in the target is resolved lexically against them, exactly."""
        folders = where[:-1]
        if link.startswith("/"):
            target = posixpath.normpath(link)
            for root in (os.path.realpath(self._root_text()), self._root_text()):
                root = root.rstrip("/")
                if target == root or target.startswith(root + "/"):
                    inside = target[len(root) :].strip("/")
                    break
            else:
                inside = None
        else:
            target = posixpath.normpath("/".join([*folders, link]))
            inside = None if target == ".." or target.startswith("../") else target
        if inside is None:
            raise UnsafePath(
                f"Refused key {key!r}: {'/'.join(where)!r} is a symlink to {link!r}, outside "
                f"the base path {self.describe()}. Keys must stay below the base path."
            )
        joined = "/".join(p for p in (inside if inside != "." else "", *rest) if p)
        if not joined:
            raise IsADirectoryError(errno.EISDIR, f"key {key!r} leads to the base folder")
        return validate_key(joined)

    # -- the protocol -------------------------------------------------------------------
    def read_path(self, path: KeyLike) -> bytes:
        with self.open_read(path) as f:
            return f.read()

    def write_path(self, path: KeyLike, content: bytes) -> str:
        key = self._key(path)
        with self._atomic_write(key) as f:
            f.write(content)
        return os.path.join(self._root_text(), *key.split("/"))

    def exists(self, path: KeyLike) -> bool:
        try:
            fd = self._open_file(self._key(path))
        except FileNotFoundError:
            return False
        os.close(fd)
        return True

    def _open_file(self, key: str, *, regular: bool = True) -> int:
        """A read descriptor of the regular file under `key` (see `_reach`);
        `FileNotFoundError` if there is none (absent, a folder, a FIFO...). With
        ``regular=False`` the caller checks the kind itself (`_regular_or_absent`)."""
        try:
            if "/" in key:
                fd = self._reach(key, mode="read")[0]
            else:
                # A key right below the base (a cache key): the only name below the base is
                # the last one, which O_NOFOLLOW guards, so one open by path is as safe as
                # the walk (the base path's own symlinks are followed either way).
                try:
                    fd = os.open(f"{self._root_text()}/{key}", _FILE_FLAGS)
                except OSError as exc:
                    if exc.errno not in _NOT_FOLLOWED:
                        raise
                    fd = self._reach(key, mode="read")[0]  # a symlink: decide as the walk does
        except (IsADirectoryError, NotADirectoryError):
            fd = -1
        if fd >= 0 and not regular:
            return fd
        return self._regular_or_absent(fd, key)

    def _regular_or_absent(self, fd: int, key: str) -> int:
        """`fd` if it is a regular file; else closed, and `FileNotFoundError`."""
        if fd >= 0:
            try:
                if stat.S_ISREG(os.fstat(fd).st_mode):
                    return fd
            except BaseException:
                os.close(fd)
                raise
            os.close(fd)
        raise FileNotFoundError(
            errno.ENOENT, f"No object under key {key!r} in {self.describe()} (not a file)"
        )

    def delete(self, path: KeyLike) -> None:
        key = self._key(path)
        folders, _, name = key.rpartition("/")
        try:
            dir_fd = self._open_folder(folders)
        except FileNotFoundError:
            return
        try:
            _unlink_file(name, dir_fd)
        finally:
            os.close(dir_fd)

    def delete_keys(self, keys: Iterable[str]) -> Iterator[tuple[str, UnsafePath | None]]:
        """Delete the files under `keys` (validated keys, e.g. from a scan), yielding each key
        with None once it is gone, or with the `UnsafePath` that kept it (a symlink on the
        way). Other errors (`OSError`) are raised.

        As `delete`, but a run of keys in one folder shares that folder's descriptor (opened
        from the base without following symlinks): one ``unlinkat`` per key instead of a walk
        from the base per key.
        """
        folder: str | None = None
        dir_fd = -1
        refused: UnsafePath | None = None
        try:
            for key in keys:
                folders, _, name = key.rpartition("/")
                if folders != folder:
                    if dir_fd >= 0:
                        os.close(dir_fd)
                    folder, dir_fd, refused = folders, -1, None
                    try:
                        dir_fd = self._open_folder(folders)
                    except FileNotFoundError:
                        pass  # nothing left to delete in it
                    except UnsafePath as exc:
                        refused = exc
                if refused is not None:
                    yield key, refused
                    continue
                if dir_fd >= 0:
                    _unlink_file(name, dir_fd)
                yield key, None
        finally:
            if dir_fd >= 0:
                os.close(dir_fd)

    def _open_folder(self, folders: str) -> int:
        """A descriptor of the folder `folders` (a key prefix), opened one name at a time from
        the base without following any symlink; `UnsafePath` if one is in the way."""
        fd = self._open_base()
        try:
            for part in folders.split("/") if folders else ():
                try:
                    child = os.open(part, _DIR_FLAGS, dir_fd=fd)
                except OSError as exc:
                    if exc.errno in _NOT_FOLLOWED:
                        raise UnsafePath(
                            f"Refused to delete below {folders!r}: {part!r} is not a folder "
                            "(a symlink?); deletes never follow symlinks."
                        ) from None
                    raise
                os.close(fd)
                fd = child
        except BaseException:
            os.close(fd)
            raise
        return fd

    def temp_files(self) -> Iterator[TempFile]:
        for _, key, name, dir_fd in self._walk_temp():
            try:
                info = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
            except FileNotFoundError:
                continue  # finished (renamed) meanwhile
            if stat.S_ISREG(info.st_mode):
                yield TempFile.parse(key, info.st_size, info.st_mtime)

    def remove_temp_files(self, grace: timedelta, *, dry_run: bool = False) -> list[TempFile]:
        removed = []
        for _, key, name, dir_fd in self._walk_temp():
            try:
                info = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
            except FileNotFoundError:
                continue
            if not stat.S_ISREG(info.st_mode):
                continue
            temp = TempFile.parse(key, info.st_size, info.st_mtime)
            if not temp.is_stale(grace):
                continue
            if not dry_run:
                try:
                    os.unlink(name, dir_fd=dir_fd)  # this folder's fd: no path to swap
                except FileNotFoundError:
                    continue
            removed.append(temp)
        return removed

    def _walk_temp(self) -> Iterator[tuple[str, str, str, int]]:
        """(folder key, temp key, name, folder fd) of every temp-named entry; `os.fwalk`
        checks each folder it enters is the one it listed, so symlinks are never followed."""
        root = os.path.realpath(self.root())
        if not os.path.isdir(root):
            return
        for folder, _, files, dir_fd in os.fwalk(root, follow_symlinks=False):
            rel = os.path.relpath(folder, root)
            prefix = "" if rel == "." else rel.replace(os.sep, "/") + "/"
            for name in files:
                if name.startswith(TEMP_PREFIX):
                    yield prefix, prefix + name, name, dir_fd

    def ls(self, path: KeyLike = "") -> list[str]:
        return sorted(self.walk_keys(path))

    def open_read(self, path: KeyLike) -> AbstractContextManager[BinaryIO]:
        return open(self._open_file(self._key(path)), "rb")

    def open_head(self, path: KeyLike, size: int) -> tuple[bytes, BinaryIO | None]:
        """Up to `size` first bytes and, when the file may hold more, a reader positioned
        after them (the caller closes it); one open and one ``read()`` for a small file."""
        key = self._key(path)
        fd = self._open_file(key, regular=False)
        try:
            head = os.read(fd, size)
        except OSError:
            head = b""  # a folder (EISDIR), a FIFO with a writer (EAGAIN): see below
        except BaseException:
            os.close(fd)
            raise
        if not 0 < len(head) < size:
            # Empty or a full buffer: check that it is a regular file (a FIFO or a folder
            # planted under the key is absent; this closes it). A short, non-empty read skips
            # the fstat: whatever gave those bytes, they are checked as any record's are
            # (signature, size) before a byte is decoded.
            fd = self._regular_or_absent(fd, key)
            try:
                if not head:
                    head = os.read(fd, size)  # an empty first read: read the file again
                if len(head) == size:
                    return head, open(fd, "rb")  # positioned after `head`; the caller closes it
            except BaseException:
                os.close(fd)
                raise
        os.close(fd)
        return head, None  # a regular file reads short only at its end

    def only_we_write(self, path: KeyLike, stream: BinaryIO) -> bool:
        """Whether only our effective user can change the file open on `stream` (a reader of
        `path`) or the folders from the base down to it: each owned by us, with no group or
        other write bit (a POSIX ACL granting anyone else write shows as the group bit).

        The file is checked on its descriptor, so it is the very file being read; the folders
        by path (they cannot change the open file's bytes, only which file a name points to:
        checked as well so that a shared folder always means a copy). Any doubt is False.
        """
        try:
            fd = stream.fileno()
        except (AttributeError, OSError, ValueError):
            return False
        euid = os.geteuid()
        try:
            if not _private(os.fstat(fd), euid):
                return False
            folder = self._root_text()
            if not _private(os.stat(folder), euid):
                return False
            for name in self._key(path).split("/")[:-1]:
                folder = f"{folder}/{name}"
                if not _private(os.stat(folder, follow_symlinks=False), euid):
                    return False
        except OSError:
            return False
        return True

    def stamp(self, path: KeyLike) -> Stamp | None:
        """The stamp of the file under `path` (`blocks.filesystems._stamps`): one ``lstat``.
        None for a key below a subfolder (only a key right below the base is looked up by
        path, as `_open_file` does), an absent key or anything but a regular file."""
        if type(path) is not str or "/" in path or "://" in path:
            return None  # a subfolder's key, a path or a URL: read as ever
        return stamp_of(f"{self._root}/{checked_key(path)}")

    def settled(self, path: KeyLike, stamp: Stamp, looked_ns: int) -> bool:
        """Whether `stamp` (of the file under `path`, taken after `looked_ns`) stands for its
        bytes from now on: it has settled (`_stamps.settled`) and only our user can write the
        file and the base folder (no other user's process can change it unseen)."""
        euid = os.geteuid()
        if stamp[6] != euid or stamp[5] & (stat.S_IWGRP | stat.S_IWOTH):
            return False
        try:
            return settled(stamp, looked_ns) and _private(os.stat(self._root_text()), euid)
        except OSError:
            return False

    def read_range(self, path: KeyLike, start: int, end: int) -> bytes:
        check_range(start, end)
        fd = self._open_file(self._key(path))
        try:
            return _pread(fd, end - start, start)
        finally:
            os.close(fd)

    def open_atomic_write(self, path: KeyLike) -> AbstractContextManager[BinaryIO]:
        return self._atomic_write(self._key(path))

    @contextmanager
    def _atomic_write(self, key: str) -> Iterator[BinaryIO]:
        # The temp file is created and renamed inside the folder we hold open: no path is
        # looked up again between the check and the rename (see `_reach`).
        dir_fd, name, _ = self._reach(key, mode="write")
        try:
            tmp, fd = _create_temp(dir_fd)
            try:
                with os.fdopen(fd, "wb") as f:
                    yield f
                    if self.fsync:
                        f.flush()
                        os.fsync(f.fileno())
                os.rename(tmp, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
            except BaseException:
                with suppress(FileNotFoundError):
                    os.unlink(tmp, dir_fd=dir_fd)
                raise
            if self.fsync:
                _fsync_fd(dir_fd)
        finally:
            os.close(dir_fd)

    def size(self, path: KeyLike) -> int:
        fd = self._open_file(self._key(path))
        try:
            return os.fstat(fd).st_size
        finally:
            os.close(fd)

    def walk_keys(self, prefix: KeyLike = "") -> Iterator[str]:
        start = self._resolve(prefix, allow_empty=True)
        key = self._key(prefix, allow_empty=True)
        if start.is_file():
            yield key
            return
        real_root = os.path.realpath(self.root())
        yield from _walk(start, key, real_root)

    def read_heads(self, size: int) -> Iterator[tuple[str, bytes | None]]:
        """Every key (as ``walk_keys("")`` gives them, in the same order) with up to `size`
        first bytes of its file; None for a key to read by name (a symlink inside the base).

        For scans of the whole store (``block results ls`` / ``prune``): each folder is
        listed and each file opened relative to its folder's descriptor, never through a
        symlink, so a scan costs one ``openat`` + ``pread`` per file instead of a walk from
        the base per key.
        """
        try:
            fd = os.open(self._root_text(), _BASE_FLAGS)
        except (FileNotFoundError, NotADirectoryError):
            return
        try:
            yield from _scan_heads(fd, "", size, os.path.realpath(self._root_text()))
        finally:
            os.close(fd)

    def describe(self) -> str:
        return f"file://{self._root_text()}"


def _scan_heads(
    fd: int, prefix: str, size: int, real_root: str
) -> Iterator[tuple[str, bytes | None]]:
    """`LocalFileSystem.read_heads` below the folder `fd` (keys start with `prefix`)."""
    with os.scandir(fd) as listing:
        entries = sorted(listing, key=_BY_NAME)
    for entry in entries:
        name = entry.name
        if name.startswith(TEMP_PREFIX) or name == LEASES_FOLDER:
            continue
        key = prefix + name
        if entry.is_file(follow_symlinks=False):  # the common case first (types exclude)
            try:
                file_fd = os.open(name, _FILE_FLAGS, dir_fd=fd)
            except FileNotFoundError:
                continue  # deleted since it was listed
            except OSError as exc:
                if exc.errno not in _NOT_FOLLOWED:
                    raise
                yield key, None  # swapped for a symlink: decide by key, as reads do
                continue
            try:
                # One read: a regular file (as listed) reads short only at its end. Something
                # swapped in since the listing (a folder, a FIFO: opened without blocking)
                # fails to read or reads empty, and is skipped or is no record.
                head = os.read(file_fd, size)
            except OSError:
                continue
            finally:
                os.close(file_fd)
            yield key, head
        elif entry.is_dir(follow_symlinks=False):
            try:
                child = os.open(name, _DIR_FLAGS, dir_fd=fd)
            except OSError:
                continue  # gone, or swapped for a symlink since it was listed: not followed
            try:
                yield from _scan_heads(child, key + "/", size, real_root)
            finally:
                os.close(child)
        elif entry.is_symlink():
            # Listed as `walk_keys` lists it: a file that stays inside the base, read by key.
            real = os.path.realpath(os.path.join(real_root, key))
            if real.startswith(real_root.rstrip(os.sep) + os.sep) and os.path.isfile(real):
                yield key, None


_BY_NAME = operator.attrgetter("name")


def _walk(folder: Path, key: str, real_root: str) -> Iterator[str]:
    """Keys below `folder`, sorted per folder; symlinked folders are not followed."""
    try:
        entries = sorted(os.scandir(folder), key=lambda e: e.name)
    except (FileNotFoundError, NotADirectoryError):
        return
    for entry in entries:
        if entry.name.startswith(TEMP_PREFIX) or entry.name == LEASES_FOLDER:
            continue
        child = f"{key}/{entry.name}" if key else entry.name
        if entry.is_dir(follow_symlinks=False):
            yield from _walk(Path(entry.path), child, real_root)
        elif entry.is_symlink():
            # Listed only if it is a file that stays inside the base path (else unreadable).
            real = os.path.realpath(entry.path)
            if real.startswith(real_root.rstrip(os.sep) + os.sep) and os.path.isfile(real):
                yield child
        elif entry.is_file(follow_symlinks=False):
            yield child


def _unlink_file(name: str, dir_fd: int) -> None:
    """Remove `name` from the folder `dir_fd` (never following a symlink: unlink removes the
    link itself); a missing name, or a folder under it, is left alone."""
    try:
        os.unlink(name, dir_fd=dir_fd)
    except (FileNotFoundError, IsADirectoryError):
        pass
    except PermissionError:
        # unlink() of a folder raises EPERM on some systems
        info = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
        if not stat.S_ISDIR(info.st_mode):
            raise


def _open_folder_at(fd: int, name: str, *, create: bool, durable: bool) -> int:
    """The subfolder `name` of the folder `fd`, never through a symlink; made if `create`."""
    try:
        return os.open(name, _DIR_FLAGS, dir_fd=fd)
    except FileNotFoundError:
        if not create:
            raise
    try:
        os.mkdir(name, dir_fd=fd)
    except FileExistsError:
        pass  # made by another writer meanwhile (or swapped in: the open below refuses it)
    else:
        if durable:
            _fsync_fd(fd)  # the new folder's entry in its parent survives a power cut
    return os.open(name, _DIR_FLAGS, dir_fd=fd)


def _readlink(fd: int, name: str) -> str | None:
    """The target of the symlink `name` in folder `fd`, or None if it is not a symlink."""
    try:
        return os.readlink(name, dir_fd=fd)
    except (OSError, ValueError):
        return None  # EINVAL: not a symlink; ENOENT: nothing there


def _create_temp(dir_fd: int) -> tuple[str, int]:
    """A new temp file in folder `dir_fd`: (name, write descriptor), mode 0600 as mkstemp."""
    prefix = temp_name_prefix()
    for _ in range(100):
        name = prefix + os.urandom(6).hex()
        try:
            return name, os.open(name, _TEMP_FLAGS, 0o600, dir_fd=dir_fd)
        except FileExistsError:
            continue
    raise FileExistsError(errno.EEXIST, "no free temp file name")


def _pread(fd: int, size: int, offset: int) -> bytes:
    chunks = []
    while size > 0:
        chunk = os.pread(fd, size, offset)
        if not chunk:
            break
        chunks.append(chunk)
        size -= len(chunk)
        offset += len(chunk)
    return b"".join(chunks)


def _fsync_fd(fd: int) -> None:
    """Make a rename (or a new entry) durable; not every OS or filesystem allows fsync on a
    folder."""
    with suppress(OSError):
        os.fsync(fd)


__all__ = ["LocalFolder"]
