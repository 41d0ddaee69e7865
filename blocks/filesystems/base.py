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
import re
import socket
from abc import abstractmethod
from collections.abc import Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, BinaryIO

from blocks.core import Block
from blocks.documents import SECRET_TYPES
from blocks.errors import UnsafePath

TEMP_PREFIX = ".blocks-tmp-"
"""Names starting with this are in-flight atomic writes: never listed, never valid as keys.

A temp name is ``TEMP_PREFIX + host + "." + pid + "." + random``, so a leftover says which
process left it (see `TempFile`)."""


def temp_name_prefix() -> str:
    """The temp-file prefix for this process: `TEMP_PREFIX`, host and pid."""
    host = re.sub(r"[^A-Za-z0-9-]", "-", socket.gethostname())[:40] or "host"
    return f"{TEMP_PREFIX}{host}.{os.getpid()}."


@dataclass(frozen=True)
class TempFile:
    """A leftover (or in-flight) temp file of an atomic write."""

    key: str
    size: int
    modified: datetime
    host: str | None
    pid: int | None

    def is_stale(self, grace: timedelta, now: datetime | None = None) -> bool:
        """Older than `grace`, or left by a process of this host that is gone."""
        moment = now if now is not None else datetime.now(UTC)
        if moment - self.modified >= grace:
            return True
        return self.pid is not None and self.host == _host() and not _alive(self.pid)

    @classmethod
    def parse(cls, key: str, size: int, modified: float) -> TempFile:
        name = key.rpartition("/")[2][len(TEMP_PREFIX) :]
        host, _, rest = name.partition(".")
        pid_text = rest.partition(".")[0]
        pid = int(pid_text) if pid_text.isdigit() else None
        when = datetime.fromtimestamp(modified, UTC)
        return cls(key, size, when, host if pid is not None else None, pid)


def _host() -> str:
    return temp_name_prefix()[len(TEMP_PREFIX) :].partition(".")[0]


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


_DRIVE = re.compile(r"^[A-Za-z]:")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")

KEY_RULE = (
    "a key is a relative path of '/'-separated names below the base path: no '..' segment, "
    "no leading '/', no drive letter (C:), no backslash, no control character (NUL, newline...)"
)


def validate_key(key: str, *, allow_empty: bool = False) -> str:
    """Return `key` normalised (no ``.`` or empty segments) or raise `UnsafePath`.

    Every backend calls this before touching storage, so the rule is the same everywhere;
    ``allow_empty`` is for listing prefixes, where ``""`` means the whole base path.

    Example:
        >>> validate_key("a//./b.bin")
        'a/b.bin'
        >>> validate_key("../etc/passwd")
        Traceback (most recent call last):
        blocks.errors.UnsafePath: Refused key '../etc/passwd': it contains a '..' segment; ...
    """
    if not isinstance(key, str):
        raise UnsafePath(f"Refused key {key!r}: keys are str, not {type(key).__name__}.")

    def refuse(why: str) -> UnsafePath:
        return UnsafePath(f"Refused key {key!r}: {why}; {KEY_RULE}.")

    if _CONTROL.search(key):
        raise refuse("it contains a control character")
    if "\\" in key:
        raise refuse("it contains a backslash")
    if key.startswith("/"):
        raise refuse("it is an absolute path")
    if _DRIVE.match(key):
        raise refuse("it starts with a drive letter")
    parts = [part for part in key.split("/") if part not in ("", ".")]
    if ".." in parts:
        raise refuse("it contains a '..' segment")
    if any(part.startswith(TEMP_PREFIX) for part in parts):
        raise refuse(f"names starting with {TEMP_PREFIX!r} are reserved for temporary files")
    if not parts and not allow_empty:
        raise refuse("it is empty")
    return "/".join(parts)


def join_key(root: str, key: str) -> str:
    """``root/key`` for string-addressed stores; `key` must already be validated."""
    root = root.rstrip("/")
    return f"{root}/{key}" if key else root


def check_range(start: int, end: int) -> None:
    """Refuse a negative or reversed byte range (``read_range`` arguments)."""
    if start < 0 or end < start:
        raise ValueError(f"Invalid byte range [{start}, {end}): need 0 <= start <= end.")


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
    def delete(self, path: str) -> None:  # type: ignore[override]
        """Remove the object under `path`; a missing object is not an error.

        This shadows ``Block.delete(name)`` on storage blocks: delete a saved storage block
        document with ``Block.delete("s3/name")``.
        """

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

    def temp_files(self) -> Iterator[TempFile]:
        """Temp files of atomic writes (in flight or left by a crash). Object stores write in
        one PUT and have none; local storage overrides this."""
        return iter(())

    def remove_temp_files(self, grace: timedelta, *, dry_run: bool = False) -> list[TempFile]:
        """Delete stale temp files (`TempFile.is_stale`); return them. None by default."""
        return []

    def secret_values(self) -> list[str]:
        """Strings that must never appear in an error message (keys, tokens)."""
        return secret_strings(self)

    @abstractmethod
    def describe(self) -> str:
        """A short, secret-free description for messages, e.g. ``s3://bucket/prefix``."""
