"""Code fingerprints: a digest of what a function does, stable across processes and Pythons.

The fingerprint of a function is built from its *source*, parsed and normalised (the AST with
docstrings, comments, blank lines and formatting dropped), plus, transitively and once each:

- the user-defined functions and classes it calls or names (their normalised source too);
- the module globals and closure variables it reads, by their deterministic digest
  (`blocks.hashing`); a value that cannot be hashed counts by its type, with one warning;
- for functions, classes and modules of the standard library or an installed package: the
  package's name and version (``numpy==2.1.0``), never their code.

"User code" is any module whose file lies outside the interpreter's standard library and
site-packages (an editable install of your own package counts as yours). The AST is encoded by
our own walker, which skips fields that are empty, so the same source gives the same digest on
Python 3.11, 3.12 and 3.13 (whose ``ast.dump`` and bytecode differ). Where no source exists
(a lambda typed in a REPL, a C function) the fingerprint falls back to the module, qualified
name and bytecode, valid for one Python version, and says so in `Fingerprint.note`.

Each function is fingerprinted once per process.

Example:
    >>> fingerprint(price).parts
    {"function 'price'": '3b1f...', "helper 'rate_for'": '9c0e...', "global 'RATE'": 'a2d4...'}
"""

from __future__ import annotations

import ast
import functools
import hashlib
import inspect
import os
import sys
import sysconfig
import textwrap
import threading
import types
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

__all__ = ["Fingerprint", "fingerprint", "is_library_module"]

#: AST fields that never change behaviour (``kind`` is the ``u`` prefix of a string).
_SKIPPED_FIELDS = frozenset({"type_comment", "kind", "type_ignores"})


@dataclass(frozen=True)
class Fingerprint:
    """A function's code digest, the digest of each part it was built from, and a note."""

    digest: str
    parts: dict[str, str] = field(default_factory=dict)
    note: str | None = None


def _digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()[:32]


# -- normalised source ---------------------------------------------------------------------


def _strip(tree: ast.AST) -> ast.AST:
    """Drop docstrings everywhere in `tree` (in place)."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Module | ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            body = node.body
            if (
                body
                and isinstance(body[0], ast.Expr)
                and isinstance(body[0].value, ast.Constant)
                and isinstance(body[0].value.value, str)
            ):
                node.body = body[1:]
    return tree


def _encode(node: Any, out: list[str]) -> None:
    """A canonical text of an AST: node names and non-empty fields, version-independent."""
    if isinstance(node, ast.AST):
        out.append(type(node).__name__)
        out.append("(")
        for name in node._fields:
            if name in _SKIPPED_FIELDS:
                continue
            value = getattr(node, name, None)
            if value is None or (isinstance(value, list) and not value):
                continue  # absent in older Pythons (type_params), or simply empty
            out.append(name)
            out.append("=")
            _encode(value, out)
            out.append(",")
        out.append(")")
    elif isinstance(node, list):
        out.append("[")
        for item in node:
            _encode(item, out)
            out.append(",")
        out.append("]")
    else:
        out.append(f"{type(node).__name__}:{node!r}")


def normalized_source(obj: Any, *, drop_decorators: bool = False) -> tuple[str, ast.AST] | None:
    """The digest of `obj`'s normalised source and its AST, or None when no source exists."""
    try:
        source = inspect.getsource(obj)
    except (OSError, TypeError):
        return None
    source = textwrap.dedent(source)
    try:
        tree = ast.parse(source)
    except SyntaxError:
        # A lambda inside a larger expression spanning lines: no clean source of its own.
        return None
    _strip(tree)
    if drop_decorators:
        # The task's own decorator holds its options (expiration, retries): not behaviour.
        for node in tree.body:
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
                node.decorator_list = []
    out: list[str] = []
    _encode(tree, out)
    return _digest("".join(out).encode()), tree


def _bytecode_identity(fn: Any) -> str:
    """Module, qualified name and bytecode (with constants): one Python version only."""
    parts = [
        getattr(fn, "__module__", "") or "",
        getattr(fn, "__qualname__", "") or type(fn).__qualname__,
        f"python{sys.version_info[0]}.{sys.version_info[1]}",
    ]
    code = getattr(fn, "__code__", None)
    stack = [code] if code is not None else []
    while stack:
        co = stack.pop()
        parts.append(co.co_code.hex())
        parts.append(repr(co.co_names))
        for const in co.co_consts:
            if isinstance(const, types.CodeType):
                stack.append(const)
            else:
                parts.append(repr(const))
    return _digest("\x00".join(parts).encode())


# -- user code or library ------------------------------------------------------------------


