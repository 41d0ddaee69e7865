"""The allow-list of serializer types and `resolve_serializer`."""

from __future__ import annotations

from typing import Any

from .auto import AutoSerializer
from .base import Serializer
from .compressed import CompressedSerializer
from .errors import SerializationError
from .json import JSONSerializer
from .numpy import NumpySerializer
from .parquet import ParquetSerializer
from .pickle import PickleSerializer

#: Every serializer a spec may name, by short type. A stored record picks from this list only:
#: it can never name a module, a class or a decoder of its own.
SERIALIZER_TYPES: dict[str, type[Serializer]] = {
    "json": JSONSerializer,
    "pickle": PickleSerializer,
    "compressed": CompressedSerializer,
    "parquet": ParquetSerializer,
    "npy": NumpySerializer,
    "auto": AutoSerializer,
}
SHORTHANDS = (
    "json",
    "pickle",
    "compressed/json",
    "compressed/pickle",
    "parquet",
    "npy",
    "auto",
)


def resolve_serializer(
    spec: str | Serializer | dict[str, Any] | None = None,
    default: str | Serializer | dict[str, Any] = "pickle",
) -> Serializer:
    """Turn a shorthand, a spec dict from `Serializer.to_spec()` or an instance into a serializer.

    `None` means `default`. An unknown type or option raises `SerializationError`.

    Example:
        >>> resolve_serializer("compressed/json")
        CompressedSerializer(JSONSerializer(), compressionlib='zlib', level=None)
        >>> resolve_serializer({"type": "pickle", "picklelib": "pickle"})
        PickleSerializer(picklelib='pickle')
    """
    if spec is None:
        spec = default
    if isinstance(spec, Serializer):
        return spec
    if isinstance(spec, str):
        return _from_spec({"type": spec})
    if isinstance(spec, dict):
        return _from_spec(spec)
    raise SerializationError(
        f"a serializer is a Serializer, a spec dict, or a type name - choose one of "
        f"{', '.join(SHORTHANDS)}; not a {type(spec).__name__}"
    )


def _from_spec(spec: dict[str, Any]) -> Serializer:
    name = spec.get("type")
    base, slash, rest = name.partition("/") if isinstance(name, str) else ("", "", "")
    cls = SERIALIZER_TYPES.get(base)
    if cls is None or bool(slash) != (cls is CompressedSerializer) or (slash and not rest):
        shown = repr(name) if len(repr(name)) <= 80 else repr(name)[:77] + "..."
        raise SerializationError(
            f"unknown serializer type {shown}: choose one of {', '.join(SHORTHANDS)}, "
            f"or pass a Serializer instance"
        )
    return cls.from_spec(spec)
