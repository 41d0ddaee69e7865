"""Task result storage: one atomic, verified record per result, on any filesystem block.

The public API, used by the task runtime and the ``block results`` CLI:

- `ResultStore`: ``write`` / ``read`` / ``exists`` / ``header`` / ``records`` / ``prune``;
- `RecordHeader`, `Hit`: what a record says about itself, and a found value;
- `Payload`: a record's verified payload bytes as a file (`ResultStore.open_payload`);
- `resolve_storage`: a block, saved block slug, URL or path -> a filesystem block;
- `render_storage_key`: fill a ``result_storage_key`` template, validated as a key.

The record format is described in `blocks.results._record`.

Example:
    >>> from blocks.results import ResultStore
    >>> store = ResultStore.resolve("memory://scratch", serializer="json")
    >>> store.write("a/b", [1, 2]).payload_size
    5
    >>> store.read("a/b").value
    [1, 2]
"""

from __future__ import annotations

from blocks.filesystems._keys import validate_key
from blocks.results._payload import Payload
from blocks.results._record import FORMAT_VERSION, RecordHeader
from blocks.results._storage import is_block_slug, render_storage_key, resolve_storage
from blocks.results._store import CorruptRecordWarning, Hit, ResultStore

__all__ = [
    "FORMAT_VERSION",
    "CorruptRecordWarning",
    "Hit",
    "Payload",
    "RecordHeader",
    "ResultStore",
    "is_block_slug",
    "render_storage_key",
    "resolve_storage",
    "validate_key",
]
