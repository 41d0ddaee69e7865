"""The bytes of a stored document: what its seal covers, and its compact JSON columns.

Shared by the registry (which seals and reads rows) and the load path (which checks a seal on
the columns it read). Imports nothing heavy: listing blocks (`block ls`) loads the registry
without pydantic.
"""

from __future__ import annotations

import json
from typing import Any


def document_message(
    type_slug: str,
    name: str,
    document_id: str,
    version: int,
    schema_checksum: str,
    data: str,
    secrets: str,
    refs: str,
) -> bytes:
    """The canonical bytes a document's seal covers: every stored column, length-prefixed.

    The secret tokens are in it, so a token swapped in from another block, replayed from an
    earlier version, or dropped (and a plaintext put in `data`) breaks the seal.
    """
    # One f-string, not a join over a generator: this runs on every load (~3x faster).
    v = str(version)
    return (
        f"3:bd1;{len(type_slug)}:{type_slug};{len(name)}:{name};"
        f"{len(document_id)}:{document_id};{len(v)}:{v};"
        f"{len(schema_checksum)}:{schema_checksum};{len(data)}:{data};"
        f"{len(secrets)}:{secrets};{len(refs)}:{refs};"
    ).encode()


_DECODER = json.JSONDecoder()


def loads_compact(text: str) -> Any:
    """`json.loads` for the compact JSON we store: `raw_decode` skips loads' whitespace and
    type checks (~4x faster on a small document); anything else goes to `json.loads`."""
    try:
        value, end = _DECODER.raw_decode(text)
    except ValueError:
        return json.loads(text)
    return value if end == len(text) else json.loads(text)
