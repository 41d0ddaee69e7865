"""Storage over fsspec: the shared `FsspecFileSystem` and `RemoteFileSystem` for any URL.

`S3` and `GCS` build on `FsspecFileSystem` too; each only says how to build its fsspec
filesystem and where its root is. The fsspec object is built lazily (importing fsspec and the
backend package only then) and cached on the block instance.

Example:
    >>> fs = RemoteFileSystem(basepath="memory://results")
    >>> fs.write_path("a.bin", b"data")
    >>> fs.ls()
    ['a.bin']
"""

from __future__ import annotations

import contextlib
import copy
import inspect
import io
import os
import re
import shutil
import tempfile
import uuid
from abc import abstractmethod
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager, suppress
from typing import Any, BinaryIO, NoReturn, cast

from pydantic import Field, PrivateAttr, field_validator

from blocks.core._block import SecretDict
from blocks.core._documents import mask_userinfo, userinfo_strings
from blocks.errors import BlocksError, ConfigurationError, MissingDependency, StorageError
from blocks.filesystems._conditional import s3_error_code
from blocks.filesystems._exclusive import publish
from blocks.filesystems._keys import LEASES_FOLDER
from blocks.filesystems.base import (
    TEMP_PREFIX,
    KeyLike,
    WritableFileSystem,
    check_range,
    join_key,
    key_in_base,
    scrub,
    secret_strings,
    validate_key,
)

# Stores where one PUT replaces an object atomically: no temp object needed.
OBJECT_STORE_PROTOCOLS = frozenset(
    {"s3", "s3a", "gs", "gcs", "az", "abfs", "abfss", "adl", "oss", "memory"}
)

_LEASES = LEASES_FOLDER + "/"

_USERINFO = re.compile(r"^([a-zA-Z][a-zA-Z0-9+.-]*://)[^/@]*@")

SPOOL_MAX_MEMORY = 16 * 1024 * 1024
"""Streamed writes stay in memory up to this size, then spill to a local temporary file."""


