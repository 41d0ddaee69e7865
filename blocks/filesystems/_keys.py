"""The key rule every storage shares, and the names of in-flight temp files.

Plain functions, no Block: the result store and the ``block results`` commands use them
without importing pydantic. `blocks.filesystems.base` re-exports them.

A *key* is a relative, forward-slash path below a storage's base path. Keys never escape it:
``..`` segments, absolute paths, NUL bytes and URLs outside the base are refused with
`UnsafePath`.

Example:
    >>> validate_key("a//./b.bin")
    'a/b.bin'
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import PurePath
from typing import Any

from blocks.errors import UnsafePath

TEMP_PREFIX = ".blocks-tmp-"
"""Names starting with this are in-flight atomic writes: never listed, never valid as keys.

A temp name is ``TEMP_PREFIX + host + "." + pid + "." + random``, so a leftover says which
process left it (see `TempFile`)."""

LEASES_FOLDER = ".blocks-leases"
"""The folder at a storage's root holding compute-once leases (`blocks.results._leases`):
never listed as records, never valid in a key."""


def temp_name_prefix() -> str:
    """The temp-file prefix for this process: `TEMP_PREFIX`, host and pid."""
    import socket  # here: a listing or a prune that meets no temp file never needs it

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

# Names of letters, digits, "_", "-" and (not first) "."; no ":" (drive letters, URLs), no "\\",
# no control character, no empty, "." or ".." segment, no temp name (they start with "."): a key
# that matches passes every rule of `validate_key` unchanged. The common case, checked in one
# regex pass (a scan of 10,000 records validates each key).
_PLAIN_KEY = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9._-]*(?:/[A-Za-z0-9_-][A-Za-z0-9._-]*)*")

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
    if type(key) is str and _PLAIN_KEY.fullmatch(key) is not None:
        return key  # already normal, and nothing below can refuse it
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
    if LEASES_FOLDER in parts:
        raise refuse(f"{LEASES_FOLDER!r} is reserved for compute-once leases")
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


def key_in_base(key: KeyLike, base_url: str, where: str | Callable[[], str]) -> KeyLike:
    """A full URL that lies inside `base_url` as the key relative to it; other keys unchanged.

    A URL outside the base path (another scheme, host or folder) is refused with `UnsafePath`,
    never stored elsewhere; the key that comes out still goes through `validate_key`. `where`
    names the storage in that message (a callable: asked only then, off the hot path).

    Example:
        >>> key_in_base("s3://bucket/results/a.bin", "s3://bucket/results", "s3://...")
        'a.bin'
    """
    if not isinstance(key, str):
        return key
    found = _URL.match(key)
    if found is None:
        return key
    if callable(where):
        where = where()
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
