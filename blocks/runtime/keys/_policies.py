"""Cache policies, with Prefect 3's names: what a cached task's key is made of.

A policy turns one call into *components* (a digest per part: the code, each parameter, the
run id, ...); the key is a digest of the components, prefixed by the task's name. The result
record keeps the components, so a later miss can say what changed.

- `INPUTS`: each parameter's deterministic digest (`blocks.hashing`); ``INPUTS - "param"`` or
  ``Inputs(exclude=[...])`` leaves parameters out. A parameter that cannot be hashed makes the
  call run uncached, with one warning naming the task and the parameter.
- `TASK_SOURCE`: the code fingerprint (`keys._fingerprints`: the normalised source of the
  function and of the user code it reaches) and the task's ``version=``.
- `FLOW_PARAMETERS`: the parameters of the flow run the task runs in.
- `RUN_ID`: the flow run's id (the task run's own id outside a flow): no reuse across runs.
- `NO_CACHE`: never cache. `DEFAULT` = ``INPUTS + TASK_SOURCE + RUN_ID``.
- Policies add up with ``+``; ``cache_key_fn=`` becomes a `CacheKeyFnPolicy`.

Example:
    >>> from blocks.cache_policies import INPUTS, TASK_SOURCE
    >>> @task(cache_policy=INPUTS + TASK_SOURCE, cache_expiration=timedelta(days=1))
    ... def price(item: str, day: date) -> float: ...
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol

from blocks.errors import OptionTypeError
from blocks.runtime.keys._hashing import (
    CacheKeyWarning,
    Unhashable,
    digest,
    digest_and_secrecy,
)
from blocks.runtime.keys._key_fns import call_cache_key_fn, key_fn_arity

__all__ = [
    "DEFAULT",
    "FLOW_PARAMETERS",
    "INPUTS",
    "NO_CACHE",
    "RUN_ID",
    "TASK_SOURCE",
    "CacheKeyFnPolicy",
    "CachePolicy",
    "CompoundCachePolicy",
    "FlowParameters",
    "Inputs",
    "RunId",
    "TaskSource",
    "task_input_hash",
]

Components = dict[str, str]

TaskContext = Any
"""The `blocks.runtime.TaskRun` a policy keys (``.task``, ``.flow_run``, ``.task_run``): typed
loosely because cache keys sit below the run context and know no runs."""


class KeyedTask(Protocol):
    """What a policy reads of a task: its name, function, version and key prefix."""

    @property
    def name(self) -> str: ...

    @property
    def fn(self) -> Callable[..., Any]: ...

    @property
    def version(self) -> str | None: ...

    @property
    def cache_key_prefix(self) -> str: ...


class Uncacheable(Exception):
    """This call cannot be keyed deterministically: run it uncached (the message says why)."""


def key_for(task: KeyedTask, components: Components) -> str:
    """The storage key of a call: the task's prefix and a digest of its components, keyed
    under the results key (an unkeyed one would let whoever lists the storage check guesses
    of a parameter against the key: issue 20)."""
    text = "\n".join(f"{name}={value}" for name, value in sorted(components.items()))
    return f"{task.cache_key_prefix}-{_results_keys().active.digest('cache key', text)}"


def _results_keys() -> Any:
    """The results keys (`blocks.results._signing.results_keys`), imported on first use."""
    global _keys_now
    if _keys_now is None:
        from blocks.results._signing import results_keys

        _keys_now = results_keys
    return _keys_now()


_keys_now: Callable[[], Any] | None = None


def _secret_component(digest: str) -> str:
    """A component covering a secret: the header stores a marker in its place."""
    from blocks.results._signing import SECRET_COMPONENT

    return f"{SECRET_COMPONENT}:{digest}"


_SUBTRACT_ONLY_NAMES = "Only parameter names (str) can be subtracted from a cache policy."


class CachePolicy:
    """Base of every policy: `components` of one call, or None for "do not cache"."""

    def components(
        self, task_ctx: TaskContext, inputs: dict[str, Any], flow_parameters: dict[str, Any]
    ) -> Components | None:
        """The digests this policy contributes for one call (None: do not cache)."""
        raise NotImplementedError

    def resolve(
        self, task_ctx: TaskContext, inputs: dict[str, Any], flow_parameters: dict[str, Any]
    ) -> tuple[str | None, Components]:
        """The key of one call and its components; ``(None, {})`` runs it uncached."""
        if _is_pure(self):
            return _memoized(self, task_ctx, inputs, flow_parameters)
        return self._resolve(task_ctx, inputs, flow_parameters)

    def _resolve(
        self, task_ctx: TaskContext, inputs: dict[str, Any], flow_parameters: dict[str, Any]
    ) -> tuple[str | None, Components]:
        try:
            components = self.components(task_ctx, inputs, flow_parameters)
        except Uncacheable as exc:
            warnings.warn(str(exc), CacheKeyWarning, stacklevel=2)
            return None, {}
        if components is None:
            return None, {}
        return key_for(task_ctx.task, components), components

    def compute_key(
        self,
        task_ctx: TaskContext,
        inputs: dict[str, Any],
        flow_parameters: dict[str, Any],
        **kwargs: Any,
    ) -> str | None:
        """Prefect's entry point: the key of one call, or None."""
        return self.resolve(task_ctx, inputs, flow_parameters)[0]

    def __add__(self, other: CachePolicy) -> CachePolicy:
        if not isinstance(other, CachePolicy):
            return NotImplemented
        return CompoundCachePolicy([*_flat(self), *_flat(other)])

    def __sub__(self, other: str) -> CachePolicy:
        if not isinstance(other, str):
            raise OptionTypeError(_SUBTRACT_ONLY_NAMES)
        return CompoundCachePolicy([self, Inputs(exclude=[other])])


