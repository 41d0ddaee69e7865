"""`JSONSerializer`: JSON with tagged rich types; classes are rebuilt only from an allow-list.

Plain JSON data (dicts with string keys, lists, strings, numbers, booleans, None) is written
as-is. Anything else becomes a tagged object ``{"__blocks__": TAG, "v": ...}``:

========================  =========================================================
value                     tag and stored form
========================  =========================================================
tuple, set, frozenset     ``tuple`` / ``set`` / ``frozenset``: list of items
dict with non-str keys,   ``dict``: list of ``[key, value]`` pairs (also escapes a
or with a ``__blocks__``  user dict that happens to use the tag key)
key
datetime, date, time      ``datetime`` / ``date`` / ``time``: ISO 8601; a ``zoneinfo``
                          zone is kept by name (``tz``), ``fold`` when set
timedelta                 ``timedelta``: ``[days, seconds, microseconds]``
UUID, Decimal, complex    ``uuid`` / ``decimal``: str; ``complex``: ``[real, imag]``
bytes, bytearray          ``bytes`` / ``bytearray``: base64
Path, PurePosixPath, ...  ``path`` / ``pureposixpath`` / ``purewindowspath``: str
Enum member               ``enum``: ``cls`` = "module:qualname", ``v`` = value
pydantic model            ``model``: ``cls``, ``v`` = field values, ``set`` = fields set
dataclass                 ``dataclass``: ``cls``, ``v`` = field values
exception                 ``exception``: ``cls``, ``v`` = its ``args``
========================  =========================================================

Secrets (pydantic ``SecretStr``, ``SecretBytes``, ``Secret``) are written only sealed, as
``{"__blocks__": "sealed", "kind": "str"|"bytes"|"secret", "v": base64}``, inside a
`serializers.context.codec_context` whose sealer (the result store's) encrypts them; without
one, encoding a secret raises `SerializationError` naming where it is.

Decoding never imports anything named by the data: an Enum, model or dataclass is rebuilt only
when its class was given to the serializer (``JSONSerializer(types=[...])``) or registered with
`register_json_type`; otherwise decoding fails with `SerializationError`. Like pickle, decoding
restores the stored field values without calling ``__init__`` or validators again.
Subclasses of dict, list and tuple come back as the base type. Allowing a generic pydantic
model allows its parametrisations (``Box[int]``); they come back as the generic class
(``Box``), which compares equal.

Exceptions are stored as their type's name and ``args`` (arguments JSON cannot hold are kept
as their ``repr``; no traceback, no ``__cause__``). Built-in exceptions (``ValueError``,
``KeyError``, ...) and allow-listed ones are rebuilt as ``cls(*args)``; any other comes back
(or when ``cls(*args)`` fails) as a `StoredException` that names the original type, so a
stored failure is never lost and never makes decoding import code.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterable
from enum import Enum
from typing import Any, TypeVar

from . import _fastjson, context
from ._plain import is_plain
from .base import Serializer, check_spec_keys
from .errors import SerializationError

TAG = _fastjson.TAG

_C = TypeVar("_C", bound=type)
_Class = type  # for annotations inside JSONSerializer, whose `type` attribute shadows the builtin
_Prepare = Callable[[Any], Any]

# Classes every JSONSerializer may rebuild, by "module:qualname" (see `register_json_type`).
_GLOBAL_TYPES: dict[str, type] = {}

# Exact types that need no pre-walk: the C encoder writes them, or the `default` hook tags
# them (and prepares whatever they contain). Grows as new leaf types are seen.
_LEAF_TYPES: set[type] = {str, int, float, bool, type(None)}
_STR_ONLY = frozenset({str})

# Built on first use (`_build_tables`) so that `import serializers` imports none of
# datetime, uuid, decimal, pathlib, base64.
_ENCODERS: dict[type, Callable[[Any, _Prepare], dict[str, Any]]] = {}
_ENCODER_BASES: list[tuple[type, Callable[[Any, _Prepare], dict[str, Any]]]] = []
_DECODERS: dict[str, Callable[[dict[str, Any]], Any]] = {}


class StoredException(Exception):
    """Stands in for a decoded exception whose class this serializer may not rebuild.

    ``type_name`` is the original ``"module:qualname"``; ``args`` are the original args.

    Example:
        >>> exc = JSONSerializer().loads(JSONSerializer(types=[MyError]).dumps(MyError("x")))
        >>> exc.type_name, exc.args
        ('my_module:MyError', ('x',))
    """

    def __init__(self, type_name: str, *args: Any) -> None:
        super().__init__(*args)
        self.type_name = type_name

    def __str__(self) -> str:
        return f"{self.type_name}: {super().__str__()}"

    def __reduce__(self) -> Any:
        return (type(self), (self.type_name, *self.args))


# json.JSONEncoder options `dumps_kwargs` may set (the rest are ours: `default`, `cls`...).
_DUMPS_OPTIONS = frozenset({"indent", "sort_keys", "ensure_ascii", "separators", "allow_nan"})

# json.JSONDecoder options `loads_kwargs` may set. A parse hook is a name from a closed set
# (the spec stored in record headers names it), never a callable: stored data must not
# choose the code that decodes it; `object_hook`, `object_pairs_hook` and `cls` are ours.
_PARSE_HOOKS: dict[str, dict[str, str]] = {
    "parse_float": {"float": "float", "decimal": "decimal"},
    "parse_int": {"int": "int", "float": "float", "decimal": "decimal"},
}
_LOADS_OPTIONS = frozenset({"strict", *_PARSE_HOOKS})
_JSONLIBS = ("json", "orjson")


def class_key(cls: type) -> str:
    """The name a class is stored under: ``"module:qualname"``."""
    return f"{cls.__module__}:{cls.__qualname__}"


def register_json_type(cls: _C) -> _C:
    """Allow every `JSONSerializer` to rebuild `cls` (an Enum, pydantic model, dataclass or
    exception class).

    Usable as a decorator. Registering a class under a name that is already registered
    replaces the old class (as a module reload does).

    Example:
        >>> from dataclasses import dataclass
        >>> @register_json_type
        ... @dataclass
        ... class Point:
        ...     x: int
        ...     y: int
        >>> s = JSONSerializer()
        >>> s.loads(s.dumps(Point(1, 2)))
        Point(x=1, y=2)
    """
    _check_allowable(cls)
    _GLOBAL_TYPES[class_key(cls)] = cls
    return cls


class JSONSerializer(Serializer):
    """JSON that round-trips datetimes, UUIDs, Decimals, bytes, sets, tuples, paths, Enums,
    pydantic models and dataclasses, and never imports a class named by stored data.

    `types` lists the Enum, pydantic model, dataclass and exception classes this serializer may
    write and rebuild, besides those registered with `register_json_type`. Values JSON cannot
    represent (functions, arbitrary objects) raise `SerializationError`: use `PickleSerializer`
    for those. `dumps_kwargs` are `json.dumps` options (``indent``, ``sort_keys``,
    ``ensure_ascii``, ``separators``, ``allow_nan``), as in Prefect; `loads_kwargs` are
    `json.loads` options: ``strict``, and ``parse_float`` / ``parse_int`` as a name from a
    closed set (``"decimal"`` or ``decimal.Decimal``, ``"float"``, ``"int"``), since the
    options are stored with each record. Hooks and decoder classes (``cls``, ``object_hook``,
    ``object_pairs_hook``, ``default``) are refused: they would let stored data choose code.

    ``jsonlib="orjson"`` (``pip install orjson``) encodes and decodes plain JSON data with
    orjson, and everything orjson would change (NaN, huge ints, lone surrogates, tagged types)
    with the standard library, so every value reads back exactly as with ``jsonlib="json"``
    (see `serializers._fastjson`). Records are the same JSON, read by either.

    Example:
        >>> from datetime import datetime, timezone
        >>> s = JSONSerializer()
        >>> s.dumps({"at": datetime(2024, 1, 2, tzinfo=timezone.utc), "ids": {1}})
        b'{"at":{"__blocks__":"datetime","v":"2024-01-02T00:00:00+00:00"},"ids":{"__blocks__":"set","v":[1]}}'
        >>> s.loads(_)["ids"]
        {1}
    """

    type = "json"

    def __init__(
        self,
        types: Iterable[_Class] = (),
        dumps_kwargs: dict[str, Any] | None = None,
        loads_kwargs: dict[str, Any] | None = None,
        jsonlib: str = "json",
    ) -> None:
        self._types: dict[str, _Class] = {}
        for cls in types:
            _check_allowable(cls)
            self._types[class_key(cls)] = cls
        if jsonlib not in _JSONLIBS:
            raise SerializationError(
                f"JSONSerializer jsonlib must be 'json' or 'orjson', not {_short(jsonlib)}"
            )
        if jsonlib == "orjson" and not _fastjson.available():
            raise SerializationError(
                "JSONSerializer(jsonlib='orjson') needs orjson: pip install orjson "
                "(or leave jsonlib='json': the records are the same JSON)"
            )
        self._jsonlib = jsonlib
        self._dumps_kwargs = _check_dumps_kwargs(dumps_kwargs or {})
        self._loads_kwargs = _check_loads_kwargs(loads_kwargs or {})
        # orjson only where it gives the very same values (see `serializers._fastjson`): with
        # no encoder or decoder option, which orjson cannot honour the same way.
        self._fast_dumps = jsonlib == "orjson" and not self._dumps_kwargs
        self._fast_loads = jsonlib == "orjson" and not self._loads_kwargs
        options: dict[str, Any] = {"ensure_ascii": False, "separators": (",", ":")}
        options.update(self._dumps_kwargs)
        self._encoder = json.JSONEncoder(**options, default=self._default)
        self._ascii_encoder = json.JSONEncoder(
            **{**options, "ensure_ascii": True}, default=self._default
        )
        self._decoder = json.JSONDecoder(
            object_hook=self._object_hook, **_parse_hooks(self._loads_kwargs)
        )

    @property
    def jsonlib(self) -> str:
        """``"json"`` or ``"orjson"``: the library that encodes and decodes where it can."""
        return self._jsonlib

    @property
    def dumps_kwargs(self) -> dict[str, Any]:
        """The `json.dumps` options given (a copy)."""
        return dict(self._dumps_kwargs)

    @property
    def loads_kwargs(self) -> dict[str, Any]:
        """The `json.loads` options given, parse hooks by name (a copy)."""
        return dict(self._loads_kwargs)

    @property
    def types(self) -> tuple[_Class, ...]:
        """The classes given to this serializer (global registrations not included)."""
        return tuple(self._types.values())

    # -- encoding -----------------------------------------------------------------------------

    def dumps(self, obj: Any) -> bytes:
        if self._fast_dumps:
            data = _fastjson.fast_dumps(obj)
            if data is not None:
                return data
        if not _DECODERS:
            _build_tables()
        try:
            prepared = obj if is_plain(obj, _LEAF_TYPES) else self._prepare(obj)
            text = self._encoder.encode(prepared)
        except _SecretRefused as refused:
            raise context.refuse_secret(obj, refused.kind) from None
        except SerializationError:
            raise
        except RecursionError as exc:
            raise SerializationError(
                "value is nested too deeply for JSON, or contains itself"
            ) from exc
        except ValueError as exc:  # the C encoder's "Circular reference detected"
            raise SerializationError(f"cannot encode value as JSON: {exc}") from exc
        try:
            return text.encode("utf-8")
        except UnicodeEncodeError:
            # Lone surrogates cannot be UTF-8: escape them as \udXXX, which JSON reads back.
            return self._ascii_encoder.encode(prepared).encode("ascii")

    def _prepare(self, o: Any) -> Any:
        """Rewrite what the C encoder would get wrong (tuples, odd dict keys, int/str Enums).

        Plain JSON data passes through without a copy: each container's item types are
        checked in C (`set.issuperset(map(type, ...))`) before any Python-level loop.
        """
        t = type(o)
        if t is dict:
            return self._prepare_dict(o)
        if t is list:
            if _LEAF_TYPES.issuperset(map(type, o)):
                return o
            return [self._prepare(x) for x in o]
        if t in _LEAF_TYPES:
            return o
        if t is tuple:
            return {TAG: "tuple", "v": self._prepare(list(o))}
        if isinstance(o, Enum):
            return self._encode_enum(o)
        if isinstance(o, dict):
            return self._prepare_dict(o)
        if isinstance(o, list):
            return [self._prepare(x) for x in o]
        if isinstance(o, tuple):
            return {TAG: "tuple", "v": self._prepare(list(o))}
        _LEAF_TYPES.add(t)
        return o

    def _prepare_dict(self, d: dict[Any, Any]) -> Any:
        if TAG in d or not _STR_ONLY.issuperset(map(type, d)):
            pairs = [[self._prepare(k), self._prepare(v)] for k, v in d.items()]
            return {TAG: "dict", "v": pairs}
        if _LEAF_TYPES.issuperset(map(type, d.values())):
            return d
        return {k: self._prepare(v) for k, v in d.items()}

    def _default(self, o: Any) -> Any:
        """Called by the C encoder for every value that is not plain JSON."""
        encoder = _ENCODERS.get(type(o))
        if encoder is not None:
            return encoder(o, self._prepare)
        if isinstance(o, Enum):
            return self._encode_enum(o)
        if _is_model_class(type(o)):
            return self._encode_model(o)
        if _is_dataclass_class(type(o)):
            return self._encode_dataclass(o)
        if isinstance(o, BaseException):
            return self._encode_exception(o)
        for base, encoder in _ENCODER_BASES:
            if isinstance(o, base):
                return encoder(o, self._prepare)
        secrets = context.secret_types()
        if secrets and isinstance(o, secrets):
            return self._encode_secret(o)
        kind = f"{type(o).__module__}.{type(o).__qualname__}"
        raise SerializationError(
            f"JSONSerializer cannot encode a value of type {kind}: use PickleSerializer() "
            f'(result_serializer="pickle") for arbitrary Python objects, '
            f"or convert the value to JSON-able data first"
        )

    def _allows(self, cls: _Class) -> bool:
        key = class_key(cls)
        return self._types.get(key) is cls or _GLOBAL_TYPES.get(key) is cls

    def _allowed_key(self, cls: _Class) -> str:
        key = class_key(cls)
        if not self._allows(cls):
            generic = _generic_origin(cls)
            if generic is not None and self._allows(generic):
                return class_key(generic)  # Box[int] is written (and rebuilt) as Box
            name = cls.__qualname__
            raise SerializationError(
                f"JSONSerializer may not write {key}: only allow-listed classes can be read back. "
                f"Allow it with JSONSerializer(types=[{name}]) or "
                f"serializers.register_json_type({name}), or use PickleSerializer()"
            )
        return key

    def _encode_enum(self, o: Enum) -> dict[str, Any]:
        key = self._allowed_key(type(o))
        return {TAG: "enum", "cls": key, "v": self._prepare(o.value)}

    def _encode_model(self, o: Any) -> dict[str, Any]:
        key = self._allowed_key(type(o))
        values = dict(o.__dict__)
        extra = o.__pydantic_extra__
        if extra:
            values.update(extra)
        return {
            TAG: "model",
            "cls": key,
            "v": self._prepare(values),
            "set": sorted(o.__pydantic_fields_set__),
        }

    def _encode_exception(self, o: BaseException) -> dict[str, Any]:
        cls = type(o)
        key = class_key(cls)
        prepared = []
        for arg in o.args:
            try:
                value = self._prepare(arg)
                self._encoder.encode(value)  # an argument JSON cannot hold: kept as its repr
            except (SerializationError, ValueError, TypeError, RecursionError):
                value = repr(arg)
            prepared.append(value)
        return {TAG: "exception", "cls": key, "v": prepared}

    def _encode_dataclass(self, o: Any) -> dict[str, Any]:
        import dataclasses  # already imported: `o` is a dataclass

        key = self._allowed_key(type(o))
        values = {f.name: getattr(o, f.name) for f in dataclasses.fields(o)}
        return {TAG: "dataclass", "cls": key, "v": self._prepare(values)}

    def _encode_secret(self, o: Any) -> dict[str, Any]:
        import base64

        active = context.current()
        if active is None or active.sealer is None:
            raise _SecretRefused(type(o))
        plain = o.get_secret_value()
        if isinstance(plain, str) and type(o).__name__ == "SecretStr":
            kind, data = "str", plain.encode("utf-8")
        elif isinstance(plain, bytes) and type(o).__name__ == "SecretBytes":
            kind, data = "bytes", plain
        else:
            kind, data = "secret", self.dumps(plain)
        sealed = base64.b64encode(active.sealer.seal(data)).decode("ascii")
        return {TAG: "sealed", "kind": kind, "v": sealed}

    def _decode_secret(self, d: dict[str, Any]) -> Any:
        import base64

        import pydantic

        active = context.current()
        if active is None or active.sealer is None:
            raise SerializationError(
                "stored JSON holds a sealed secret: read it through a ResultStore with the "
                "results key that wrote it"
            )
        data = active.sealer.unseal(base64.b64decode(_v(d, str), validate=True))
        kind = d.get("kind")
        if kind == "str":
            return pydantic.SecretStr(data.decode("utf-8"))
        if kind == "bytes":
            return pydantic.SecretBytes(data)
        if kind == "secret":
            return pydantic.Secret(self.loads(data))
        raise ValueError(f"unknown sealed kind {_short(kind)}")

    # -- decoding -----------------------------------------------------------------------------

    def loads(self, data: bytes) -> Any:
        if self._fast_loads:
            return _fastjson.fast_loads(data, self._slow_loads)
        return self._slow_loads(data)

    def _slow_loads(self, data: bytes) -> Any:
        if not _DECODERS:
            _build_tables()
        try:
            return self._decoder.decode(str(data, "utf-8"))
        except SerializationError:
            raise
        except (ValueError, RecursionError) as exc:  # includes JSONDecodeError, bad UTF-8
            raise SerializationError(f"stored data is not valid JSON: {exc}") from exc

    def _object_hook(self, d: dict[str, Any]) -> Any:
        if TAG not in d:
            return d
        tag = d[TAG]
        try:
            decoder = _DECODERS.get(tag) if type(tag) is str else None
            if decoder is not None:
                return decoder(d)
            if tag == "enum":
                return self._resolve(d, "enum")(d["v"])
            if tag == "model":
                return _decode_model(self._resolve(d, "model"), d)
            if tag == "dataclass":
                return _decode_dataclass(self._resolve(d, "dataclass"), d)
            if tag == "sealed":
                return self._decode_secret(d)
            if tag == "exception":
                return self._decode_exception(d)
        except SerializationError:
            raise
        except Exception as exc:  # class constructors and validators are user code
            raise SerializationError(
                f"stored JSON has an invalid {_short(tag)} value: {type(exc).__name__}: {exc}"
            ) from exc
        raise SerializationError(
            f"stored JSON has an unknown tag {_short(tag)}; "
            f"it was not written by this version of serializers.JSONSerializer"
        )

    def _resolve(self, d: dict[str, Any], kind: str) -> Any:
        key = d.get("cls")
        if type(key) is not str:
            raise SerializationError(f"stored JSON {kind} value has no class name")
        cls = self._types.get(key) or _GLOBAL_TYPES.get(key)
        if cls is None:
            name = key.rpartition(":")[2].rpartition(".")[2]
            name = name if name.isidentifier() and len(name) < 80 else "TheClass"
            raise SerializationError(
                f"stored JSON names class {_short(key)}, which this JSONSerializer may not "
                f"rebuild: decoding uses only allow-listed classes and never imports. If you "
                f"trust it, allow it with JSONSerializer(types=[{name}]) or "
                f"serializers.register_json_type({name})"
            )
        if _kind(cls) != kind:
            raise SerializationError(f"stored JSON names {_short(key)} as a {kind}, but it is not")
        return cls

    def _decode_exception(self, d: dict[str, Any]) -> BaseException:
        key, args = d.get("cls"), _v(d, list)
        if type(key) is not str:
            raise SerializationError("stored JSON exception value has no class name")
        module, _, name = key.partition(":")
        cls = self._types.get(key) or _GLOBAL_TYPES.get(key)
        if cls is None and module == "builtins":
            import builtins

            cls = getattr(builtins, name, None) if name.isidentifier() else None
        if isinstance(cls, type) and issubclass(cls, BaseException):
            try:
                return cls(*args)
            except Exception:  # an __init__ that does not take its own args back
                pass
        return StoredException(key, *args)

    # -- spec ---------------------------------------------------------------------------------

    def to_spec(self) -> dict[str, Any]:
        spec: dict[str, Any] = {"type": self.type}
        if self._dumps_kwargs:
            spec["dumps_kwargs"] = dict(self._dumps_kwargs)
        if self._loads_kwargs:
            spec["loads_kwargs"] = dict(self._loads_kwargs)
        if self._jsonlib != "json":
            spec["jsonlib"] = self._jsonlib
        return spec

    @classmethod
    def from_spec(cls, spec: dict[str, Any]) -> JSONSerializer:
        """The serializer a spec names; a record written with orjson reads with the standard
        library where orjson is not installed (the JSON is the same)."""
        check_spec_keys(spec, {"type", "dumps_kwargs", "loads_kwargs", "jsonlib"})
        for option in ("dumps_kwargs", "loads_kwargs"):
            value = spec.get(option)
            if value is not None and type(value) is not dict:
                raise SerializationError(f"serializer spec 'json': {option} must be an object")
        jsonlib = spec.get("jsonlib", "json")
        if jsonlib == "orjson" and not _fastjson.available():
            jsonlib = "json"
        return cls(
            dumps_kwargs=spec.get("dumps_kwargs"),
            loads_kwargs=spec.get("loads_kwargs"),
            jsonlib=jsonlib,
        )

    def _identity(self) -> Any:
        return (
            frozenset(self._types.items()),
            json.dumps(self._dumps_kwargs, sort_keys=True),
            json.dumps(self._loads_kwargs, sort_keys=True),
            self._jsonlib,
        )

    def __repr__(self) -> str:
        args = []
        if self._types:
            args.append(f"types=[{', '.join(c.__qualname__ for c in self.types)}]")
        if self._dumps_kwargs:
            args.append(f"dumps_kwargs={self._dumps_kwargs!r}")
        if self._loads_kwargs:
            args.append(f"loads_kwargs={self._loads_kwargs!r}")
        if self._jsonlib != "json":
            args.append(f"jsonlib={self._jsonlib!r}")
        return f"JSONSerializer({', '.join(args)})"


class _SecretRefused(Exception):
    def __init__(self, kind: type) -> None:
        self.kind = kind


def _short(value: object, limit: int = 120) -> str:
    """repr() of data-controlled text, cut short so an error message stays one line."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _is_model_class(cls: type) -> bool:
    pydantic = sys.modules.get("pydantic")  # no pydantic imported -> no pydantic models exist
    return pydantic is not None and issubclass(cls, pydantic.BaseModel)