@functools.cache
def _library_roots() -> tuple[str, ...]:
    paths = sysconfig.get_paths()
    roots = {paths[k] for k in ("stdlib", "platstdlib", "purelib", "platlib") if k in paths}
    roots.update(p for p in sys.path if p.endswith(("site-packages", "dist-packages")))
    return tuple(os.path.realpath(r).rstrip(os.sep) + os.sep for r in roots if r)


@functools.cache
def is_library_module(name: str) -> bool:
    """Whether module `name` is the standard library, an installed package or `blocks` itself."""
    top = name.partition(".")[0]
    if top in sys.stdlib_module_names or top in ("builtins", "blocks", "serializers"):
        return True
    module = sys.modules.get(name) or sys.modules.get(top)
    if module is None:
        return False
    file = getattr(module, "__file__", None)
    if file is None:
        return top != "__main__"  # built in or frozen; __main__ from `python -c` is user code
    real = os.path.realpath(file)
    return any(real.startswith(root) for root in _library_roots())


@functools.cache
def _package_version(top: str) -> str:
    """``name==version`` of the distribution providing `top`; stdlib and `blocks` by name only."""
    if top in sys.stdlib_module_names or top == "builtins":
        return "stdlib"  # the same code on 3.11 and 3.12 shares keys: the stdlib is not counted
    from importlib import metadata

    try:
        dists = metadata.packages_distributions().get(top) or [top]
        return f"{dists[0]}=={metadata.version(dists[0])}"
    except Exception:
        version = getattr(sys.modules.get(top), "__version__", None)
        return f"{top}=={version}" if isinstance(version, str) else f"{top}==unknown"


# -- tracing what a function reaches ---------------------------------------------------------


def _names(code: types.CodeType) -> Iterator[str]:
    """Global and attribute names used by `code` and the code objects nested in it."""
    stack = [code]
    while stack:
        co = stack.pop()
        yield from co.co_names
        stack.extend(c for c in co.co_consts if isinstance(c, types.CodeType))


def _module_attributes(tree: ast.AST) -> dict[str, set[str]]:
    """``{"helpers": {"rate_for"}}`` for every ``helpers.rate_for`` in `tree`."""
    found: dict[str, set[str]] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name):
            found.setdefault(node.value.id, set()).add(node.attr)
    return found


def _unwrap(obj: Any) -> Any:
    """The plain function behind a task, flow, ``functools.wraps`` wrapper or method."""
    for _ in range(16):
        if isinstance(obj, staticmethod | classmethod | types.MethodType):
            obj = obj.__func__
        elif isinstance(obj, functools.partial):
            obj = obj.func
        else:
            inner = getattr(obj, "__wrapped__", None)
            if inner is None or not callable(inner):
                return obj
            obj = inner
    return obj


class _Tracer:
    def __init__(self, owner: str) -> None:
        self.owner = owner
        self.parts: dict[str, str] = {}
        self.seen: set[int] = set()
        self.notes: list[str] = []

    def function(self, fn: Any, label: str, *, root: bool = False) -> None:
        if id(fn) in self.seen:
            return  # the cycle guard: recursion and mutual recursion
        self.seen.add(id(fn))
        found = normalized_source(fn, drop_decorators=root)
        if found is None:
            self.parts[label] = _bytecode_identity(fn)
            self.notes.append(
                f"no source for {getattr(fn, '__qualname__', fn)!r}: identified by its "
                "bytecode (valid for this Python version only)"
            )
            return
        self.parts[label], tree = found
        self._references(fn, tree)

    def klass(self, cls: type, label: str) -> None:
        if id(cls) in self.seen:
            return
        self.seen.add(id(cls))
        found = normalized_source(cls)
        if found is None:
            self.parts[label] = _digest(f"{cls.__module__}.{cls.__qualname__}".encode())
            self.notes.append(f"no source for class {cls.__qualname__!r}: identified by name")
            return
        self.parts[label], _ = found
        for member in vars(cls).values():
            if isinstance(member, property):
                member = member.fget
            member = _unwrap(member)
            if inspect.isfunction(member):
                found = normalized_source(member)
                if found is not None and id(member) not in self.seen:
                    self.seen.add(id(member))  # its source is part of the class's already
                    self._references(member, found[1])

    def _references(self, fn: Any, tree: ast.AST) -> None:
        code = getattr(fn, "__code__", None)
        if code is None:
            return
        scope: dict[str, Any] = getattr(fn, "__globals__", {})
        attributes = _module_attributes(tree)
        for name in sorted(set(_names(code))):
            if name in scope:
                self.value(name, scope[name], attributes, "global")
        cells = getattr(fn, "__closure__", None) or ()
        for name, cell in zip(code.co_freevars, cells, strict=False):
            try:
                value = cell.cell_contents
            except ValueError:  # an empty cell: a name assigned later in the enclosing scope
                continue
            self.value(name, value, attributes, "closure")

    def value(self, name: str, value: Any, attributes: dict[str, set[str]], kind: str) -> None:
        if isinstance(value, types.ModuleType):
            if is_library_module(value.__name__):
                top = value.__name__.partition(".")[0]
                self.parts[f"package '{top}'"] = _digest(_package_version(top).encode())
                return
            for attr in sorted(attributes.get(name, ())):
                if hasattr(value, attr):
                    self.value(f"{name}.{attr}", getattr(value, attr), {}, kind)
            return
        target = _unwrap(value)
        if inspect.isfunction(target) or inspect.isbuiltin(target) or inspect.isclass(target):
            module = getattr(target, "__module__", None) or "builtins"
            if is_library_module(module):
                top = module.partition(".")[0]
                if top != "builtins":
                    self.parts[f"package '{top}'"] = _digest(_package_version(top).encode())
                return
            if inspect.isclass(target):
                self.klass(target, f"class '{name}'")
            elif inspect.isfunction(target):
                self.function(target, f"helper '{name}'")
            return
        if id(value) in self.seen:
            return
        self.seen.add(id(value))
        from blocks.runtime.keys._hashing import Unhashable, digest

        try:
            self.parts[f"{kind} '{name}'"] = digest(value)
        except Unhashable as exc:
            self.parts[f"{kind} '{name}'"] = _digest(
                f"type:{type(value).__module__}.{type(value).__qualname__}".encode()
            )
            from blocks.runtime.keys._hashing import CacheKeyWarning

            warnings.warn(
                f"The cache key of {self.owner!r} counts {kind} {name!r} by its type only: "
                f"{exc}. Register a hasher (blocks.hashing.register_hasher) to count its value.",
                CacheKeyWarning,
                stacklevel=2,
            )


