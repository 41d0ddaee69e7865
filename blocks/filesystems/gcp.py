"""Google Cloud blocks: `GcpCredentials` and the `GCS` bucket storage (over gcsfs).

gcsfs is optional (``pip install 'blocks[gcs]'``) and imported on first use. With no
credentials given, gcsfs's default chain is used (application default credentials, the
metadata server on GCP).

Example:
    >>> GcpCredentials(service_account_info={...}, project="my-project").save("prod")
    >>> GCS(bucket_path="my-bucket/results", credentials=GcpCredentials.load("prod"))
"""

from __future__ import annotations

import importlib
from typing import Any

from pydantic import SecretStr, field_validator

from blocks.core._block import Block, SecretDict
from blocks.errors import MissingDependency
from blocks.filesystems.base import secret_strings
from blocks.filesystems.remote import FsspecFileSystem

GCS_EXTRA = "pip install 'blocks[gcs]'"


class GcpCredentials(Block):
    """A Google service account (its JSON key, encrypted at rest) and a default project.

    Example:
        >>> info = json.load(open("service-account.json"))
        >>> GcpCredentials(service_account_info=info, project="my-project").save("prod")
    """

    _block_type_name = "GCP Credentials"
    _description = "A Google Cloud service account key and project."

    service_account_info: SecretDict | None = None
    project: str | None = None


class GCS(FsspecFileSystem):
    """Storage in a Google Cloud Storage bucket (or the GCS emulator via `endpoint_url`).

    Credentials: `service_account_info` or `token` given here, else `credentials`
    (a saved `GcpCredentials` stays linked), else the ambient Google credentials.

    Example:
        >>> GCS(bucket_path="my-bucket/results", project="my-project")
        >>> GCS(bucket_path="test-bucket/results", endpoint_url="http://127.0.0.1:9023",
        ...     token="anon").write_path("k", b"v")
    """

    _block_is_abstract = False
    _block_type_slug = "gcs"
    _block_type_name = "GCS"
    _description = "Store data in a Google Cloud Storage bucket."

    bucket_path: str
    """``bucket`` or ``bucket/prefix`` (a ``gs://`` prefix is accepted)."""
    credentials: GcpCredentials | None = None
    service_account_info: SecretDict | None = None
    project: str | None = None
    endpoint_url: str | None = None
    """A custom endpoint (the GCS emulator); ``None`` for Google Cloud Storage."""
    token: SecretStr | None = None
    """gcsfs ``token``: ``anon``, ``google_default``, ``cloud``, a key file path or a raw
    access token (hence secret)."""

    @field_validator("bucket_path")
    @classmethod
    def _valid_bucket_path(cls, value: str) -> str:
        path = value.removeprefix("gs://").removeprefix("gcs://").strip("/")
        if not path or path.startswith("."):
            raise ValueError("bucket_path must be 'bucket' or 'bucket/prefix'")
        return path

    def _protocol(self) -> str:
        return "gs"

    def _root(self) -> str:
        return self.bucket_path

    def _base_url(self) -> str:
        return f"gs://{self.bucket_path}"

    def _storage_options(self) -> dict[str, Any]:
        creds = self.credentials
        info = self.service_account_info or (creds.service_account_info if creds else None)
        options: dict[str, Any] = {"use_listings_cache": False}
        if info is not None:
            options["token"] = dict(info.get_secret_value())
        elif self.token is not None:
            options["token"] = self.token.get_secret_value()
        project = self.project or (creds.project if creds else None)
        if project:
            options["project"] = project
        if self.endpoint_url:
            options["endpoint_url"] = self.endpoint_url
        return options

    def _make_filesystem(self, options: dict[str, Any]) -> Any:
        try:
            importlib.import_module("gcsfs")
            core = importlib.import_module("gcsfs.core")
        except ImportError:
            raise MissingDependency(f"gcsfs is needed for GCS blocks: {GCS_EXTRA}") from None
        # The plain client: gcsfs's experimental zonal/HNS class needs real Google APIs,
        # which neither the emulator nor a custom endpoint offers.
        cls = (
            core.GCSFileSystem
            if self.endpoint_url
            else importlib.import_module("gcsfs").GCSFileSystem
        )
        return cls(**options)

    def secret_values(self) -> list[str]:
        return secret_strings(self._storage_options().get("token"))

    def _is_missing_root(self, exc: BaseException) -> bool:
        # GCS answers 404 alike for a missing object and a missing bucket: ask once.
        if self._root_checked:
            return False
        bucket = self.bucket_path.split("/", 1)[0]
        try:
            self.filesystem().info(bucket)
        except FileNotFoundError:
            return True
        except Exception:
            return False
        self._root_checked = True
        return False

    def describe(self) -> str:
        where = f"gs://{self.bucket_path}"
        return f"{where} (endpoint {self.endpoint_url})" if self.endpoint_url else where


__all__ = ["GCS", "GcpCredentials"]
