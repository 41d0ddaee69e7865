"""Filesystem blocks: where results and files live (local disk, any fsspec URL, S3, GCS).

Importing this package is cheap: fsspec, s3fs, gcsfs and boto3 are imported only when a
block first touches its storage. Every block shares one protocol (`WritableFileSystem`) and
one key rule (`validate_key`): no key escapes its base path.

Example:
    >>> from blocks.filesystems import LocalFileSystem, S3
    >>> LocalFileSystem(basepath="/tmp/results").write_path("a.bin", b"1")
    >>> S3(bucket_path="my-bucket/results").exists("a.bin")
    False
"""

from __future__ import annotations

from blocks.filesystems.aws import S3, AwsCredentials, AwsSecret
from blocks.filesystems.base import WritableFileSystem, validate_key
from blocks.filesystems.gcp import GCS, GcpCredentials
from blocks.filesystems.local import LocalFileSystem
from blocks.filesystems.remote import RemoteFileSystem

__all__ = [
    "GCS",
    "S3",
    "AwsCredentials",
    "AwsSecret",
    "GcpCredentials",
    "LocalFileSystem",
    "RemoteFileSystem",
    "WritableFileSystem",
    "validate_key",
]
