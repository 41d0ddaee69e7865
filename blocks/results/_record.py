"""The on-storage format of one result record: a fixed prefix, a small JSON header, the payload.

::

    offset  size  field
    0       4     magic  b"BLKR"
    4       1     format version (2)
    5       4     header length N, big-endian uint32
    9       32    header tag: HMAC-SHA256 (results key) over bytes 0-8 and the N header bytes
    41      N     header: UTF-8 JSON object, right-padded with spaces
    41+N    ...   payload: the serializer's raw bytes, to the end of the object

The header names the serializer only by its spec (rebuilt through the allow-list of
`serializers.resolve_serializer`) and carries the payload's size and ``checksum``: the
payload's tag (``hmac-sha256:TAG`` or ``aes256-gmac:NONCE:TAG``). The header tag covers the
prefix and the header, hence the payload tag too: prefix, header and payload are signed
together, and nothing reaches a deserializer before both tags verify (see
`blocks.results._signing` for the key). ``signer`` names the results key (its public id);
``decoded_size`` the uncompressed size of a compressed payload (the ceiling for decoding it);
``versions`` what the payload bytes depend on (Python, cloudpickle). Size and checksum are
written *before* the payload, so a writer that can seek reserves them with placeholders of
fixed width and fills them in afterwards; JSON allows the trailing spaces that keep the width
fixed.

Format 1 (unsigned, xxh3 checksums) records are read as misses and rewritten signed on the next
write. Readers ignore header fields they do not know, so fields may be added without a new
format version.

Example:
    >>> keys = results_keys()
    >>> draft = RecordHeader.new("k", {"type": "json"}, expires=None, task=None)
    >>> head = draft.finish(2, "hmac-sha256:" + "0" * 64)
    >>> prefix = encode_prefix(head, width=draft.width(), signer=keys.active)
    >>> decode_header(prefix + b"[]", key="k", keys=keys).payload_size
    2
"""

from __future__ import annotations

import json
import re
import struct
import sys
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from blocks.errors import ConfigurationError, CorruptRecord, SerializationError
from blocks.results._signing import GMAC_ALGORITHM, HMAC_ALGORITHM

if TYPE_CHECKING:
    from blocks.results._signing import ResultsKey, ResultsKeys

MAGIC = b"BLKR"
FORMAT_VERSION = 2
_PREFIX = struct.Struct(">4sBI32s")
_SIGNED_PREFIX = 9  # magic, version, length: the part of the prefix the header tag covers
PREFIX_SIZE = _PREFIX.size  # 41
MAX_HEADER_SIZE = 64 * 1024
#: How many bytes a header-only read asks for first; almost every header fits.
FIRST_READ = 4096

# Placeholders as wide as any real value: 16 digits cover payloads up to ~9 PB.
_SIZE_PLACEHOLDER = 10**16 - 1
# As wide as the widest real value (a GMAC tag; an HMAC one is one character shorter).
_CHECKSUM_PLACEHOLDER = GMAC_ALGORITHM + ":" + "f" * 32 + ":" + "f" * 32
MAX_PAYLOAD_SIZE = _SIZE_PLACEHOLDER
_CHECKSUM = re.compile(
    rf"{re.escape(GMAC_ALGORITHM)}:[0-9a-f]{{32}}:[0-9a-f]{{32}}|{re.escape(HMAC_ALGORITHM)}:[0-9a-f]{{64}}"
)


def checksum_string(hasher: Any) -> str:
    checksum: str = hasher.checksum()
    return checksum


