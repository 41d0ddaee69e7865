"""Conditional objects: create only if absent, replace or delete only if unchanged.

What a lease held in the storage itself needs (`blocks.results._leases`): small objects under
``.blocks-leases/`` at a storage's root (`LEASES_FOLDER`, never listed as records), each with
a *version* the storage gives (an S3 ETag, a GCS generation, an Azure ETag, a local file's
inode and change time):

- `create`: S3 ``PutObject`` with ``If-None-Match: *``, GCS ``ifGenerationMatch=0``, Azure
  ``If-None-Match: *``, locally a ``link()`` of a finished temp file (atomic create-if-absent,
  also on NFS), so nobody sees a half-written lease (the folder stays while the process
  that made it lives, and goes at its exit if empty, so an idle storage holds none);
- `replace`: S3 ``If-Match``, GCS ``ifGenerationMatch=<generation>``, Azure ``If-Match``,
  locally a ``rename()`` of the current file aside (only one process gets it), kept only if it
  is the version asked for, else put back;
- `delete`: the same conditions; where the store does not implement conditional deletes
  (LocalStack 2026.3 answers ``NotImplemented`` to ``DeleteObject`` with ``If-Match``), the
  object is read again and deleted only if its version is still the one given (a race of a
  few milliseconds, which at worst costs a second computation, never a wrong value).

`conditional_objects(storage)` gives the implementation for a storage, or None (a storage with
no conditional writes: an fsspec URL, a ``memory://`` folder). Whether the server really
refuses a second create is probed by the caller (the GCS emulator accepts and ignores
``ifGenerationMatch``).

Example:
    >>> objects = conditional_objects(LocalFileSystem(basepath="/srv/shared"))
    >>> version = objects.create("k", b"mine")
    >>> objects.create("k", b"theirs") is None
    True
"""

from __future__ import annotations

import atexit
import os
import uuid
from contextlib import suppress
from typing import Any, Protocol

from blocks.filesystems._keys import LEASES_FOLDER

__all__ = [
    "LEASES_FOLDER",
    "ConditionalObjects",
    "Unsupported",
    "conditional_objects",
    "s3_error_code",
]


class Unsupported(Exception):
    """The storage answered that it does not implement this conditional request."""


class ConditionalObjects(Protocol):
    """Small objects below ``.blocks-leases/`` with compare-and-swap on their version."""

    def describe(self) -> str: ...

    def create(self, name: str, data: bytes) -> str | None:
        """Store `data` as `name` if no object has that name; its version, else None."""

    def read(self, name: str) -> tuple[bytes, str] | None:
        """The object's bytes and version; None if absent."""

    def replace(self, name: str, data: bytes, version: str) -> str | None:
        """Overwrite `name` if it is still at `version`; the new version, else None."""

    def delete(self, name: str, version: str) -> bool:
        """Delete `name` if it is still at `version`; whether it was."""

    def names(self) -> list[str]:
        """The names of the objects there now."""


def conditional_objects(storage: Any) -> ConditionalObjects | None:
    """The conditional objects of `storage` (a filesystem block or a `LocalFolder`), or None."""
    from blocks.filesystems._folder import LocalFolder

    if isinstance(storage, LocalFolder):
        return LocalObjects(str(storage.root()), storage.describe())
    kind = type(storage).__name__
    if kind == "LocalFileSystem":
        return LocalObjects(str(storage.root()), storage.describe())
    if kind == "S3":
        return S3Objects(storage)
    if kind == "GCS":
        return GCSObjects(storage)
    if kind == "AzureBlobStorageContainer":
        return AzureObjects(storage)
    if kind == "RemoteFileSystem":  # an s3:// or gs:// URL: the same calls through its fsspec
        protocol = storage._protocol().lower()
        if protocol in ("s3", "s3a"):
            return S3Objects(storage)
        if protocol in ("gs", "gcs"):
            return GCSObjects(storage)
    return None


# -- a local or NFS folder ---------------------------------------------------------------------