#: Keys of calls whose arguments are all plain scalars, per policy and task: a repeat call
#: (a cache hit) skips hashing each argument and the components. Bounded; cleared when full.
#: An entry: the policy, the function, the key, its components, what the fingerprint read
#: (None: no fingerprint) and, for a call's arguments as given (`recall_call`), its inputs.
_memo: dict[tuple[Any, ...], tuple[Any, ...]] = {}
_MEMO_SIZE = 4096
#: Strings and bytes longer than this are hashed each time rather than held in the memo.
_MEMO_TEXT = 256


def _is_pure(policy: CachePolicy) -> bool:
    """Whether `policy`'s components depend only on the task (its code, version, name) and
    the inputs, never on the run or the flow: `Inputs`, `TaskSource` and sums of them. Exact
    types: a subclass may read the run, so it is never memoized."""
    kind = type(policy)
    if kind is not CompoundCachePolicy:
        return kind is Inputs or kind is TaskSource
    for part in policy.policies:  # type: ignore[attr-defined]
        kind = type(part)
        if kind is not Inputs and kind is not TaskSource and not _is_pure(part):
            return False
    return True


def _scalars(inputs: Iterable[tuple[Any, Any]]) -> tuple[Any, ...] | None:
    """The ``(name, value)`` pairs `inputs` as a hashable tuple that is equal exactly when
    their digests are, or None if a value is not a plain scalar. Types are compared exactly
    (``1``, ``1.0`` and ``True`` are equal in Python but digest apart); ``0.0``/``-0.0`` and
    NaN are left out (equal or unequal to themselves while their digests are not)."""
    out: list[Any] = []
    for name, value in inputs:
        kind = type(value)
        if kind is int or kind is bool or value is None:
            pass
        elif kind is str or kind is bytes:
            if len(value) > _MEMO_TEXT:
                return None
        elif kind is float:
            if value != value or value == 0.0:
                return None
        else:
            return None
        out += (name, kind, value)
    return tuple(out)


def plain_defaults(defaults: dict[str, Any]) -> bool:
    """Whether every default of a task's parameters is a plain scalar (`_scalars`): then
    binding a call of plain arguments gives equal inputs every time, and `recall_call` may
    look its key up before binding."""
    return _scalars(defaults.items()) is not None


def _memoized(
    policy: CachePolicy,
    task_ctx: TaskContext,
    inputs: dict[str, Any],
    flow_parameters: dict[str, Any],
) -> tuple[str | None, Components]:
    """`policy._resolve`, remembered for plain arguments (see `_is_pure`).

    A key that holds the code fingerprint is remembered with what that fingerprint read, and
    used again only while each of those objects is still the same (`_tracer.unchanged`, a
    check by identity): a helper replaced in this process recomputes the key."""
    signature = _scalars(inputs.items())
    if signature is None:
        return policy._resolve(task_ctx, inputs, flow_parameters)
    task = task_ctx.task
    fn = task.fn
    signer = _results_keys().active.key_id  # the key is keyed: another results key, another key
    memo_key = _memo_key(policy, task, signature, signer)
    entry = _memo.get(memo_key)
    if (
        entry is not None
        and entry[0] is policy
        and entry[1] is fn
        and (entry[4] is None or _unchanged(entry[4]))
    ):
        return entry[2], dict(entry[3])
    watched = _current_watch(fn) if _has_source(policy) else None
    key, components = policy._resolve(task_ctx, inputs, flow_parameters)
    if len(_memo) >= _MEMO_SIZE:
        _memo.clear()
    _memo[memo_key] = (policy, fn, key, dict(components), watched)
    return key, components


