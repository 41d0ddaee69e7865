"""Code fingerprints: a digest of what a function does, stable across processes and Pythons.

The fingerprint of a function is built from its *source as loaded* (`_loaded`: never a file
edited since the import), parsed and normalised (`_normalise`: the AST with docstrings,
comments, blank lines and formatting dropped), plus everything it reaches, followed as code
(`_tracer`): helpers, decorators' wrappers and their arguments, ``functools.partial``
arguments, classes with their attribute values, methods and base classes, instances of user
classes, functions and classes inside lists and dicts, modules reached by dotted paths, and the
globals, closure cells and defaults each reads (by their deterministic digest,
`blocks.hashing`). The standard library and installed packages count by name and version
(``numpy==2.1.0``), never by their code.

"User code" is any module whose file lies outside the interpreter's standard library and
site-packages (an editable install of your own package counts as yours). The same source gives
the same digest on Python 3.11, 3.12 and 3.13. Where no trusted source exists (code ``exec``'d
from a string, a file edited since it was loaded) a function counts by its bytecode, valid for
one Python version, and `Fingerprint.note` says so.

A fingerprint is remembered per function object, with the identity of every object it read
(each global, module attribute, closure cell, class attribute, ``__code__`` and defaults): a
call checks those identities, and a notebook cell run again, a monkeypatched helper or a
reassigned global computes the fingerprint again. A value changed *in place* (a dict's item
assigned) is not seen until the process restarts: give the task a ``version=`` then.

Example:
    >>> fingerprint(price).parts
    {"function 'price'": '3b1f...', "helper 'rate_for'": '9c0e...', "global 'RATE'": 'a2d4...'}
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from blocks.runtime.keys._normalise import bytecode_identity, digest_text, is_library_module
from blocks.runtime.keys._tracer import Tracer, unchanged

__all__ = [
    "Fingerprint",
    "clear_cache",
    "current",
    "fingerprint",
    "is_library_module",
    "watched",
]


@dataclass(frozen=True)
class Fingerprint:
    """A function's code digest, the digest of each part it was built from, and a note."""

    digest: str
    parts: dict[str, str] = field(default_factory=dict)
    note: str | None = None


# -- the per-process cache -------------------------------------------------------------------

#: id(fn) -> (fn, its fingerprint, what it read); holding `fn` keeps its id from being reused.
_cache: dict[int, tuple[Any, Fingerprint, Any]] = {}
_cache_lock = threading.RLock()


def fingerprint(fn: Callable[..., Any]) -> Fingerprint:
    """The code fingerprint of `fn` (a function, task, or any callable), remembered while
    every object it read is still the one it read.

    Example:
        >>> fingerprint(lambda x: x * 2).digest != fingerprint(lambda x: x * 3).digest
        True
    """
    entry = _cache.get(id(fn))
    if entry is not None and entry[0] is fn and unchanged(entry[2]):
        return entry[1]
    # Computed under the lock: calls racing the first one must all get ITS fingerprint (the
    # globals and closure values it read may change the moment the first body runs).
    with _cache_lock:
        entry = _cache.get(id(fn))
        if entry is not None and entry[0] is fn and unchanged(entry[2]):
            return entry[1]
        result, watch = _compute(fn)
        _cache[id(fn)] = (fn, result, watch)
    return result


def watched(fn: Callable[..., Any]) -> Any:
    """What the remembered fingerprint of `fn` read (a frozen `_tracer.Watch`), or None."""
    entry = _cache.get(id(fn))
    return entry[2] if entry is not None and entry[0] is fn else None


current = fingerprint
"""The policies' name for it: the fingerprint `fn` has now (a remembered one, if still valid)."""


def _compute(fn: Callable[..., Any]) -> tuple[Fingerprint, Any]:
    # Never repr(fn): a default repr holds an address, new in every process.
    owner = getattr(fn, "__qualname__", None) or type(fn).__qualname__
    tracer = Tracer(owner)
    try:
        tracer.root(fn, owner)
    except Exception as exc:  # odd code must still run, keyed by identity
        tracer.parts = {f"function '{owner}'": bytecode_identity(fn)}
        tracer.notes = [
            f"could not read the code of {owner!r} ({type(exc).__name__}): identified by "
            "its bytecode (valid for this Python version only)"
        ]
    parts = dict(sorted(tracer.parts.items()))
    total = digest_text("\n".join(f"{k}={v}" for k, v in parts.items()).encode())
    return Fingerprint(total, parts, "; ".join(tracer.notes) or None), tracer.watch.freeze()


def clear_cache() -> None:
    """Forget every fingerprint (tests that edit and reload a module)."""
    from blocks.runtime.keys._loaded import clear

    with _cache_lock:
        _cache.clear()
    clear()
