"""`LocalFileSystem`: storage in a folder of the local disk, with atomic, durable writes.

Example:
    >>> fs = LocalFileSystem(basepath="/tmp/results")
    >>> fs.write_path("etl/extract.bin", b"payload")
    >>> fs.read_range("etl/extract.bin", 0, 3)
    b'pay'
"""

from __future__ import annotations

import errno
import os
import stat
import tempfile
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager, suppress
from datetime import timedelta
from pathlib import Path
from typing import Any, BinaryIO

from pydantic import field_validator

from blocks import settings
from blocks.errors import UnsafePath
from blocks.filesystems.base import (
    TEMP_PREFIX,
    KeyLike,
    TempFile,
    WritableFileSystem,
    check_range,
    key_in_base,
    key_text,
    temp_name_prefix,
    validate_key,
)

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0)


class LocalFileSystem(WritableFileSystem):
    """Objects stored as files under `basepath` (default: ``$BLOCKS_HOME/storage``).

    Writes go to a temporary file in the target's folder, are flushed and fsynced (unless
    ``fsync=False``), then renamed over the target: a reader sees the old file or the new one,
    never a part.
    Keys that resolve outside `basepath` (``..``, absolute paths, symlinks leading out)
    are refused with `UnsafePath`. Deletes never follow a symlink: they walk from the base
    folder with directory descriptors (``O_NOFOLLOW``) and ``unlink(dir_fd=...)``, so a folder
    swapped for a symlink between a check and the delete cannot redirect it outside the base.
    Temp files are named after the host and pid that write them (`TempFile`).

    Example:
        >>> fs = LocalFileSystem(basepath="~/results")
        >>> with fs.open_atomic_write("big.bin") as f:
        ...     f.write(b"x" * 1024)
        >>> fs.size("big.bin")
        1024
    """

    _block_is_abstract = False
    _description = "Store data as files in a folder of the local disk."

    basepath: str | None = None
    """Folder holding the files; ``None`` means ``$BLOCKS_HOME/storage`` at the time of use."""

    fsync: bool = True
    """Flush each file (and its folder) to disk before it counts as written, so it survives a
    power cut. With ``False`` writes are as fast as a plain ``write()`` and still atomic for
    every process; result records carry a checksum, so a power cut may lose a record (a cache
    miss) but never turn it into a wrong value."""

    @field_validator("basepath", mode="before")
    @classmethod
    def _path_to_str(cls, value: Any) -> Any:
        # A pathlib path is accepted (as Prefect does) and stored as text.
        return os.fspath(value) if isinstance(value, os.PathLike) else value

    # -- paths -----------------------------------------------------------------------------
    def root(self) -> Path:
        """The base folder as an absolute path (not created until the first write)."""
        base = self.basepath
        if base is None:
            return (settings.blocks_home() / "storage").absolute()
        if base.startswith("file://"):
            base = base[len("file://") :]
        return Path(base).expanduser().absolute()

    def _key(self, path: KeyLike, *, allow_empty: bool = False) -> str:
        """`path` as a key: a ``file://`` URL or absolute path inside the base folder is made
        relative to it (what `write_path` returns reads back); outside, `UnsafePath`."""
        root = self.root()
        path = key_text(path)
        if path.startswith("/"):
            base = str(root).rstrip("/") + "/"
            if path == str(root):
                path = ""
            elif path.startswith(base):
                path = path[len(base) :].lstrip("/")
        path = key_in_base(path, f"file://{root}", self.describe())
        return validate_key(path, allow_empty=allow_empty)

    def _resolve(self, key: KeyLike, *, allow_empty: bool = False) -> Path:
        """The file for `key`, after checking that its real path stays under the root."""
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

    # -- the protocol -------------------------------------------------------------------
    def read_path(self, path: KeyLike) -> bytes:
        with self.open_read(path) as f:
            return f.read()

    def write_path(self, path: KeyLike, content: bytes) -> str:
        target = self._resolve(path)
        with self._atomic_write(target) as f:
            f.write(content)
        return str(target)

    def exists(self, path: KeyLike) -> bool:
        return self._resolve(path).is_file()

    def delete(self, path: KeyLike) -> None:  # type: ignore[override]
        key = self._key(path)
        folders, _, name = key.rpartition("/")
        try:
            dir_fd = self._open_folder(folders)
        except FileNotFoundError:
            return
        try:
            os.unlink(name, dir_fd=dir_fd)
        except (FileNotFoundError, IsADirectoryError):
            pass
        except PermissionError:
            # unlink() of a folder raises EPERM on some systems
            info = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
            if not stat.S_ISDIR(info.st_mode):
                raise
        finally:
            os.close(dir_fd)

    def _open_folder(self, folders: str) -> int:
        """A descriptor of the folder `folders` (a key prefix), opened one name at a time from
        the base without following any symlink; `UnsafePath` if one is in the way."""
        fd = os.open(os.path.realpath(self.root()), _DIR_FLAGS)
        try:
            for part in folders.split("/") if folders else ():
                try:
                    child = os.open(part, _DIR_FLAGS, dir_fd=fd)
                except OSError as exc:
                    if exc.errno in (errno.ELOOP, errno.ENOTDIR):
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
        target = self._resolve(path)
        try:
            return open(target, "rb")
        except IsADirectoryError:
            raise FileNotFoundError(
                f"No object under key {path!r} in {self.describe()} (it is a folder)."
            ) from None

    def read_range(self, path: KeyLike, start: int, end: int) -> bytes:
        check_range(start, end)
        with self.open_read(path) as f:
            f.seek(start)
            return f.read(end - start)

    def open_atomic_write(self, path: KeyLike) -> AbstractContextManager[BinaryIO]:
        return self._atomic_write(self._resolve(path))

    @contextmanager
    def _atomic_write(self, target: Path) -> Iterator[BinaryIO]:
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=temp_name_prefix(), dir=target.parent)
        try:
            with os.fdopen(fd, "wb") as f:
                yield f
                if self.fsync:
                    f.flush()
                    os.fsync(f.fileno())
            os.replace(tmp, target)
        except BaseException:
            with suppress(FileNotFoundError):
                os.unlink(tmp)
            raise
        if self.fsync:
            _fsync_dir(target.parent)

    def size(self, path: KeyLike) -> int:
        target = self._resolve(path)
        info = target.stat()
        if not stat.S_ISREG(info.st_mode):
            raise FileNotFoundError(
                f"No object under key {path!r} in {self.describe()} (it is a folder)."
            )
        return info.st_size

    def walk_keys(self, prefix: KeyLike = "") -> Iterator[str]:
        start = self._resolve(prefix, allow_empty=True)
        key = self._key(prefix, allow_empty=True)
        if start.is_file():
            yield key
            return
        real_root = os.path.realpath(self.root())
        yield from _walk(start, key, real_root)

    def describe(self) -> str:
        return f"file://{self.root()}"


def _walk(folder: Path, key: str, real_root: str) -> Iterator[str]:
    """Keys below `folder`, sorted per folder; symlinked folders are not followed."""
    try:
        entries = sorted(os.scandir(folder), key=lambda e: e.name)
    except (FileNotFoundError, NotADirectoryError):
        return
    for entry in entries:
        if entry.name.startswith(TEMP_PREFIX):
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


def _fsync_dir(folder: Path) -> None:
    """Make the rename durable; not every OS or filesystem allows fsync on a folder."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


__all__ = ["LocalFileSystem"]
