"""Azure blocks: `AzureBlobStorageCredentials` and `AzureBlobStorageContainer` (over adlfs).

prefect-azure's names. adlfs is optional (``pip install 'blocks[azure]'``) and imported on first
use. Credentials, in order: a connection string (holds the account key: secret), else a service
principal (`client_id`, `tenant_id`, `client_secret`) on `account_url`, else the ambient Azure
chain (``DefaultAzureCredential``: environment, managed identity, the ``az`` login) on
`account_url`.

Example:
    >>> creds = AzureBlobStorageCredentials(connection_string="DefaultEndpointsProtocol=...")
    >>> creds.save("prod")
    >>> store = AzureBlobStorageContainer(container_name="results", base_folder="etl",
    ...                                   credentials=AzureBlobStorageCredentials.load("prod"))
    >>> store.write_path("a.bin", b"1")
    'az://results/etl/a.bin'
"""

from __future__ import annotations

import importlib
import urllib.parse
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, BinaryIO, NoReturn, Self, cast

from pydantic import SecretStr, field_validator, model_validator

from blocks.core._block import Block
from blocks.core._documents import mask_userinfo
from blocks.errors import MissingDependency
from blocks.filesystems._azure_blocks import BlockWriter
from blocks.filesystems._exclusive import publish
from blocks.filesystems.base import KeyLike, secret_strings
from blocks.filesystems.remote import FsspecFileSystem

AZURE_EXTRA = "pip install 'blocks[azure]'"

#: Seconds adlfs waits to connect and for each read (the Azure SDK's defaults: 20 s and 60 s).
CONNECTION_TIMEOUT = 20
READ_TIMEOUT = 60


def parse_connection_string(text: str) -> dict[str, str]:
    """A connection string's ``Key=Value;`` pairs (keys lower-cased)."""
    pairs = (part.split("=", 1) for part in text.split(";") if "=" in part)
    return {key.strip().lower(): value.strip() for key, value in pairs}


class AzureBlobStorageCredentials(Block):
    """How to reach an Azure storage account: a connection string, a service principal, or the
    ambient Azure credentials on an account URL.

    Example:
        >>> AzureBlobStorageCredentials(connection_string=os.environ["AZURE_CONN"]).save("prod")
        >>> AzureBlobStorageCredentials(account_url="https://acct.blob.core.windows.net")
    """

    _block_type_name = "Azure Blob Storage Credentials"
    _description = "An Azure storage account: connection string, service principal or ambient."

    connection_string: SecretStr | None = None
    """The account's connection string (it holds the account key or a SAS token)."""
    account_url: str | None = None
    """``https://<account>.blob.core.windows.net`` (for the service principal or ambient chain)."""
    client_id: str | None = None
    tenant_id: str | None = None
    client_secret: SecretStr | None = None

    @model_validator(mode="after")
    def _one_way_in(self) -> Self:
        if self.connection_string is None and not self.account_url:
            raise ValueError("give a connection_string or an account_url")
        principal = (self.client_id, self.tenant_id, self.client_secret)
        if any(p is not None for p in principal) and not all(p is not None for p in principal):
            raise ValueError("a service principal needs client_id, tenant_id and client_secret")
        return self

    def endpoint(self) -> str:
        """The blob endpoint, without any key (for messages)."""
        if self.connection_string is not None:
            parts = parse_connection_string(self.connection_string.get_secret_value())
            if parts.get("blobendpoint"):
                return parts["blobendpoint"].rstrip("/")
            account = parts.get("accountname", "?")
            suffix = parts.get("endpointsuffix", "core.windows.net")
            protocol = parts.get("defaultendpointsprotocol", "https")
            return f"{protocol}://{account}.blob.{suffix}"
        return mask_userinfo(str(self.account_url).split("?", 1)[0].rstrip("/"))

    def storage_options(self) -> dict[str, Any]:
        """Keyword arguments for ``adlfs.AzureBlobFileSystem`` (secret: never log them)."""
        if self.connection_string is not None:
            return {"connection_string": self.connection_string.get_secret_value()}
        url = urllib.parse.urlsplit(str(self.account_url))
        host = url.hostname or ""
        options: dict[str, Any] = {"account_name": host.split(".", 1)[0], "account_host": host}
        if self.client_secret is not None:
            options |= {
                "client_id": self.client_id,
                "tenant_id": self.tenant_id,
                "client_secret": self.client_secret.get_secret_value(),
            }
        else:
            options["anon"] = False  # adlfs then asks DefaultAzureCredential
        return options

    def secret_values(self) -> list[str]:
        """Strings no message may contain: the connection string and each secret in it."""
        found = secret_strings([self.connection_string, self.client_secret])
        if self.connection_string is not None:
            parts = parse_connection_string(self.connection_string.get_secret_value())
            found += secret_strings([parts.get("accountkey"), parts.get("sharedaccesssignature")])
        return found


