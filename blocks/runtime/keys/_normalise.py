"""Version-independent digests of code: normalised source, bytecode, and what counts as a library.

- `source_digest`: the AST of a source text with docstrings, comments, blank lines and
  formatting dropped, encoded by our own walker that skips empty fields, so the same source
  gives the same digest on Python 3.11, 3.12 and 3.13 (whose ``ast.dump`` differs);
- `bytecode_identity`: module, qualified name and bytecode with constants, for code with no
  trusted source; valid for one Python version only;
- `is_library_module` / `package_version`: the standard library, installed packages and
  `blocks` itself count by name and version, never by their code.

Example:
    >>> a = source_digest("def f(x):\\n    return x  # why\\n")
    >>> a == source_digest("def f( x ):\\n    return x\\n")
    True
"""

from __future__ import annotations

import ast
import functools
import hashlib
import os
import sys
import sysconfig
import textwrap
import types
from typing import Any

__all__ = [
    "bytecode_identity",
    "digest_text",
    "is_library_module",
    "package_version",
    "source_digest",
]

#: AST fields that never change behaviour (``kind`` is the ``u`` prefix of a string).
_SKIPPED_FIELDS = frozenset({"type_comment", "kind", "type_ignores"})


def digest_text(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()[:32]


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


def source_digest(source: str, *, drop_decorators: bool = False) -> str | None:
    """The digest of `source` normalised, or None when it does not parse on its own."""
    try:
        tree = ast.parse(textwrap.dedent(source))
    except SyntaxError:
        # A lambda inside a larger expression spanning lines: no clean source of its own.
        return None
    _strip(tree)
    if drop_decorators:
        # The task's own decorators hold its options (expiration, retries): not behaviour. A
        # decorator that wraps the function is followed as code instead (its closure).
        for node in tree.body:
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
                node.decorator_list = []
    out: list[str] = []
    _encode(tree, out)
    return digest_text("".join(out).encode())


def bytecode_identity(fn: Any) -> str:
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
    return digest_text("\x00".join(parts).encode())


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
def package_version(top: str) -> str:
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
