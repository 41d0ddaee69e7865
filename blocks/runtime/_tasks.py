"""`@task`: a function with retries, timeouts, caching and persisted results.

Calling a task runs it at once and returns its value (inside a flow or not); ``.submit()``
runs it on the flow's task runner and returns a `TaskFuture`; ``.map()`` submits one run per
element. A plain task (no option that needs work) costs a few microseconds over the bare call:
the run context is one contextvar, names and ids are made only when asked for, and no
result store is touched.

``async def`` tasks are awaitables with the same options: ``await extract("db")`` inside an
async flow runs it on the flow's event loop (retries sleep with ``asyncio.sleep``, a timeout
cancels the body, result-store I/O runs in a worker thread so the loop keeps going). Their
``.submit()`` from code running on an async flow's loop schedules the run on that loop
(``await future`` for its value); from anywhere else (a sync flow, a task in a worker thread,
outside any flow) the task runner runs it to the end on a private loop in its worker thread
(``asyncio.run``).

Sync and async runs share one engine: `engine._task_run.task_steps` is the state machine of
a run (inputs, name, cache, attempts, retries, persistence, hooks) written as a generator of
`engine._steps` — call the function, sleep, read or write the store, take a key's lock.
`drive` performs them blocking, `adrive` awaits them; no decision is made twice.

Example:
    >>> from datetime import timedelta
    >>> from blocks import task
    >>> from blocks.tasks import exponential_backoff, task_input_hash
    >>> @task(retries=3, retry_delay_seconds=exponential_backoff(backoff_factor=2),
    ...       cache_key_fn=task_input_hash, cache_expiration=timedelta(hours=1))
    ... def extract(source: str) -> dict:
    ...     return {"source": source}
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import inspect
import time
import warnings
from collections.abc import Callable, Coroutine, Iterable
from datetime import timedelta
from typing import (
    TYPE_CHECKING,
    Any,
    Generic,
    Literal,
    ParamSpec,
    Protocol,
    TypeVar,
    overload,
)

from blocks.errors import OptionTypeError
from blocks.runtime import _history
from blocks.runtime._annotations import SCAN, unmapped
from blocks.runtime._context import (
    FlowRun,
    PlainTaskRun,
    TaskRun,
    check_run_name,
    get_current,
    reset_current,
    set_current,
)
from blocks.runtime._futures import (
    LoopJob,
    TaskFuture,
    TaskFutureList,
    futures_in,
    has_futures,
)
from blocks.runtime._logging import log_failure, run_logger
from blocks.runtime._methods import NOT_BOUND, Bound, bind_target, unwrap_method
from blocks.runtime._options import (
    CacheKeyFn,
    HookDecorators,
    NotSet,
    RetryDelay,
    RunName,
    TaskOptions,
    check_reserved_arguments,
    option_names,
    replace_options,
)
from blocks.runtime._states import (
    STATE_SEQUENCES,
    Completed,
    Failed,
    State,
    is_state_iterable,
    return_value_to_state,
)
from blocks.runtime.engine._steps import adrive, drive
from blocks.runtime.engine._task_run import run_cached, task_steps
from blocks.runtime.engine._transactions import CURRENT, rollback_current
from blocks.runtime.keys._policies import NO_CACHE, CachePolicy, plain_defaults, task_input_hash
from blocks.runtime.runners._base import ConcurrentTaskRunner, TaskRunner
from blocks.runtime.runners._calls import Mapped, map_length, mappable
from blocks.settings import runtime_defaults

_time = time.time
_new_object = object.__new__

__all__ = ["BoundTask", "Task", "exponential_backoff", "task", "task_input_hash", "unmapped"]

P = ParamSpec("P")
R = TypeVar("R")
T = TypeVar("T")

TaskHook = Callable[["Task[Any, Any]", TaskRun, State], Any]
TransactionHook = TypeVar("TransactionHook", bound=Callable[[Any], Any])

_OPTION_NAMES = option_names(TaskOptions)


def exponential_backoff(backoff_factor: float) -> Callable[[int], list[float]]:
    """Retry delays ``backoff_factor * 2**n`` for retry ``n`` (0-based), for `retry_delay_seconds`.

    Example:
        >>> exponential_backoff(backoff_factor=10)(4)
        [10, 20, 40, 80]
    """

    def retry_backoff_callable(retries: int) -> list[float]:
        return [backoff_factor * 2**n for n in range(min(retries, 50))]

    return retry_backoff_callable


class Task(HookDecorators["TaskHook", TaskOptions], Generic[P, R]):
    """A function plus run options; made by `@task`. Call it, ``.submit()`` it or ``.map()`` it.

    Options (all keyword; held in `options`, a frozen `TaskOptions`, and readable as attributes
    of the task): name, description, tags, version, task_run_name (a template like
    ``"extract-{source}"`` formatted with the call's parameters, or a callable taking nothing
    or the parameters dict: the run's name in logs and ``TaskRun.name``), retries,
    retry_delay_seconds (seconds, a list per retry, or ``exponential_backoff(...)``),
    retry_jitter_factor, timeout_seconds, cache_policy (`blocks.cache_policies`), cache_key_fn
    (``fn(context, parameters)`` or ``fn()``), cache_expiration, refresh_cache (recompute and
    overwrite, with a fresh expiration), persist_result, result_storage, result_serializer,
    result_storage_key, log_prints, cache_result_in_memory (False: a persisted result is read
    back from storage when asked for instead of held in memory), on_running / on_failure /
    on_completion hooks ``hook(task, task_run, state)`` (lists of callables; or add one with
    the decorator ``@my_task.on_completion``), on_commit / on_rollback hooks
    ``hook(transaction)`` (see `blocks.transactions`).

    Caching follows Prefect 3 (see `TaskOptions`): a task that persists its result is cached
    with ``DEFAULT`` (inputs + code + flow run: identical calls within one flow run hit, a new
    run recomputes); setting ``cache_policy`` or ``cache_key_fn`` turns persistence on;
    ``persist_result=False`` means no cache; a task with none of these does not cache.

    ``timeout_seconds`` runs a sync body in a worker thread and stops waiting when time is up:
    the run fails with `TaskTimeout`, but Python cannot kill a thread, so the body keeps
    running in the background until it returns by itself. An async body is cancelled instead.

    An ``async def`` task is called with ``await`` (calling it returns a coroutine); its
    options behave the same. With ``return_state=True`` the awaitable gives the `State`.
    """

    def __init__(
        self, fn: Callable[P, R], options: TaskOptions | None = None, **given: Any
    ) -> None:
        fn, self._method = unwrap_method(fn)  # @task above @classmethod / @staticmethod
        if not callable(fn):
            raise OptionTypeError("@task decorates a function")
        if options is None:
            unknown = given.keys() - _OPTION_NAMES
            if unknown:
                raise OptionTypeError(f"@task got unknown option(s): {sorted(unknown)}")
            given["name"] = given.get("name") or getattr(fn, "__name__", None) or type(fn).__name__
            given["description"] = given.get("description") or inspect.getdoc(fn)
            options = TaskOptions(**_with_defaults(given))
        self.fn = fn
        self._signature = inspect.signature(fn)
        check_reserved_arguments(self._signature.parameters, f"Task {options.name!r}")
        check_run_name(
            options.task_run_name, self._signature, "task_run_name", f"Task {options.name!r}"
        )
        for caveat in options.caveats():
            warnings.warn(caveat, stacklevel=3)
        parameters = self._signature.parameters.values()
        self._plain_names: tuple[str, ...] | None = tuple(p.name for p in parameters)
        if any(p.kind is not p.POSITIONAL_OR_KEYWORD for p in parameters):
            self._plain_names = None
        self._name_set = frozenset(self._plain_names or ())
        self._defaults = {p.name: p.default for p in parameters if p.default is not p.empty}
        #: Every default a plain scalar: a cached call's key may be looked up before binding
        #: (`keys._policies.recall_call`).
        self.plain_defaults = plain_defaults(self._defaults)
        #: By the number n of positional arguments: the defaults of the parameters after the
        #: n-th if they all have one (a call with no keywords binds without a loop), else None.
        self._tails: tuple[dict[str, Any] | None, ...] = ()
        if self._plain_names is not None:
            names, defaults = self._plain_names, self._defaults
            self._tails = tuple(
                {n: defaults[n] for n in names[i:]} if defaults.keys() >= set(names[i:]) else None
                for i in range(len(names) + 1)
            )
        self.isasync = inspect.iscoroutinefunction(fn)
        self._set_options(options)
        self.__doc__ = getattr(fn, "__doc__", None)
        self.__wrapped__ = fn

    def _set_options(self, options: TaskOptions) -> None:
        self.options = options
        self.name: str = options.name
        self.__name__ = options.name
        #: No option needs work around a call: the hot path of `__call__` may run it.
        self._simple = options.plain and not self.isasync
        #: The flow run's persist_result / log_prints apply (the task leaves them unset).
        self._inherits_persist = options.persist is None
        self._inherits_prints = options.log_prints is None
        if self._inherits_persist and runtime_defaults().persist_by_default:
            # Outside a flow too, BLOCKS_RESULTS_PERSIST_BY_DEFAULT persists: not the hot path.
            self._simple = False
        #: A sync cached task whose hit needs no hook or name around it: `run_cached` may
        #: look it up without the engine (`__call__` checks the rest per call).
        self._hit_path = not (
            self.isasync
            or options.persist is not True
            or options.policy is None
            or options.refresh_cache
            or options.task_run_name is not None
            or options.on_running
            or options.on_completion
            or options.transactional
        )

    # -- options as attributes -------------------------------------------------------------------

    # `my_task.retries`, `my_task.timeout_seconds`...: the options, read-only, as properties
    # made below the class (`_option_property`). Not a ``__getattr__``: a class with one gets
    # no specialized attribute reads, which every other attribute of a task would pay on the
    # hot paths (~1 µs per cache hit).
    if TYPE_CHECKING:

        def __getattr__(self, name: str) -> Any: ...

    @property
    def version(self) -> str | None:
        return self.options.version

    @property
    def persist_result(self) -> bool | None:
        """Whether results persist: True, False or None (as the flow run says)."""
        return self.options.persist

    @property
    def cache_policy(self) -> CachePolicy | None:
        """The policy that keys this task's persisted results; None: never looked up."""
        return self.options.policy

    @property
    def cache_key_prefix(self) -> str:
        return self.options.cache_key_prefix

    @property
    def task_key(self) -> str:
        """Prefect's task key: the function's name and a digest of its code, e.g.
        ``"extract-1a2b3c4d"`` (equal for the same code, whatever the task's name)."""
        key: str | None = self.__dict__.get("_task_key")
        if key is None:
            key = self.__dict__["_task_key"] = task_key(self.fn)
        return key

    @property
    def source_code(self) -> str | None:
        """The function's source, or None when Python has none (made by ``exec``, in a REPL,
        a builtin)."""
        return source_code(self.fn)

    @property
    def on_failure_hooks(self) -> tuple[Callable[..., Any], ...]:
        return self.options.on_failure

    @property
    def on_completion_hooks(self) -> tuple[Callable[..., Any], ...]:
        return self.options.on_completion

    @property
    def on_running_hooks(self) -> tuple[Callable[..., Any], ...]:
        return self.options.on_running

    @property
    def on_commit_hooks(self) -> tuple[Callable[..., Any], ...]:
        return self.options.on_commit

    @property
    def on_rollback_hooks(self) -> tuple[Callable[..., Any], ...]:
        return self.options.on_rollback

    def on_commit(self, fn: TransactionHook) -> TransactionHook:
        """Add a hook ``hook(transaction)`` called when the transaction holding a run of this
        task commits (a run outside any transaction commits as it ends):
        ``@my_task.on_commit``."""
        return self._add_hook("on_commit", fn)

    def on_rollback(self, fn: TransactionHook) -> TransactionHook:
        """Add a hook ``hook(transaction)`` called when the transaction holding a completed run
        of this task rolls back (a later task in it failed): ``@my_task.on_rollback``."""
        return self._add_hook("on_rollback", fn)

    def with_options(self, **options: Any) -> Task[P, R]:
        """A copy of this task with some options changed (`dataclasses.replace`, validated
        again; hooks added with the decorators carry over).

        Example:
            >>> fresh = extract.with_options(refresh_cache=True)
        """
        changed: Task[P, R] = Task(
            self.fn, replace_options(self.options, f"Task {self.name!r}", options)
        )
        changed._method = self._method
        return changed

    def __repr__(self) -> str:
        return f"Task(name={self.name!r})"

    def __get__(self, instance: Any, owner: Any = None) -> Any:
        """A method's task read from an instance (or a classmethod's from its class): a copy
        bound to it (`BoundTask`); read from the class, or a staticmethod's: the task."""
        target = bind_target(self._method, instance, owner)
        if target is NOT_BOUND:
            return self
        return BoundTask.of(self, target)

    # -- calling ---------------------------------------------------------------------------------

    @overload
    def __call__(  # type: ignore[valid-type]
        self, *args: P.args, return_state: Literal[False] = False, **kwargs: P.kwargs
    ) -> R: ...

    @overload
    def __call__(  # type: ignore[valid-type]
        self: Task[P, Coroutine[Any, Any, T]],
        *args: P.args,
        return_state: Literal[True],
        **kwargs: P.kwargs,
    ) -> Coroutine[Any, Any, State]: ...

    @overload
    def __call__(  # type: ignore[valid-type]
        self, *args: P.args, return_state: Literal[True], **kwargs: P.kwargs
    ) -> State: ...

    def __call__(  # type: ignore[valid-type]
        self,
        *args: P.args,
        return_state: bool = False,
        wait_for: Iterable[Any] | None = None,
        **kwargs: P.kwargs,
    ) -> Any:
        """Run the task now and return its value (or its `State` with ``return_state=True``).

        `wait_for` names futures (or states) that must complete first; if one did not, the
        task does not run and its state is ``NotReady`` (see `allow_failure`).
        """
        parent = get_current()
        flow_run = None if parent is None else parent.flow_run
        if (
            self._simple
            and wait_for is None
            and (
                flow_run is None
                or not (
                    (flow_run.persist_result and self._inherits_persist)
                    or (flow_run.log_prints and self._inherits_prints)
                )
            )
            and not (SCAN[0] and has_futures(args, kwargs))
        ):
            # The hot path: no option needs any work around the call. Its run is
            # `new_plain_run`'s, written out (a call would cost what it saves).
            run: TaskRun = _new_object(PlainTaskRun)
            run.task, run.flow_run, run.parent = self, flow_run, parent
            recorder = _history.active  # run history (a deployment's run process)
            started = _time() if recorder is not None else 0.0
            token = set_current(run)
            try:
                value = self.fn(*args, **kwargs)
            except Exception as exc:
                run.state = state = Failed(exc)
                state.run = run
                log_failure(run_logger(run), state, self.options.retries, run.run_count)
                rollback_current()  # a failed run rolls back the open transaction
                if recorder is not None:
                    recorder.task_run(run, state, started)
                if return_state:
                    return state
                raise
            finally:
                reset_current(token)
            if isinstance(value, State) or (
                type(value) in STATE_SEQUENCES and is_state_iterable(value)
            ):
                try:
                    return self._returned_state(run, value, return_state)
                finally:
                    if recorder is not None:
                        recorder.task_run(run, run.state, started)
            if return_state:
                run.state = state = Completed(value)
                state.run = run
            if recorder is not None:
                recorder.task_run(run, run.state, started)
            return run.state if return_state else value
        log_prints = self.options.log_prints  # `_log_prints`, written out (every cache hit)
        if log_prints is None:
            log_prints = flow_run.log_prints if flow_run is not None else False
        run = TaskRun(self, flow_run, parent, log_prints)
        if wait_for is not None:
            run.wait_for = list(wait_for)
        if flow_run is not None and flow_run.reuses and parent is flow_run:
            run.reuse_key = flow_run.call_key(self.name)
        if self.isasync:
            return self._acall(run, args, kwargs, return_state)
        if (
            self._hit_path
            and wait_for is None
            and run.reuse_key is None
            and not run.log_prints
            and CURRENT.get() is None
            and not (SCAN[0] and has_futures(args, kwargs))
        ):
            state = run_cached(self, run, args, kwargs)
        else:
            state = drive(task_steps(self, run, args, kwargs))
        return state if return_state else state.result()

    def _returned_state(self, run: TaskRun, value: Any, return_state: bool) -> Any:
        """The hot path's end when the function returned states (`return_value_to_state`)."""
        run.state = state = return_value_to_state(value)
        state.run = run
        if state.is_failed():
            log_failure(run_logger(run), state, self.options.retries, run.run_count)
        return state if return_state else state.result()

    async def _acall(
        self, run: TaskRun, args: tuple[Any, ...], kwargs: dict[str, Any], return_state: bool
    ) -> Any:
        state = await adrive(task_steps(self, run, args, kwargs))
        return state if return_state else state.result()

    @overload
    def submit(
        self: Task[P, Coroutine[Any, Any, T]],
        *args: Any,
        return_state: Literal[False] = False,
        wait_for: Iterable[Any] | None = None,
        **kwargs: Any,
    ) -> TaskFuture[T]: ...

    @overload
    def submit(
        self,
        *args: Any,
        return_state: Literal[False] = False,
        wait_for: Iterable[Any] | None = None,
        **kwargs: Any,
    ) -> TaskFuture[R]: ...

    @overload
    def submit(
        self,
        *args: Any,
        return_state: Literal[True],
        wait_for: Iterable[Any] | None = None,
        **kwargs: Any,
    ) -> State: ...

    def submit(
        self,
        *args: Any,
        return_state: bool = False,
        wait_for: Iterable[Any] | None = None,
        **kwargs: Any,
    ) -> Any:
        """Run the task on the flow's task runner; return a `TaskFuture` at once.

        Futures among the arguments are waited for and replaced by their results;
        `wait_for` names more futures to wait for first (an upstream that did not complete
        leaves this run ``NotReady``). With ``return_state=True`` it waits for the run and
        returns its final `State`, as Prefect does. An async task submitted from an async
        flow runs on the flow's event loop instead (``await future`` for its value);
        elsewhere the runner runs it on a private loop in its worker.
        """
        parent = get_current()
        flow_run = None if parent is None else parent.flow_run
        if (
            flow_run is not None
            and self._simple
            and wait_for is None
            and not flow_run.reuses
            and not (flow_run.persist_result and self._inherits_persist)
            and not (flow_run.log_prints and self._inherits_prints)
            and not has_futures(args, kwargs)
        ):
            # The hot path, as in `__call__`: nothing to wait for, resolve or persist, so the
            # runner is handed the call itself (`run_plain`), not the engine.
            run: TaskRun = _new_object(PlainTaskRun)  # `new_plain_run`, written out
            run.task, run.flow_run, run.parent = self, flow_run, parent
            submitted: TaskFuture[Any] = TaskFuture(
                run, flow_run.task_runner.submit_plain(self, run, args, kwargs)
            )
            if return_state:
                submitted.wait()
                return submitted.state
            return submitted
        run = TaskRun(self, flow_run, parent, self._log_prints(flow_run))
        waits = [] if wait_for is None else list(wait_for)
        if waits:
            run.wait_for = waits
        if flow_run is not None and flow_run.reuses and parent is flow_run:
            run.reuse_key = flow_run.call_key(self.name)
        loop = None if flow_run is None or not self.isasync else flow_run.loop
        waiting = [w for w in waits if isinstance(w, TaskFuture)] if waits else []
        # What the run waits for, declared: a blocking wait on it checks none of these is
        # stuck on the waiter's own loop (`TaskFuture._check_blocking`).
        upstream = waiting + futures_in(args) + futures_in(kwargs) if SCAN[0] else waiting
        if loop is not None and asyncio._get_running_loop() is loop:
            # Submitted from the flow's loop itself: the run goes on that loop. From anywhere
            # else (a task's worker thread, a run moved off the loop, a private loop) the
            # flow's loop may be blocked waiting for the submitter: the runner runs it.
            assert flow_run is not None
            job: concurrent.futures.Future[State] = self._submit_to_loop(
                loop, flow_run, run, args, kwargs, waiting
            )
        else:
            runner = flow_run.task_runner if flow_run is not None else _default_runner()
            job = runner.submit_task(self, run, args, kwargs, waiting)
            loop = None
        future: TaskFuture[Any] = TaskFuture(run, job, loop, upstream)
        if return_state:
            future.wait()
            return future.state
        return future

    def _submit_to_loop(
        self,
        loop: asyncio.AbstractEventLoop,
        flow_run: FlowRun,
        run: TaskRun,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        waits: list[TaskFuture[Any]],
    ) -> LoopJob:
        """Schedule the run on the async flow's loop; the flow run waits for it as it ends."""

        async def job() -> State:
            for future in waits:
                await future.wait_async()
            return await adrive(task_steps(self, run, args, kwargs))

        future = LoopJob(job, loop)
        flow_run.pending.add(future)
        future.add_done_callback(flow_run.pending.discard)
        future.start()
        return future

    @overload
    def map(
        self: Task[P, Coroutine[Any, Any, T]], *args: Any, **kwargs: Any
    ) -> TaskFutureList[T]: ...

    @overload
    def map(self, *args: Any, **kwargs: Any) -> TaskFutureList[R]: ...

    def map(self, *args: Any, **kwargs: Any) -> TaskFutureList[Any]:
        """Submit one run per element of the iterable arguments; return their futures in order,
        as a `TaskFutureList` (``.wait()``, ``.result()`` for all of them).

        Arguments that are lists, tuples, sets, ranges, generators (or futures of them) are
        mapped together and must have equal lengths; strings, bytes, dicts and `unmapped(...)`
        values are passed whole to every run.
        """
        wait_for = kwargs.pop("wait_for", None)
        args_l = [mappable(a) for a in args]
        kwargs_l = {k: mappable(v) for k, v in kwargs.items()}
        n = map_length((*args_l, *kwargs_l.values()), f"{self.name}.map()")
        return TaskFutureList(
            Task.submit(  # not a subclass's: `BoundTask.map` passes its instance itself
                self,
                *(a[i] if isinstance(a, Mapped) else a for a in args_l),
                wait_for=wait_for,
                **{k: v[i] if isinstance(v, Mapped) else v for k, v in kwargs_l.items()},
            )
            for i in range(n)
        )

    # -- running -----------------------------------------------------------------------------------

    def _log_prints(self, flow_run: FlowRun | None) -> bool:
        log_prints = self.options.log_prints
        if log_prints is not None:
            return log_prints
        return flow_run.log_prints if flow_run is not None else False

    def bind(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> dict[str, Any]:
        """The call's arguments by parameter name, defaults filled in."""
        names = self._plain_names
        if not kwargs and len(args) < len(self._tails):
            tail = self._tails[len(args)]  # the hot path: positional arguments, then defaults
            if tail is not None:
                params = dict(zip(names, args))  # type: ignore[arg-type]  # noqa: B905 (len checked)
                if tail:
                    params.update(tail)
                return params
        if names is not None and len(args) <= len(names):
            # Cheap path for plain signatures (no *args, **kwargs or keyword-only parameters).
            params = dict(zip(names, args, strict=False))
            if kwargs and (params.keys() & kwargs.keys() or not kwargs.keys() <= self._name_set):
                params = {}  # duplicate or unknown argument: let inspect raise the usual error
            else:
                params.update(kwargs)
                if len(params) < len(names):
                    for name, default in self._defaults.items():
                        params.setdefault(name, default)
                if len(params) == len(names):
                    if kwargs:
                        # The signature's order, not the call's: f(1, 2) and f(b=2, a=1) are
                        # one call to a key function that looks at the order.
                        return {name: params[name] for name in names}
                    return params
        bound = self._signature.bind(*args, **kwargs)
        bound.apply_defaults()
        return dict(bound.arguments)


def _option_property(name: str) -> property:
    """`Task`'s read-only attribute for the option `name`."""

    def read(self: Task[Any, Any]) -> Any:
        return getattr(self.options, name)

    return property(read, doc=f"The task's ``{name}`` option (read-only).")


for _name in sorted(_OPTION_NAMES - {"name"}):  # the name is an instance attribute
    if not hasattr(Task, _name):  # `version`, hook decorators...: defined in the class
        setattr(Task, _name, _option_property(_name))


class BoundTask(Bound, Task[P, R]):
    """A method's task bound to its instance (or a classmethod's to its class), which every
    call, ``.submit()`` and ``.map()`` passes first; ``with_options`` keeps it bound."""

    unbound = Task

    def submit(self, *args: Any, **kwargs: Any) -> Any:
        return Task.submit(self, self.__self__, *args, **kwargs)

    def map(self, *args: Any, **kwargs: Any) -> TaskFutureList[Any]:
        return Task.map(self, unmapped(self.__self__), *args, **kwargs)


def _with_defaults(given: dict[str, Any]) -> dict[str, Any]:
    """The options given to ``@task``, with the environment's defaults for those left unset
    (`blocks.settings.runtime_defaults`: Prefect's task settings, read at decoration)."""
    defaults = runtime_defaults()
    if given.get("retries") is None:
        given["retries"] = defaults.task_retries
    if given.get("retry_delay_seconds") is None and defaults.task_retry_delay_seconds:
        given["retry_delay_seconds"] = defaults.task_retry_delay_seconds
    if defaults.refresh_cache:
        given["refresh_cache"] = True
    elif given.get("refresh_cache") is None:
        given["refresh_cache"] = False
    if (
        defaults.no_cache
        and given.get("cache_policy", NotSet) is NotSet
        and given.get("cache_key_fn") is None  # a key function still caches, as in Prefect
    ):
        given["cache_policy"] = NO_CACHE
    return given


def task_key(fn: Callable[..., Any]) -> str:
    """``<function name>-<8 hex digits of its code>``: a callable object is named by its type."""
    from blocks.runtime.keys._normalise import bytecode_identity

    qualname = getattr(fn, "__qualname__", None) or type(fn).__qualname__
    return f"{qualname.split('.')[-1]}-{bytecode_identity(fn)[:8]}"


def source_code(fn: Callable[..., Any]) -> str | None:
    """The source of `fn` as it was loaded, or None when Python has none: the text on record
    must compile to the code in memory (`keys._loaded`), so neither a file edited since nor
    another program's text under a pseudo file name (3.13's ``<string>``) is returned."""
    if hasattr(fn, "__code__"):
        from blocks.runtime.keys._loaded import loaded_source

        return loaded_source(fn)[0]
    try:
        return inspect.getsource(fn)
    except (OSError, TypeError):
        return None


_default: TaskRunner | None = None


def _default_runner() -> TaskRunner:
    """The thread pool that runs ``.submit()`` outside any flow."""
    global _default
    if _default is None:
        _default = ConcurrentTaskRunner()
    return _default


# -- the decorator -------------------------------------------------------------------------------


class TaskDecorator(Protocol):
    """What ``@task(...)`` with options gives: a decorator of functions and of classmethod or
    staticmethod objects (``@task(...)`` above ``@classmethod``)."""

    @overload
    def __call__(self, fn: classmethod[Any, P, R], /) -> Task[P, R]: ...

    @overload
    def __call__(self, fn: staticmethod[P, R], /) -> Task[P, R]: ...

    @overload
    def __call__(self, fn: Callable[P, R], /) -> Task[P, R]: ...


@overload
def task(__fn: classmethod[Any, P, R]) -> Task[P, R]: ...


@overload
def task(__fn: staticmethod[P, R]) -> Task[P, R]: ...


@overload
def task(__fn: Callable[P, R]) -> Task[P, R]: ...


@overload
def task(
    *,
    name: str | None = None,
    description: str | None = None,
    tags: Iterable[str] | None = None,
    version: str | None = None,
    task_run_name: RunName | None = None,
    retries: int = 0,
    retry_delay_seconds: RetryDelay | None = None,
    retry_jitter_factor: float | None = None,
    timeout_seconds: float | None = None,
    cache_key_fn: CacheKeyFn | None = None,
    cache_expiration: timedelta | None = None,
    refresh_cache: bool | None = None,
    persist_result: bool | None = None,
    result_storage: Any = None,
    result_serializer: Any = None,
    result_storage_key: str | None = None,
    log_prints: bool | None = None,
    on_failure: Iterable[TaskHook] | None = None,
    on_completion: Iterable[TaskHook] | None = None,
    on_running: Iterable[TaskHook] | None = None,
    cache_result_in_memory: bool = True,
    cache_policy: CachePolicy | None = NotSet,
    on_commit: Iterable[Callable[[Any], Any]] | None = None,
    on_rollback: Iterable[Callable[[Any], Any]] | None = None,
) -> TaskDecorator: ...


def task(__fn: Any = None, **options: Any) -> Any:
    """Make a function a `Task`: ``@task`` or ``@task(retries=3, ...)``.

    Example:
        >>> @task(retries=2, retry_delay_seconds=[1, 5], log_prints=True)
        ... def load(data: dict, destination: str) -> bool:
        ...     print(f"loading to {destination}")
        ...     return True
    """
    if __fn is not None:
        return Task(__fn, **options)
    return lambda fn: Task(fn, **options)