def _memo_key(policy: CachePolicy, task: KeyedTask, signature: Any, signer: str) -> Any:
    return (
        id(policy),
        id(task.fn),
        task.version,
        task.cache_key_prefix,
        task.name,
        signature,
        signer,
    )


#: Marks a `_memo` entry of a call's arguments as given (`recall_call`), not as bound.
_AS_GIVEN = object()


def _target(policy: CachePolicy) -> CachePolicy | None:
    """The policy whose `_memoized` keys `policy.resolve` for a pure policy (itself, or
    `DEFAULT_INPUT_HASH` for the built-in `task_input_hash`); None for any other."""
    if type(policy) is CacheKeyFnPolicy:
        return DEFAULT_INPUT_HASH if policy.cache_key_fn is task_input_hash else None
    return policy if _is_pure(policy) else None


def _given_key(
    policy: CachePolicy,
    task: KeyedTask,
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    keys: Any = None,
) -> tuple[CachePolicy, Any, str] | None:
    """The target policy, the `_memo` key of a call's arguments as given (positions as int
    names) and the results key's id; None if not memoizable or no results key is known yet."""
    target = _target(policy)
    if target is None:
        return None
    given = _scalars(enumerate(args))
    if given is None:
        return None
    if kwargs:
        named = _scalars(kwargs.items())
        if named is None:
            return None
        given += named
    if keys is None:
        keys = _known_keys()
        if keys is None:
            return None  # none resolved under these settings yet: the full path makes them
    signer = keys.active.key_id
    return target, (_AS_GIVEN, _memo_key(target, task, given, signer)), signer


def recall_call(
    policy: CachePolicy,
    task: KeyedTask,
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    keys: Any = None,
) -> tuple[str | None, Components, dict[str, Any]] | None:
    """The key, components and bound inputs `remember_call` kept for a call with these same
    plain arguments as given, without binding or hashing them: only while the objects the
    code fingerprint read are unchanged (as `_memoized`). None if not remembered.

    The caller checked `plain_defaults` for the task: a call of plain arguments then binds to
    equal inputs every time, so the key of the bound call is the key of the call as given.
    `keys`: the results keys known under the current settings, if the caller holds them."""
    found = _given_key(policy, task, args, kwargs, keys)
    if found is None:
        return None
    target, memo_key, _ = found
    entry = _memo.get(memo_key)
    if (
        entry is not None
        and entry[0] is target
        and entry[1] is task.fn
        and (entry[4] is None or _unchanged(entry[4]))
    ):
        return entry[2], dict(entry[3]), dict(entry[5])
    return None


def remember_call(
    policy: CachePolicy,
    task: KeyedTask,
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    inputs: dict[str, Any],
) -> None:
    """After `policy.resolve` keyed the bound `inputs` of this call: keep its `_memoized`
    entry (the same key, components and watched objects) under the arguments as given too,
    for `recall_call`."""
    found = _given_key(policy, task, args, kwargs)
    signature = _scalars(inputs.items())
    if found is None or signature is None:
        return
    target, memo_key, signer = found
    entry = _memo.get(_memo_key(target, task, signature, signer))
    if entry is None or entry[0] is not target or entry[1] is not task.fn:
        return
    if len(_memo) >= _MEMO_SIZE:
        _memo.clear()
    _memo[memo_key] = (*entry, dict(inputs))


def _known_keys() -> Any:
    """The results keys already resolved under the current settings, or None (never makes
    one: that needs the storage check `new_key_storage` gives the full path)."""
    global _keys_known
    if _keys_known is None:
        from blocks.results._signing import known_results_keys

        _keys_known = known_results_keys
    return _keys_known()


_keys_known: Callable[[], Any] | None = None


def _stale(watched: Any) -> bool:
    return False  # replaced by `_tracer.unchanged` when the first fingerprint is taken


_unchanged: Callable[[Any], bool] = _stale
_fingerprint_now: Callable[[Callable[..., Any]], Any] | None = None


