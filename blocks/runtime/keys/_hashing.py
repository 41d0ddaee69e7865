"""Deterministic digests of Python values: the same value gives the same digest in every process.

Unlike ``pickle`` or ``hash()``, the digest never depends on ``PYTHONHASHSEED``, insertion order
or memory addresses:

- dicts, sets and frozensets are order-free; tuples and lists (and set and frozenset) differ;
- floats by their exact bits (``0.0`` and ``-0.0`` differ; every NaN is one NaN);
- datetimes with their time zone, Decimal, UUID, paths, Enums, dataclasses, pydantic models;
- Blocks by their fields; secret fields (``SecretStr``, ``SecretBytes``, secret dicts) count by
  a digest of their value, so no plaintext secret ever reaches a cache key;
- numpy arrays (dtype, shape, bytes), pandas / polars DataFrames and Series, pyarrow tables
  (schema + data), recognised by their type's module: those libraries are never imported
  unless the value is one of their types;
- functions by their code fingerprint (`keys._fingerprints`), classes and modules by name;
- other objects by what ``pickle`` would save of them (``__reduce_ex__``), hashed with the same
  rules. Objects that cannot be pickled (locks, generators, open files, connections) raise
  `Unhashable`; `register_hasher` teaches the hasher a type of your own.

Example:
    >>> digest({"a": 1, "b": {2, 3}}) == digest({"b": {3, 2}, "a": 1})
    True
    >>> digest((1, 2)) == digest([1, 2])
    False
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import decimal
import enum
import hashlib
import math
import pathlib
import threading
import uuid
from collections.abc import Callable
from typing import Any

from blocks.errors import BlocksError

__all__ = ["CacheKeyWarning", "Unhashable", "digest", "register_hasher"]

#: Buffers longer than this are hashed on their own (BLAKE3) and enter the stream as a digest.
_INLINE_LIMIT = 64 * 1024
_THREADED_FROM = 16 * 1024 * 1024

Encoder = Callable[[Any, list[bytes], dict[int, int]], None]


class Unhashable(BlocksError, TypeError):
    """A value has no deterministic digest (a lock, a generator, an open file, ...)."""


class CacheKeyWarning(UserWarning):
    """A cache key could not count something by value (see the message for what and why)."""


def digest(value: Any) -> str:
    """The 32-hex-digit digest of `value`; raises `Unhashable` if it has none.

    Example:
        >>> digest(float("nan")) == digest(float("-nan"))
        True
    """
    out: list[bytes] = []
    try:
        _encode(value, out, {})
    except Unhashable:
        raise
    except RecursionError:
        raise Unhashable(f"{type(value).__name__} value is nested too deeply to hash") from None
    except Exception as exc:  # a registered hasher or a library failed: no digest, no crash
        raise Unhashable(
            f"hashing a {type(value).__name__} failed: {type(exc).__name__}: {exc}"
        ) from None
    return hashlib.sha256(b"".join(out)).hexdigest()[:32]


def digest_and_secrecy(value: Any) -> tuple[str, bool]:
    """`digest(value)` and whether a secret (``SecretStr``...) entered it: a record header
    must not hold that digest at all (see `blocks.results._signing.SECRET_COMPONENT`)."""
    before = _secrets_seen.count = getattr(_secrets_seen, "count", 0)
    return digest(value), _secrets_seen.count != before


def register_hasher(kind: type, fn: Callable[[Any], Any]) -> None:
    """Hash values of `kind` (and its subclasses) as ``fn(value)``, itself hashed by these rules.

    Example:
        >>> register_hasher(Connection, lambda conn: conn.dsn)  # same database, same key
    """
    with _lock:
        _registered[kind] = fn
        _dispatch.clear()


# -- the encoding: self-delimiting, type-tagged bytes ------------------------------------------

_registered: dict[type, Callable[[Any], Any]] = {}
#: ``.count``: secrets hashed so far by this thread (`digest_and_secrecy` compares).
_secrets_seen = threading.local()
_dispatch: dict[type, Encoder] = {}
_lock = threading.Lock()


def _encode(value: Any, out: list[bytes], active: dict[int, int]) -> None:
    kind = type(value)
    encoder = _dispatch.get(kind)
    if encoder is None:
        encoder = _choose(kind)
        with _lock:
            _dispatch[kind] = encoder
    encoder(value, out, active)


def _buffer(tag: bytes, data: Any, out: list[bytes]) -> None:
    """Raw bytes (or any C-contiguous buffer) with their length; long ones as a digest."""
    view = memoryview(data)
    size = view.nbytes
    if size > _INLINE_LIMIT:
        out.append(b"%s#%d:" % (tag, size) + _bulk_digest(view))
    else:
        out.append(b"%s%d:" % (tag, size) + view.tobytes())


def _bulk_digest(view: memoryview) -> bytes:
    """BLAKE3 of a large buffer: cryptographic, and several GB/s (threads past 16 MB)."""
    from blake3 import blake3

    threads = blake3.AUTO if view.nbytes > _THREADED_FROM else 1
    return bytes(blake3(view, max_threads=threads).digest())


def _none(value: Any, out: list[bytes], active: dict[int, int]) -> None:
    out.append(b"N")


def _bool(value: bool, out: list[bytes], active: dict[int, int]) -> None:
    out.append(b"T" if value else b"F")


def _int(value: int, out: list[bytes], active: dict[int, int]) -> None:
    out.append(b"i%d;" % value)


def _float(value: float, out: list[bytes], active: dict[int, int]) -> None:
    out.append(b"fnan;" if math.isnan(value) else b"f" + value.hex().encode() + b";")


def _complex(value: complex, out: list[bytes], active: dict[int, int]) -> None:
    out.append(b"c")
    _float(value.real, out, active)
    _float(value.imag, out, active)


def _str(value: str, out: list[bytes], active: dict[int, int]) -> None:
    _buffer(b"s", value.encode("utf-8", "surrogatepass"), out)


def _bytes(value: bytes, out: list[bytes], active: dict[int, int]) -> None:
    _buffer(b"b", value, out)


def _bytearray(value: Any, out: list[bytes], active: dict[int, int]) -> None:
    _buffer(b"B", value, out)


def _enter(value: Any, out: list[bytes], active: dict[int, int]) -> bool:
    """Mark a container as being encoded; a reference back to one becomes its depth."""
    depth = active.get(id(value))
    if depth is not None:
        out.append(b"@%d;" % (len(active) - depth))
        return False
    active[id(value)] = len(active)
    return True


def _sequence(tag: bytes) -> Encoder:
    def encode(value: Any, out: list[bytes], active: dict[int, int]) -> None:
        if not _enter(value, out, active):
            return
        out.append(tag + b"%d:" % len(value))
        for item in value:
            _encode(item, out, active)
        del active[id(value)]

    return encode


def _unordered(
    tag: bytes, items: Any, out: list[bytes], active: dict[int, int], *, pairs: bool = False
) -> None:
    # Each element's encoding is self-delimiting, so sorting the encodings is order-free
    # and unambiguous, and cheaper than hashing every element.
    encoded = []
    for item in items:
        part: list[bytes] = []
        if pairs:
            _encode(item[0], part, active)
            _encode(item[1], part, active)
        else:
            _encode(item, part, active)
        encoded.append(b"".join(part))
    encoded.sort()
    out.append(tag + b"%d:" % len(encoded))
    out.extend(encoded)


def _set(tag: bytes) -> Encoder:
    def encode(value: Any, out: list[bytes], active: dict[int, int]) -> None:
        if _enter(value, out, active):
            _unordered(tag, value, out, active)
            del active[id(value)]

    return encode


def _dict(value: dict[Any, Any], out: list[bytes], active: dict[int, int]) -> None:
    if _enter(value, out, active):
        _unordered(b"{", value.items(), out, active, pairs=True)
        del active[id(value)]


def _name_of(kind: Any) -> bytes:
    return f"{getattr(kind, '__module__', '')}.{getattr(kind, '__qualname__', kind)}".encode()


def _typed(tag: bytes, kind: type, out: list[bytes]) -> None:
    _buffer(tag, _name_of(kind), out)


def _dict_subclass(value: dict[Any, Any], out: list[bytes], active: dict[int, int]) -> None:
    _typed(b"D", type(value), out)
    factory = getattr(value, "default_factory", None)
    if factory is not None:
        _buffer(b"k", _name_of(factory), out)
    _dict(value, out, active)


def _datetime(value: dt.datetime, out: list[bytes], active: dict[int, int]) -> None:
    # Equal instants in different zones are different values (what the task sees differs).
    zone = value.tzinfo
    name = getattr(zone, "key", None) or (str(value.utcoffset()) if zone is not None else "")
    out.append(b"dt" + value.isoformat().encode() + b"|" + name.encode() + b";")


def _iso(tag: bytes) -> Encoder:
    def encode(value: Any, out: list[bytes], active: dict[int, int]) -> None:
        out.append(tag + value.isoformat().encode() + b";")

    return encode


def _timedelta(value: dt.timedelta, out: list[bytes], active: dict[int, int]) -> None:
    out.append(b"td%d,%d,%d;" % (value.days, value.seconds, value.microseconds))


def _decimal(value: decimal.Decimal, out: list[bytes], active: dict[int, int]) -> None:
    out.append(b"M" + str(value).encode() + b";")


def _uuid(value: uuid.UUID, out: list[bytes], active: dict[int, int]) -> None:
    out.append(b"u" + value.bytes)


def _path(value: pathlib.PurePath, out: list[bytes], active: dict[int, int]) -> None:
    _buffer(b"p", value.as_posix().encode("utf-8", "surrogateescape"), out)


def _enum(value: enum.Enum, out: list[bytes], active: dict[int, int]) -> None:
    _typed(b"E", type(value), out)
    _encode(value.value, out, active)


def _dataclass(value: Any, out: list[bytes], active: dict[int, int]) -> None:
    if not _enter(value, out, active):
        return
    _typed(b"Q", type(value), out)
    fields = {f.name: getattr(value, f.name) for f in dataclasses.fields(value)}
    _dict(fields, out, active)
    del active[id(value)]


def _secret(value: Any, out: list[bytes], active: dict[int, int]) -> None:
    # Only a digest of the secret enters the key: never its plaintext.
    _secrets_seen.count = getattr(_secrets_seen, "count", 0) + 1
    part: list[bytes] = []
    _encode(value.get_secret_value(), part, active)
    out.append(b"$" + hashlib.sha256(b"blocks-secret\x00" + b"".join(part)).digest())


def _pydantic(value: Any, out: list[bytes], active: dict[int, int]) -> None:
    if not _enter(value, out, active):
        return
    kind = type(value)
    _typed(b"P", kind, out)
    fields = {name: getattr(value, name, None) for name in kind.model_fields}
    extra = getattr(value, "__pydantic_extra__", None)
    if extra:
        fields.update(extra)
    _dict(fields, out, active)
    del active[id(value)]


def _function(value: Any, out: list[bytes], active: dict[int, int]) -> None:
    from blocks.runtime.keys._fingerprints import fingerprint, is_library_module

    module = getattr(value, "__module__", None)
    if isinstance(module, str) and is_library_module(module):  # exec'd code has no module
        _buffer(b"g", _name_of(value), out)
    else:
        out.append(b"h" + fingerprint(value).digest.encode())


def _class(value: type, out: list[bytes], active: dict[int, int]) -> None:
    _buffer(b"K", _name_of(value), out)


def _module(value: Any, out: list[bytes], active: dict[int, int]) -> None:
    _buffer(b"m", value.__name__.encode(), out)


def _registered_encoder(fn: Callable[[Any], Any]) -> Encoder:
    def encode(value: Any, out: list[bytes], active: dict[int, int]) -> None:
        _typed(b"R", type(value), out)
        _encode(fn(value), out, active)

    return encode


# -- anything else: what pickle would save ---------------------------------------------------


def _reduce(value: Any, out: list[bytes], active: dict[int, int]) -> None:
    if not _enter(value, out, active):
        return
    kind = type(value)
    try:
        reduced = value.__reduce_ex__(4)
    except Exception as exc:
        raise Unhashable(
            f"{kind.__module__}.{kind.__qualname__} has no deterministic digest ({exc})"
        ) from None
    _typed(b"O", kind, out)
    if isinstance(reduced, str):
        _buffer(b"g", reduced.encode(), out)  # a global singleton, named
    else:
        parts = list(reduced) + [None] * (5 - len(reduced))
        constructor, args, state, items, pairs = parts[:5]
        _buffer(b"g", _name_of(constructor), out)
        _encode(args, out, active)
        _encode(state, out, active)
        _encode(None if items is None else list(items), out, active)
        _encode(None if pairs is None else dict(pairs), out, active)
    del active[id(value)]


_EXACT: dict[type, Encoder] = {
    type(None): _none,
    bool: _bool,
    int: _int,
    float: _float,
    complex: _complex,
    str: _str,
    bytes: _bytes,
    bytearray: _bytearray,
    memoryview: _bytearray,
    list: _sequence(b"["),
    tuple: _sequence(b"("),
    set: _set(b"{s"),
    frozenset: _set(b"{z"),
    dict: _dict,
    dt.datetime: _datetime,
    dt.date: _iso(b"da"),
    dt.time: _iso(b"ti"),
    dt.timedelta: _timedelta,
    decimal.Decimal: _decimal,
    uuid.UUID: _uuid,
    type(Ellipsis): lambda v, out, active: out.append(b"..."),
}

#: Top-level modules whose values `keys._hashing_frames` encodes.
_LIBRARIES = frozenset({"numpy", "pandas", "polars", "pyarrow"})


def _choose(kind: type) -> Encoder:
    """The encoder of a type: registered first, then exact, then by family."""
    for base in kind.__mro__:
        fn = _registered.get(base)
        if fn is not None:
            return _registered_encoder(fn)
    exact = _EXACT.get(kind)
    if exact is not None:
        return exact
    top = (kind.__module__ or "").partition(".")[0]
    if top in _LIBRARIES:
        # Only reached with a value of that library in hand: it is imported already.
        from blocks.runtime.keys._hashing_frames import encoder_for

        found = encoder_for(top, kind)
        if found is not None:
            return found
    if hasattr(kind, "get_secret_value") and "Secret" in kind.__name__:
        return _secret
    if issubclass(kind, enum.Enum):
        return _enum
    if issubclass(kind, type):
        return _class
    if kind.__name__ in ("function", "builtin_function_or_method", "method"):
        return _function
    if kind.__name__ == "module":
        return _module
    if issubclass(kind, pathlib.PurePath):
        return _path
    if dataclasses.is_dataclass(kind):
        return _dataclass
    if "model_fields" in dir(kind) and any(
        b.__module__.startswith("pydantic") for b in kind.__mro__
    ):
        return _pydantic
    if issubclass(kind, dict):
        return _dict_subclass
    for base, encoder in (
        (bool, _bool),
        (int, _int),
        (float, _float),
        (str, _str),
        (bytes, _bytes),
        (dt.datetime, _datetime),
        (dt.date, _iso(b"da")),
    ):
        if issubclass(kind, base):
            return _with_type(encoder)
    return _reduce


def _with_type(encoder: Encoder) -> Encoder:
    def encode(value: Any, out: list[bytes], active: dict[int, int]) -> None:
        _typed(b"S", type(value), out)
        encoder(value, out, active)

    return encode
