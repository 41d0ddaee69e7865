"""Cache keys: `task_input_hash`, and how a task's ``cache_key_fn`` is called.

`task_input_hash` is the usual ``cache_key_fn``: a stable hash of the task's code fingerprint
(`blocks.fingerprints`) and of each bound parameter's deterministic digest (`blocks.hashing`);
it is the `blocks.cache_policies` ``INPUTS + TASK_SOURCE`` policy. Equal code and inputs give
the same key in every process, on every machine and Python version; an input that cannot be
hashed makes the call run uncached, with a warning.

Persisting results (resolved stores, `persist`, the "compute once" `KeyLock`) lives in the
results layer, `blocks.results._persistence`; its names are re-exported here for the runtime
modules and old imports.

Example:
    >>> @task(cache_key_fn=task_input_hash, cache_expiration=timedelta(hours=1))
    ... def extract(source: str) -> dict: ...
"""

from __future__ import annotations

import hashlib
import inspect
import json
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from blocks.filesystems.base import checked_key

# The persistence half of the old module, for the runtime (`blocks.task_engine`, `engine`,
# `flows`) and anyone who imported it from here.
from blocks.results._persistence import (
    KeyLock,
    clear_store_cache,
    key_lock,
    persist,
    result_store,
)

if TYPE_CHECKING:
    from blocks.runtime._context import TaskRun

__all__ = [
    "KeyLock",
    "call_cache_key_fn",
    "clear_store_cache",
    "key_lock",
    "persist",
    "result_store",
    "task_input_hash",
]

CacheKeyFn = Callable[..., str | None]


def function_identity(fn: Callable[..., Any]) -> bytes:
    """Bytes that identify a function's code: module, qualified name and bytecode.

    Kept for old callers; cache keys use `blocks.fingerprints.fingerprint` instead.
    """
    code = getattr(fn, "__code__", None)
    parts = [
        getattr(fn, "__module__", "") or "",
        getattr(fn, "__qualname__", "") or repr(fn),
        code.co_code.hex() if code is not None else "",
    ]
    return "\x00".join(parts).encode()


def hash_parameters(identity: bytes, parameters: dict[str, Any]) -> str:
    """A 32-hex-digit key from `identity` and `parameters` (JSON, else cloudpickle)."""
    try:
        payload = (
            b"J"
            + json.dumps(parameters, sort_keys=True, separators=(",", ":"), allow_nan=True).encode()
        )
    except (TypeError, ValueError):
        import cloudpickle

        payload = b"P" + cloudpickle.dumps(parameters, protocol=5)
    digest = hashlib.blake2b(identity, digest_size=16)
    digest.update(payload)
    return digest.hexdigest()


def task_input_hash(context: TaskRun, parameters: dict[str, Any]) -> str | None:
    """Cache key from the task's code and its inputs: same code + same inputs = hit.

    None (run uncached, with a `blocks.hashing.CacheKeyWarning`) when an input has no
    deterministic digest.

    Example:
        >>> @task(cache_key_fn=task_input_hash)
        ... def double(x: int) -> int:
        ...     return 2 * x
    """
    from blocks.runtime.keys._policies import DEFAULT_INPUT_HASH

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
    fn: CacheKeyFn, arity: int, run: TaskRun, parameters: dict[str, Any]
) -> str | None:
    """The key `fn` returns for this run (None: do not cache), validated as a storage key."""
    key = fn() if arity == 0 else fn(run, parameters)
    if key is None:
        return None
    return checked_key(key)  # validated once per distinct key (a static key: once)
