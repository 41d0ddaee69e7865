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
import shutil
import socket
import tempfile
from abc import abstractmethod
from collections.abc import Iterator
from contextlib import AbstractContextManager, suppress
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path, PurePath
from typing import Any, BinaryIO

from blocks.core._block import Block
from blocks.core._documents import SECRET_TYPES
from blocks.errors import MissingDependency, UnsafePath

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
_URL = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://([^/]*)(.*)$", re.DOTALL)
_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:(?:/|$)")

# URL schemes that name the same store (a key may use either).
SCHEME_ALIASES: dict[str, frozenset[str]] = {
    "s3": frozenset({"s3", "s3a"}),
    "s3a": frozenset({"s3", "s3a"}),
    "gs": frozenset({"gs", "gcs"}),
    "gcs": frozenset({"gs", "gcs"}),
}

KeyLike = str | os.PathLike[str]
"""A key: a str, or a `pathlib` path (turned into its ``/``-separated form first)."""

KEY_RULE = (
    "a key is a relative path of '/'-separated names below the base path: no '..' segment, "
    "no leading '/', no drive letter (C:), no backslash, no control character (NUL, newline...), "
    "no URL unless it lies inside the base path"
)


def validate_key(key: KeyLike, *, allow_empty: bool = False) -> str:
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
    key = key_text(key)

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
    if _SCHEME.match(key):
        # Else "s3://b/k" would be stored under a folder named "s3:".
        raise refuse("it is a URL (or starts like one) that is not inside the base path")
    parts = [part for part in key.split("/") if part not in ("", ".")]
    if ".." in parts:
        raise refuse("it contains a '..' segment")
    if any(part.startswith(TEMP_PREFIX) for part in parts):
        raise refuse(f"names starting with {TEMP_PREFIX!r} are reserved for temporary files")
    if not parts and not allow_empty:
        raise refuse("it is empty")
    normal = "/".join(parts)
    # "./s3://b/k" normalises to "s3:/b/k", "./C:x" to "C:x": refused as their plain forms.
    if _DRIVE.match(normal):
        raise refuse("it starts with a drive letter")
    if _SCHEME.match(normal):
        raise refuse("it is a URL (or starts like one) that is not inside the base path")
    return normal


_checked: dict[str, str] = {}


def checked_key(key: KeyLike) -> str:
    """`validate_key` remembered per str key: hot paths (a cache hit) check the same keys
    again and again. Only keys that pass are remembered; a refused one raises every time.

    Example:
        >>> checked_key("a//./b.bin")
        'a/b.bin'
    """
    if type(key) is not str:
        return validate_key(key)
    found = _checked.get(key)
    if found is None:
        found = validate_key(key)
        if len(_checked) >= 4096:
            _checked.clear()
        _checked[key] = found
    return found


def key_text(key: Any) -> str:
    """A key as text: a pathlib path in its ``/``-separated form; `UnsafePath` if not a path."""
    if isinstance(key, str):
        return key
    if isinstance(key, PurePath):
        return key.as_posix()
    if isinstance(key, os.PathLike):
        text = os.fspath(key)
        if isinstance(text, str):
            return text
    kind = type(key).__name__
    raise UnsafePath(f"Refused key {key!r}: keys are str or pathlib paths, not {kind}.")


def key_in_base(key: KeyLike, base_url: str, where: str) -> KeyLike:
    """A full URL that lies inside `base_url` as the key relative to it; other keys unchanged.

    A URL outside the base path (another scheme, host or folder) is refused with `UnsafePath`,
    never stored elsewhere; the key that comes out still goes through `validate_key`.

    Example:
        >>> key_in_base("s3://bucket/results/a.bin", "s3://bucket/results", "s3://...")
        'a.bin'
    """
    if not isinstance(key, str):
        return key
    found = _URL.match(key)
    if found is None:
        return key
    scheme, host, path = found.groups()
    base = _URL.match(base_url)
    if base is None:  # a base without a scheme: only its own keys
        raise UnsafePath(f"Refused key {key!r}: it is a URL; {where} takes keys, not URLs.")
    base_scheme, base_host, base_path = base.groups()
    schemes = SCHEME_ALIASES.get(base_scheme.lower(), frozenset({base_scheme.lower()}))
    # Compared without user:password@ and without leading/trailing slashes.
    inside = (host.rpartition("@")[2] + path).strip("/")
    root = (base_host.rpartition("@")[2] + base_path).strip("/")
    if scheme.lower() in schemes:
        if inside == root:
            return ""
        if not root or inside.startswith(root + "/"):
            return inside[len(root) :].lstrip("/") if root else inside
    raise UnsafePath(
        f"Refused key {key!r}: it is a URL outside the base path {where}; pass a key relative "
        "to the base path, or a URL inside it."
    )


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