def python_version() -> str:
    return ".".join(map(str, sys.version_info[:3]))


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
    signer: str = ""
    decoded_size: int | None = None
    versions: dict[str, str] = field(default_factory=dict)
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
        signer: str = "",
        versions: dict[str, str] | None = None,
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
            signer=signer,
            versions={"python": python_version(), **(versions or {})},
            components=dict(components) if components else None,
            flow=flow,
        )

    def finish(
        self, payload_size: int, checksum: str, decoded_size: int | None = None
    ) -> RecordHeader:
        if not 0 <= payload_size <= MAX_PAYLOAD_SIZE:
            raise SerializationError(
                f"The result of {self.key[:80]!r} serialized to {payload_size} bytes; one record "
                f"holds 0 to {MAX_PAYLOAD_SIZE}: split the result into smaller ones."
            )
        return replace(
            self, payload_size=payload_size, checksum=checksum, decoded_size=decoded_size
        )

    def is_expired(self, now: datetime | None = None) -> bool:
        """Whether the record's expiry has passed (records without one never expire)."""
        if self.expires is None:
            return False
        return (_utc(now) if now is not None else datetime.now(UTC)) >= self.expires

    def to_json(self) -> bytes:
        return _dumps(self._fields())

    def _fields(self) -> dict[str, Any]:
        fields: dict[str, Any] = {
            "format_version": self.format_version,
            "key": self.key,
            "serializer": self.serializer,
            "created": self.created.isoformat(),
            "expires": self.expires.isoformat() if self.expires else None,
            "payload_size": self.payload_size,
            "checksum": self.checksum,
            "task": self.task,
            "signer": self.signer,
            "decoded_size": self.decoded_size,
            "versions": self.versions,
        }
        # Optional fields are written only when set: older readers ignore them.
        if self.components is not None:
            fields["components"] = self.components
        if self.flow is not None:
            fields["flow"] = self.flow
        return fields

    def width(self) -> int:
        """Bytes this header occupies with placeholders: an upper bound for any finished copy."""
        widest = self._fields()
        widest.update(
            payload_size=_SIZE_PLACEHOLDER,
            checksum=_CHECKSUM_PLACEHOLDER,
            decoded_size=_SIZE_PLACEHOLDER,
        )
        return len(_dumps(widest))

    def as_dict(self) -> dict[str, Any]:
        """JSON-able fields, for ``--json`` output."""
        data: dict[str, Any] = json.loads(self.to_json())
        return data


def _dumps(fields: dict[str, Any]) -> bytes:
    return json.dumps(fields, separators=(",", ":"), ensure_ascii=False).encode()


def _utc(moment: datetime) -> datetime:
    # A naive datetime is taken as local time, as `datetime.astimezone` does.
    return moment.astimezone(UTC)


def encode_prefix(header: RecordHeader, *, width: int, signer: ResultsKey) -> bytes:
    """Prefix and header bytes, the header padded with spaces to exactly `width` bytes and
    signed with `signer`."""
    body = header.to_json()
    if len(body) > width:
        raise ValueError("finished header is wider than its reserved space")
    if width > MAX_HEADER_SIZE:
        raise ConfigurationError(
            f"The header of result {header.key[:80]!r} would take {width} bytes (limit "
            f"{MAX_HEADER_SIZE}): shorten the key or the task name."
        )
    body += b" " * (width - len(body))
    start = struct.pack(">4sBI", MAGIC, FORMAT_VERSION, width)
    return start + signer.header_tag(start + body) + body


def header_length(prefix: bytes, *, key: str) -> int:
    """Check the fixed prefix and return the header length it announces."""
    if len(prefix) >= 5 and prefix[:4] == MAGIC and prefix[4] == 1:
        raise CorruptRecord(
            f"result record {key!r} is unsigned (format version 1, written before records were "
            "signed): no signature to check, so it is not trusted; it is rewritten signed on "
            "the next write"
        )
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


def decode_header(prefix_and_header: bytes, *, key: str, keys: ResultsKeys) -> RecordHeader:
    """Parse and verify ``prefix + header`` bytes (the payload may follow; it is ignored).

    The header tag is checked before the header is trusted: a header signed with another key,
    or altered after signing, raises `CorruptRecord` saying "signature".
    """
    return header_from(verified_fields(prefix_and_header, key=key, keys=keys), key=key)


