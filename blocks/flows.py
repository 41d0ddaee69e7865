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
from blocks.context import (
    FlowRun,
    RunName,
    check_run_name,
    get_current,
    render_run_name,
    reset_current,
    set_current,
)
from blocks.engine import (
    Blocking,
    Call,
    Engine,
    Resolve,
    RetryDelay,
    Sleep,
    Step,
    adrive,
    drive,
    key_prefix,
    retry_delay,
    retry_delays,
    run_hooks,
)
from blocks.errors import ParameterTypeError, TaskTimeout
from blocks.logging import install_print_capture, log_failure, run_logger
from blocks.parameters import ParameterValidator, defining_namespace, parameter_hints
from blocks.states import Completed, Crashed, Failed, State, TimedOut
from blocks.task_runners import ConcurrentTaskRunner, TaskRunner

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
    log_prints, persist_result, result_storage, result_serializer, on_failure / on_completion /
    on_crashed hooks ``hook(flow, flow_run, state)``, validate_parameters (default True).

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
    ) -> None:
        if not callable(fn):
            raise TypeError("@flow decorates a function")
        if retries < 0:
            raise ValueError("retries must be 0 or more")
        if timeout_seconds is not None and timeout_seconds <= 0:
            raise ValueError("timeout_seconds must be positive")
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
        self.on_failure = list(on_failure or ())
        self.on_completion = list(on_completion or ())
        self.on_crashed = list(on_crashed or ())
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
        self, *args: P.args, return_state: Literal[False] = False, **kwargs: P.kwargs
    ) -> R: ...

    @overload
    def __call__(  # type: ignore[valid-type]
        self: Flow[P, Coroutine[Any, Any, T]], *args: P.args, return_state: Literal[True],
        **kwargs: P.kwargs,
    ) -> Coroutine[Any, Any, State]: ...

    @overload
    def __call__(  # type: ignore[valid-type]
        self, *args: P.args, return_state: Literal[True], **kwargs: P.kwargs
    ) -> State: ...

    def __call__(  # type: ignore[valid-type]
        self, *args: P.args, return_state: bool = False, **kwargs: P.kwargs
    ) -> Any:
        """Run the flow and return its value (or its `State` with ``return_state=True``).

        An ``async def`` flow returns a coroutine instead, as a plain async function does:
        ``asyncio.run(main())`` or ``await main()`` runs it.
        """
        bound = self._signature.bind(*args, **kwargs)
        if self.isasync:
            return self._acall(bound, return_state)
        state = drive(self._steps(self._new_run(bound), bound))
        return state if return_state else state.result()

    async def _acall(self, bound: inspect.BoundArguments, return_state: bool) -> Any:
        run = self._new_run(bound)
        run.loop = asyncio.get_running_loop()
        state = await adrive(self._steps(run, bound))
        return state if return_state else state.result()

    def _new_run(self, bound: inspect.BoundArguments) -> FlowRun:
        runner = (self.task_runner or ConcurrentTaskRunner()).duplicate()
        return FlowRun(self, dict(bound.arguments), get_current(), runner)

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

    def _steps(self, run: FlowRun, bound: inspect.BoundArguments) -> Engine:
        """The state machine of one flow run, sync or async (see `blocks.engine.Step`)."""
        if run.log_prints:
            install_print_capture()
        token = set_current(run)
        try:
            failed = self._start(run, bound)
            logger = run_logger(run)  # after _start: its records carry the run's final name
            if failed is not None:
                run.state = failed
                log_failure(logger, failed, self.retries, run.run_count)
                yield from run_hooks(self.on_failure, self, run, failed)
                return failed
            logger.info("Beginning flow run %r for flow %r", run.name, self.name)
            try:
                state = yield from self._attempts(run, bound.args, bound.kwargs)
            except BaseException as exc:
                _abandon(run)
                run.state = state = Crashed(exc)
                logger.error("Crashed: %s", state.message)
                yield from run_hooks(self.on_crashed, self, run, state)
                raise
            run.state = state
            if state.is_failed():
                log_failure(logger, state, self.retries, run.run_count)
                yield from run_hooks(self.on_failure, self, run, state)
            else:
                logger.info("Finished in state %s", state.name)
                yield from run_hooks(self.on_completion, self, run, state)
            return state
        finally:
            reset_current(token)

    def _attempts(self, run: FlowRun, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Engine:
        call = Call(self.fn, args, kwargs, self.timeout_seconds, lambda: f"Flow run {run.name!r}")
        while True:
            run.run_count += 1
            timed_out = False
            try:
                value = yield call
                (value,) = yield Resolve(value)
                yield _Settle(run, wait=True)
                if run.persist_result:
                    store = yield Blocking(
                        caching.result_store, run.result_storage, run.result_serializer
                    )
                    key = f"{key_prefix(self.name)}-{uuid.uuid4().hex}"
                    yield Blocking(functools.partial(store.write, task=f"flow:{self.name}"),
                                   key, value)
                return Completed(value)
            except TaskTimeout as exc:
                timed_out = True
                state = TimedOut(exc)
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
