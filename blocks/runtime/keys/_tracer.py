"""What a function reaches, followed as code: the parts of its fingerprint and what to watch.

From the task's function (as the task holds it: a decorator's wrapper included), once each:

- every function it reaches: its loaded source normalised (`_loaded`, `_normalise`), or its
  bytecode where there is no trusted source; then what that function reaches in turn;
- names: its globals, including names reached as attribute chains through user modules
  (``pkg.sub.func``) and string constants that name a global or a module attribute
  (``getattr(module, "name")``, ``globals()["name"]``); its closure cells (a decorator's
  arguments); its default values (a class given as a default);
- classes: their source, the plain-data values of their attributes (computed at definition,
  from an environment variable, say), their methods, and their user-defined base classes
  (the whole MRO, wherever each base lives);
- instances of user classes (a module-level ``PRICER = Pricer(2)``): their class and their
  attributes; ``functools.partial``: its function and arguments; lists, tuples, sets and dicts:
  the functions and classes inside them (and their data by digest);
- the standard library and installed packages count by name and version, never by code.

Every object read from a namespace is recorded in a `Watch`: the next call checks, by identity,
that each is still the one read (a notebook cell run again, a monkeypatched helper, a
reassigned global), and the fingerprint is computed again when one is not.
"""

from __future__ import annotations

import enum
import functools
import inspect
import sys
import types
import warnings
from collections.abc import Mapping
from typing import Any

from blocks.runtime.keys._loaded import STALE, class_source, loaded_source
from blocks.runtime.keys._normalise import (
    bytecode_identity,
    digest_text,
    is_library_module,
    package_version,
    source_digest,
)

__all__ = ["Tracer", "Watch"]

_MISSING = object()
#: Items of a list, tuple, set or dict looked at for functions and classes.
_CONTAINER_ITEMS = 1000


#: A `Watch` as tuples: what a remembered fingerprint keeps.
Frozen = tuple[tuple[Any, ...], tuple[Any, ...], tuple[Any, ...]]


class Watch:
    """The objects a fingerprint was built from, each where it was read, checked by identity."""

    __slots__ = ("cells", "functions", "items")

    def __init__(self) -> None:
        self.items: list[tuple[Mapping[str, Any], str, Any]] = []
        self.cells: list[tuple[types.CellType, Any]] = []
        self.functions: list[tuple[types.FunctionType, types.CodeType, Any, Any]] = []

    def freeze(self) -> Frozen:
        return tuple(self.items), tuple(self.cells), tuple(self.functions)


def unchanged(frozen: Frozen) -> bool:
    """Whether every watched object is still the one the fingerprint read (the hot path of a
    cached call: a dict lookup per global, an attribute read per function)."""
    items, cells, functions = frozen
    for fn, code, defaults, kwdefaults in functions:
        if fn.__code__ is not code or fn.__defaults__ is not defaults:
            return False
        if fn.__kwdefaults__ is not kwdefaults:
            return False
    for mapping, key, value in items:
        if mapping.get(key, _MISSING) is not value:
            return False
    for cell, value in cells:
        try:
            if cell.cell_contents is not value:
                return False
        except ValueError:  # emptied (``del`` of the enclosing variable)
            return False
    return True


def _names(code: types.CodeType) -> set[str]:
    """Names `code` (and the code nested in it) uses: globals, attributes, and identifier-like
    string constants (``getattr(module, "name")``)."""
    found: set[str] = set()
    stack = [code]
    while stack:
        co = stack.pop()
        found.update(co.co_names)
        for const in co.co_consts:
            if isinstance(const, types.CodeType):
                stack.append(const)
            elif isinstance(const, str) and const.isidentifier():
                found.add(const)
    return found


def _is_library(obj: Any) -> bool:
    module = getattr(obj, "__module__", None)
    if not isinstance(module, str):
        return inspect.isbuiltin(obj)  # exec'd code has no module: it is the user's
    return is_library_module(module)


def _is_dunder(name: str) -> bool:
    return name.startswith("__") and name.endswith("__")


def _is_sunder(name: str) -> bool:
    return len(name) > 2 and name[0] == name[-1] == "_" and name[1] != "_"