def _current(fn: Callable[..., Any]) -> Any:
    """`_fingerprints.current`, imported on first use (as `blocks.runtime` loads keys)."""
    global _fingerprint_now, _unchanged
    if _fingerprint_now is None:
        from blocks.runtime.keys._fingerprints import current
        from blocks.runtime.keys._tracer import unchanged

        _fingerprint_now, _unchanged = current, unchanged
    return _fingerprint_now(fn)


def _current_watch(fn: Callable[..., Any]) -> Any:
    """What `fn`'s current fingerprint read, for `_unchanged` to check on the next hit."""
    from blocks.runtime.keys._fingerprints import watched

    _current(fn)
    return watched(fn)


def _has_source(policy: CachePolicy) -> bool:
    return any(type(part) is TaskSource for part in _flat(policy))


def _flat(policy: CachePolicy) -> list[CachePolicy]:
    return list(policy.policies) if isinstance(policy, CompoundCachePolicy) else [policy]


@dataclass(frozen=True)
class CompoundCachePolicy(CachePolicy):
    """Several policies: the union of their components; None only if every part says None."""

    policies: list[CachePolicy] = field(default_factory=list)

    def components(
        self, task_ctx: TaskContext, inputs: dict[str, Any], flow_parameters: dict[str, Any]
    ) -> Components | None:
        merged: Components | None = None
        for policy in self.policies:
            part = policy.components(task_ctx, inputs, flow_parameters)
            if part is not None:
                merged = {**(merged or {}), **part}
        return merged

    def __sub__(self, other: str) -> CachePolicy:
        if not isinstance(other, str):
            raise OptionTypeError(_SUBTRACT_ONLY_NAMES)
        if any(isinstance(p, Inputs) for p in self.policies):
            return CompoundCachePolicy(
                [p - other if isinstance(p, Inputs) else p for p in self.policies]
            )
        return CompoundCachePolicy([*self.policies, Inputs(exclude=[other])])


@dataclass(frozen=True)
class _None(CachePolicy):
    """Never cache."""

    def components(
        self, task_ctx: TaskContext, inputs: dict[str, Any], flow_parameters: dict[str, Any]
    ) -> Components | None:
        return None

    def __add__(self, other: CachePolicy) -> CachePolicy:
        return other


@dataclass(frozen=True)
class Inputs(CachePolicy):
    """Each parameter's deterministic digest, except those named in `exclude`."""

    exclude: list[str] = field(default_factory=list)

    def components(
        self, task_ctx: TaskContext, inputs: dict[str, Any], flow_parameters: dict[str, Any]
    ) -> Components | None:
        return input_components(task_ctx.task.name, inputs, self.exclude)

    def __sub__(self, other: str) -> CachePolicy:
        if not isinstance(other, str):
            raise OptionTypeError(_SUBTRACT_ONLY_NAMES)
        return Inputs(exclude=[*self.exclude, other])


def input_components(
    task_name: str, inputs: dict[str, Any], exclude: Iterable[str] = ()
) -> Components:
    """``{"param:x": digest}`` per parameter; `Uncacheable` names the first that has none."""
    skip = set(exclude)
    out: Components = {}
    for name, value in inputs.items():
        if name in skip:
            continue
        try:
            value_digest, secret = digest_and_secrecy(value)
        except Unhashable as exc:
            raise Uncacheable(
                f"Task {task_name!r}: parameter {name!r} cannot be hashed deterministically "
                f"({exc}); this call runs uncached. Pass a hashable value, register a hasher "
                f"(blocks.hashing.register_hasher) or leave it out: INPUTS - {name!r}."
            ) from None
        out[f"param:{name}"] = _secret_component(value_digest) if secret else value_digest
    return out


@dataclass(frozen=True)
class TaskSource(CachePolicy):
    """The task's code fingerprint (its function and the user code it reaches) and version."""

    def components(
        self, task_ctx: TaskContext, inputs: dict[str, Any], flow_parameters: dict[str, Any]
    ) -> Components | None:
        return code_components(task_ctx.task)


_code_cache: dict[tuple[int, str | None], tuple[Any, Any, Components]] = {}
#: At most this many code parts are named in a record's components (about 20 KB of header).
_MAX_PARTS = 128