def verified_fields(prefix_and_header: bytes, *, key: str, keys: ResultsKeys) -> dict[str, Any]:
    """The JSON object of a record's header, once its prefix and tag verify (`CorruptRecord`
    if not): written by a holder of our results key, not yet checked field by field
    (`header_from` does). A scan that needs two fields to decide reads them from here."""
    length = header_length(prefix_and_header, key=key)
    end = PREFIX_SIZE + length
    if len(prefix_and_header) < end:
        raise CorruptRecord(f"result record {key!r} is truncated inside its header")
    body = prefix_and_header[PREFIX_SIZE:end]
    tag = prefix_and_header[_SIGNED_PREFIX:PREFIX_SIZE]
    if not keys.header_verifies(prefix_and_header[:_SIGNED_PREFIX] + body, tag):
        raise CorruptRecord(_bad_signature(key, body, keys))
    try:
        # Our own writer's UTF-8 JSON: decoded as str, without json.loads' encoding sniffing.
        raw = _decode_json(body.decode())
    except ValueError as exc:
        raise CorruptRecord(f"result record {key!r} has an unreadable header: {exc}") from None
    if type(raw) is not dict:
        raise CorruptRecord(f"result record {key!r} has an unreadable header: not an object")
    return raw


def header_from(raw: dict[str, Any], *, key: str) -> RecordHeader:
    """The typed header of `verified_fields`' object; `CorruptRecord` if a field is missing,
    of the wrong type or inconsistent, or if the record was written for another key."""
    try:
        header = _fast_header(raw)
        if header is None:  # some field has an unexpected type: say which
            header = _typed_header(raw)
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise CorruptRecord(f"result record {key!r} has an unreadable header: {exc}") from None
    if header.format_version != FORMAT_VERSION or header.payload_size < 0:
        raise CorruptRecord(f"result record {key!r} has an inconsistent header")
    if not _CHECKSUM.fullmatch(header.checksum):
        raise CorruptRecord(
            f"result record {key!r} has payload tag {header.checksum.split(':')[0][:40]!r}; "
            f"only {HMAC_ALGORITHM} and {GMAC_ALGORITHM} are supported"
        )
    if header.key != key:
        # Copied or moved under another key: its value belongs to a different cache key.
        raise CorruptRecord(f"result record {key!r} was written for key {header.key!r}")
    return header


_DECODER = json.JSONDecoder()
_SCAN: Callable[[str, int], tuple[Any, int]] = _DECODER.scan_once  # type: ignore[attr-defined]
_JSON_SPACE = " \t\n\r"


def _decode_json(text: str) -> Any:
    """``_DECODER.decode(text)``, half the time for a header: its scanner called directly
    (no whitespace regex before and after, ~2 us of ~5), taken only when it reads the whole
    text but trailing JSON whitespace (the header's padding); else `decode`, which words
    the error."""
    try:
        value, end = _SCAN(text, 0)
    except StopIteration:  # leading whitespace, or not JSON: decode says which
        return _DECODER.decode(text)
    if end != len(text) and text[end:].strip(_JSON_SPACE):
        return _DECODER.decode(text)  # "Extra data"
    return value


def _fast_header(raw: Any) -> RecordHeader | None:
    """The header of a decoded JSON object whose fields all have their expected types, in one
    pass of exact type checks (JSON gives exact types); None if one does not (see
    `_typed_header`, which names it). A whole-store scan decodes 10,000 of these."""
    if type(raw) is not dict:
        return None
    get = raw.get
    version, key, serializer = raw["format_version"], raw["key"], raw["serializer"]
    created, expires, size = raw["created"], raw["expires"], raw["payload_size"]
    checksum, task, signer = raw["checksum"], raw["task"], raw["signer"]
    decoded, versions = get("decoded_size"), get("versions", {})
    components, flow = get("components"), get("flow")
    if not (
        type(version) is int
        and type(key) is str
        and type(serializer) is dict
        and type(created) is str
        and (expires is None or type(expires) is str)
        and type(size) is int
        and type(checksum) is str
        and (task is None or type(task) is str)
        and type(signer) is str
        and (decoded is None or type(decoded) is int)
        and type(versions) is dict
        and (flow is None or type(flow) is str)
    ):
        return None
    header = _new(RecordHeader)
    # Every field set, as the dataclass __init__ sets them (there is no __post_init__), minus
    # its 13 frozen ``object.__setattr__`` calls: ~2 us of ~10 per header, and a scan of the
    # store decodes 10,000 headers. `_typed_header` builds the same header the plain way.
    header.__dict__.update(
        format_version=version,
        key=key,
        serializer=serializer,
        created=parse_time(created),
        expires=None if expires is None else parse_time(expires),
        payload_size=size,
        checksum=checksum,
        task=task,
        signer=signer,
        decoded_size=decoded,
        versions={str(k): str(v) for k, v in versions.items()},
        components=_components(components),
        flow=flow,
    )
    return header


