"""Task and flow options: frozen dataclasses, validated once, when made.

`TaskOptions` and `FlowOptions` hold what ``@task(...)`` / ``@flow(...)`` were given (with the
name and description the function supplies) and what follows from it, worked out here once:
the delay before each retry, whether results persist, the cache policy, the result-key prefix,
whether a plain call needs any work around it. ``with_options`` is `dataclasses.replace`, and
the copy is validated again.

The protocols at the end say what the layers below `Task` and `Flow` (run context, engine,
runners) read of them, so none of those modules imports `Task`, `Flow` or a task runner.

Example:
    >>> options = TaskOptions(name="extract", retries=2, retry_delay_seconds=[1, 5])
    >>> options.retry_delays
    (1.0, 5.0)
    >>> dataclasses.replace(options, retries=-1)
    Traceback (most recent call last):
    ConfigurationError: retries must be 0 or more
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from typing import TYPE_CHECKING, Any, Generic, Protocol, TypeVar

from blocks.errors import (
    ConfigurationError,
    InvalidNameError,
    OptionTypeError,
    ReservedArgumentError,
)
from blocks.runtime.keys._policies import DEFAULT, NO_CACHE, CacheKeyFnPolicy, CachePolicy

if TYPE_CHECKING:
    import concurrent.futures

    from blocks.runtime._states import State

__all__ = [
    "CacheKeyFn",
    "FlowLike",
    "FlowOptions",
    "Hook",
    "NotSet",
    "RetryDelay",
    "RunName",
    "TaskLike",
    "TaskOptions",
    "TaskRunnerLike",
    "check_flow_name",
    "check_hooks",
    "check_reserved_arguments",
    "key_prefix",
    "retry_delays",
]

RetryDelay = float | Sequence[float] | Callable[[int], Sequence[float]]
"""``retry_delay_seconds``: seconds, a list (one per retry, the last repeats), or a callable of
the number of retries giving the list (`exponential_backoff`)."""

RunName = str | Callable[[], str] | Callable[[dict[str, Any]], str]
"""A ``task_run_name`` / ``flow_run_name``: a template such as ``"extract-{source}"`` formatted
with the call's parameters, or a callable taking nothing or the parameters dict."""

CacheKeyFn = Callable[..., str | None]
"""A ``cache_key_fn``: ``fn(context, parameters)`` or ``fn()``; None means do not cache."""

Hook = Callable[..., Any]
"""A state hook, called as ``hook(task_or_flow, run, state)``."""


class _NotSet:
    """The default of ``cache_policy``: Prefect 3's defaults apply (see `TaskOptions`)."""

    def __repr__(self) -> str:
        return "NotSet"


NotSet: Any = _NotSet()


def retry_delays(spec: RetryDelay | None, retries: int) -> tuple[float, ...]:
    """The delay before each retry, from a number, a list, or a callable of `retries`."""
    if spec is None:
        return (0.0,)
    if callable(spec):
        spec = spec(retries)
    if isinstance(spec, int | float):
        return (float(spec),)
    delays = tuple(float(d) for d in spec)
    if any(d < 0 for d in delays):
        raise ConfigurationError("retry delays must be 0 or more seconds")
    return delays or (0.0,)


#: Characters Prefect refuses in a flow name (they break URLs and paths made of it).
BANNED_NAME_CHARACTERS = ("/", "%", "&", ">", "<")

#: Keywords of a task or flow call itself, so never the name of one of its parameters.
RESERVED_ARGUMENTS = ("return_state", "wait_for")

#: Prefect's ceiling on the delays listed for a task's retries.
MAX_RETRY_DELAYS = 50


def check_flow_name(name: str) -> None:
    """`InvalidNameError` if a flow name given by the user holds ``/ % & < >`` (as Prefect).

    Only a name given is checked, as in Prefect: a lambda's default ``<lambda>`` stays usable.

    Example:
        >>> check_flow_name("etl/nightly")
        Traceback (most recent call last):
        InvalidNameError: Flow name 'etl/nightly' contains '/': ...
    """
    for char in BANNED_NAME_CHARACTERS:
        if char in name:
            raise InvalidNameError(
                f"Flow name {name!r} contains {char!r}; a flow name must not contain any of "
                f"{' '.join(BANNED_NAME_CHARACTERS)} (they break the URLs and paths made of "
                "it). Use dashes or spaces instead."
            )


