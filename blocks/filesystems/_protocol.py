"""`Storage`: what the result store needs from a storage, as a structural type.

Every filesystem block (`WritableFileSystem`) satisfies it, and so does the plain
`LocalFolder`, which ``block results`` commands use on a local path without importing the Block
machinery (pydantic).

Example:
    >>> def count(storage: Storage) -> int:
    ...     return sum(1 for _ in storage.walk_keys(""))
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import AbstractContextManager
from datetime import timedelta
from typing import BinaryIO, Protocol

from blocks.errors import UnsafePath
from blocks.filesystems._keys import KeyLike, TempFile
from blocks.filesystems._stamps import Stamp


class Storage(Protocol):
    """Bytes under keys below one base path: the five-method protocol, the streaming
    extensions and the scan helpers (see `WritableFileSystem` for each method)."""

    def describe(self) -> str: ...

    def read_path(self, path: KeyLike) -> bytes: ...

    def write_path(self, path: KeyLike, content: bytes) -> str: ...

    def exists(self, path: KeyLike) -> bool: ...

    def ls(self, path: KeyLike = "") -> list[str]: ...

    def open_read(self, path: KeyLike) -> AbstractContextManager[BinaryIO]: ...

    def secret_values(self) -> list[str]: ...

    def open_atomic_write(self, path: KeyLike) -> AbstractContextManager[BinaryIO]: ...

    def open_head(self, path: KeyLike, size: int) -> tuple[bytes, BinaryIO | None]: ...

    def read_range(self, path: KeyLike, start: int, end: int) -> bytes: ...

    def only_we_write(self, path: KeyLike, stream: BinaryIO) -> bool: ...

    def stamp(self, path: KeyLike) -> Stamp | None: ...

    def settled(self, path: KeyLike, stamp: Stamp, looked_ns: int) -> bool: ...

    def size(self, path: KeyLike) -> int: ...

    def delete(self, path: KeyLike) -> None: ...

    def delete_keys(self, keys: Iterable[str]) -> Iterator[tuple[str, UnsafePath | None]]: ...

    def walk_keys(self, prefix: KeyLike = "") -> Iterator[str]: ...

    def read_heads(self, size: int) -> Iterator[tuple[str, bytes | None]] | None: ...

    def temp_files(self) -> Iterator[TempFile]: ...

    def remove_temp_files(self, grace: timedelta, *, dry_run: bool = False) -> list[TempFile]: ...


__all__ = ["Storage"]
