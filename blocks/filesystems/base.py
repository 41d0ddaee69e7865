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

import os
import shutil
import tempfile
from abc import abstractmethod
from collections.abc import Iterable, Iterator
from contextlib import AbstractContextManager, suppress
from datetime import timedelta
from pathlib import Path
from typing import Any, BinaryIO

from blocks.core._block import Block
from blocks.core._documents import SECRET_TYPES
from blocks.errors import MissingDependency, UnsafePath
from blocks.filesystems._keys import (
    KEY_RULE,
    SCHEME_ALIASES,
    TEMP_PREFIX,
    KeyLike,
    TempFile,
    check_range,
    checked_key,
    join_key,
    key_in_base,
    key_text,
    temp_name_prefix,
    validate_key,
)
from blocks.filesystems._stamps import Stamp

# The key rule lives in `blocks.filesystems._keys` (no pydantic); these names stay importable
# from here, where they were first.
__all__ = [
    "KEY_RULE",
    "SCHEME_ALIASES",
    "TEMP_PREFIX",
    "KeyLike",
    "TempFile",
    "WritableFileSystem",
    "check_range",
    "checked_key",
    "join_key",
    "key_in_base",
    "key_text",
    "scrub",
    "secret_strings",
    "temp_name_prefix",
    "validate_key",
]


def secret_strings(value: Any) -> list[str]:
    """Every string of 6+ characters inside `value`: secrets, containers, a block's secret
    fields and nested blocks. What error messages must never contain.

    Shorter strings (LocalStack's ``test``) would mangle bucket names when scrubbed.
    """
    if isinstance(value, Block):
        fields = (getattr(value, name) for name in type(value).model_fields)
        return [
            s for f in fields if isinstance(f, (*SECRET_TYPES, Block)) for s in secret_strings(f)
        ]
    if isinstance(value, SECRET_TYPES):
        value = value.get_secret_value()
    if isinstance(value, str):
        return [value] if len(value) >= 6 else []
    if isinstance(value, bytes):
        return secret_strings(value.decode("utf-8", "replace"))
    if isinstance(value, dict):
        return [s for item in value.values() for s in secret_strings(item)]
    if isinstance(value, list | tuple):
        return [s for item in value for s in secret_strings(item)]
    return []


def scrub(message: str, secrets: list[str]) -> str:
    """`message` with every secret string replaced by the mask, longest first."""
    for secret in sorted(set(secrets), key=len, reverse=True):
        message = message.replace(secret, "**********")
    return message