class Tracer:
    """Collects the parts of one fingerprint, its notes and its watch list."""

    def __init__(self, owner: str) -> None:
        self.owner = owner
        self.parts: dict[str, str] = {}
        self.seen: set[int] = set()
        self.seen_attributes: set[tuple[int, str]] = set()
        self.notes: list[str] = []
        self.watch = Watch()
        self.chain: set[int] = set()  # the task's function and the wrappers around it

    def put(self, label: str, value: str) -> None:
        """Record one part; a second part under the same label gets a numbered label."""
        if label in self.parts:
            n = 2
            while f"{label} #{n}" in self.parts:
                n += 1
            label = f"{label} #{n}"
        self.parts[label] = value

    # -- roots ------------------------------------------------------------------------------

    def root(self, target: Any, owner: str) -> None:
        """The task's callable, as the task holds it: wrappers first, then what they wrap."""
        inner = target
        for _ in range(32):
            self.chain.add(id(inner))
            inner = getattr(inner, "__wrapped__", None)
            if inner is None:
                break
        if isinstance(target, types.MethodType):
            self.value("self", target.__self__, set(), "bound")
            target = target.__func__
        if isinstance(target, functools.partial):
            self.value(owner, target, set(), "partial")
        elif inspect.isclass(target):
            self.klass(target, f"class '{owner}'")
        elif inspect.isfunction(target):
            self.function(target, f"function '{target.__name__}'")
        elif _is_library(type(target)) and _wrapped(target) is not None:
            self.root(_wrapped(target), owner)  # a task, a flow, an lru_cache: what it runs
        elif inspect.isbuiltin(target) or _is_library(type(target)):
            module = getattr(target, "__module__", None) or "builtins"
            name = getattr(target, "__qualname__", None) or type(target).__qualname__
            self.put(f"function '{owner}'", digest_text(f"{module}.{name}".encode()))
            self.notes.append(f"no source for {owner!r}: identified by its qualified name")
        else:
            self.instance(owner, target)

    # -- code -------------------------------------------------------------------------------

    def function(self, fn: types.FunctionType, label: str) -> None:
        if id(fn) in self.seen:
            return  # the cycle guard: recursion and mutual recursion
        self.seen.add(id(fn))
        code = fn.__code__
        self.watch.functions.append((fn, code, fn.__defaults__, fn.__kwdefaults__))
        source, why = loaded_source(fn)
        digest = None
        if source is not None:
            digest = source_digest(source, drop_decorators=id(fn) in self.chain)
        if digest is None:
            self.put(label, bytecode_identity(fn))
            reason = (
                "its file's text does not compile to the loaded code (edited since it was "
                "loaded, or rewritten by an import hook)"
                if why == STALE
                else "no source"
            )
            self.notes.append(
                f"{reason} for {fn.__qualname__!r}: identified by its bytecode (valid for "
                "this Python version only)"
            )
        else:
            self.put(label, digest)
        self.references(fn)

    def references(self, fn: types.FunctionType) -> None:
        """The globals, closure cells and defaults `fn` reads."""
        code = fn.__code__
        names = _names(code)
        scope = fn.__globals__
        for name in sorted(names):
            value = scope.get(name, _MISSING)
            if value is not _MISSING:
                self.watch.items.append((scope, name, value))
                self.value(name, value, names, "global")
        for name, cell in zip(code.co_freevars, fn.__closure__ or (), strict=False):
            try:
                value = cell.cell_contents
            except ValueError:  # an empty cell: a name assigned later in the enclosing scope
                continue
            self.watch.cells.append((cell, value))
            self.value(name, value, names, "closure")
        for n, value in enumerate(fn.__defaults__ or ()):
            self.value(f"{fn.__qualname__} default {n}", value, names, "default", quiet=True)
        for name, value in sorted((fn.__kwdefaults__ or {}).items()):
            self.value(f"{fn.__qualname__} default {name}", value, names, "default", quiet=True)

    def klass(self, cls: type, label: str) -> None:
        if id(cls) in self.seen:
            return
        self.seen.add(id(cls))
        source = class_source(cls)
        digest = None if source is None else source_digest(source)
        members = vars(cls)
        # Generated methods (a dataclass's __init__, __eq__, __lt__...) have no source of
        # their own: their names say which a class decorator's options made.
        prefix = cls.__qualname__
        generated = sorted(
            name
            for name, member in members.items()
            if inspect.isfunction(member)
            and member.__qualname__.startswith(f"{prefix}.")
            and not self._defined_in(member, cls)
        )
        if digest is None:
            self.put(label, digest_text(f"{cls.__module__}.{cls.__qualname__}".encode()))
            self.notes.append(f"no source for class {cls.__qualname__!r}: identified by name")
        else:
            self.put(label, digest_text(f"{digest}:{','.join(generated)}".encode()))
        for name, member in members.items():
            fn = member
            if isinstance(fn, property):
                fn = fn.fget
            elif isinstance(fn, staticmethod | classmethod):
                fn = fn.__func__
            if inspect.isfunction(fn):
                self.watch.items.append((members, name, member))  # a method replaced
                if self._defined_in(fn, cls):
                    self.function(fn, f"method '{prefix}.{name}'")
                elif not _is_dunder(name):  # not written here: generated (dataclass's
                    # __init__) or machinery (3.13's __replace__), else assigned in the body
                    self.value(f"{prefix}.{name}", fn, set(), "class attribute")
                continue
            if _is_dunder(name) or _is_sunder(name) or isinstance(fn, property):
                continue  # Python's own (__module__) and enum's (_member_map_) bookkeeping
            self.watch.items.append((members, name, member))
            self.value(f"{prefix}.{name}", member, set(), "class attribute", quiet=True)
        for base in cls.__mro__[1:]:
            if not _is_library(base):
                self.klass(base, f"class '{base.__qualname__}'")

    @staticmethod
    def _defined_in(fn: types.FunctionType, cls: type) -> bool:
        """Whether `fn` was written in `cls`'s body (not generated, not assigned from elsewhere)."""
        if not fn.__qualname__.startswith(f"{cls.__qualname__}."):
            return False
        module = getattr(sys.modules.get(cls.__module__), "__file__", None)
        return module is None or fn.__code__.co_filename == module

    def instance(self, name: str, obj: Any) -> None:
        """An instance of a user class: its class, then each attribute."""
        self.klass(type(obj), f"class '{type(obj).__qualname__}'")
        state = getattr(obj, "__dict__", None)
        if not isinstance(state, dict):
            return
        for attr, value in list(state.items()):
            self.watch.items.append((state, attr, value))
            self.value(f"{name}.{attr}", value, set(), "attribute", quiet=True)

    # -- values -----------------------------------------------------------------------------

    def value(
        self, name: str, value: Any, names: set[str], kind: str, *, quiet: bool = False
    ) -> None:
        if isinstance(value, types.ModuleType):
            self.module(name, value, names)
            return
        if isinstance(value, staticmethod | classmethod):
            value = value.__func__
        if isinstance(value, types.MethodType):
            self.value(f"{name}.__self__", value.__self__, names, kind, quiet=quiet)
            value = value.__func__
        if isinstance(value, functools.partial):
            if id(value) in self.seen:
                return
            self.seen.add(id(value))
            self.value(f"{name}.func", value.func, names, kind)
            for n, arg in enumerate(value.args):
                self.value(f"{name}.args[{n}]", arg, names, kind, quiet=quiet)
            for key, arg in sorted(value.keywords.items()):
                self.value(f"{name}.{key}", arg, names, kind, quiet=quiet)
            return
        if inspect.isfunction(value) or inspect.isbuiltin(value) or inspect.isclass(value):
            if _is_library(value):
                self.package(getattr(value, "__module__", None) or "builtins")
            elif inspect.isclass(value):
                self.klass(value, f"class '{name}'")
            elif inspect.isfunction(value):
                self.function(value, f"helper '{name}'")
            return
        if id(value) in self.seen:
            return
        self.seen.add(id(value))
        wrapped = _wrapped(value)
        if wrapped is not None:  # a task, a flow, an lru_cache: the function it runs
            self.value(name, wrapped, names, kind, quiet=quiet)
            if _is_library(type(value)):
                return
        kind_of = type(value)
        if kind_of in (list, tuple, set, frozenset, dict):
            self.container(name, value, names)
        elif not _is_library(kind_of) and not isinstance(value, enum.Enum):
            self.instance(name, value)
            if isinstance(getattr(value, "__dict__", None), dict):
                return  # its class and attributes are its parts
        self.data(name, value, kind, quiet)

    def module(self, name: str, module: types.ModuleType, names: set[str]) -> None:
        """A user module: the attributes the code names through it (``pkg.sub.func``)."""
        if is_library_module(module.__name__):
            self.package(module.__name__)
            return
        namespace = vars(module)
        for attr in sorted(names):
            if (id(module), attr) in self.seen_attributes:
                continue
            value = namespace.get(attr, _MISSING)
            if value is _MISSING:
                continue
            self.seen_attributes.add((id(module), attr))
            self.watch.items.append((namespace, attr, value))
            self.value(f"{name}.{attr}", value, names, "global")

    def container(self, name: str, value: Any, names: set[str]) -> None:
        """The code inside a list, tuple, set or dict: functions, classes, partials, modules,
        user instances and nested containers (their data counts in the container's digest)."""
        items: list[tuple[str, Any]]
        if isinstance(value, dict):
            items = []
            # By position, not repr(key): a default repr holds an address, new every process.
            for n, (key, item) in enumerate(list(value.items())[:_CONTAINER_ITEMS]):
                items += [(f"{name} key {n}", key), (f"{name} value {n}", item)]
        elif isinstance(value, set | frozenset):
            ordered = sorted(
                (v for v in value if _is_code(v)),
                key=lambda v: f"{getattr(v, '__module__', '')}.{getattr(v, '__qualname__', '')}",
            )
            items = [(f"{name}{{{n}}}", v) for n, v in enumerate(ordered[:_CONTAINER_ITEMS])]
        else:
            items = [(f"{name}[{n}]", v) for n, v in enumerate(value[:_CONTAINER_ITEMS])]
        for label, item in items:
            if type(item) in (list, tuple, set, frozenset, dict):
                if id(item) not in self.seen:
                    self.seen.add(id(item))
                    self.container(label, item, names)
            elif _is_code(item):
                self.value(label, item, names, "global", quiet=True)

    def package(self, module: str) -> None:
        top = module.partition(".")[0]
        if top != "builtins":
            self.parts[f"package '{top}'"] = digest_text(package_version(top).encode())

    def data(self, name: str, value: Any, kind: str, quiet: bool) -> None:
        from blocks.runtime.keys._hashing import CacheKeyWarning, Unhashable, digest

        try:
            self.put(f"{kind} '{name}'", digest(value))
        except Unhashable as exc:
            kind_name = f"{type(value).__module__}.{type(value).__qualname__}"
            self.put(f"{kind} '{name}'", digest_text(f"type:{kind_name}".encode()))
            if quiet:
                return
            warnings.warn(
                f"The cache key of {self.owner!r} counts {kind} {name!r} by its type only: "
                f"{exc}. Register a hasher (blocks.hashing.register_hasher) to count its value.",
                CacheKeyWarning,
                stacklevel=2,
            )


def _is_code(item: Any) -> bool:
    """Whether `item` is code to follow: a function, class, partial, method, module or an
    instance of a user class."""
    if isinstance(
        item, type | types.FunctionType | functools.partial | types.MethodType | types.ModuleType
    ):
        return True
    return not _is_library(type(item)) and not isinstance(item, enum.Enum)


def _wrapped(value: Any) -> Any:
    """What a wrapper object runs (``__wrapped__``), or None. Read statically: an object's
    ``__getattr__`` (a proxy, a remote client) is never called; a slot is read."""
    try:
        inner = inspect.getattr_static(value, "__wrapped__", None)
        if isinstance(inner, types.MemberDescriptorType | types.GetSetDescriptorType):
            inner = getattr(value, "__wrapped__", None)
    except Exception:
        return None
    return inner if callable(inner) else None