class FsspecFileSystem(WritableFileSystem):
    """Shared implementation of the storage protocol over an fsspec filesystem.

    Subclasses implement `_protocol`, `_root`, `_storage_options` and (optionally)
    `_make_filesystem`, `secret_values` and `_is_missing_root`.
    """

    _block_is_abstract = True

    _fs_cache: tuple[dict[str, Any], Any] | None = PrivateAttr(default=None)
    _root_checked: bool = PrivateAttr(default=False)

    # -- what subclasses provide ------------------------------------------------------------
    @abstractmethod
    def _protocol(self) -> str:
        """The fsspec protocol, e.g. ``"s3"``."""

    @abstractmethod
    def _root(self) -> str:
        """The base path in fsspec's form (protocol stripped, no trailing slash)."""

    @abstractmethod
    def _storage_options(self) -> dict[str, Any]:
        """Keyword arguments for the fsspec filesystem (may hold secrets: never log them)."""

    @abstractmethod
    def _base_url(self) -> str:
        """The base path as a URL without credentials, e.g. ``s3://bucket/prefix``."""

    def _make_filesystem(self, options: dict[str, Any]) -> Any:
        import fsspec

        protocol = self._protocol()
        try:
            # Check the options against the constructor first: a half-built fsspec filesystem
            # (ftp without a host) prints a traceback from its __del__.
            inspect.signature(fsspec.get_filesystem_class(protocol).__init__).bind(None, **options)
            return fsspec.filesystem(protocol, **options)
        except ImportError as exc:
            raise MissingDependency(
                f"Storage {self.describe()} needs an optional package: {exc}"
            ) from None
        except ValueError as exc:
            if "protocol" in str(exc).lower():
                raise ConfigurationError(
                    f"Unknown storage protocol {protocol!r} in {self.describe()}: {exc}"
                ) from None
            raise
        except TypeError as exc:
            # e.g. ftp:// without a host: fsspec's constructor names the missing argument.
            raise ConfigurationError(
                f"Storage {self.describe()} cannot be set up: {exc}. Put the host in the URL "
                f"({protocol}://host/path) or the filesystem's options in settings={{...}}."
            ) from None
        except OSError as exc:
            # Filesystems such as ftp and sftp connect when built.
            raise StorageError(
                f"Cannot reach {self.describe()}: {exc.strerror or type(exc).__name__}. "
                "Check the host, the port and that the server is running."
            ) from None

    def secret_values(self) -> list[str]:
        """Strings that must never appear in an error message (keys, tokens), including
        credentials the options resolved from elsewhere."""
        # A URL's user:password@ (an endpoint, a basepath) counts as a secret too.
        return secret_strings(self._storage_options()) + userinfo_strings(
            [self._storage_options(), self]
        )

    def _is_missing_root(self, exc: BaseException) -> bool:
        """Whether a FileNotFoundError (or an empty listing) means the bucket is missing."""
        return False

    def _write_options(self, fs: Any, nbytes: int) -> dict[str, Any]:
        """Get `fs` ready for a one-shot write of `nbytes` bytes; keyword arguments for the
        write call, e.g. ``{"timeout": seconds}`` (fsspec's deadline for an async filesystem)."""
        return {}

    def __getstate__(self) -> dict[Any, Any]:
        return _without_private(super().__getstate__(), _fs_cache=None, _root_checked=False)

    # -- the fsspec filesystem, cached per instance ------------------------------------------
    def filesystem(self) -> Any:
        """The fsspec filesystem for this block, built once (per set of options) and cached."""
        options = self._storage_options()
        cached = self._fs_cache
        if cached is not None and cached[0] == options:
            return cached[1]
        # A copy: botocore rewrites nested config dicts in place (retries), which would make
        # every later comparison miss and rebuild the client.
        fs = self._make_filesystem(copy.deepcopy(options))
        self._fs_cache = (options, fs)
        self._root_checked = False
        return fs

    def _key(self, path: KeyLike, *, allow_empty: bool = False) -> str:
        path = key_in_base(path, self._base_url(), self.describe)
        return validate_key(path, allow_empty=allow_empty)

    def _full(self, key: KeyLike, *, allow_empty: bool = False) -> str:
        return join_key(self._root(), self._key(key, allow_empty=allow_empty))

    def _relative(self, full: str) -> str:
        root = self._root().rstrip("/")
        full = full.rstrip("/")
        if root and not full.startswith(root + "/"):
            return ""
        return full[len(root) + 1 :] if root else full.lstrip("/")

    def _single_put(self) -> bool:
        return self._protocol() in OBJECT_STORE_PROTOCOLS

    # -- errors: typed, with the location, never a secret ----------------------------------
    def _fail(self, action: str, key: KeyLike, exc: BaseException) -> NoReturn:
        """Re-raise `exc` as `StorageError` naming the location (or pass ours through)."""
        if isinstance(exc, BlocksError):
            raise exc
        if isinstance(exc, FileNotFoundError) and self._is_missing_root(exc):
            raise StorageError(
                f"Could not {action} {key!r}: the bucket of {self.describe()} does not exist. "
                "Create it or fix the bucket path."
            ) from None
        if isinstance(exc, PermissionError):
            why = "access denied (check the credentials and the bucket policy)"
        else:
            why = f"{type(exc).__name__}: {exc}"
        target = repr(key) if key else "the keys"  # '' is the whole storage: say so
        message = f"Could not {action} {target} in {self.describe()}: {why}"
        clean = mask_userinfo(scrub(message, self.secret_values()))
        if clean != message:
            raise StorageError(clean) from None
        raise StorageError(clean) from exc

    def _missing(self, key: KeyLike) -> FileNotFoundError:
        return FileNotFoundError(f"No object under key {key!r} in {self.describe()}.")

    def _call(self, action: str, key: KeyLike, method: str, *args: Any, **kwargs: Any) -> Any:
        """``fs.method(*args)``; FileNotFoundError stays one (unless the bucket is missing)."""
        fs = self.filesystem()
        try:
            return getattr(fs, method)(*args, **kwargs)
        except FileNotFoundError as exc:
            if self._is_missing_root(exc):
                self._fail(action, key, exc)
            raise self._missing(key) from None
        except IsADirectoryError:
            raise self._missing(key) from None
        except Exception as exc:
            self._fail(action, key, exc)

    # -- the protocol -------------------------------------------------------------------
    def read_path(self, path: KeyLike) -> bytes:
        return cast(bytes, self._call("read", path, "cat_file", self._full(path)))

    def write_path(self, path: KeyLike, content: bytes) -> str:
        key = self._key(path)
        full = join_key(self._root(), key)
        if self._single_put():
            self._put_bytes(key, full, bytes(content))
        else:
            with self._atomic_write(key, full) as f:
                f.write(content)
        return join_key(self._base_url().rstrip("/"), key)

    def _put_bytes(self, key: str, full: str, content: bytes, create: bool = False) -> bool:
        """Write `content` in one call; `create`: only if no object is there (False if one is)."""
        return self._write(
            "pipe_file", key, nbytes=len(content), args=(full, content), create=create
        )

    def _write(
        self, method: str, key: str, *, nbytes: int, args: tuple[Any, ...], create: bool = False
    ) -> bool:
        """``fs.method(*args)``: a whole object written in one call, within its deadline;
        `create`: only if no object is there (False: one is, nothing was written)."""
        options: dict[str, Any] = {}
        try:
            fs = self.filesystem()
            options = self._write_options(fs, nbytes)
            if create:  # s3fs, gcsfs, adlfs: If-None-Match / ifGenerationMatch=0
                options["mode"] = "create"  # refused: FileExistsError
            getattr(fs, method)(*args, **options)
        except Exception as exc:
            if create and _refused_create(exc):
                return False
            deadline = options.get("timeout")
            if deadline:  # fsspec gave up waiting (it says nothing more)
                from fsspec.exceptions import FSTimeoutError

                if isinstance(exc, FSTimeoutError):
                    late = TimeoutError(
                        f"writing {nbytes} bytes did not complete within its deadline of "
                        f"{deadline:.0f} s (the server stopped answering)"
                    )
                    late.__cause__ = exc
                    exc = late
            # No legitimate FileNotFoundError on a write: it is a missing bucket or folder.
            self._fail("write", key, exc)
        return True

    def exists(self, path: KeyLike) -> bool:
        full = self._full(path)
        try:
            info = self._call("check", path, "info", full)
        except FileNotFoundError:
            return False
        return bool(info.get("type") == "file")

    def delete(self, path: KeyLike) -> None:  # type: ignore[override]
        full = self._full(path)
        with suppress(FileNotFoundError):
            self._call("delete", path, "rm_file", full)

    def ls(self, path: KeyLike = "") -> list[str]:
        return sorted(self.walk_keys(path))

    def open_read(self, path: KeyLike) -> AbstractContextManager[BinaryIO]:
        full = self._full(path)
        if self._protocol() == "memory":
            # fsspec's memory store hands every reader the same file object (one position).
            return io.BytesIO(self.read_path(path))
        return cast(AbstractContextManager[BinaryIO], self._call("read", path, "open", full, "rb"))

    def read_range(self, path: KeyLike, start: int, end: int) -> bytes:
        check_range(start, end)
        full = self._full(path)
        if start == end:
            self.size(path)  # still FileNotFoundError for a missing object
            return b""
        try:
            return cast(bytes, self._call("read", path, "cat_file", full, start=start, end=end))
        except StorageError:
            # Object stores answer 416 for a range past the end; ours returns b"".
            if self.size(path) <= start:
                return b""
            raise

    def open_atomic_write(self, path: KeyLike) -> AbstractContextManager[BinaryIO]:
        key = self._key(path)
        return self._atomic_write(key, join_key(self._root(), key))

    def open_exclusive_write(
        self, path: KeyLike, before_overwrite: Callable[[], bool]
    ) -> AbstractContextManager[BinaryIO]:
        """`open_atomic_write`, published create-only; when an object is already there,
        `before_overwrite()` decides whether it is replaced (`blocks.filesystems._exclusive`).
        Only for a storage `exclusive_writer` gives (its server refuses a second create)."""
        key = self._key(path)
        return self._atomic_write(key, join_key(self._root(), key), before_overwrite)

    @contextmanager
    def _atomic_write(
        self, key: str, full: str, before_overwrite: Callable[[], bool] | None = None
    ) -> Iterator[BinaryIO]:
        # Spool locally, upload once on a clean exit: nothing reaches the store on error.
        with _Spool(SPOOL_MAX_MEMORY) as spool:
            yield cast(BinaryIO, spool)
            spool.flush()
            self._upload(key, full, spool, before_overwrite)

    def _upload(
        self, key: str, full: str, spool: _Spool, before_overwrite: Callable[[], bool] | None
    ) -> None:
        if self._single_put():
            if spool.path is None:  # still in memory: one PUT of its bytes
                data = spool.getvalue()
                publish(
                    lambda create: self._put_bytes(key, full, data, create),
                    before_overwrite,
                    resend=len(data),
                )
                return
            # Spilled (over 16 MiB, so over `RESEND_MAX`: checked first, then sent once).
            # put_file is one PUT or a multipart upload, which S3/GCS publish only when complete.
            path, size = spool.path, os.path.getsize(spool.path)
            publish(
                lambda create: self._write(
                    "put_file", key, nbytes=size, args=(path, full), create=create
                ),
                before_overwrite,
                resend=size,
            )
            return
        if before_overwrite is not None:
            before_overwrite()
        # Other stores (sftp, ftp, ...): upload beside the target, then rename over it.
        fs = self.filesystem()
        parent, _, _ = full.rpartition("/")
        tmp = f"{parent}/{TEMP_PREFIX}{uuid.uuid4().hex}"
        try:
            fs.makedirs(parent, exist_ok=True)
            spool.seek(0)
            with fs.open(tmp, "wb") as out:
                shutil.copyfileobj(spool, out, 1024 * 1024)
            fs.mv(tmp, full)
        except Exception as exc:
            with suppress(Exception):
                fs.rm_file(tmp)
            self._fail("write", key, exc)

    def size(self, path: KeyLike) -> int:
        info = self._call("read", path, "info", self._full(path))
        if info.get("type") != "file":
            raise self._missing(path)
        return int(info["size"])

    def walk_keys(self, prefix: KeyLike = "") -> Iterator[str]:
        full = self._full(prefix, allow_empty=True)
        try:
            found = self._call("list", prefix, "find", full)
        except FileNotFoundError:
            return
        if not found:
            if self._is_missing_root(FileNotFoundError(full)):
                self._fail("list", prefix, FileNotFoundError(full))
            # fsspec's generic ``find`` (HTTP, ...) walks with errors omitted: a storage it
            # cannot reach lists as empty. Ask once more, letting errors out: unreachable is
            # a `StorageError`, never "0 records" (issue 20); absent is still empty.
            with contextlib.suppress(FileNotFoundError):
                self._call("list", prefix, "ls", full)
        for item in sorted(found):
            rel = self._relative(item)
            if not rel or rel.endswith("/") or rel.rsplit("/", 1)[-1].startswith(TEMP_PREFIX):
                continue
            if rel.startswith(_LEASES) or f"/{_LEASES}" in rel:
                continue  # compute-once leases, not records
            yield rel