# -- the per-process cache -------------------------------------------------------------------

_cache: dict[int, tuple[Any, Fingerprint]] = {}
_cache_lock = threading.RLock()


def _trace(tracer: _Tracer, target: Any, owner: str) -> None:
    """Fill `tracer` with the parts of `target`: its own source and what it reaches."""
    if inspect.isclass(target):
        tracer.klass(target, f"class '{owner}'")
    elif inspect.isfunction(target):
        tracer.function(target, f"function '{target.__name__}'", root=True)
    else:
        # A builtin or a callable object: its type's source if it has one, else its identity.
        kind = target if inspect.isbuiltin(target) else type(target)
        module = getattr(kind, "__module__", "") or "builtins"
        if is_library_module(module) or inspect.isbuiltin(target):
            tracer.parts[f"function '{owner}'"] = _digest(
                f"{module}.{getattr(kind, '__qualname__', owner)}".encode()
            )
            tracer.notes.append(f"no source for {owner!r}: identified by its qualified name")
        else:
            tracer.klass(type(target), f"class '{type(target).__qualname__}'")


def fingerprint(fn: Callable[..., Any]) -> Fingerprint:
    """The code fingerprint of `fn` (a function, task, or any callable); once per process.

    Example:
        >>> fingerprint(lambda x: x * 2).digest != fingerprint(lambda x: x * 3).digest
        True
    """
    entry = _cache.get(id(fn))
    if entry is not None and entry[0] is fn:
        return entry[1]
    # Computed under the lock: calls racing the first one must all get ITS fingerprint (the
    # globals and closure values it read may change the moment the first body runs).
    with _cache_lock:
        entry = _cache.get(id(fn))
        if entry is not None and entry[0] is fn:
            return entry[1]
        result = _compute(fn)
        _cache[id(fn)] = (fn, result)  # keeps `fn` alive, so its id is never reused
    return result


def _compute(fn: Callable[..., Any]) -> Fingerprint:
    target = _unwrap(fn)
    owner = getattr(target, "__qualname__", None) or repr(target)
    tracer = _Tracer(owner)
    try:
        _trace(tracer, target, owner)
    except Exception as exc:  # odd code must still run, keyed by identity
        tracer.parts = {f"function '{owner}'": _bytecode_identity(target)}
        tracer.notes = [
            f"could not read the code of {owner!r} ({type(exc).__name__}): identified by "
            "its bytecode (valid for this Python version only)"
        ]
    parts = dict(sorted(tracer.parts.items()))
    total = _digest("\n".join(f"{k}={v}" for k, v in parts.items()).encode())
    return Fingerprint(total, parts, "; ".join(tracer.notes) or None)


def clear_cache() -> None:
    """Forget every fingerprint (tests that edit and reload a module)."""
    with _cache_lock:
        _cache.clear()