def _is_dataclass_class(cls: type) -> bool:
    return hasattr(cls, "__dataclass_fields__")


def _kind(cls: object) -> str | None:
    if not isinstance(cls, type):
        return None
    if issubclass(cls, Enum):
        return "enum"
    if _is_model_class(cls):
        return "model"
    if _is_dataclass_class(cls):
        return "dataclass"
    if issubclass(cls, BaseException):
        return "exception"
    return None


def _generic_origin(cls: type) -> type | None:
    """``Box`` for a parametrised pydantic model ``Box[int]`` (or ``Box[int][...]``)."""
    metadata = getattr(cls, "__pydantic_generic_metadata__", None)
    origin = metadata.get("origin") if isinstance(metadata, dict) else None
    return origin if isinstance(origin, type) else None


def _check_allowable(cls: object) -> None:
    if _kind(cls) is None:
        raise SerializationError(
            f"only Enum, pydantic model and dataclass classes (and exception classes) need "
            f"allowing, not {cls!r}; other supported types are built in"
        )


def _check_dumps_kwargs(options: dict[str, Any]) -> dict[str, Any]:
    unknown = set(options) - _DUMPS_OPTIONS
    if unknown:
        raise SerializationError(
            f"JSONSerializer dumps_kwargs may set {', '.join(sorted(_DUMPS_OPTIONS))}, not "
            f"{', '.join(sorted(map(str, unknown)))} (the encoder's default and class are ours)"
        )
    options = dict(options)
    if "separators" in options:  # from a JSON spec it is a list
        options["separators"] = tuple(options["separators"])
    return options