class _Spool(io.BufferedIOBase):
    """A seekable write buffer: in memory up to `max_memory` bytes, then a named temp file."""

    def __init__(self, max_memory: int) -> None:
        super().__init__()
        self._buffer: BinaryIO = io.BytesIO()
        self._max_memory = max_memory
        self.path: str | None = None

    def _roll(self) -> None:
        fd, path = tempfile.mkstemp(prefix=TEMP_PREFIX)
        self.path = path
        disk = os.fdopen(fd, "w+b")
        memory = cast(io.BytesIO, self._buffer)
        disk.write(memory.getbuffer())
        disk.seek(memory.tell())
        self._buffer = disk

    def write(self, data: Any) -> int:
        if self.path is None and self._buffer.tell() + memoryview(data).nbytes > self._max_memory:
            # Roll first: a big write (pickle hands over a large payload in one piece) goes
            # straight to the file instead of through a second in-memory copy.
            self._roll()
        return self._buffer.write(data)

    def getvalue(self) -> bytes:
        return cast(io.BytesIO, self._buffer).getvalue()

    def read(self, size: int | None = -1) -> bytes:
        return self._buffer.read(-1 if size is None else size)

    def seek(self, offset: int, whence: int = 0) -> int:
        return self._buffer.seek(offset, whence)

    def tell(self) -> int:
        return self._buffer.tell()

    def flush(self) -> None:
        self._buffer.flush()

    def readable(self) -> bool:
        return True

    def writable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def close(self) -> None:
        if self.closed:
            return
        super().close()  # flushes first
        self._buffer.close()
        if self.path is not None:
            with suppress(FileNotFoundError):
                os.unlink(self.path)