def code_components(task: KeyedTask) -> Components:
    """``code`` (the whole fingerprint), ``code:<part>`` per part, and ``version`` if set."""
    print_ = _current(task.fn)  # remembered while what it read is unchanged
    cache_key = (id(task.fn), task.version)
    entry = _code_cache.get(cache_key)
    if entry is not None and entry[0] is task.fn and entry[1] is print_:
        return entry[2]
    components: Components = {"code": print_.digest}
    # Parts name what changed on a miss; the whole digest keys. A task that reaches a large
    # graph (a registry of classes) names its first parts only: the record header stays small.
    parts = list(print_.parts.items())
    components.update({f"code:{name[:120]}": value for name, value in parts[:_MAX_PARTS]})
    if len(parts) > _MAX_PARTS:
        components["code:(more parts)"] = digest([value for _, value in parts[_MAX_PARTS:]])
    if print_.note:
        components["code:note"] = print_.note
    if task.version is not None:
        components["version"] = digest(task.version)
    _code_cache[cache_key] = (task.fn, print_, components)
    return components


@dataclass(frozen=True)
class FlowParameters(CachePolicy):
    """The parameters of the flow run (nothing outside a flow)."""

    def components(
        self, task_ctx: TaskContext, inputs: dict[str, Any], flow_parameters: dict[str, Any]
    ) -> Components | None:
        out: Components = {}
        for name, value in (flow_parameters or {}).items():
            try:
                value_digest, secret = digest_and_secrecy(value)
            except Unhashable as exc:
                raise Uncacheable(
                    f"Task {task_ctx.task.name!r}: flow parameter {name!r} cannot be hashed "
                    f"deterministically ({exc}); this call runs uncached."
                ) from None
            out[f"flow_parameter:{name}"] = (
                _secret_component(value_digest) if secret else value_digest
            )
        return out


@dataclass(frozen=True)
class RunId(CachePolicy):
    """The flow run's id (the task run's id outside a flow): reuse only within one run."""

    def components(
        self, task_ctx: TaskContext, inputs: dict[str, Any], flow_parameters: dict[str, Any]
    ) -> Components | None:
        flow_run = getattr(task_ctx, "flow_run", None)
        run_id = flow_run.id if flow_run is not None else task_ctx.task_run.id
        return {"run_id": str(run_id)}


@dataclass(frozen=True)
class CacheKeyFnPolicy(CachePolicy):
    """A ``cache_key_fn(context, parameters)`` (or ``cache_key_fn()``): its key is the key."""

    cache_key_fn: Callable[..., str | None] | None = None
    _arity: int = field(default=2, compare=False, repr=False)

    def __post_init__(self) -> None:
        if self.cache_key_fn is not None:
            object.__setattr__(self, "_arity", key_fn_arity(self.cache_key_fn))

    def components(
        self, task_ctx: TaskContext, inputs: dict[str, Any], flow_parameters: dict[str, Any]
    ) -> Components | None:
        key = self._call(task_ctx, inputs)
        return None if key is None else {"key_fn": key}

    def _call(self, task_ctx: TaskContext, inputs: dict[str, Any]) -> str | None:
        assert self.cache_key_fn is not None
        return call_cache_key_fn(self.cache_key_fn, self._arity, task_ctx, inputs)

    def resolve(
        self, task_ctx: TaskContext, inputs: dict[str, Any], flow_parameters: dict[str, Any]
    ) -> tuple[str | None, Components]:
        if self.cache_key_fn is task_input_hash:
            # The built-in key function: its components are known, so misses can explain.
            return DEFAULT_INPUT_HASH.resolve(task_ctx, inputs, flow_parameters)
        return self._call(task_ctx, inputs), {}


NO_CACHE: CachePolicy = _None()
INPUTS = Inputs()
TASK_SOURCE = TaskSource()
FLOW_PARAMETERS = FlowParameters()
RUN_ID = RunId()
DEFAULT: CachePolicy = INPUTS + TASK_SOURCE + RUN_ID
#: What `task_input_hash` keys on: the code and the inputs, across runs.
DEFAULT_INPUT_HASH: CachePolicy = INPUTS + TASK_SOURCE


def task_input_hash(context: TaskContext, parameters: dict[str, Any]) -> str | None:
    """Cache key from the task's code and its inputs: same code + same inputs = hit.

    None (run uncached, with a `blocks.hashing.CacheKeyWarning`) when an input has no
    deterministic digest.

    Example:
        >>> @task(cache_key_fn=task_input_hash)
        ... def double(x: int) -> int:
        ...     return 2 * x
    """
    return DEFAULT_INPUT_HASH.resolve(context, parameters, {})[0]
