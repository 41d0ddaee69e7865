"""User cache-key functions: Prefect's ``task_input_hash`` and calling a ``cache_key_fn``.

Example:
    >>> @task(cache_key_fn=task_input_hash)
    ... def double(x: int) -> int:
    ...     return 2 * x
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

from blocks.filesystems.base import checked_key
from blocks.runtime.keys._policies import DEFAULT_INPUT_HASH, TaskContext

__all__ = ["CacheKeyFn", "call_cache_key_fn", "key_fn_arity", "task_input_hash"]

CacheKeyFn = Callable[..., str | None]


def task_input_hash(context: TaskContext, parameters: dict[str, Any]) -> str | None:
    """Cache key from the task's code and its inputs: same code + same inputs = hit.

    None (run uncached, with a `blocks.hashing.CacheKeyWarning`) when an input has no
    deterministic digest.
    """
    return DEFAULT_INPUT_HASH.resolve(context, parameters, {})[0]


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
    fn: CacheKeyFn, arity: int, run: TaskContext, parameters: dict[str, Any]
) -> str | None:
    """The key `fn` returns for this run (None: do not cache), validated as a storage key."""
    key = fn() if arity == 0 else fn(run, parameters)
    if key is None:
        return None
    return checked_key(key)  # validated once per distinct key (a static key: once)
