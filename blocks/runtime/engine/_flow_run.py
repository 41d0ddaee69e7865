"""The state machine of one flow run, sync or async: `flow_steps`.

Wait for upstreams, validate the arguments and name the run, reuse a retried parent's earlier
result, attempt and retry the body (`attempts`, the loop task runs use too), settle what each
attempt submitted, persist the result, call the hooks — yielding `_steps` for `drive`
(blocking) or `adrive` (awaiting). `Flow` makes the run and drives it.

Example:
    >>> state = drive(flow_steps(etl, run, etl_signature.bind("db")))
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import functools
import inspect
import uuid
from collections.abc import Generator
from typing import Any, Protocol

from blocks.errors import ParameterTypeError, UpstreamFailed
from blocks.results import _persistence as persistence
from blocks.runtime._context import FlowRun, render_run_name, reset_current, set_current
from blocks.runtime._futures import (
    futures_in,
    futures_to_states,
    has_futures,
    leave_lane,
    rejoin_lane,
    release_loop,
)
from blocks.runtime._logging import install_print_capture, log_failure, run_logger
from blocks.runtime._options import FlowOptions, key_prefix
from blocks.runtime._signals import crash_on_sigterm
from blocks.runtime._states import (
    Cached,
    Crashed,
    Failed,
    NotReady,
    Running,
    State,
    is_state_iterable,
    return_value_to_state,
)
from blocks.runtime.engine._attempts import ReturnedFailure, attempts
from blocks.runtime.engine._steps import Blocking, Call, Engine, Resolve, Step, run_hooks

__all__ = ["FlowSpec", "flow_steps"]


class FlowSpec(Protocol):
    """What a flow run's engine reads of its `Flow`."""

    @property
    def name(self) -> str: ...

    @property
    def fn(self) -> Any: ...

    @property
    def options(self) -> FlowOptions: ...

    def validate(self, arguments: dict[str, Any]) -> dict[str, Any]:
        """The given arguments of type-hinted parameters, validated and coerced."""
        ...


def flow_steps(
    flow: FlowSpec, run: FlowRun, bound: inspect.BoundArguments, waits: list[Any] | None = None
) -> Engine:
    """The state machine of one flow run, sync or async (see `_steps.Step`)."""
    options = flow.options
    if run.log_prints:
        install_print_capture()
    token = set_current(run)
    # A top-level run: SIGTERM to its process ends it Crashed, naming the signal.
    terminating = crash_on_sigterm() if run.parent is None else contextlib.nullcontext()
    terminating.__enter__()
    try:
        ready = yield from _inputs(flow, bound, waits)
        if not ready.is_running():  # an upstream did not complete: NotReady, no hooks
            run.state, ready.run = ready, run
            run_logger(run).error("Finished in state NotReady: %s", ready.message)
            return ready
        failed = _start(flow, run, bound)
        logger = run_logger(run)  # after _start: its records carry the run's final name
        if failed is not None:
            run.state, failed.run = failed, run
            log_failure(logger, failed, options.retries, run.run_count)
            yield from run_hooks(options.on_failure, flow, run, failed)
            return failed
        earlier = _earlier_attempt(run)
        if earlier is not None:
            run.state, earlier.run = earlier, run
            logger.info("Reusing the result of an earlier attempt of its parent flow run")
            return earlier
        logger.info("Beginning flow run %r for flow %r", run.name, flow.name)
        run.state = ready
        yield from run_hooks(options.on_running, flow, run, ready)
        call = Call(
            flow.fn,
            bound.args,
            bound.kwargs,
            options.timeout_seconds,
            lambda: f"Flow run {run.name!r}",
        )
        try:
            state = yield from attempts(
                run,
                lambda: _attempt(flow, run, call),
                options,
                # Abandon what a timed-out body left behind; else let submitted tasks finish.
                lambda timed_out: _settled(run, wait=not timed_out),
            )
        except BaseException as exc:
            _abandon(run)
            run.state = state = Crashed(exc)
            state.run = run
            logger.error("Crashed: %s", state.message)
            yield from run_hooks(options.on_crashed, flow, run, state)
            raise
        run.state, state.run = state, run
        _keep_result(run, state, options)
        if state.is_failed():
            log_failure(logger, state, options.retries, run.run_count)
            yield from run_hooks(options.on_failure, flow, run, state)
        elif state.is_cancelled():
            logger.info("Finished in state %s", state.name)
            yield from run_hooks(options.on_cancellation, flow, run, state)
        elif state.is_crashed():
            logger.error("Finished in state %s", state.name)
            yield from run_hooks(options.on_crashed, flow, run, state)
        else:
            logger.info("Finished in state %s", state.name)
            yield from run_hooks(options.on_completion, flow, run, state)
        return state
    finally:
        terminating.__exit__(None, None, None)
        reset_current(token)


