"""Calling a user's ``cache_key_fn``: with ``(context, parameters)`` or with no arguments.

Example:
    >>> key_fn_arity(lambda: "static")
    0
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

__all__ = ["CacheKeyFn", "call_cache_key_fn", "key_fn_arity"]

CacheKeyFn = Callable[..., str | None]


def key_fn_arity(fn: CacheKeyFn) -> int:
    """0 if `fn` takes no arguments (``lambda: "static_key"``), else 2 ``(context, parameters)``."""
    try:
        params = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):
        return 2
    positional = [
        p
        for p in params
        if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD, p.VAR_POSITIONAL)
    ]
    return 0 if not positional else 2


def call_cache_key_fn(
    fn: CacheKeyFn, arity: int, run: Any, parameters: dict[str, Any]
) -> str | None:
    """The key `fn` returns for this run (None: do not cache), validated as a storage key."""
    # Imported here: cache keys stay importable without the storage layer (and pydantic).
    from blocks.filesystems.base import checked_key

    key = fn() if arity == 0 else fn(run, parameters)
    if key is None:
        return None
    return checked_key(key)  # validated once per distinct key (a static key: once)