def _refused_create(exc: BaseException) -> bool:
    """Whether `exc` is a create-only write refused for an object being there or being made
    (S3 answers 409 ``ConditionalRequestConflict`` while another create of it is under way;
    the Azure SDK may raise its 412 ``ConditionNotMet`` untranslated)."""
    if isinstance(exc, FileExistsError) or getattr(exc, "status_code", None) == 412:
        return True
    return s3_error_code(exc) in ("PreconditionFailed", "ConditionalRequestConflict")


def _without_private(state: dict[Any, Any], **defaults: Any) -> dict[Any, Any]:
    """A pickled block carries its settings, not its live clients (rebuilt on first use)."""
    private = {**(state.get("__pydantic_private__") or {}), **defaults}
    return {**state, "__pydantic_private__": private}


class RemoteFileSystem(FsspecFileSystem):
    """Storage at any fsspec URL; `settings` (often keys) is secret and encrypted at rest.

    Example:
        >>> fs = RemoteFileSystem(basepath="s3://bucket/results",
        ...                       settings={"key": "AKIA...", "secret": "..."})
        >>> fs.write_path("x.bin", b"1")
        >>> fs
        RemoteFileSystem(basepath='s3://bucket/results', settings=Secret('**********'))
    """

    _block_is_abstract = False
    _description = "Store data at any fsspec URL (memory://, sftp://, s3://, gs://, ...)."

    basepath: str
    """``protocol://path``: where objects live (put credentials in `settings`, not here)."""
    settings: SecretDict = Field(default_factory=lambda: SecretDict({}))
    """Keyword arguments of the fsspec filesystem (credentials included): secret."""

    @field_validator("basepath")
    @classmethod
    def _has_protocol(cls, value: str) -> str:
        if "://" not in value:
            raise ValueError(
                "basepath must be a URL with a protocol, e.g. 'memory://results' or "
                "'s3://bucket/prefix'; use LocalFileSystem for a local folder"
            )
        return value

    def _protocol(self) -> str:
        return self.basepath.split("://", 1)[0]

    def _root(self) -> str:
        fs = self.filesystem()
        return str(fs._strip_protocol(self.basepath)).rstrip("/")

    def _storage_options(self) -> dict[str, Any]:
        return dict(self.settings.get_secret_value())

    def _base_url(self) -> str:
        return _USERINFO.sub(r"\1", self.basepath.rstrip("/"))

    def _make_filesystem(self, options: dict[str, Any]) -> Any:
        # Like fsspec.url_to_fs: host, port and user come from the URL (ftp://host:21/path);
        # options given in settings win.
        from fsspec.registry import get_filesystem_class

        try:
            from_url = get_filesystem_class(self._protocol())._get_kwargs_from_urls(self.basepath)
        except (ImportError, ValueError):
            from_url = {}  # the base class names the missing package or unknown protocol
        return super()._make_filesystem({**from_url, **options})

    def _write_options(self, fs: Any, nbytes: int) -> dict[str, Any]:
        if self._protocol() in ("s3", "s3a"):
            from blocks.filesystems.aws import s3_write_options

            return s3_write_options(fs, nbytes)
        return {}

    def describe(self) -> str:
        # A URL may carry user:password@ (ftp, sftp, http): never show it.
        return mask_userinfo(self.basepath.rstrip("/"))


__all__ = ["FsspecFileSystem", "RemoteFileSystem"]
