"""The on-storage format of one result record: a fixed prefix, a small JSON header, the payload.

::

    offset  size  field
    0       4     magic  b"BLKR"
    4       1     format version (1)
    5       4     header length N, big-endian uint32
    9       8     xxh3_64 of the N header bytes, big-endian
    17      N     header: UTF-8 JSON object, right-padded with spaces
    17+N    ...   payload: the serializer's raw bytes, to the end of the object

The header names the serializer only by its spec (rebuilt through the allow-list of
`serializers.resolve_serializer`), and carries the payload's size and ``xxh3_128`` checksum,
which readers verify before any byte reaches a deserializer. Size and checksum are written
*before* the payload, so a writer that can seek reserves them with placeholders of fixed width
and fills them in afterwards; JSON allows the trailing spaces that keep the width fixed.

Example:
    >>> draft = RecordHeader.new("k", {"type": "json"}, expires=None, task=None)
    >>> head = draft.finish(2, "xxh3_128:" + "0" * 32)
    >>> decode_header(encode_prefix(head, width=draft.width()) + b"[]", key="k").payload_size
    2
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

import xxhash

from blocks.errors import CorruptRecord

MAGIC = b"BLKR"
FORMAT_VERSION = 1
_PREFIX = struct.Struct(">4sBIQ")
PREFIX_SIZE = _PREFIX.size  # 17
MAX_HEADER_SIZE = 64 * 1024
#: How many bytes a header-only read asks for first; almost every header fits.
FIRST_READ = 4096

CHECKSUM_ALGORITHM = "xxh3_128"
_CHECKSUM_WIDTH = len(CHECKSUM_ALGORITHM) + 1 + 32
# Placeholders as wide as any real value: 16 digits cover payloads up to ~9 PB.
_SIZE_PLACEHOLDER = 10**16 - 1
_CHECKSUM_PLACEHOLDER = CHECKSUM_ALGORITHM + ":" + "f" * 32
MAX_PAYLOAD_SIZE = _SIZE_PLACEHOLDER


def payload_hasher() -> xxhash.xxh3_128:
    """A fresh hasher for payload bytes (fast: xxh3 runs at memory speed)."""
    return xxhash.xxh3_128()


def checksum_string(hasher: xxhash.xxh3_128) -> str:
    return f"{CHECKSUM_ALGORITHM}:{hasher.hexdigest()}"


@dataclass(frozen=True)
class RecordHeader:
    """What a record says about itself; readable without touching the payload.

    Example:
        >>> store.header("extract-3f2a").payload_size
        1048576
    """

    format_version: int
    key: str
    serializer: dict[str, Any]
    created: datetime
    expires: datetime | None
    payload_size: int
    checksum: str
    task: str | None
    #: The cache key's components (name -> digest: code, each parameter, ...), if keyed by a
    #: cache policy; lets a later miss say what changed. Never a parameter's value.
    components: dict[str, str] | None = None
    #: The flow the producing task ran in, if any.
    flow: str | None = None

    @classmethod
    def new(
        cls,
        key: str,
        serializer: dict[str, Any],
        *,
        expires: datetime | None,
        task: str | None,
        created: datetime | None = None,
        components: dict[str, str] | None = None,
        flow: str | None = None,
    ) -> RecordHeader:
        """A header whose size and checksum are still placeholders (see `finish`)."""
        return cls(
            format_version=FORMAT_VERSION,
            key=key,
            serializer=serializer,
            created=_utc(created) if created is not None else datetime.now(UTC),
            expires=_utc(expires) if expires is not None else None,
            payload_size=_SIZE_PLACEHOLDER,
            checksum=_CHECKSUM_PLACEHOLDER,
            task=task,
            components=dict(components) if components else None,
            flow=flow,
        )

    def finish(self, payload_size: int, checksum: str) -> RecordHeader:
        if not 0 <= payload_size <= MAX_PAYLOAD_SIZE:
            raise ValueError(f"payload of {payload_size} bytes is too large for one record")
        return replace(self, payload_size=payload_size, checksum=checksum)

    def is_expired(self, now: datetime | None = None) -> bool:
        """Whether the record's expiry has passed (records without one never expire)."""
        if self.expires is None:
            return False
        return (_utc(now) if now is not None else datetime.now(UTC)) >= self.expires

    def to_json(self) -> bytes:
        fields: dict[str, Any] = {
            "format_version": self.format_version,
            "key": self.key,
            "serializer": self.serializer,
            "created": self.created.isoformat(),
            "expires": self.expires.isoformat() if self.expires else None,
            "payload_size": self.payload_size,
            "checksum": self.checksum,
            "task": self.task,
        }
        # Optional fields are written only when set: older readers ignore them.
        if self.components is not None:
            fields["components"] = self.components
        if self.flow is not None:
            fields["flow"] = self.flow
        return json.dumps(
            fields,
            separators=(",", ":"),
            ensure_ascii=False,
        ).encode()

    def width(self) -> int:
        """Bytes this header occupies with placeholders: an upper bound for any finished copy."""
        return len(
            replace(self, payload_size=_SIZE_PLACEHOLDER, checksum=_CHECKSUM_PLACEHOLDER).to_json()
        )

    def as_dict(self) -> dict[str, Any]:
        """JSON-able fields, for ``--json`` output."""
        data: dict[str, Any] = json.loads(self.to_json())
        return data