def check_reserved_arguments(parameters: Iterable[str], owner: str) -> None:
    """`ReservedArgumentError` if a parameter is named ``return_state`` or ``wait_for``."""
    for name in RESERVED_ARGUMENTS:
        if name in parameters:
            raise ReservedArgumentError(
                f"{owner}: {name!r} is a reserved argument name and cannot be used: it is a "
                "keyword of the call itself. Rename the parameter."
            )


def check_hooks(hooks: Any, option: str, owner: str) -> tuple[Hook, ...]:
    """The hooks given for `option` as a tuple; `OptionTypeError` unless a list of callables.

    Example:
        >>> check_hooks(print, "on_failure", "Task 'x'")
        Traceback (most recent call last):
        OptionTypeError: Task 'x': on_failure takes a list of hooks, not a function: ...
    """
    if hooks is None:
        return ()
    if callable(hooks) or isinstance(hooks, str | bytes) or not isinstance(hooks, Iterable):
        raise OptionTypeError(
            f"{owner}: {option} takes a list of hooks, not a {type(hooks).__name__}: "
            f"pass {option}=[hook]."
        )
    checked = tuple(hooks)
    for hook in checked:
        if not callable(hook):
            raise OptionTypeError(
                f"{owner}: every {option} hook must be callable as hook(owner, run, state); "
                f"got a {type(hook).__name__}: {hook!r}."
            )
    return checked


def key_prefix(name: str) -> str:
    """A task or flow name made safe as the start of a result-store key."""
    return re.sub(r"[^a-z0-9_.-]+", "-", name.lower()).strip("-") or "task"


def _check_common(retries: int, timeout_seconds: float | None) -> None:
    if retries < 0:
        raise ConfigurationError("retries must be 0 or more")
    if timeout_seconds is not None and timeout_seconds <= 0:
        raise ConfigurationError("timeout_seconds must be positive")


def _set(options: Any, **values: Any) -> None:
    """Fill derived fields of a frozen options object (in its ``__post_init__`` only)."""
    for name, value in values.items():
        object.__setattr__(options, name, value)