def _inputs(flow: FlowSpec, bound: inspect.BoundArguments, waits: list[Any] | None) -> Engine:
    """Wait for `waits` and resolve futures in the arguments; NotReady if one failed."""
    try:
        if waits:
            yield Resolve(waits)
        if has_futures((), bound.arguments):
            (arguments,) = yield Resolve(bound.arguments)
            bound.arguments.update(arguments)
    except UpstreamFailed as exc:
        failed = UpstreamFailed(f"Flow {flow.name!r} did not run: {exc}")
        failed.__cause__ = exc
        return NotReady(failed)
    return Running()


def _start(flow: FlowSpec, run: FlowRun, bound: inspect.BoundArguments) -> State | None:
    """Validate the arguments and name the run; a Failed state if the flow must not start."""
    options = flow.options
    try:
        if options.validate_parameters:
            bound.arguments.update(flow.validate(bound.arguments))
        bound.apply_defaults()
        run.parameters = dict(bound.arguments)
        if options.flow_run_name is not None:
            run.name = render_run_name(
                options.flow_run_name, run.parameters, "flow_run_name", f"Flow {flow.name!r}"
            )
    except (ParameterTypeError, ValueError, TypeError) as exc:
        return Failed(exc)
    return None


def _attempt(flow: FlowSpec, run: FlowRun, call: Call) -> Engine:
    """One attempt of the body: call it, wait for what it returned and submitted, persist."""
    run.begin_attempt()
    value = yield call
    (value,) = yield _ToStates(value)
    yield _Settle(run, wait=True)
    state = return_value_to_state(value)
    if state.is_failed():
        raise ReturnedFailure(state)
    if run.persist_result and not (isinstance(value, State) or is_state_iterable(value)):
        store = yield Blocking(persistence.result_store, run.result_storage, run.result_serializer)
        key = f"{key_prefix(flow.name)}-{uuid.uuid4().hex}"
        yield Blocking(functools.partial(store.write, task=f"flow:{flow.name}"), key, value)
        state.ref = (store, key)
    return state


def _settled(run: FlowRun, wait: bool) -> Generator[Step, Any, None]:
    yield _Settle(run, wait)


def _earlier_attempt(run: FlowRun) -> State | None:
    """A subflow's state from an earlier attempt of its retried parent, if its result
    persists and its parameters are equal (see `_task_run._earlier_attempt`)."""
    parent = run.parent
    if run.reuse_key is None or not isinstance(parent, FlowRun) or not run.persist_result:
        return None
    earlier = parent.earlier_state(run.reuse_key, run.parameters)
    if earlier is None:
        return None
    state = Cached(earlier.data, message="Completed in an earlier attempt of the parent flow run")
    state.ref = earlier.ref
    return state


def _keep_result(run: FlowRun, state: State, options: FlowOptions) -> None:
    """Drop a persisted result from memory if asked to; remember it for a retried parent."""
    if state.ref is not None and state.is_completed() and not options.cache_result_in_memory:
        state.data = None  # `state.result()` reads it back from the store
    else:
        state.ref = None
    parent = run.parent
    if run.reuse_key is not None and isinstance(parent, FlowRun) and state.is_completed():
        parent.remember_state(run.reuse_key, run.parameters, state)


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
        loop = asyncio._get_running_loop()
        if loop is not None:  # a sync flow called on a loop's thread: do not strand its jobs
            release_loop(loop)
        # A subflow called in a runner's worker: its parent's runs may be what it waits for.
        lane = leave_lane()
        try:
            if self.wait:
                concurrent.futures.wait(list(self.run_.pending))
            else:
                _cancel_pending(self.run_)
            self.run_.task_runner.shutdown(wait=self.wait)
        finally:
            rejoin_lane(lane)

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