def _utc(moment: datetime) -> datetime:
    # A naive datetime is taken as local time, as `datetime.astimezone` does.
    return moment.astimezone(UTC)


def encode_prefix(header: RecordHeader, *, width: int) -> bytes:
    """Prefix and header bytes, the header padded with spaces to exactly `width` bytes."""
    body = header.to_json()
    if len(body) > width:
        raise ValueError("finished header is wider than its reserved space")
    if width > MAX_HEADER_SIZE:
        raise ValueError(f"record header of {width} bytes exceeds {MAX_HEADER_SIZE}")
    body += b" " * (width - len(body))
    return _PREFIX.pack(MAGIC, FORMAT_VERSION, width, xxhash.xxh3_64_intdigest(body)) + body


def header_length(prefix: bytes, *, key: str) -> int:
    """Check the fixed prefix and return the header length it announces."""
    if len(prefix) < PREFIX_SIZE:
        if not prefix.startswith(MAGIC) and not MAGIC.startswith(prefix):
            raise CorruptRecord(f"{key!r} is not a result record (bad magic bytes)")
        raise CorruptRecord(f"result record {key!r} is truncated ({len(prefix)} bytes)")
    magic, version, length, _ = _PREFIX.unpack_from(prefix)
    if magic != MAGIC:
        raise CorruptRecord(f"{key!r} is not a result record (bad magic bytes)")
    if version != FORMAT_VERSION:
        raise CorruptRecord(
            f"result record {key!r} has format version {version}; this version of blocks reads "
            f"version {FORMAT_VERSION}: upgrade blocks or prune the record"
        )
    if not 0 < length <= MAX_HEADER_SIZE:
        raise CorruptRecord(
            f"result record {key!r} announces an impossible header of {length} bytes"
        )
    return int(length)


def decode_header(prefix_and_header: bytes, *, key: str) -> RecordHeader:
    """Parse and verify ``prefix + header`` bytes (the payload may follow; it is ignored)."""
    length = header_length(prefix_and_header, key=key)
    body = prefix_and_header[PREFIX_SIZE : PREFIX_SIZE + length]
    if len(body) < length:
        raise CorruptRecord(f"result record {key!r} is truncated inside its header")
    expected = _PREFIX.unpack_from(prefix_and_header)[3]
    if xxhash.xxh3_64_intdigest(body) != expected:
        raise CorruptRecord(f"result record {key!r} has a damaged header (checksum mismatch)")
    try:
        raw = json.loads(body)
        header = RecordHeader(
            format_version=_typed(raw["format_version"], int),
            key=_typed(raw["key"], str),
            serializer=_typed(raw["serializer"], dict),
            created=_parse_time(raw["created"]),
            expires=None if raw["expires"] is None else _parse_time(raw["expires"]),
            payload_size=_typed(raw["payload_size"], int),
            checksum=_typed(raw["checksum"], str),
            task=None if raw["task"] is None else _typed(raw["task"], str),
            components=_components(raw.get("components")),
            flow=None if raw.get("flow") is None else _typed(raw["flow"], str),
        )
    except (ValueError, KeyError, TypeError) as exc:
        raise CorruptRecord(f"result record {key!r} has an unreadable header: {exc}") from None
    if header.format_version != FORMAT_VERSION or header.payload_size < 0:
        raise CorruptRecord(f"result record {key!r} has an inconsistent header")
    if not header.checksum.startswith(CHECKSUM_ALGORITHM + ":"):
        raise CorruptRecord(
            f"result record {key!r} uses checksum {header.checksum.split(':')[0]!r}; "
            f"only {CHECKSUM_ALGORITHM} is supported"
        )
    if header.key != key:
        # Copied or moved under another key: its value belongs to a different cache key.
        raise CorruptRecord(f"result record {key!r} was written for key {header.key!r}")
    return header


def _components(value: Any) -> dict[str, str] | None:
    if value is None:
        return None
    components = _typed(value, dict)
    for name, item in components.items():
        _typed(name, str)
        _typed(item, str)
    return dict(components)


def _typed(value: Any, kind: type) -> Any:
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise TypeError(f"expected {kind.__name__}, got {type(value).__name__}")
    return value


def _parse_time(value: Any) -> datetime:
    moment = datetime.fromisoformat(_typed(value, str))
    if moment.tzinfo is None:
        raise ValueError("timestamp without time zone")
    return moment.astimezone(UTC)