def _check_loads_kwargs(options: dict[str, Any]) -> dict[str, Any]:
    """`loads_kwargs` with each parse hook by name; `SerializationError` for anything that
    would let stored data (or its spec) choose the code that decodes it."""
    unknown = set(options) - _LOADS_OPTIONS
    if unknown:
        raise SerializationError(
            f"JSONSerializer loads_kwargs may set {', '.join(sorted(_LOADS_OPTIONS))}, not "
            f"{', '.join(sorted(map(str, unknown)))} (custom decoder classes and hooks are "
            "refused: decoding rebuilds only allow-listed classes)"
        )
    checked: dict[str, Any] = {}
    for option, value in options.items():
        if option == "strict":
            if type(value) is not bool:
                raise SerializationError("JSONSerializer loads_kwargs: strict must be a boolean")
            checked[option] = value
            continue
        name = _hook_name(value)
        if name not in _PARSE_HOOKS[option]:
            choices = ", ".join(_PARSE_HOOKS[option])
            raise SerializationError(
                f"JSONSerializer loads_kwargs: {option} may be one of {choices} (by name, or "
                f"float, int, decimal.Decimal themselves), not {_short(value)}"
            )
        checked[option] = name
    return checked


def _hook_name(value: Any) -> str | None:
    """The name of a parse hook given as a name or as one of the allowed callables."""
    if type(value) is str:
        return value
    if value is float or value is int:
        return value.__name__
    decimal = sys.modules.get("decimal")
    if decimal is not None and value is decimal.Decimal:
        return "decimal"
    return None