@dataclass(frozen=True, slots=True)
class TaskOptions:
    """The options of a `Task`, as given (see `Task` for each), and what follows from them.

    Caching follows Prefect 3: a task that persists its result (``persist_result=True``, or a
    flow that persists) is cached with ``DEFAULT`` (inputs + code + flow run); setting
    ``cache_policy`` or ``cache_key_fn`` turns persistence on; ``persist_result=False`` means no
    cache; a task with none of these does not cache. `persist` and `policy` hold the outcome;
    `persist_result` and `cache_policy` what was given, so a ``with_options`` copy works it out
    again from the same rules.
    """

    name: str
    description: str | None = None
    tags: frozenset[str] = frozenset()
    version: str | None = None
    task_run_name: RunName | None = None
    retries: int = 0
    retry_delay_seconds: RetryDelay | None = None
    retry_jitter_factor: float | None = None
    timeout_seconds: float | None = None
    cache_key_fn: CacheKeyFn | None = None
    cache_expiration: timedelta | None = None
    refresh_cache: bool = False
    persist_result: bool | None = None
    result_storage: Any = None
    result_serializer: Any = None
    result_storage_key: str | None = None
    log_prints: bool | None = None
    on_failure: tuple[Hook, ...] = ()
    on_completion: tuple[Hook, ...] = ()
    on_running: tuple[Hook, ...] = ()
    cache_result_in_memory: bool = True
    cache_policy: CachePolicy | None = NotSet
    on_commit: tuple[Hook, ...] = ()
    on_rollback: tuple[Hook, ...] = ()
    # -- worked out once from the above -----------------------------------------------------
    #: Seconds before each retry (the last one repeats).
    retry_delays: tuple[float, ...] = field(init=False, repr=False, compare=False)
    #: Whether results persist: True, False, or None (as the flow run says).
    persist: bool | None = field(init=False, repr=False, compare=False)
    #: The policy that keys this task's persisted results; None: never looked up.
    policy: CachePolicy | None = field(init=False, repr=False, compare=False)
    #: Where this task's keys start in the result store.
    cache_key_prefix: str = field(init=False, repr=False, compare=False)
    #: No option needs work around a call (a flow run's defaults still may).
    plain: bool = field(init=False, repr=False, compare=False)
    #: Commit or rollback hooks: every run is a transaction (nested in the open one, if any).
    transactional: bool = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        _check_common(self.retries, self.timeout_seconds)
        owner = f"Task {self.name!r}"
        if self.retry_jitter_factor is not None and self.retry_jitter_factor < 0:
            raise ConfigurationError(f"{owner}: retry_jitter_factor must be >= 0.")
        delays = retry_delays(self.retry_delay_seconds, self.retries)
        if len(delays) > MAX_RETRY_DELAYS:
            raise ConfigurationError(
                f"{owner}: can not configure more than {MAX_RETRY_DELAYS} retry delays per "
                f"task (got {len(delays)}); the last delay repeats for further retries."
            )
        _set(
            self,
            tags=frozenset(self.tags or ()),
            refresh_cache=bool(self.refresh_cache),
            on_failure=check_hooks(self.on_failure, "on_failure", owner),
            on_completion=check_hooks(self.on_completion, "on_completion", owner),
            on_running=check_hooks(self.on_running, "on_running", owner),
            on_commit=check_hooks(self.on_commit, "on_commit", owner),
            on_rollback=check_hooks(self.on_rollback, "on_rollback", owner),
        )
        policy_given = self.cache_policy is not NotSet
        policy = self.cache_policy
        if self.cache_key_fn is not None:
            policy, policy_given = CacheKeyFnPolicy(self.cache_key_fn), True
        persist = self.persist_result
        caches = policy_given and policy is not None and policy != NO_CACHE
        if persist is None and (
            caches
            or self.result_storage_key is not None
            or self.result_storage is not None
            or self.result_serializer is not None
        ):
            persist = True  # as Prefect 3: asking where or how to store means store
        if persist is False or self.result_storage_key is not None:
            policy = None
        elif not policy_given:
            policy = DEFAULT
        _set(
            self,
            retry_delays=delays,
            persist=persist,
            policy=policy,
            cache_key_prefix=key_prefix(self.name),
            plain=not (
                self.retries
                or self.task_run_name is not None
                or self.timeout_seconds
                or persist
                or self.log_prints
                or self.on_failure
                or self.on_completion
                or self.on_running
                or self.on_commit
                or self.on_rollback
            ),
            transactional=bool(self.on_commit or self.on_rollback),
        )

    def caveats(self) -> list[str]:
        """Options that contradict each other (the task still works): warn about these."""
        found = []
        policy_given = self.cache_policy is not NotSet
        if policy_given and self.cache_key_fn is not None:
            found.append(
                f"Task {self.name!r}: both cache_policy and cache_key_fn are set; "
                "cache_key_fn is used."
            )
        caches = self.cache_key_fn is not None or (
            policy_given and self.cache_policy is not None and self.cache_policy != NO_CACHE
        )
        if self.persist_result is False and caches:
            found.append(
                f"Task {self.name!r}: persist_result=False disables its "
                f"{'cache_key_fn' if self.cache_key_fn is not None else 'cache_policy'} "
                "(cached values live in result storage)."
            )
        return found


