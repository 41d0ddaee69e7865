"""Filesystem blocks: where results and files live (local disk, any fsspec URL, S3, GCS, Azure).

Importing this package is cheap: each name below is imported on first use (module
``__getattr__``), so the plain key rule and `LocalFolder` (used by ``block results`` on a local
path) come without pydantic, and fsspec, s3fs, gcsfs, adlfs and boto3 are imported only when a block
first touches its storage. Every block shares one protocol (`WritableFileSystem`) and one key
rule (`validate_key`): no key escapes its base path.

Example:
    >>> from blocks.filesystems import LocalFileSystem, S3
    >>> LocalFileSystem(basepath="/tmp/results").write_path("a.bin", b"1")
    >>> S3(bucket_path="my-bucket/results").exists("a.bin")
    False
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from blocks._lazy import lazy_exports

if TYPE_CHECKING:
    from blocks.filesystems._folder import LocalFolder
    from blocks.filesystems._keys import validate_key
    from blocks.filesystems._protocol import Storage
    from blocks.filesystems.aws import S3, AwsCredentials, AwsSecret
    from blocks.filesystems.azure import AzureBlobStorageContainer, AzureBlobStorageCredentials
    from blocks.filesystems.base import WritableFileSystem
    from blocks.filesystems.gcp import GCS, GcpCredentials
    from blocks.filesystems.local import LocalFileSystem
    from blocks.filesystems.remote import RemoteFileSystem

# name -> module that defines it, imported on first access.
_EXPORTS: dict[str, str] = {
    "GCS": "blocks.filesystems.gcp",
    "S3": "blocks.filesystems.aws",
    "AwsCredentials": "blocks.filesystems.aws",
    "AwsSecret": "blocks.filesystems.aws",
    "AzureBlobStorageContainer": "blocks.filesystems.azure",
    "AzureBlobStorageCredentials": "blocks.filesystems.azure",
    "GcpCredentials": "blocks.filesystems.gcp",
    "LocalFileSystem": "blocks.filesystems.local",
    "LocalFolder": "blocks.filesystems._folder",
    "RemoteFileSystem": "blocks.filesystems.remote",
    "Storage": "blocks.filesystems._protocol",
    "WritableFileSystem": "blocks.filesystems.base",
    "validate_key": "blocks.filesystems._keys",
}

#: The modules defining the built-in filesystem blocks (importing one registers its types).
BLOCK_MODULES = (
    "blocks.filesystems.local",
    "blocks.filesystems.remote",
    "blocks.filesystems.aws",
    "blocks.filesystems.gcp",
    "blocks.filesystems.azure",
)


__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, globals())


__all__ = [
    "GCS",
    "S3",
    "AwsCredentials",
    "AwsSecret",
    "AzureBlobStorageContainer",
    "AzureBlobStorageCredentials",
    "GcpCredentials",
    "LocalFileSystem",
    "LocalFolder",
    "RemoteFileSystem",
    "Storage",
    "WritableFileSystem",
    "validate_key",
]
