"""`LocalFileSystem`: storage in a folder of the local disk, with atomic, durable writes.

The block holds the configuration (`basepath`, `fsync`); the file operations are
`blocks.filesystems._folder.LocalFolder`'s, which this class delegates to.

Example:
    >>> fs = LocalFileSystem(basepath="/tmp/results")
    >>> fs.write_path("etl/extract.bin", b"payload")
    >>> fs.read_range("etl/extract.bin", 0, 3)
    b'pay'
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from contextlib import AbstractContextManager
from datetime import timedelta
from pathlib import Path
from typing import Any, BinaryIO

from pydantic import field_validator

from blocks import settings
from blocks.errors import UnsafePath
from blocks.filesystems._folder import LocalFolder
from blocks.filesystems._keys import KeyLike, TempFile
from blocks.filesystems._stamps import Stamp
from blocks.filesystems.base import WritableFileSystem

# basepath, BLOCKS_HOME and HOME where they matter (raw, for the default), fsync -> the folder.
_FolderIdent = tuple[str | None, Any, Any, bool]
_HOMES = settings.EnvStamp("BLOCKS_HOME", "HOME")
_folders: dict[_FolderIdent, LocalFolder] = {}


#: Per class: whether it reads files as `LocalFileSystem` does (`LocalFileSystem.stamp`).
_reads_plainly: dict[type, bool] = {}


class LocalFileSystem(WritableFileSystem):
    """Objects stored as files under `basepath` (default: ``$BLOCKS_HOME/storage``).

    Writes go to a temporary file in the target's folder, are flushed and fsynced (unless
    ``fsync=False``), then renamed over the target: a reader sees the old file or the new one,
    never a part.
    Keys that resolve outside `basepath` (``..``, absolute paths, symlinks leading out)
    are refused with `UnsafePath`. Reads, writes and deletes never let the kernel follow a
    symlink below the base: they walk from the base folder with directory descriptors
    (``O_NOFOLLOW``), create the temp file and rename it inside the folder held open
    (``dir_fd``), so a folder swapped for a symlink between a check and the operation cannot
    redirect it outside the base. A symlink inside the base is read (``readlink``) and followed
    by reads and writes only when its target stays inside the base; deletes never follow one.
    The base path itself may be (or pass through) a symlink: it is configuration.
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
        return Path(self._root_text())

    def _root_text(self) -> str:
        return self.folder()._root_text()

    def folder(self) -> LocalFolder:
        """The plain `LocalFolder` doing this block's file operations, at the base path the
        settings give now.

        Cached: the hot path (a cache hit) asks for it on every read. The base path depends
        on the settings and on HOME (``~``); a relative basepath also on the working
        directory, so that one is not cached.
        """
        base = self.basepath
        if base is not None and base.startswith("/"):
            ident: _FolderIdent = (base, None, None, self.fsync)
        elif base is None:
            # The default folder: BLOCKS_HOME and HOME (for a "~" in it, or the default
            # ~/.blocks), read as one raw stamp (the hot path of a hit on default storage).
            ident = (None, *_HOMES(), self.fsync)
        else:
            home = os.environ.get("HOME") if "~" in base else None
            ident = (base, None, home, self.fsync)
        found = _folders.get(ident)
        if found is not None:
            return found
        if base is None:
            path = settings.blocks_home() / "storage"
        else:
            path = Path(base[len("file://") :] if base.startswith("file://") else base)
            path = path.expanduser()
        folder = LocalFolder(str(path.absolute()), fsync=self.fsync)
        if path.is_absolute():
            if len(_folders) > 64:
                _folders.clear()
            _folders[ident] = folder
        return folder

    def _key(self, path: KeyLike, *, allow_empty: bool = False) -> str:
        """`path` as a key: a ``file://`` URL or absolute path inside the base folder is made
        relative to it (what `write_path` returns reads back); outside, `UnsafePath`."""
        return self.folder()._key(path, allow_empty=allow_empty)

    def _resolve(self, key: KeyLike, *, allow_empty: bool = False) -> Path:
        """The file for `key`, after checking that its real path stays under the root (for
        listings only; see `LocalFolder._resolve`)."""
        return self.folder()._resolve(key, allow_empty=allow_empty)

    # -- the protocol, delegated ------------------------------------------------------------
    def read_path(self, path: KeyLike) -> bytes:
        with self.open_read(path) as f:
            return f.read()

    def write_path(self, path: KeyLike, content: bytes) -> str:
        return self.folder().write_path(path, content)

    def exists(self, path: KeyLike) -> bool:
        return self.folder().exists(path)

    def delete(self, path: KeyLike) -> None:  # type: ignore[override]
        self.folder().delete(path)

    def delete_keys(self, keys: Iterable[str]) -> Iterator[tuple[str, UnsafePath | None]]:
        if type(self).delete is not LocalFileSystem.delete:
            return super().delete_keys(keys)  # a subclass deletes its own way: keep it
        return self.folder().delete_keys(keys)

    def temp_files(self) -> Iterator[TempFile]:
        return self.folder().temp_files()

    def remove_temp_files(self, grace: timedelta, *, dry_run: bool = False) -> list[TempFile]:
        return self.folder().remove_temp_files(grace, dry_run=dry_run)

    def ls(self, path: KeyLike = "") -> list[str]:
        return sorted(self.walk_keys(path))

    def open_read(self, path: KeyLike) -> AbstractContextManager[BinaryIO]:
        return self.folder().open_read(path)

    def open_head(self, path: KeyLike, size: int) -> tuple[bytes, BinaryIO | None]:
        if type(self).open_read is not LocalFileSystem.open_read:
            return super().open_head(path, size)  # a subclass reads its own way: keep it
        return self.folder().open_head(path, size)

    def read_range(self, path: KeyLike, start: int, end: int) -> bytes:
        return self.folder().read_range(path, start, end)

    def only_we_write(self, path: KeyLike, stream: BinaryIO) -> bool:
        if type(self).open_read is not LocalFileSystem.open_read:
            return False  # a subclass reads its own way: copy, as for any storage
        return self.folder().only_we_write(path, stream)

    def stamp(self, path: KeyLike) -> Stamp | None:
        kind = type(self)
        plain = _reads_plainly.get(kind)
        if plain is None:  # (looked up once per class: a pydantic class's attributes are slow)
            plain = _reads_plainly[kind] = (
                kind.open_read is LocalFileSystem.open_read
                and kind.open_head is LocalFileSystem.open_head
            )
        if not plain:
            return None  # a subclass reads its own way: nothing is kept
        return self.folder().stamp(path)

    def settled(self, path: KeyLike, stamp: Stamp, looked_ns: int) -> bool:
        return self.folder().settled(path, stamp, looked_ns)

    def open_atomic_write(self, path: KeyLike) -> AbstractContextManager[BinaryIO]:
        return self.folder().open_atomic_write(path)

    def size(self, path: KeyLike) -> int:
        return self.folder().size(path)

    def walk_keys(self, prefix: KeyLike = "") -> Iterator[str]:
        return self.folder().walk_keys(prefix)

    def read_heads(self, size: int) -> Iterator[tuple[str, bytes | None]] | None:
        if any(
            getattr(type(self), name) is not getattr(LocalFileSystem, name)
            for name in ("walk_keys", "read_range", "open_read")
        ):
            return None  # a subclass lists or reads its own way: key by key
        return self.folder().read_heads(size)

    def describe(self) -> str:
        return f"file://{self._root_text()}"


__all__ = ["LocalFileSystem"]