@dataclass(frozen=True, slots=True)
class FlowOptions:
    """The options of a `Flow` (see `Flow` for each), and what follows from them.

    A ``result_storage`` or ``result_serializer`` turns ``persist_result`` on, as in Prefect 3
    (kept in `persist_result` itself, as given copies see it).
    """

    name: str
    description: str | None = None
    version: str | None = None
    flow_run_name: RunName | None = None
    retries: int = 0
    retry_delay_seconds: RetryDelay | None = None
    timeout_seconds: float | None = None
    task_runner: TaskRunnerLike | None = None
    log_prints: bool | None = None
    persist_result: bool | None = None
    result_storage: Any = None
    result_serializer: Any = None
    validate_parameters: bool = True
    cache_result_in_memory: bool = True
    on_failure: tuple[Hook, ...] = ()
    on_completion: tuple[Hook, ...] = ()
    on_crashed: tuple[Hook, ...] = ()
    on_running: tuple[Hook, ...] = ()
    on_cancellation: tuple[Hook, ...] = ()
    #: Seconds before each retry (the last one repeats).
    retry_delays: tuple[float, ...] = field(init=False, repr=False, compare=False)
    #: Flows have no retry jitter; here so one attempts loop serves tasks and flows.
    retry_jitter_factor: None = field(default=None, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        _check_common(self.retries, self.timeout_seconds)
        owner = f"Flow {self.name!r}"
        persist = self.persist_result
        if persist is None and (
            self.result_storage is not None or self.result_serializer is not None
        ):
            persist = True
        _set(
            self,
            persist_result=persist,
            retry_delays=retry_delays(self.retry_delay_seconds, self.retries),
            **{hook: check_hooks(getattr(self, hook), hook, owner) for hook in _FLOW_HOOKS},
        )


_FLOW_HOOKS = ("on_failure", "on_completion", "on_crashed", "on_running", "on_cancellation")


def option_names(kind: type[TaskOptions] | type[FlowOptions]) -> frozenset[str]:
    """The options `kind` takes as keywords."""
    names = _option_names.get(kind)
    if names is None:
        names = _option_names[kind] = frozenset(f.name for f in dataclasses.fields(kind) if f.init)
    return names


_option_names: dict[type, frozenset[str]] = {}


def replace_options(options: Any, owner: str, changes: dict[str, Any]) -> Any:
    """``dataclasses.replace`` with a typed error for an unknown option name."""
    unknown = changes.keys() - option_names(type(options))
    if unknown:
        raise OptionTypeError(f"{owner}.with_options() got unknown option(s): {sorted(unknown)}")
    return dataclasses.replace(options, **changes)


# -- what the layers below see of tasks, flows and runners -------------------------------------


class TaskLike(Protocol):
    """What the run context, the engine and the runners read of a `Task`."""

    @property
    def name(self) -> str: ...

    @property
    def version(self) -> str | None: ...

    @property
    def fn(self) -> Callable[..., Any]: ...

    @property
    def options(self) -> TaskOptions: ...

    @property
    def isasync(self) -> bool: ...

    @property
    def cache_key_prefix(self) -> str: ...

    #: Every parameter default a plain scalar (a call's key may be recalled before binding).
    plain_defaults: bool

    def bind(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> dict[str, Any]: ...


class FlowLike(Protocol):
    """What a flow run knows of its `Flow`: a name and version (all a run in another process
    has of it)."""

    @property
    def name(self) -> str: ...

    @property
    def version(self) -> str | None: ...


class TaskRunnerLike(Protocol):
    """What a flow run asks of its task runner (`blocks.runtime.TaskRunner` is the base)."""

    def duplicate(self) -> TaskRunnerLike: ...

    def submit_task(
        self,
        task: TaskLike,
        run: Any,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        wait_for: Sequence[Any] = (),
    ) -> concurrent.futures.Future[State]: ...

    def submit_plain(
        self, task: TaskLike, run: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> concurrent.futures.Future[State]: ...

    def shutdown(self, wait: bool = True) -> None: ...


HookT = TypeVar("HookT", bound=Callable[..., Any])
AnyHookT = TypeVar("AnyHookT", bound=Callable[..., Any])
OptionsT = TypeVar("OptionsT")


class HookDecorators(Generic[HookT, OptionsT]):
    """Prefect's hook decorators, shared by `Task` and `Flow`: ``@my_task.on_failure`` adds a
    hook to the (frozen) options, validated like hooks given as options."""

    options: OptionsT

    def _set_options(self, options: OptionsT) -> None:
        raise NotImplementedError

    def __setattr__(self, name: str, value: Any) -> None:
        # ``my_task.retries = 3`` / ``my_flow.flow_run_name = ...`` as in Prefect: an option set
        # on the object replaces the (frozen) options, validated again; the run name's kind is
        # checked when a run renders it. `name` stays a plain attribute (set with the options).
        options = self.__dict__.get("options")
        if options is not None and name != "name" and name in option_names(type(options)):
            self._set_options(replace_options(options, repr(self), {name: value}))
            return
        object.__setattr__(self, name, value)

    def on_completion(self, fn: HookT) -> HookT:
        """Add a hook called when a run completes: ``@my_task.on_completion``."""
        return self._add_hook("on_completion", fn)

    def on_failure(self, fn: HookT) -> HookT:
        """Add a hook called when a run fails (after its retries): ``@my_task.on_failure``."""
        return self._add_hook("on_failure", fn)

    def on_running(self, fn: HookT) -> HookT:
        """Add a hook called when a run starts running: ``@my_task.on_running``."""
        return self._add_hook("on_running", fn)

    def _add_hook(self, option: str, fn: AnyHookT) -> AnyHookT:
        hooks = (*getattr(self.options, option), *check_hooks([fn], option, repr(self)))
        self._set_options(replace_options(self.options, repr(self), {option: hooks}))
        return fn
