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
import importlib
import inspect
from collections.abc import Callable, Coroutine, Iterable
from typing import Any, Generic, Literal, ParamSpec, Protocol, TypeVar, overload

import pydantic_core

from blocks.errors import OptionTypeError, ParameterTypeError
from blocks.runtime._context import FlowRun, check_run_name, get_current
from blocks.runtime._futures import TaskFuture
from blocks.runtime._methods import NOT_BOUND, Bound, bind_target, unwrap_method
from blocks.runtime._options import (
    FlowOptions,
    HookDecorators,
    RetryDelay,
    RunName,
    check_flow_name,
    check_reserved_arguments,
    option_names,
    replace_options,
)
from blocks.runtime._parameters import ParameterValidator, defining_namespace, parameter_hints
from blocks.runtime._states import State
from blocks.runtime.engine._flow_run import flow_steps
from blocks.runtime.engine._steps import adrive, drive
from blocks.runtime.runners._base import ConcurrentTaskRunner, TaskRunner
from blocks.settings import runtime_defaults

__all__ = ["BoundFlow", "Flow", "ParameterTypeError", "flow"]

P = ParamSpec("P")
R = TypeVar("R")
T = TypeVar("T")

FlowHook = Callable[["Flow[Any, Any]", FlowRun, State], Any]

_OPTION_NAMES = option_names(FlowOptions)