def _parse_hooks(options: dict[str, Any]) -> dict[str, Any]:
    """The `json.JSONDecoder` keywords for checked `loads_kwargs`."""
    hooks: dict[str, Any] = {}
    for option, value in options.items():
        if option == "strict":
            hooks[option] = value
        elif value == "decimal":
            import decimal

            hooks[option] = decimal.Decimal
        elif value != option.removeprefix("parse_"):  # parse_int=int is the default
            hooks[option] = {"float": float, "int": int}[value]
    return hooks


def _decode_model(cls: Any, d: dict[str, Any]) -> Any:
    values = d["v"]
    fields_set = d.get("set")
    if type(values) is not dict or (fields_set is not None and type(fields_set) is not list):
        raise ValueError("malformed model record")
    return cls.model_construct(
        _fields_set=None if fields_set is None else set(fields_set), **values
    )


def _decode_dataclass(cls: Any, d: dict[str, Any]) -> Any:
    import dataclasses

    values = d["v"]
    if type(values) is not dict:
        raise ValueError("malformed dataclass record")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = set(values) - set(fields)
    if unknown:
        raise ValueError(f"{cls.__qualname__} has no field(s) {sorted(map(str, unknown))}")
    obj = cls.__new__(cls)
    for name, field in fields.items():
        if name in values:
            value = values[name]
        elif field.default is not dataclasses.MISSING:
            value = field.default
        elif field.default_factory is not dataclasses.MISSING:
            value = field.default_factory()
        else:
            raise ValueError(f"missing field {name!r} of {cls.__qualname__}")
        # Only declared fields are set (never e.g. __class__), bypassing frozen=True as pickle does.
        object.__setattr__(obj, name, value)
    return obj


