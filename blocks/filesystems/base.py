"""The storage protocol every filesystem block implements, and the key-safety rule they share.

A *key* is a relative, forward-slash path below the block's base path. Keys never escape it:
``..`` segments, absolute paths, NUL bytes and (locally) symlinks that lead outside are refused
with `UnsafePath`.

Example:
    >>> fs = LocalFileSystem(basepath="/tmp/results")
    >>> fs.write_path("a/b.bin", b"data")
    >>> fs.read_path("a/b.bin")
    b'data'
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Iterator
from contextlib import AbstractContextManager
from typing import BinaryIO

from blocks.core import Block


class WritableFileSystem(Block):
    """Abstract base of storage blocks: bytes in and out under one base path.

    Implementations: `LocalFileSystem`, `RemoteFileSystem` (any fsspec URL), `S3`, `GCS`.
    """

    _block_is_abstract = True

    # -- the five-method protocol -------------------------------------------------------
    @abstractmethod
    def read_path(self, path: str) -> bytes:
        """Return the whole content stored under `path`; `FileNotFoundError` if absent."""

    @abstractmethod
    def write_path(self, path: str, content: bytes) -> None:
        """Store `content` under `path` atomically: readers see the old object or the new one."""

    @abstractmethod
    def exists(self, path: str) -> bool:
        """Whether an object is stored under `path`."""

    @abstractmethod
    def delete(self, path: str) -> None:
        """Remove the object under `path`; a missing object is not an error."""

    @abstractmethod
    def ls(self, path: str = "") -> list[str]:
        """Keys (relative to the base path) of every object at or below `path`, sorted."""

    # -- streaming extensions used by the result store -----------------------------------
    @abstractmethod
    def open_read(self, path: str) -> AbstractContextManager[BinaryIO]:
        """A seekable binary reader over the object; `FileNotFoundError` if absent."""

    @abstractmethod
    def read_range(self, path: str, start: int, end: int) -> bytes:
        """Bytes ``[start, end)`` of the object (fewer if it is shorter)."""

    @abstractmethod
    def open_atomic_write(self, path: str) -> AbstractContextManager[BinaryIO]:
        """A binary writer whose content becomes visible under `path` only on a clean exit.

        On an exception inside the ``with`` block nothing is left behind. The writer is
        seekable where the backend allows it (local files).
        """

    @abstractmethod
    def size(self, path: str) -> int:
        """Size in bytes of the object under `path`."""

    @abstractmethod
    def walk_keys(self, prefix: str = "") -> Iterator[str]:
        """Yield every key at or below `prefix` lazily (for large listings)."""

    @abstractmethod
    def describe(self) -> str:
        """A short, secret-free description for messages, e.g. ``s3://bucket/prefix``."""