class Flow(HookDecorators["FlowHook", FlowOptions], Generic[P, R]):
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
        self, fn: Callable[P, R], options: FlowOptions | None = None, **given: Any
    ) -> None:
        fn, self._method = unwrap_method(fn)  # @flow above @classmethod / @staticmethod
        if not callable(fn):
            raise OptionTypeError("@flow decorates a function")
        if options is None:
            unknown = given.keys() - _OPTION_NAMES
            if unknown:
                raise OptionTypeError(f"@flow got unknown option(s): {sorted(unknown)}")
            if given.get("name"):
                check_flow_name(given["name"])
            given["name"] = given.get("name") or getattr(fn, "__name__", "flow").replace("_", "-")
            given["description"] = given.get("description") or inspect.getdoc(fn)
            defaults = runtime_defaults()  # Prefect's flow settings, read at decoration
            if given.get("retries") is None:
                given["retries"] = defaults.flow_retries
            if given.get("retry_delay_seconds") is None and defaults.flow_retry_delay_seconds:
                given["retry_delay_seconds"] = defaults.flow_retry_delay_seconds
            options = FlowOptions(**given)
        self.fn = fn
        self.options = options
        self.name = options.name
        self.isasync = inspect.iscoroutinefunction(fn)
        self._signature = inspect.signature(fn)
        check_reserved_arguments(self._signature.parameters, f"Flow {self.name!r}")
        check_run_name(
            options.flow_run_name, self._signature, "flow_run_name", f"Flow {self.name!r}"
        )
        self._validator: ParameterValidator | Literal[False] | None = False  # False: not built
        self._localns = defining_namespace(__name__) if options.validate_parameters else None
        self.__doc__ = getattr(fn, "__doc__", None)
        self.__name__ = getattr(fn, "__name__", self.name)
        self.__wrapped__ = fn

    def __getattr__(self, name: str) -> Any:
        # `my_flow.retries`, `my_flow.task_runner`...: the options, read-only.
        options = self.__dict__.get("options")  # absent while unpickling
        if options is not None and name in _OPTION_NAMES:
            return getattr(options, name)
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    @property
    def version(self) -> str | None:
        return self.options.version

    @property
    def on_failure_hooks(self) -> tuple[Callable[..., Any], ...]:
        return self.options.on_failure

    @property
    def on_completion_hooks(self) -> tuple[Callable[..., Any], ...]:
        return self.options.on_completion

    @property
    def on_crashed_hooks(self) -> tuple[Callable[..., Any], ...]:
        return self.options.on_crashed

    @property
    def on_running_hooks(self) -> tuple[Callable[..., Any], ...]:
        return self.options.on_running

    @property
    def on_cancellation_hooks(self) -> tuple[Callable[..., Any], ...]:
        return self.options.on_cancellation

    def __repr__(self) -> str:
        return f"Flow(name={self.name!r})"

    def with_options(self, **options: Any) -> Flow[P, R]:
        """A copy of this flow with some options changed (`dataclasses.replace`, validated
        again; hooks carry over unless given).

        Example:
            >>> nightly = etl.with_options(name="nightly-etl", retries=3)
        """
        if options.get("name"):
            check_flow_name(options["name"])
        changed: Flow[P, R] = Flow(self.fn, replace_options(self.options, "Flow", options))
        changed._method = self._method
        return changed

    def to_deployment(self, name: str | None = None, **options: Any) -> Any:
        """A deployment of this flow, not stored yet, for `serve(...)` or `deploy(...)`.

        Options as Prefect 3's: interval / cron / rrule / schedule / schedules, parameters,
        tags, version, description, paused, work_pool_name, concurrency_limit (see
        `blocks.deployments.to_deployment`). `name` defaults to the flow's name.

        Example:
            >>> serve(etl.to_deployment("hourly", interval=3600))
        """
        return _deployments().to_deployment(self, name, **options)

    def serve(self, name: str | None = None, **options: Any) -> None:
        """Deploy this flow and run its scheduled and requested runs in this process until
        stopped: `to_deployment`'s options, plus ``limit`` (runs at once) and
        ``pause_on_shutdown`` (default True).

        Example:
            >>> etl.serve(name="nightly", cron="0 2 * * *", parameters={"source": "s3"})
        """
        _deployments().serve_flow(self, name, **options)

    def deploy(
        self, name: str | None = None, *, work_pool_name: str | None = None, **options: Any
    ) -> str:
        """Register a deployment of this flow for the workers of `work_pool_name` (created as a
        process pool when missing); return its id. `to_deployment`'s options.

        Example:
            >>> etl.deploy("nightly", work_pool_name="my-pool", cron="0 2 * * *")
        """
        return str(_deployments().deploy_flow(self, name, work_pool_name=work_pool_name, **options))

    def __get__(self, instance: Any, owner: Any = None) -> Any:
        """A method's flow read from an instance (or a classmethod's from its class): a copy
        bound to it (`BoundFlow`); read from the class, or a staticmethod's: the flow."""
        target = bind_target(self._method, instance, owner)
        if target is NOT_BOUND:
            return self
        return BoundFlow.of(self, target)

    # -- hooks as decorators (Prefect's ``@my_flow.on_completion``; the shared three come
    # from `HookDecorators`) ---------------------------------------------------------------------

    def on_crashed(self, fn: FlowHook) -> FlowHook:
        """Add a hook called when a run crashes (KeyboardInterrupt...): ``@my_flow.on_crashed``."""
        return self._add_hook("on_crashed", fn)

    def on_cancellation(self, fn: FlowHook) -> FlowHook:
        """Add a hook called when a run ends cancelled: ``@my_flow.on_cancellation``."""
        return self._add_hook("on_cancellation", fn)

    def _set_options(self, options: FlowOptions) -> None:
        self.options = options

    def serialize_parameters(self, parameters: dict[str, Any]) -> dict[str, Any]:
        """The parameters as JSON-compatible values, as Prefect records a run's parameters.

        Secret values are masked (``"**********"``, pydantic's rendering of a secret); a value
        with no JSON form, and a future or a state, become ``"<TypeName>"``.

        Example:
            >>> etl.serialize_parameters({"day": date(2024, 1, 2), "lock": threading.Lock()})
            {'day': '2024-01-02', 'lock': '<lock>'}
        """
        serialized: dict[str, Any] = {}
        for key, value in parameters.items():
            if isinstance(value, State | TaskFuture):
                serialized[key] = f"<{type(value).__name__}>"
                continue
            try:
                serialized[key] = pydantic_core.to_jsonable_python(value)
            except (pydantic_core.PydanticSerializationError, TypeError, ValueError):
                serialized[key] = f"<{type(value).__name__}>"
        return serialized

    def validate(self, arguments: dict[str, Any]) -> dict[str, Any]:
        """The given arguments of type-hinted parameters, validated and coerced."""
        return self._validate(arguments)

    def _validate(self, arguments: dict[str, Any]) -> dict[str, Any]:
        """The given arguments of type-hinted parameters, validated and coerced."""
        validator = self._validator
        if validator is False:  # built on first call: hints may name classes defined later
            fields = parameter_hints(self.fn, self._signature, self.name, self._localns)
            validator = self._validator = ParameterValidator(self.name, fields) if fields else None
        return {} if validator is None else validator(arguments)

    @overload
    def __call__(  # type: ignore[valid-type]
        self,
        *args: P.args,
        return_state: Literal[False] = False,
        wait_for: Iterable[Any] | None = None,
        **kwargs: P.kwargs,
    ) -> R: ...

    @overload
    def __call__(  # type: ignore[valid-type]
        self: Flow[P, Coroutine[Any, Any, T]],
        *args: P.args,
        return_state: Literal[True],
        wait_for: Iterable[Any] | None = None,
        **kwargs: P.kwargs,
    ) -> Coroutine[Any, Any, State]: ...

    @overload
    def __call__(  # type: ignore[valid-type]
        self,
        *args: P.args,
        return_state: Literal[True],
        wait_for: Iterable[Any] | None = None,
        **kwargs: P.kwargs,
    ) -> State: ...

    def __call__(  # type: ignore[valid-type]
        self,
        *args: P.args,
        return_state: bool = False,
        wait_for: Iterable[Any] | None = None,
        **kwargs: P.kwargs,
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
        state = drive(flow_steps(self, self._new_run(bound), bound, waits))
        return state if return_state else state.result()

    async def _acall(
        self, bound: inspect.BoundArguments, return_state: bool, waits: list[Any] | None
    ) -> Any:
        run = self._new_run(bound)
        run.loop = asyncio.get_running_loop()
        state = await adrive(flow_steps(self, run, bound, waits))
        return state if return_state else state.result()

    def _new_run(self, bound: inspect.BoundArguments) -> FlowRun:
        runner = (self.options.task_runner or ConcurrentTaskRunner()).duplicate()
        parent = get_current()
        run = FlowRun(self, self.options, dict(bound.arguments), parent, runner)
        if isinstance(parent, FlowRun) and parent.reuses:
            run.reuse_key = parent.call_key(f"flow:{self.name}")
        return run


class BoundFlow(Bound, Flow[P, R]):
    """A method's flow bound to its instance (or a classmethod's to its class), which every
    call passes first; ``with_options`` keeps it bound."""

    unbound = Flow


def _deployments() -> Any:
    """`blocks.deployments._serve`, loaded by name when a flow is deployed: deployments sit a
    layer above the runtime, which imports nothing of them (a flow only hands itself over)."""
    return importlib.import_module("blocks.deployments._serve")


class FlowDecorator(Protocol):
    """What ``@flow(...)`` with options gives: a decorator of functions and of classmethod or
    staticmethod objects (``@flow(...)`` above ``@classmethod``)."""

    @overload
    def __call__(self, fn: classmethod[Any, P, R], /) -> Flow[P, R]: ...

    @overload
    def __call__(self, fn: staticmethod[P, R], /) -> Flow[P, R]: ...

    @overload
    def __call__(self, fn: Callable[P, R], /) -> Flow[P, R]: ...


@overload
def flow(__fn: classmethod[Any, P, R]) -> Flow[P, R]: ...


@overload
def flow(__fn: staticmethod[P, R]) -> Flow[P, R]: ...


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
) -> FlowDecorator: ...


def flow(__fn: Any = None, **options: Any) -> Any:
    """Make a function a `Flow`: ``@flow`` or ``@flow(name="ETL Pipeline", ...)``.

    Example:
        >>> @flow(task_runner=SequentialTaskRunner(), log_prints=True)
        ... def nightly() -> None:
        ...     print("runs every task in order")
    """
    if __fn is not None:
        return Flow(__fn, **options)
    return lambda fn: Flow(fn, **options)