def _v(d: dict[str, Any], kind: type) -> Any:
    value = d["v"]
    if type(value) is not kind:
        raise TypeError(f"expected {kind.__name__}, got {type(value).__name__}")
    return value


def _build_tables() -> None:
    """Fill the encoder/decoder tables (first use only: these imports cost a few ms)."""
    import base64
    import datetime as dt
    import decimal
    import pathlib
    import uuid

    def zone(out: dict[str, Any], o: dt.datetime | dt.time) -> dict[str, Any]:
        tz = o.tzinfo
        zoneinfo = sys.modules.get("zoneinfo")
        if zoneinfo is not None and isinstance(tz, zoneinfo.ZoneInfo) and tz.key is not None:
            out["tz"] = tz.key  # the zone itself, not just today's offset
        if o.fold:
            out["fold"] = 1
        return out

    def unzone(value: Any, d: dict[str, Any]) -> Any:
        key = d.get("tz")
        if key is not None:
            from zoneinfo import ZoneInfo  # validates the key; reads only tz database files

            if type(key) is not str:
                raise TypeError("time zone name must be a string")
            value = value.replace(tzinfo=ZoneInfo(key))
        if d.get("fold"):
            value = value.replace(fold=1)
        return value

    def b64(o: bytes | bytearray) -> str:
        return base64.b64encode(o).decode("ascii")

    def unb64(d: dict[str, Any]) -> bytes:
        return base64.b64decode(_v(d, str), validate=True)

    def tagged(tag: str, v: Any) -> dict[str, Any]:
        return {TAG: tag, "v": v}

    encoders: dict[type, Callable[[Any, _Prepare], dict[str, Any]]] = {
        dt.datetime: lambda o, p: zone(tagged("datetime", o.isoformat()), o),
        dt.date: lambda o, p: tagged("date", o.isoformat()),
        dt.time: lambda o, p: zone(tagged("time", o.isoformat()), o),
        dt.timedelta: lambda o, p: tagged("timedelta", [o.days, o.seconds, o.microseconds]),
        uuid.UUID: lambda o, p: tagged("uuid", str(o)),
        decimal.Decimal: lambda o, p: tagged("decimal", str(o)),
        complex: lambda o, p: tagged("complex", [o.real, o.imag]),
        bytes: lambda o, p: tagged("bytes", b64(o)),
        bytearray: lambda o, p: tagged("bytearray", b64(o)),
        set: lambda o, p: tagged("set", p(list(o))),
        frozenset: lambda o, p: tagged("frozenset", p(list(o))),
        pathlib.PurePosixPath: lambda o, p: tagged("pureposixpath", str(o)),
        pathlib.PureWindowsPath: lambda o, p: tagged("purewindowspath", str(o)),
        pathlib.PosixPath: lambda o, p: tagged("path", str(o)),
        pathlib.WindowsPath: lambda o, p: tagged("path", str(o)),
    }
    # For subclasses, most specific first (datetime is a date; Path is a PurePath).
    bases = [
        dt.datetime,
        dt.date,
        dt.time,
        dt.timedelta,
        uuid.UUID,
        decimal.Decimal,
        complex,
        bytes,
        bytearray,
        set,
        frozenset,
        pathlib.Path,
        pathlib.PurePosixPath,
        pathlib.PureWindowsPath,
    ]
    base_encoders = [(base, encoders.get(base, encoders[pathlib.PosixPath])) for base in bases]

    def untime(d: dict[str, Any]) -> Any:
        return unzone(dt.time.fromisoformat(_v(d, str)), d)

    def undelta(d: dict[str, Any]) -> dt.timedelta:
        days, seconds, microseconds = _v(d, list)
        return dt.timedelta(days=days, seconds=seconds, microseconds=microseconds)

    def undict(d: dict[str, Any]) -> dict[Any, Any]:
        out = {}
        for pair in _v(d, list):
            if type(pair) is not list or len(pair) != 2:
                raise ValueError("dict items must be [key, value] pairs")
            out[pair[0]] = pair[1]
        return out

    def uncomplex(d: dict[str, Any]) -> complex:
        real, imag = _v(d, list)
        return complex(float(real), float(imag))

    decoders: dict[str, Callable[[dict[str, Any]], Any]] = {
        "tuple": lambda d: tuple(_v(d, list)),
        "set": lambda d: set(_v(d, list)),
        "frozenset": lambda d: frozenset(_v(d, list)),
        "dict": undict,
        "datetime": lambda d: unzone(dt.datetime.fromisoformat(_v(d, str)), d),
        "date": lambda d: dt.date.fromisoformat(_v(d, str)),
        "time": untime,
        "timedelta": undelta,
        "uuid": lambda d: uuid.UUID(_v(d, str)),
        "decimal": lambda d: decimal.Decimal(_v(d, str)),
        "complex": uncomplex,
        "bytes": unb64,
        "bytearray": lambda d: bytearray(unb64(d)),
        "path": lambda d: pathlib.Path(_v(d, str)),
        "pureposixpath": lambda d: pathlib.PurePosixPath(_v(d, str)),
        "purewindowspath": lambda d: pathlib.PureWindowsPath(_v(d, str)),
    }
    _ENCODERS.update(encoders)
    _ENCODER_BASES[:] = base_encoders
    _LEAF_TYPES.update(encoders)
    _DECODERS.update(decoders)  # last: a non-empty _DECODERS means the tables are ready
