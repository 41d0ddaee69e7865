"""What a caller (the result store) tells serializers for one dump or load: limits and a sealer.

Serializers take no extra arguments, so a store that writes or reads a record opens a
`codec_context` around the call:

- ``max_bytes``: a hard ceiling on decoded bytes (the compressed serializer stops decompressing
  past it), so a decompression bomb costs at most the declared size in memory;
- ``sealer``: seals secret values (pydantic ``SecretStr``, ``SecretBytes``, ``Secret``) while
  dumping, and opens them while loading. Without a sealer, serializers refuse to write a secret
  (a `SerializationError` naming where it is) and cannot read a sealed one;
- ``decoded_size``: set by the compressed serializer after a dump (the uncompressed size, which
  the store records in the header).

Example:
    >>> from serializers import CompressedSerializer
    >>> s = CompressedSerializer("json")
    >>> with codec_context(max_bytes=10):
    ...     s.loads(s.dumps("x" * 100))
    Traceback (most recent call last):
    serializers.errors.SerializationError: decompressed payload exceeds its limit of 10 bytes...
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar, Token
from typing import Any, Protocol


class Sealer(Protocol):
    """Authenticated encryption for secret values inside a payload."""

    def seal(self, plaintext: bytes) -> bytes:
        """Encrypt and authenticate `plaintext`."""

    def unseal(self, sealed: bytes) -> bytes:
        """Open what `seal` made; raise if it was altered or sealed under another key."""


class CodecContext:
    """One dump or load's settings (a plain class: `import serializers` stays light)."""

    __slots__ = ("decoded_size", "max_bytes", "sealer")

    def __init__(self, max_bytes: int | None = None, sealer: Sealer | None = None) -> None:
        self.max_bytes = max_bytes
        self.sealer = sealer
        self.decoded_size: int | None = None


_CONTEXT: ContextVar[CodecContext | None] = ContextVar("serializers_codec_context", default=None)


@contextmanager
def codec_context(
    *, max_bytes: int | None = None, sealer: Sealer | None = None
) -> Iterator[CodecContext]:
    """Limits and sealer for the dumps and loads inside the ``with`` block (this thread/task)."""
    context = CodecContext(max_bytes=max_bytes, sealer=sealer)
    token = _CONTEXT.set(context)
    try:
        yield context
    finally:
        _CONTEXT.reset(token)


def current() -> CodecContext | None:
    """The innermost active context, or None."""
    return _CONTEXT.get()


_SECRET_TYPES: tuple[type, ...] = ()


def secret_types() -> tuple[type, ...]:
    """pydantic's secret wrappers, if pydantic is imported (no pydantic, no secrets)."""
    global _SECRET_TYPES
    if not _SECRET_TYPES and "pydantic" in sys.modules:
        from pydantic import Secret, SecretBytes, SecretStr

        _SECRET_TYPES = (SecretStr, SecretBytes, Secret)
    return _SECRET_TYPES


def secret_path(value: Any, limit: int = 100_000) -> str | None:
    """Where the first secret inside `value` is, like ``value['db'].password``; None if none.

    Walks containers, pydantic models, dataclasses and plain objects' ``__dict__``; used
    only to word an error, so it gives up after `limit` values.
    """
    kinds = secret_types()
    if not kinds:
        return None
    stack: list[tuple[Any, str]] = [(value, "value")]
    seen: set[int] = set()
    while stack and limit > 0:
        obj, path = stack.pop()
        limit -= 1
        if isinstance(obj, kinds):
            return path
        if id(obj) in seen or isinstance(obj, str | bytes | bytearray | int | float):
            continue
        seen.add(id(obj))
        children: list[tuple[Any, str]] = []
        if isinstance(obj, dict):
            children = [(v, f"{path}[{k!r}]") for k, v in obj.items()]
        elif isinstance(obj, list | tuple | set | frozenset):
            children = [(v, f"{path}[{i}]") for i, v in enumerate(obj)]
        else:
            fields = getattr(obj, "__dict__", None)
            if isinstance(fields, dict):
                children = [(v, f"{path}.{k}") for k, v in fields.items()]
        stack.extend(reversed(children))
    return None


def refuse_secret(value: Any, kind: type) -> Exception:
    """The error for a secret that would be written without a sealer."""
    from .errors import SerializationError

    where = secret_path(value) or "the value"
    return SerializationError(
        f"{where} is a secret ({kind.__name__}): it would be written in plaintext. Write "
        "through a ResultStore (which seals secrets under the results key), or take the "
        "secret out of the value"
    )


#: Make a `CodecContext` the current one until ``leave(token)``: `codec_context` without the
#: generator, for hot paths (a cache hit decodes one small payload). The context variable's
#: own methods, not functions around them: a hit pays no frame for either.
enter: Callable[[CodecContext | None], Token[CodecContext | None]] = _CONTEXT.set

#: Restore the context that was current before `enter` gave the token.
leave: Callable[[Token[CodecContext | None]], None] = _CONTEXT.reset
