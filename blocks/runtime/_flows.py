"""`@flow`: the function that runs tasks; its run gives tasks their defaults and task runner.

Calling a flow runs it in the current thread and returns its value (or raises what failed it).
A flow called inside another flow is a subflow: its own run, with the parent's result settings
as defaults. A flow's ``result_storage``, ``result_serializer``, ``persist_result`` and
``log_prints`` are the defaults of the tasks it calls.

An ``async def`` flow is called like any async function: calling it returns a coroutine, and
``asyncio.run(main())`` (or ``await main()`` in async code) runs it — with the same retries,
timeout (the body is cancelled), hooks, persistence and parameter validation. Inside it,
``await my_async_task(x)`` runs a task on the flow's loop, ``asyncio.gather`` runs several
at once, a sync task call blocks as usual, and an async task's ``.submit()`` schedules it on
the loop (``await future``); the run waits for what was submitted before it ends.

Example:
    >>> from blocks import flow, task
    >>> @task
    ... def double(x: int) -> int:
    ...     return 2 * x
    >>> @flow(name="ETL Pipeline", retries=1)
    ... def etl(n: int = 3) -> list[int]:
    ...     return [f.result() for f in double.map(range(n))]
    >>> etl()
    [0, 2, 4]
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import functools
import inspect
import uuid
from collections.abc import Callable, Coroutine, Iterable
from typing import Any, Generic, Literal, ParamSpec, TypeVar, overload

from blocks import caching
from blocks.errors import (
    ConfigurationError,
    OptionTypeError,
    ParameterTypeError,
    TaskTimeout,
    UpstreamFailed,
)
from blocks.runtime._context import (
    FlowRun,
    RunName,
    check_run_name,
    get_current,
    render_run_name,
    reset_current,
    set_current,
)
from blocks.runtime._futures import futures_in, futures_to_states, has_futures
from blocks.runtime._logging import install_print_capture, log_failure, run_logger
from blocks.runtime._parameters import ParameterValidator, defining_namespace, parameter_hints
from blocks.runtime._states import (
    Cached,
    Crashed,
    Failed,
    NotReady,
    Running,
    State,
    TimedOut,
    is_state_iterable,
    return_value_to_state,
)
from blocks.runtime.engine._steps import (
    Blocking,
    Call,
    Engine,
    Resolve,
    RetryDelay,
    Sleep,
    Step,
    adrive,
    check_hooks,
    drive,
    key_prefix,
    retry_delay,
    retry_delays,
    run_hooks,
)
from blocks.runtime.runners._base import ConcurrentTaskRunner, TaskRunner

__all__ = ["Flow", "ParameterTypeError", "flow"]

P = ParamSpec("P")
R = TypeVar("R")
T = TypeVar("T")

FlowHook = Callable[["Flow[Any, Any]", FlowRun, State], Any]


class Flow(Generic[P, R]):
    """A function plus run options; made by `@flow`.

    Options (all keyword): name (default: the function name with dashes), description,
    version, flow_run_name (a template like ``"etl-{source}"`` formatted with the call's
    parameters, or a callable taking nothing or the parameters dict), retries,
    retry_delay_seconds, timeout_seconds, task_runner (default `ConcurrentTaskRunner()`),
    log_prints, persist_result, result_storage, result_serializer, validate_parameters (default
    True), and hooks ``hook(flow, flow_run, state)``: on_running, on_completion, on_failure,
    on_cancellation (the flow returned a cancelled state) and on_crashed (lists of callables;
    or add one with the decorator ``@my_flow.on_completion``).

    What the body returns sets the final state as in Prefect 3 (`return_value_to_state`):
    futures in it are waited for and become their final states; a state made by hand is the
    flow's state (``return Failed(message="...")`` fails the flow, runs its on_failure hooks and
    its retries); states of runs give an aggregate (FAILED if any failed). The call returns the
    final state's result: the value, with states in place of returned futures.

    With ``validate_parameters=True``, arguments of parameters with type hints are validated
    and coerced by pydantic before the flow starts (``"3"`` for an ``int`` becomes ``3``); a bad
    one fails the run with `ParameterTypeError` naming the parameter, without running the body
    or its retries. Defaults are not validated, and unannotated or ``Any`` parameters pass as is.

    As in Prefect 3, ``persist_result=True`` (or a ``result_storage``) on a flow makes every
    task it calls persist its result too, unless the task says ``persist_result=False``.

    ``timeout_seconds`` runs a sync body in a worker thread and stops waiting when time is up;
    Python cannot kill the thread, so the body may go on running in the background. An async
    body is cancelled, and the async tasks it submitted with it.
    """

    def __init__(
        self,
        fn: Callable[P, R],
        *,
        name: str | None = None,
        description: str | None = None,
        version: str | None = None,
        flow_run_name: RunName | None = None,
        retries: int = 0,
        retry_delay_seconds: RetryDelay | None = None,
        timeout_seconds: float | None = None,
        task_runner: TaskRunner | None = None,
        log_prints: bool | None = None,
        persist_result: bool | None = None,
        result_storage: Any = None,
        result_serializer: Any = None,
        on_failure: Iterable[FlowHook] | None = None,
        on_completion: Iterable[FlowHook] | None = None,
        on_crashed: Iterable[FlowHook] | None = None,
        validate_parameters: bool = True,
        on_running: Iterable[FlowHook] | None = None,
        on_cancellation: Iterable[FlowHook] | None = None,
        cache_result_in_memory: bool = True,
    ) -> None:
        if not callable(fn):
            raise OptionTypeError("@flow decorates a function")
        if retries < 0:
            raise ConfigurationError("retries must be 0 or more")
        if timeout_seconds is not None and timeout_seconds <= 0:
            raise ConfigurationError("timeout_seconds must be positive")
        self.fn = fn
        self.name = name or getattr(fn, "__name__", "flow").replace("_", "-")
        self.description = description or inspect.getdoc(fn)
        self.version = version
        self.flow_run_name = flow_run_name
        self.validate_parameters = validate_parameters
        self.retries = retries
        self.retry_delay_seconds = retry_delay_seconds
        self.timeout_seconds = timeout_seconds
        self.task_runner = task_runner
        self.log_prints = log_prints
        if persist_result is None and (result_storage is not None or result_serializer is not None):
            persist_result = True
        self.persist_result = persist_result
        self.result_storage = result_storage
        self.result_serializer = result_serializer
        self.cache_result_in_memory = cache_result_in_memory
        owner = f"Flow {self.name!r}"
        self.on_failure_hooks = check_hooks(on_failure, "on_failure", owner)
        self.on_completion_hooks = check_hooks(on_completion, "on_completion", owner)
        self.on_crashed_hooks = check_hooks(on_crashed, "on_crashed", owner)
        self.on_running_hooks = check_hooks(on_running, "on_running", owner)
        self.on_cancellation_hooks = check_hooks(on_cancellation, "on_cancellation", owner)
        self._options: dict[str, Any] = {
            "name": name, "description": description, "version": version,
            "flow_run_name": flow_run_name, "retries": retries,
            "retry_delay_seconds": retry_delay_seconds, "timeout_seconds": timeout_seconds,
            "task_runner": task_runner, "log_prints": log_prints,
            "persist_result": persist_result, "result_storage": result_storage,
            "result_serializer": result_serializer, "validate_parameters": validate_parameters,
            "cache_result_in_memory": cache_result_in_memory,
        }
        self._delays = retry_delays(retry_delay_seconds, retries)
        self.isasync = inspect.iscoroutinefunction(fn)
        self._signature = inspect.signature(fn)
        check_run_name(flow_run_name, self._signature, "flow_run_name", f"Flow {self.name!r}")
        self._validator: ParameterValidator | Literal[False] | None = False  # False: not built
        self._localns = defining_namespace(__name__) if validate_parameters else None
        self.__doc__ = getattr(fn, "__doc__", None)
        self.__name__ = getattr(fn, "__name__", self.name)
        self.__wrapped__ = fn

    def __repr__(self) -> str:
        return f"Flow(name={self.name!r})"

    def with_options(self, **options: Any) -> Flow[P, R]:
        """A copy of this flow with some options changed (hooks carry over unless given).

        Example:
            >>> nightly = etl.with_options(name="nightly-etl", retries=3)
        """
        hooks = {
            "on_failure": list(self.on_failure_hooks),
            "on_completion": list(self.on_completion_hooks),
            "on_crashed": list(self.on_crashed_hooks),
            "on_running": list(self.on_running_hooks),
            "on_cancellation": list(self.on_cancellation_hooks),
        }
        unknown = options.keys() - self._options.keys() - hooks.keys()
        if unknown:
            raise OptionTypeError(f"Flow.with_options() got unknown option(s): {sorted(unknown)}")
        return Flow(self.fn, **{**self._options, **hooks, **options})

    # -- hooks as decorators (Prefect's ``@my_flow.on_completion``) ----------------------------

    def on_completion(self, fn: FlowHook) -> FlowHook:
        """Add a hook called when a run completes: ``@my_flow.on_completion``."""
        self.on_completion_hooks.extend(check_hooks([fn], "on_completion", repr(self)))
        return fn

    def on_failure(self, fn: FlowHook) -> FlowHook:
        """Add a hook called when a run fails (after its retries): ``@my_flow.on_failure``."""
        self.on_failure_hooks.extend(check_hooks([fn], "on_failure", repr(self)))
        return fn

    def on_crashed(self, fn: FlowHook) -> FlowHook:
        """Add a hook called when a run crashes (KeyboardInterrupt...): ``@my_flow.on_crashed``."""
        self.on_crashed_hooks.extend(check_hooks([fn], "on_crashed", repr(self)))
        return fn

    def on_running(self, fn: FlowHook) -> FlowHook:
        """Add a hook called when a run starts: ``@my_flow.on_running``."""
        self.on_running_hooks.extend(check_hooks([fn], "on_running", repr(self)))
        return fn

    def on_cancellation(self, fn: FlowHook) -> FlowHook:
        """Add a hook called when a run ends cancelled: ``@my_flow.on_cancellation``."""
        self.on_cancellation_hooks.extend(check_hooks([fn], "on_cancellation", repr(self)))
        return fn

    def _validate(self, arguments: dict[str, Any]) -> dict[str, Any]:
        """The given arguments of type-hinted parameters, validated and coerced."""
        validator = self._validator
        if validator is False:  # built on first call: hints may name classes defined later
            fields = parameter_hints(self.fn, self._signature, self.name, self._localns)
            validator = self._validator = (
                ParameterValidator(self.name, fields) if fields else None
            )
        return {} if validator is None else validator(arguments)

    @overload
    def __call__(  # type: ignore[valid-type]
        self, *args: P.args, return_state: Literal[False] = False,
        wait_for: Iterable[Any] | None = None, **kwargs: P.kwargs
    ) -> R: ...

    @overload
    def __call__(  # type: ignore[valid-type]
        self: Flow[P, Coroutine[Any, Any, T]], *args: P.args, return_state: Literal[True],
        wait_for: Iterable[Any] | None = None, **kwargs: P.kwargs,
    ) -> Coroutine[Any, Any, State]: ...

    @overload
    def __call__(  # type: ignore[valid-type]
        self, *args: P.args, return_state: Literal[True],
        wait_for: Iterable[Any] | None = None, **kwargs: P.kwargs
    ) -> State: ...

    def __call__(  # type: ignore[valid-type]
        self, *args: P.args, return_state: bool = False,
        wait_for: Iterable[Any] | None = None, **kwargs: P.kwargs
    ) -> Any:
        """Run the flow and return its value (or its `State` with ``return_state=True``).

        `wait_for` names futures (or states) that must complete first; futures among the
        arguments are replaced by their results. If one did not complete, the flow does not
        run and its state is ``NotReady``. An ``async def`` flow returns a coroutine instead,
        as a plain async function does: ``asyncio.run(main())`` or ``await main()`` runs it.
        """
        bound = self._signature.bind(*args, **kwargs)
        waits = None if wait_for is None else list(wait_for)
        if self.isasync:
            return self._acall(bound, return_state, waits)
        state = drive(self._steps(self._new_run(bound), bound, waits))
        return state if return_state else state.result()

    async def _acall(self, bound: inspect.BoundArguments, return_state: bool,
                     waits: list[Any] | None) -> Any:
        run = self._new_run(bound)
        run.loop = asyncio.get_running_loop()
        state = await adrive(self._steps(run, bound, waits))
        return state if return_state else state.result()

    def _new_run(self, bound: inspect.BoundArguments) -> FlowRun:
        runner = (self.task_runner or ConcurrentTaskRunner()).duplicate()
        parent = get_current()
        run = FlowRun(self, dict(bound.arguments), parent, runner)
        if isinstance(parent, FlowRun) and parent.reuses:
            run.reuse_key = parent.call_key(f"flow:{self.name}")
        return run

    def _start(self, run: FlowRun, bound: inspect.BoundArguments) -> State | None:
        """Validate the arguments and name the run; a Failed state if the flow must not start."""
        try:
            if self.validate_parameters:
                bound.arguments.update(self._validate(bound.arguments))
            bound.apply_defaults()
            run.parameters = dict(bound.arguments)
            if self.flow_run_name is not None:
                run.name = render_run_name(
                    self.flow_run_name, run.parameters, "flow_run_name", f"Flow {self.name!r}"
                )
        except (ParameterTypeError, ValueError, TypeError) as exc:
            return Failed(exc)
        return None

    def _inputs(self, bound: inspect.BoundArguments, waits: list[Any] | None) -> Engine:
        """Wait for `waits` and resolve futures in the arguments; NotReady if one failed."""
        try:
            if waits:
                yield Resolve(waits)
            if has_futures((), bound.arguments):
                (arguments,) = yield Resolve(bound.arguments)
                bound.arguments.update(arguments)
        except UpstreamFailed as exc:
            failed = UpstreamFailed(f"Flow {self.name!r} did not run: {exc}")
            failed.__cause__ = exc
            return NotReady(failed)
        return Running()

    def _steps(self, run: FlowRun, bound: inspect.BoundArguments,
               waits: list[Any] | None = None) -> Engine:
        """The state machine of one flow run, sync or async (see `blocks.engine.Step`)."""
        if run.log_prints:
            install_print_capture()
        token = set_current(run)
        try:
            ready = yield from self._inputs(bound, waits)
            if not ready.is_running():  # an upstream did not complete: NotReady, no hooks
                run.state, ready.run = ready, run
                run_logger(run).error("Finished in state NotReady: %s", ready.message)
                return ready
            failed = self._start(run, bound)
            logger = run_logger(run)  # after _start: its records carry the run's final name
            if failed is not None:
                run.state, failed.run = failed, run
                log_failure(logger, failed, self.retries, run.run_count)
                yield from run_hooks(self.on_failure_hooks, self, run, failed)
                return failed
            earlier = _earlier_attempt(run)
            if earlier is not None:
                run.state, earlier.run = earlier, run
                logger.info("Reusing the result of an earlier attempt of its parent flow run")
                return earlier
            logger.info("Beginning flow run %r for flow %r", run.name, self.name)
            run.state = ready
            yield from run_hooks(self.on_running_hooks, self, run, ready)
            try:
                state = yield from self._attempts(run, bound.args, bound.kwargs)
            except BaseException as exc:
                _abandon(run)
                run.state = state = Crashed(exc)
                state.run = run
                logger.error("Crashed: %s", state.message)
                yield from run_hooks(self.on_crashed_hooks, self, run, state)
                raise
            run.state, state.run = state, run
            _keep_result(run, state)
            if state.is_failed():
                log_failure(logger, state, self.retries, run.run_count)
                yield from run_hooks(self.on_failure_hooks, self, run, state)
            elif state.is_cancelled():
                logger.info("Finished in state %s", state.name)
                yield from run_hooks(self.on_cancellation_hooks, self, run, state)
            elif state.is_crashed():
                logger.error("Finished in state %s", state.name)
                yield from run_hooks(self.on_crashed_hooks, self, run, state)
            else:
                logger.info("Finished in state %s", state.name)
                yield from run_hooks(self.on_completion_hooks, self, run, state)
            return state
        finally:
            reset_current(token)

    def _attempts(self, run: FlowRun, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Engine:
        call = Call(self.fn, args, kwargs, self.timeout_seconds, lambda: f"Flow run {run.name!r}")
        while True:
            run.run_count += 1
            run.begin_attempt()
            timed_out = False
            try:
                value = yield call
                (value,) = yield _ToStates(value)
                yield _Settle(run, wait=True)
                state = return_value_to_state(value)
                if state.is_failed():
                    raise _ReturnedFailure(state)
                if run.persist_result and not (isinstance(value, State)
                                               or is_state_iterable(value)):
                    store = yield Blocking(
                        caching.result_store, run.result_storage, run.result_serializer
                    )
                    key = f"{key_prefix(self.name)}-{uuid.uuid4().hex}"
                    yield Blocking(functools.partial(store.write, task=f"flow:{self.name}"),
                                   key, value)
                    state.ref = (store, key)
                return state
            except TaskTimeout as exc:
                timed_out = True
                state = TimedOut(exc)
            except _ReturnedFailure as failure:
                state = failure.state
            except Exception as exc:
                state = Failed(exc)
            # Abandon what a timed-out body left behind; otherwise let submitted tasks finish.
            yield _Settle(run, wait=not timed_out)
            if run.run_count > self.retries:
                return state
            delay = retry_delay(self._delays, run.run_count, None)
            run_logger(run).info(
                "Attempt %d failed with %s - retry %d/%d in %.3g second(s)",
                run.run_count, state.message, run.run_count, self.retries, delay,
            )
            if delay > 0:
                yield Sleep(delay)


def _earlier_attempt(run: FlowRun) -> State | None:
    """A subflow's state from an earlier attempt of its retried parent, if its result
    persists and its parameters are equal (see `blocks.task_engine._earlier_attempt`)."""
    parent = run.parent
    if run.reuse_key is None or not isinstance(parent, FlowRun) or not run.persist_result:
        return None
    earlier = parent.earlier_state(run.reuse_key, run.parameters)
    if earlier is None:
        return None
    state = Cached(earlier.data, message="Completed in an earlier attempt of the parent flow run")
    state.ref = earlier.ref
    return state


def _keep_result(run: FlowRun, state: State) -> None:
    """Drop a persisted result from memory if asked to; remember it for a retried parent."""
    if state.ref is not None and state.is_completed() and not run.flow.cache_result_in_memory:
        state.data = None  # `state.result()` reads it back from the store
    else:
        state.ref = None
    parent = run.parent
    if run.reuse_key is not None and isinstance(parent, FlowRun) and state.is_completed():
        parent.remember_state(run.reuse_key, run.parameters, state)


class _ReturnedFailure(Exception):
    """The body returned a failed state (or failed runs' states): the attempt failed."""

    def __init__(self, state: State) -> None:
        super().__init__(state.message)
        self.state = state


class _ToStates(Step):
    """Replace the futures in a returned value by their final states, waiting for them."""

    __slots__ = ("value",)

    def __init__(self, value: Any) -> None:
        self.value = value

    def run(self) -> tuple[Any]:
        return (futures_to_states(self.value),)

    async def arun(self) -> tuple[Any]:
        for future in futures_in(self.value):
            await future.wait_async()
        return (futures_to_states(self.value),)


class _Settle(Step):
    """End an attempt's submitted work: let it finish (`wait`), or cancel what has not run.

    Async: the flow's loop keeps running the async tasks it waits for, and the task runner's
    blocking shutdown happens in a worker thread.
    """

    __slots__ = ("run_", "wait")

    def __init__(self, run: FlowRun, wait: bool) -> None:
        self.run_, self.wait = run, wait

    def run(self) -> None:
        if self.wait:
            concurrent.futures.wait(list(self.run_.pending))
        else:
            _cancel_pending(self.run_)
        self.run_.task_runner.shutdown(wait=self.wait)

    async def arun(self) -> None:
        pending = self.run_.pending
        if not self.wait:
            _cancel_pending(self.run_)
        while self.wait and pending:
            await asyncio.wait([asyncio.wrap_future(f) for f in list(pending)])
        await asyncio.to_thread(self.run_.task_runner.shutdown, self.wait)


def _cancel_pending(run: FlowRun) -> None:
    for future in list(run.pending):
        future.cancel()


def _abandon(run: FlowRun) -> None:
    """A crashing run stops waiting for anything it submitted."""
    _cancel_pending(run)
    run.task_runner.shutdown(wait=False)


@overload
def flow(__fn: Callable[P, R]) -> Flow[P, R]: ...


@overload
def flow(
    *,
    name: str | None = None,
    description: str | None = None,
    version: str | None = None,
    flow_run_name: RunName | None = None,
    retries: int = 0,
    retry_delay_seconds: RetryDelay | None = None,
    timeout_seconds: float | None = None,
    task_runner: TaskRunner | None = None,
    log_prints: bool | None = None,
    persist_result: bool | None = None,
    result_storage: Any = None,
    result_serializer: Any = None,
    on_failure: Iterable[FlowHook] | None = None,
    on_completion: Iterable[FlowHook] | None = None,
    on_crashed: Iterable[FlowHook] | None = None,
    validate_parameters: bool = True,
    on_running: Iterable[FlowHook] | None = None,
    on_cancellation: Iterable[FlowHook] | None = None,
    cache_result_in_memory: bool = True,
) -> Callable[[Callable[P, R]], Flow[P, R]]: ...


def flow(__fn: Callable[P, R] | None = None, **options: Any) -> Any:
    """Make a function a `Flow`: ``@flow`` or ``@flow(name="ETL Pipeline", ...)``.

    Example:
        >>> @flow(task_runner=SequentialTaskRunner(), log_prints=True)
        ... def nightly() -> None:
        ...     print("runs every task in order")
    """
    if __fn is not None:
        return Flow(__fn, **options)
    return lambda fn: Flow(fn, **options)