class AzureBlobStorageContainer(FsspecFileSystem):
    """Storage in an Azure Blob Storage container (or Azurite), under `base_folder`.

    Writes are one upload: a small payload in a single PUT, a large one streamed as staged
    blocks and committed at once (`blocks.filesystems._azure_blocks`), so a reader sees the
    whole blob or none.

    Example:
        >>> AzureBlobStorageContainer(container_name="results", base_folder="prod",
        ...                           credentials=AzureBlobStorageCredentials.load("prod"))
    """

    _block_is_abstract = False
    _block_type_slug = "azure-blob-storage-container"
    _block_type_name = "Azure Blob Storage Container"
    _description = "Store data in an Azure Blob Storage container."

    container_name: str
    base_folder: str | None = None
    credentials: AzureBlobStorageCredentials

    @field_validator("container_name")
    @classmethod
    def _valid_container(cls, value: str) -> str:
        name = value.removeprefix("az://").removeprefix("abfs://").strip("/")
        if not name or "/" in name or name.startswith("."):
            raise ValueError("container_name must be one container name (no '/')")
        return name

    @field_validator("base_folder")
    @classmethod
    def _valid_folder(cls, value: str | None) -> str | None:
        if value is None:
            return None
        folder = value.strip("/")
        if any(part in ("", ".", "..") for part in folder.split("/")) and folder:
            raise ValueError("base_folder must be a plain relative path (no '..', no '//')")
        return folder or None

    def _protocol(self) -> str:
        return "az"

    def _root(self) -> str:
        return (
            f"{self.container_name}/{self.base_folder}" if self.base_folder else self.container_name
        )

    def _base_url(self) -> str:
        return f"az://{self._root()}"

    def describe(self) -> str:
        return f"az://{self._root()} (endpoint {self.credentials.endpoint()})"

    def _storage_options(self) -> dict[str, Any]:
        return {
            **self.credentials.storage_options(),
            "use_listings_cache": False,
            "connection_timeout": CONNECTION_TIMEOUT,
            "read_timeout": READ_TIMEOUT,
        }

    def _make_filesystem(self, options: dict[str, Any]) -> Any:
        try:
            adlfs = importlib.import_module("adlfs")
        except ImportError:
            raise MissingDependency(
                f"adlfs is needed for Azure Blob Storage blocks: {AZURE_EXTRA}"
            ) from None
        return adlfs.AzureBlobFileSystem(skip_instance_cache=True, **options)

    def secret_values(self) -> list[str]:
        return self.credentials.secret_values()

    def open_head(self, path: KeyLike, size: int) -> tuple[bytes, BinaryIO | None]:
        # One ranged GET: a small record (most cached results) is read whole in one request.
        # fsspec's file object would first ask for the blob's properties, then read: two round
        # trips (measured by tests/benchmarks/bench_azure.py).
        head = self.read_range(path, 0, size)
        if len(head) < size:
            return head, None
        stream = self.open_read(path).__enter__()
        try:
            stream.seek(len(head))
        except BaseException:
            stream.close()
            raise
        return head, stream

    @contextmanager
    def _atomic_write(
        self, key: str, full: str, before_overwrite: Callable[[], bool] | None = None
    ) -> Iterator[BinaryIO]:
        # Streamed: blocks are staged as the bytes come (no local spool) and committed once on
        # a clean exit; on an error, or a killed process, nothing is committed.
        fs = self.filesystem()

        def client() -> Any:
            container, blob, _ = fs.split_path(full)
            return fs.service_client.get_blob_client(container, blob)

        def fail(exc: BaseException) -> NoReturn:
            self._fail("write", key, exc)

        writer = BlockWriter(
            client,
            fs.loop,
            put_small=lambda data, create: self._put_bytes(key, full, data, create),
            fail=fail,
            options=dict(getattr(fs, "_timeout_kwargs", {})),
        )
        with writer:
            yield cast(BinaryIO, writer)
            publish(writer.commit, before_overwrite, resend=writer.resend_bytes)

    def _fail(self, action: str, key: KeyLike, exc: BaseException) -> NoReturn:
        # The Azure SDK answers a write to a missing container with its own error (not a
        # FileNotFoundError): one clear message for it, as for a missing S3 bucket.
        if getattr(exc, "error_code", None) == "ContainerNotFound":
            self._root_checked = False
            exc = FileNotFoundError(self._root())
        super()._fail(action, key, exc)

    def _is_missing_root(self, exc: BaseException) -> bool:
        # A missing blob and a missing container both come back as FileNotFoundError: ask once.
        if self._root_checked:
            return False
        try:
            exists = bool(self.filesystem().exists(self.container_name))
        except Exception:
            return False
        if exists:
            self._root_checked = True
        return not exists


__all__ = ["AzureBlobStorageContainer", "AzureBlobStorageCredentials"]