_new = object.__new__


def _typed_header(raw: Any) -> RecordHeader:
    """`_fast_header`'s slow twin: checks field by field, so the error names the culprit."""
    versions = raw.get("versions", {})
    return RecordHeader(
        format_version=_typed(raw["format_version"], int),
        key=_typed(raw["key"], str),
        serializer=_typed(raw["serializer"], dict),
        created=parse_time(raw["created"]),
        expires=None if raw["expires"] is None else parse_time(raw["expires"]),
        payload_size=_typed(raw["payload_size"], int),
        checksum=_typed(raw["checksum"], str),
        task=None if raw["task"] is None else _typed(raw["task"], str),
        signer=_typed(raw["signer"], str),
        decoded_size=(
            None if raw.get("decoded_size") is None else _typed(raw["decoded_size"], int)
        ),
        versions={str(k): str(v) for k, v in _typed(versions, dict).items()},
        components=_components(raw.get("components")),
        flow=None if raw.get("flow") is None else _typed(raw["flow"], str),
    )


_verified: dict[bytes, tuple[ResultsKeys, RecordHeader]] = {}


def decode_header_once(signed: bytes, *, key: str, keys: ResultsKeys) -> RecordHeader:
    """`decode_header` of exactly ``prefix + header`` bytes, remembered: the same bytes
    verified under the same results keys give the same header, so a record read again (a
    cache hit) skips the header MAC and the JSON parse. The bytes include the tag and the
    key; changed keys (a rotation, another ``BLOCKS_RESULTS_KEY``) are another `ResultsKeys`
    object and verify again. The header returned is shared: treat it as read-only.
    """
    found = _verified.get(signed)
    if found is not None and found[0] is keys:
        return found[1]
    header = decode_header(signed, key=key, keys=keys)
    if len(signed) <= FIRST_READ:  # at most 1024 x 4 KiB held; larger headers are rare
        if len(_verified) >= 1024:
            _verified.clear()
        _verified[signed] = (keys, header)
    return header


def claimed_signer(head: bytes, *, key: str) -> str | None:
    """The results key id a record's header *claims* (not verified: only to word a message
    or to see that a storage holds records of another key), or None if `head` (its first
    bytes) is not a record header."""
    try:
        body = head[PREFIX_SIZE : PREFIX_SIZE + header_length(head, key=key)]
    except CorruptRecord:
        return None
    return _signer_of(body)


def _signer_of(body: bytes) -> str | None:
    try:
        signer = json.loads(body).get("signer")
    except (ValueError, RecursionError, AttributeError):
        return None
    return signer if isinstance(signer, str) and 0 < len(signer) <= 64 else None


def _bad_signature(key: str, body: bytes, keys: ResultsKeys) -> str:
    # The header is not trusted here; its signer id is only read to word the message.
    signer = _signer_of(body)
    ours = ", ".join(keys.by_id)
    if signer is not None and signer not in keys.by_id:
        return (
            f"result record {key!r} has a signature by results key {signer!r}, which this "
            f"process does not hold (it has {ours}; {keys.active.source}): written by another "
            "team or with another key. Share the key (BLOCKS_RESULTS_KEY) to read it"
        )
    return (
        f"result record {key!r} has a bad signature: it was altered after it was written "
        "(forged or damaged)"
    )


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


def parse_time(value: Any) -> datetime:
    """A header's ISO timestamp (with its zone) as an aware UTC datetime; `ValueError` or
    `TypeError` if it is not one."""
    moment = datetime.fromisoformat(_typed(value, str))
    if moment.tzinfo is None:
        raise ValueError("timestamp without time zone")
    # Our writer stores UTC: already so, the moment is kept as parsed (astimezone copies it).
    return moment if moment.utcoffset() == _ZERO else moment.astimezone(UTC)


_ZERO = timedelta(0)
