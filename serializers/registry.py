"""The allow-list of serializer types and `resolve_serializer`."""

from __future__ import annotations

import re
import threading
import warnings
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

PLUGIN_GROUP = "blocks.serializers"
"""The entry point group through which installed packages add serializer types: each entry's
name is the short type, its value the `Serializer` class (``upper = "my_pkg.ser:Upper"``)."""

_SHORT_TYPE = re.compile(r"^[a-z0-9]+(?:[-_][a-z0-9]+)*$")
_plugins_lock = threading.Lock()
_plugins_loaded = False
#: Short type -> the installed package that added it ("name version").
PLUGIN_SOURCES: dict[str, str] = {}
_conflicts: dict[str, list[str]] = {}
_warned: set[str] = set()


class SerializerPluginWarning(UserWarning):
    """An installed serializer plugin could not be used (it is skipped)."""


def load_plugins() -> None:
    """Add installed ``blocks.serializers`` plugins to the allow-list, once per process.

    Only installed code is imported (the entry points of installed packages), never a module a
    record names. A plugin that fails to import or is not a `Serializer` with that short
    ``type`` is named in one warning and skipped; a type claimed by two packages (or by a
    package and a built-in type) is refused by `resolve_serializer`, naming both.
    """
    global _plugins_loaded
    if _plugins_loaded:
        return
    with _plugins_lock:
        if _plugins_loaded:
            return
        from importlib.metadata import entry_points

        claims: dict[str, list[tuple[str, type[Serializer]]]] = {}
        for entry in sorted(entry_points(group=PLUGIN_GROUP), key=lambda e: (e.name, e.value)):
            dist = getattr(entry, "dist", None)
            label = f"{dist.metadata['Name']} {dist.version}" if dist else entry.value
            try:
                cls = entry.load()
            except Exception as exc:  # any failure of a plugin is its own: skip it
                _warn_once(
                    label,
                    f"Serializer plugin {label} (entry point {entry.name!r} = {entry.value!r}) "
                    f"could not be imported and is skipped: {type(exc).__name__}: {exc}",
                )
                continue
            if (
                not isinstance(cls, type)
                or not issubclass(cls, Serializer)
                or not _SHORT_TYPE.match(entry.name)
                or getattr(cls, "type", None) != entry.name
            ):
                _warn_once(
                    label,
                    f"Serializer plugin {label}: entry point {entry.name!r} = {entry.value!r} "
                    "is not a Serializer class whose `type` is that short name (lowercase "
                    "letters, digits, dashes); skipped.",
                )
                continue
            claims.setdefault(entry.name, []).append((label, cls))
        for name, holders in claims.items():
            labels = [label for label, _ in holders]
            if name in SERIALIZER_TYPES:
                labels = ["serializers (built in)", *labels]
            if len(set(labels)) > 1:
                _conflicts[name] = labels
                continue
            SERIALIZER_TYPES[name] = holders[0][1]
            PLUGIN_SOURCES[name] = labels[0]
        _plugins_loaded = True


def _warn_once(key: str, message: str) -> None:
    if key not in _warned:
        _warned.add(key)
        # One line naming the plugin, with no source line of ours under it.
        warnings.warn_explicit(
            message, SerializerPluginWarning, filename="<installed plugin>", lineno=0
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
    if cls is None and base:
        load_plugins()  # first need of a type we do not ship: installed plugins may add it
        if base in _conflicts:
            raise SerializationError(
                f"serializer type {base!r} is defined by {' and by '.join(_conflicts[base])}: "
                "uninstall one of them"
            )
        cls = SERIALIZER_TYPES.get(base)
    if cls is None or bool(slash) != (cls is CompressedSerializer) or (slash and not rest):
        shown = repr(name) if len(repr(name)) <= 80 else repr(name)[:77] + "..."
        raise SerializationError(
            f"unknown serializer type {shown}: choose one of "
            f"{', '.join((*SHORTHANDS, *PLUGIN_SOURCES))}, or pass a Serializer instance "
            f"(installed plugins add types through {PLUGIN_GROUP!r} entry points)"
        )
    return cls.from_spec(spec)