class LocalObjects:
    """Lease files in ``<root>/.blocks-leases``: ``link()`` creates, ``rename()`` swaps."""

    def __init__(self, root: str, described: str) -> None:
        self.folder = os.path.join(root, LEASES_FOLDER)
        self._described = described

    def describe(self) -> str:
        return self._described

    def _path(self, name: str) -> str:
        return os.path.join(self.folder, name)

    def create(self, name: str, data: bytes) -> str | None:
        if self.folder in _made and _UNNAMED:
            created = self._create_unnamed(name, data)
            if created is not _UNSUPPORTED:
                return created  # type: ignore[return-value]
        temp = self._path(f".{name}.{uuid.uuid4().hex}.new")
        for _ in range(100):  # another process may remove the folder (`_remove_folders`)
            if self.folder not in _made:
                os.makedirs(self.folder, mode=0o700, exist_ok=True)
                _made.add(self.folder)
            try:
                fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
                break
            except FileNotFoundError:
                _made.discard(self.folder)
                continue
        else:  # pragma: no cover - someone removes the folder in a loop
            raise FileNotFoundError(self.folder)
        try:
            os.write(fd, data)
            info = os.fstat(fd)
        finally:
            os.close(fd)
        try:
            os.link(temp, self._path(name))
        except FileExistsError:
            return None
        finally:
            os.unlink(temp)
        return _file_version(os.stat(self._path(name), follow_symlinks=False), info.st_ino)

    def _create_unnamed(self, name: str, data: bytes) -> str | object | None:
        """`create` with a file that has no name until it is whole (Linux ``O_TMPFILE``, then
        ``linkat`` of its descriptor): no temp name made and removed in the folder, two
        directory operations fewer per lease. `_UNSUPPORTED` where the filesystem (NFS) or
        the system (no ``/proc``) cannot: the caller falls back to a named temp file."""
        global _UNNAMED
        try:
            fd = os.open(self.folder, os.O_WRONLY | _UNNAMED, 0o600)
        except FileNotFoundError:
            _made.discard(self.folder)
            return _UNSUPPORTED
        except OSError:  # EOPNOTSUPP, EISDIR on kernels without O_TMPFILE...
            _UNNAMED = 0
            return _UNSUPPORTED
        try:
            os.write(fd, data)
            info = os.fstat(fd)
            try:
                # `src_dir_fd` (ignored for an absolute path) makes it ``linkat`` with
                # AT_SYMLINK_FOLLOW, which links the descriptor's file; plain ``link`` fails.
                os.link(
                    f"/proc/self/fd/{fd}", self._path(name), src_dir_fd=fd, follow_symlinks=True
                )
            except FileExistsError:
                return None
            except OSError:  # no /proc: named temp files from now on
                _UNNAMED = 0
                return _UNSUPPORTED
        finally:
            os.close(fd)
        # A link keeps the inode and its modification time: the version is the fstat's.
        return _file_version(info)

    def read(self, name: str) -> tuple[bytes, str] | None:
        try:
            fd = os.open(self._path(name), os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
        except FileNotFoundError:
            return None
        try:
            info = os.fstat(fd)
            return os.read(fd, 64 * 1024), _file_version(info)
        finally:
            os.close(fd)

    def _take(self, name: str, version: str) -> str | None:
        """Move `name` aside if it is at `version` (the moved path), else leave it be."""
        aside = self._path(f".{name}.{uuid.uuid4().hex}.old")
        try:
            os.rename(self._path(name), aside)  # atomic: one process gets the file
        except FileNotFoundError:
            return None
        if _file_version(os.stat(aside, follow_symlinks=False)) == version:
            return aside
        with suppress(FileExistsError):  # not the one meant: put it back if still free
            os.link(aside, self._path(name))
        os.unlink(aside)
        return None

    def replace(self, name: str, data: bytes, version: str) -> str | None:
        aside = self._take(name, version)
        if aside is None:
            return None
        os.unlink(aside)
        return self.create(name, data)

    def delete(self, name: str, version: str) -> bool:
        aside = self._take(name, version)
        if aside is not None:
            os.unlink(aside)
        return aside is not None

    def names(self) -> list[str]:
        try:
            return sorted(n for n in os.listdir(self.folder) if not n.startswith("."))
        except FileNotFoundError:
            return []


#: ``O_TMPFILE`` where the system has it (0: named temp files, `LocalObjects._create_unnamed`).
_UNNAMED = getattr(os, "O_TMPFILE", 0)
_UNSUPPORTED = object()

#: Lease folders this process made or found (no ``mkdir`` per lease). Each stays until the
#: process exits, then goes if empty (`_remove_folders`): removing it with its last lease
#: instead cost a ``rmdir`` and a ``mkdir`` per cache miss, ~0.1-1 ms each on a loaded ext4.
_made: set[str] = set()


@atexit.register
def _remove_folders() -> None:
    """Leave no empty lease folder in the user's storage (one still in use stays)."""
    for folder in list(_made):
        with suppress(OSError):
            os.rmdir(folder)
    _made.clear()


def _file_version(info: os.stat_result, ino: int | None = None) -> str:
    # The inode names the file (a link or a rename keeps it, a new file gets another); its
    # modification time (which neither changes) tells it from an earlier file that had the
    # same inode number.
    return f"{info.st_ino if ino is None else ino}:{info.st_mtime_ns}"


# -- object stores -----------------------------------------------------------------------------


class _Remote:
    """The block's bucket and prefix; object names below ``<prefix>/.blocks-leases/``."""

    def __init__(self, block: Any) -> None:
        self.block = block
        root = block._root().strip("/")
        self.bucket, _, prefix = root.partition("/")
        self.prefix = f"{prefix}/{LEASES_FOLDER}/" if prefix else f"{LEASES_FOLDER}/"

    def describe(self) -> str:
        return str(self.block.describe())


class S3Objects(_Remote):
    """S3 conditional writes (``If-None-Match: *``, ``If-Match``) through s3fs's client."""

    def _call(self, method: str, **kwargs: Any) -> Any:
        return self.block.filesystem().call_s3(method, Bucket=self.bucket, **kwargs)

    def _refused(self, exc: OSError) -> bool:
        code = s3_error_code(exc)
        if code == "NotImplemented":
            raise Unsupported(str(exc)) from exc
        return code in ("PreconditionFailed", "ConditionalRequestConflict")

    def create(self, name: str, data: bytes) -> str | None:
        try:
            answer = self._call("put_object", Key=self.prefix + name, Body=data, IfNoneMatch="*")
        except OSError as exc:
            if self._refused(exc):
                return None
            raise
        return str(answer["ETag"])

    def read(self, name: str) -> tuple[bytes, str] | None:
        from fsspec.asyn import sync

        fs = self.block.filesystem()
        try:
            answer = self._call("get_object", Key=self.prefix + name)
        except FileNotFoundError:
            return None
        body = answer["Body"]

        async def whole() -> bytes:
            async with body:
                data: bytes = await body.read()
                return data

        return sync(fs.loop, whole), str(answer["ETag"])

    def replace(self, name: str, data: bytes, version: str) -> str | None:
        try:
            answer = self._call("put_object", Key=self.prefix + name, Body=data, IfMatch=version)
        except FileNotFoundError:
            return None
        except OSError as exc:
            if self._refused(exc):
                return None
            raise
        return str(answer["ETag"])

    def delete(self, name: str, version: str) -> bool:
        try:
            self._call("delete_object", Key=self.prefix + name, IfMatch=version)
            return True
        except FileNotFoundError:
            return False
        except OSError as exc:
            if s3_error_code(exc) != "NotImplemented" and self._refused(exc):
                return False
            if s3_error_code(exc) != "NotImplemented":
                raise
        found = self.read(name)  # no conditional delete here: compare, then delete
        if found is None or found[1] != version:
            return False
        self._call("delete_object", Key=self.prefix + name)
        return True

    def names(self) -> list[str]:
        found = self.block.filesystem().find(f"{self.bucket}/{self.prefix}")
        return sorted(path.rsplit("/", 1)[-1] for path in found)


def s3_error_code(exc: BaseException) -> str | None:
    """The S3 error code of `exc` (or of the botocore error it was raised from), if any."""
    for error in (exc.__cause__, exc):
        response = getattr(error, "response", None)
        if isinstance(response, dict):
            return str(response.get("Error", {}).get("Code"))
    return None


class GCSObjects(_Remote):
    """GCS preconditions (``ifGenerationMatch``) through gcsfs's JSON API calls."""

    def _fs(self) -> Any:
        return self.block.filesystem()

    def _upload(self, name: str, data: bytes, generation: str) -> str | None:
        fs = self._fs()
        try:
            answer = fs.call(
                "POST",
                f"{fs._location}/upload/storage/v1/b/{self.bucket}/o",
                uploadType="media",
                name=self.prefix + name,
                ifGenerationMatch=generation,
                data=data,
                json_out=True,
            )
        except FileNotFoundError:
            return None
        except OSError as exc:
            if _http_status(exc) in (409, 412) or "412" in str(exc):
                return None
            raise
        return str(answer["generation"])

    def create(self, name: str, data: bytes) -> str | None:
        return self._upload(name, data, "0")

    def read(self, name: str) -> tuple[bytes, str] | None:
        fs = self._fs()
        path = f"{self.bucket}/{self.prefix}{name}"
        try:
            info = fs.info(path)
            data = fs.cat_file(path)
        except FileNotFoundError:
            return None
        return bytes(data), str(info.get("generation"))

    def replace(self, name: str, data: bytes, version: str) -> str | None:
        return self._upload(name, data, version)

    def delete(self, name: str, version: str) -> bool:
        from urllib.parse import quote

        fs = self._fs()
        try:
            fs.call(
                "DELETE",
                f"{fs._location}/storage/v1/b/{self.bucket}/o/{quote(self.prefix + name, safe='')}",
                ifGenerationMatch=version,
            )
        except FileNotFoundError:
            return False
        except OSError as exc:
            if _http_status(exc) in (409, 412) or "412" in str(exc):
                return False
            raise
        return True

    def names(self) -> list[str]:
        try:
            found = self._fs().find(f"{self.bucket}/{self.prefix}")
        except FileNotFoundError:
            return []
        return sorted(path.rsplit("/", 1)[-1] for path in found)


def _http_status(exc: BaseException) -> int | None:
    code = getattr(exc, "code", None)
    return code if isinstance(code, int) else None


class AzureObjects(_Remote):
    """Azure Blob conditions (``If-None-Match: *``, ``If-Match``) with the blob SDK."""

    def __init__(self, block: Any) -> None:
        super().__init__(block)
        self._container: Any = None

    def _client(self, name: str) -> Any:
        if self._container is None:
            from azure.storage.blob import BlobServiceClient

            options = self.block.credentials.storage_options()
            text = options.get("connection_string")
            if text:
                service = BlobServiceClient.from_connection_string(text)
            else:
                from azure import identity

                credential = (
                    identity.ClientSecretCredential(
                        options["tenant_id"], options["client_id"], options["client_secret"]
                    )
                    if "client_secret" in options
                    else identity.DefaultAzureCredential()
                )
                service = BlobServiceClient(f"https://{options['account_host']}", credential)
            self._container = service.get_container_client(self.bucket)
        return self._container.get_blob_client(self.prefix + name)

    def create(self, name: str, data: bytes) -> str | None:
        from azure.core.exceptions import ResourceExistsError, ResourceModifiedError

        try:
            answer = self._client(name).upload_blob(data, overwrite=True, if_none_match="*")
        except (ResourceExistsError, ResourceModifiedError):
            return None
        return str(answer["etag"])

    def read(self, name: str) -> tuple[bytes, str] | None:
        from azure.core.exceptions import ResourceNotFoundError

        try:
            download = self._client(name).download_blob()
            return download.readall(), str(download.properties.etag)
        except ResourceNotFoundError:
            return None

    def replace(self, name: str, data: bytes, version: str) -> str | None:
        from azure.core import MatchConditions
        from azure.core.exceptions import ResourceModifiedError, ResourceNotFoundError

        try:
            answer = self._client(name).upload_blob(
                data, overwrite=True, etag=version, match_condition=MatchConditions.IfNotModified
            )
        except (ResourceModifiedError, ResourceNotFoundError):
            return None
        return str(answer["etag"])

    def delete(self, name: str, version: str) -> bool:
        from azure.core import MatchConditions
        from azure.core.exceptions import ResourceModifiedError, ResourceNotFoundError

        try:
            self._client(name).delete_blob(
                etag=version, match_condition=MatchConditions.IfNotModified
            )
        except (ResourceModifiedError, ResourceNotFoundError):
            return False
        return True

    def names(self) -> list[str]:
        self._client("")
        return sorted(
            blob.name.rsplit("/", 1)[-1]
            for blob in self._container.list_blobs(name_starts_with=self.prefix)
        )