class WritableFileSystem(Block):
    """Abstract base of storage blocks: bytes in and out under one base path.

    Implementations: `LocalFileSystem`, `RemoteFileSystem` (any fsspec URL), `S3`, `GCS`.
    """

    _block_is_abstract = True

    # -- the five-method protocol -------------------------------------------------------
    # A `path` is a key below the base path (a str or a pathlib path), or a full URL (an
    # absolute path, locally) that lies inside the base path; anything else is `UnsafePath`.
    @abstractmethod
    def read_path(self, path: KeyLike) -> bytes:
        """Return the whole content stored under `path`; `FileNotFoundError` if absent."""

    @abstractmethod
    def write_path(self, path: KeyLike, content: bytes) -> str:
        """Store `content` under `path` atomically: readers see the old object or the new one.

        Returns where it was written (as Prefect does): the absolute file path locally, the
        full URL otherwise (never with credentials); `read_path` accepts it back.
        """

    @abstractmethod
    def exists(self, path: KeyLike) -> bool:
        """Whether an object is stored under `path`."""

    @abstractmethod
    def delete(self, path: KeyLike) -> None:  # type: ignore[override]
        """Remove the object under `path`; a missing object is not an error.

        This shadows ``Block.delete(name)`` on storage blocks: delete a saved storage block
        document with ``Block.delete("s3/name")``.
        """

    @abstractmethod
    def ls(self, path: KeyLike = "") -> list[str]:
        """Keys (relative to the base path) of every object at or below `path`, sorted."""

    # -- streaming extensions used by the result store -----------------------------------
    @abstractmethod
    def open_read(self, path: KeyLike) -> AbstractContextManager[BinaryIO]:
        """A seekable binary reader over the object; `FileNotFoundError` if absent."""

    def open_head(self, path: KeyLike, size: int) -> tuple[bytes, BinaryIO | None]:
        """Up to `size` first bytes of the object and, when it may hold more, a reader
        positioned after them (the caller closes it); ``None`` when the bytes are all of it.

        For small objects read whole in one call (a cached result). By default over
        `open_read`; local storage does one ``open`` and one ``read()``.
        """
        stream = self.open_read(path).__enter__()
        try:
            read1 = getattr(stream, "read1", None)
            head = bytes(read1(size) if read1 is not None else stream.read(size))
        except BaseException:
            stream.close()
            raise
        if len(head) < size:
            stream.close()
            return head, None
        return head, stream

    @abstractmethod
    def read_range(self, path: KeyLike, start: int, end: int) -> bytes:
        """Bytes ``[start, end)`` of the object (fewer if it is shorter)."""

    def only_we_write(self, path: KeyLike, stream: BinaryIO) -> bool:
        """Whether nobody but this process's user can change the bytes `stream` (a reader of
        `path` from `open_head`) reads, so that a reader may verify it and then decode it again
        instead of copying it. False by default: an object store's bytes arrive once."""
        return False

    def stamp(self, path: KeyLike) -> Stamp | None:
        """A stat that changes whenever the bytes under `path` change, for memos of verified
        records (`blocks.filesystems._stamps`); None: none can be given (the default: an
        object store's reader reads the object each time)."""
        return None

    def settled(self, path: KeyLike, stamp: Stamp, looked_ns: int) -> bool:
        """Whether `stamp` may stand for the bytes under `path` from now on (see `stamp`)."""
        return False

    @abstractmethod
    def open_atomic_write(self, path: KeyLike) -> AbstractContextManager[BinaryIO]:
        """A binary writer whose content becomes visible under `path` only on a clean exit.

        On an exception inside the ``with`` block nothing is left behind. The writer is
        seekable where the backend allows it (local files).
        """

    @abstractmethod
    def size(self, path: KeyLike) -> int:
        """Size in bytes of the object under `path`."""

    @abstractmethod
    def walk_keys(self, prefix: KeyLike = "") -> Iterator[str]:
        """Yield every key at or below `prefix` lazily (for large listings)."""

    def delete_keys(self, keys: Iterable[str]) -> Iterator[tuple[str, UnsafePath | None]]:
        """Delete the objects under `keys` (validated keys), yielding each key with None once
        it is gone, or with the `UnsafePath` that kept it; other errors are raised. One
        `delete` per key here; local storage shares each folder's descriptor."""
        for key in keys:
            try:
                self.delete(key)
            except UnsafePath as exc:
                yield key, exc
            except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
                yield key, None  # gone already
            else:
                yield key, None

    def read_heads(self, size: int) -> Iterator[tuple[str, bytes | None]] | None:
        """Every key with up to `size` first bytes of its object, in one scan of the whole
        store (None for a key to read by name); None when the storage has no such scan (the
        caller then reads key by key). Local storage scans; object stores do not."""
        return None

    def temp_files(self) -> Iterator[TempFile]:
        """Temp files of atomic writes (in flight or left by a crash). Object stores write in
        one PUT and have none; local storage overrides this."""
        return iter(())

    def remove_temp_files(self, grace: timedelta, *, dry_run: bool = False) -> list[TempFile]:
        """Delete stale temp files (`TempFile.is_stale`); return them. None by default."""
        return []

    @abstractmethod
    def _key(self, path: KeyLike, *, allow_empty: bool = False) -> str:
        """`path` as a validated key (a URL inside the base path made relative)."""

    # -- directories (Prefect's deployment-storage calls), over the protocol above ----------
    def get_directory(
        self, from_path: KeyLike | None = None, local_path: str | os.PathLike[str] | None = None
    ) -> int:
        """Copy every object at or below `from_path` (default: the whole base path) into the
        local folder `local_path` (default: the current directory); return how many.

        Each file is written beside its target and renamed over it, so an interrupted copy
        leaves no partial file.

        Example:
            >>> S3(bucket_path="bucket/flows").get_directory("v2", "/tmp/flows")
            3
        """
        prefix = self._key(from_path if from_path is not None else "", allow_empty=True)
        destination = Path(local_path if local_path is not None else ".").absolute()
        copied = 0
        for key in self.walk_keys(prefix):
            relative = key[len(prefix) :].lstrip("/") if prefix else key
            target = destination.joinpath(*(relative or key.rsplit("/", 1)[-1]).split("/"))
            target.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=TEMP_PREFIX, dir=target.parent)
            try:
                with os.fdopen(fd, "wb") as out, self.open_read(key) as source:
                    shutil.copyfileobj(source, out, 1024 * 1024)
                os.replace(tmp, target)
            except BaseException:
                with suppress(FileNotFoundError):
                    os.unlink(tmp)
                raise
            copied += 1
        return copied

    def put_directory(
        self,
        local_path: str | os.PathLike[str] | None = None,
        to_path: KeyLike | None = None,
        ignore_file: str | os.PathLike[str] | None = None,
    ) -> int:
        """Copy every file below the local folder `local_path` (default: the current
        directory) to `to_path` (default: the base path itself); return how many.

        `ignore_file` names a file of ``.gitignore``-style patterns (e.g. a
        ``.prefectignore``); matching files are not copied. Symlinked folders are not
        followed. Each object is written atomically.

        Example:
            >>> LocalFileSystem(basepath="/srv/flows").put_directory("./src", "v2", ".gitignore")
            12
        """
        source = Path(local_path if local_path is not None else ".").absolute()
        prefix = self._key(to_path if to_path is not None else "", allow_empty=True)
        ignored = _ignore_matcher(ignore_file)
        copied = 0
        for folder, dirs, files in os.walk(source):
            dirs.sort()
            for name in sorted(files):
                file = Path(folder, name)
                relative = file.relative_to(source).as_posix()
                if name.startswith(TEMP_PREFIX) or ignored(relative):
                    continue
                with (
                    open(file, "rb") as data,
                    self.open_atomic_write(
                        join_key(prefix, relative) if prefix else relative
                    ) as out,
                ):
                    shutil.copyfileobj(data, out, 1024 * 1024)
                copied += 1
        return copied

    def secret_values(self) -> list[str]:
        """Strings that must never appear in an error message (keys, tokens)."""
        return secret_strings(self)

    @abstractmethod
    def describe(self) -> str:
        """A short, secret-free description for messages, e.g. ``s3://bucket/prefix``."""


def _ignore_matcher(ignore_file: str | os.PathLike[str] | None) -> Any:
    """A predicate on ``/``-separated relative paths from a ``.gitignore``-style file."""
    if ignore_file is None:
        return lambda relative: False
    try:
        import pathspec
    except ImportError:
        raise MissingDependency(
            "put_directory(ignore_file=...) needs pathspec: pip install pathspec"
        ) from None
    with open(ignore_file, encoding="utf-8") as f:
        spec = pathspec.GitIgnoreSpec.from_lines(f.read().splitlines())
    return spec.match_file
