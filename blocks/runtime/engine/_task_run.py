"""The state machine of one task run, sync or async: `task_steps`.

Resolve the inputs, name the run, look up the cache, attempt and retry, persist the result,
call the hooks — yielding `_steps` for `drive` (blocking) or `adrive` (awaiting) to perform.
`Task` and the task runners run it (`run_task`); it reads the task's `TaskOptions`.

Example:
    >>> run = TaskRun(extract, None, None, False)
    >>> drive(task_steps(extract, run, ("db",), {})).result()
    {'source': 'db'}
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Generator
from typing import TYPE_CHECKING, Any, NamedTuple

from blocks.errors import UpstreamFailed
from blocks.results import _persistence as persistence
from blocks.results._signing import known_results_keys, new_key_storage
from blocks.runtime import _history
from blocks.runtime._context import TaskRun, render_run_name, reset_current, set_current
from blocks.runtime._futures import has_futures
from blocks.runtime._logging import install_print_capture, log_failure, run_logger
from blocks.runtime._states import (
    STATE_SEQUENCES,
    Cached,
    Completed,
    Crashed,
    Failed,
    NotReady,
    Running,
    State,
    StateType,
    is_state_iterable,
    return_value_to_state,
)
from blocks.runtime.engine._attempts import ReturnedFailure, attempts
from blocks.runtime.engine._steps import (
    Blocking,
    Call,
    Engine,
    Lock,
    Resolve,
    Step,
    adrive,
    drive,
    run_coroutine,
    run_hooks,
)
from blocks.runtime.engine._transactions import (
    CURRENT,
    StagedRecord,
    Transaction,
    TransactionState,
    rollback_current,
)
from blocks.runtime.keys._explain import explain_miss
from blocks.runtime.keys._policies import recall_call, remember_call
from blocks.settings import runtime_defaults

if TYPE_CHECKING:
    from datetime import datetime

    from blocks.results import Hit, ResultStore
    from blocks.results._signing import ResultsKeys
    from blocks.runtime._options import TaskLike

__all__ = ["is_plain", "run_cached", "run_plain", "run_task", "task_steps"]

_caching_logger = logging.getLogger("blocks.caching")


def run_task(task: TaskLike, run: TaskRun, args: tuple[Any, ...], kwargs: dict[str, Any]) -> State:
    """Run to a final state in this thread (an async task: on a private event loop)."""
    if task.isasync:
        return run_coroutine(adrive(task_steps(task, run, args, kwargs)))
    if is_plain(task, run, args, kwargs):
        return run_plain(task, run, args, kwargs)
    return drive(task_steps(task, run, args, kwargs))


def is_plain(task: TaskLike, run: TaskRun, args: tuple[Any, ...], kwargs: dict[str, Any]) -> bool:
    """Whether nothing is needed around this sync run but the call: no option of the task,
    no default of its flow run, no upstream to wait for, no future among the arguments."""
    options = task.options
    if not options.plain or run.wait_for or run.reuse_key is not None or run.log_prints:
        return False
    flow_run = run.flow_run
    if options.persist is None and (
        flow_run.persist_result if flow_run is not None else runtime_defaults().persist_by_default
    ):
        return False
    return not has_futures(args, kwargs)


def run_plain(task: TaskLike, run: TaskRun, args: tuple[Any, ...], kwargs: dict[str, Any]) -> State:
    """`task_steps` for a run `is_plain` accepts, without the engine: the same final state
    (one attempt: no retries, timeout, cache, persistence, hooks), a few microseconds less."""
    run.run_count = 1
    recorder = _history.active
    started = _time() if recorder is not None else 0.0
    token = set_current(run)
    try:
        value = task.fn(*args, **kwargs)
    except Exception as exc:
        state = Failed(exc)
        rollback_current()
    except BaseException as exc:
        run.state = Crashed(exc)
        run.state.run = run
        if recorder is not None:
            _record(recorder, run, run.state, started)
        raise
    else:
        if isinstance(value, State) or (
            type(value) in STATE_SEQUENCES and is_state_iterable(value)
        ):
            state = return_value_to_state(value)
        else:
            state = State(_COMPLETED, None, None, value)  # Completed(value), one call less
    finally:
        reset_current(token)
    run.state = state
    state.run = run
    if state.type is _FAILED:
        log_failure(run_logger(run), state, 0, 1)
    if recorder is not None:
        _record(recorder, run, state, started)
    return state


def _record(recorder: _history.Recorder, run: TaskRun, state: State, started: float) -> None:
    """Hand a finished task run to the process's run-history recorder (it buffers)."""
    recorder.task_run(run, state, started)


_time = time.time

#: The types, read once.
_COMPLETED, _FAILED = StateType.COMPLETED, StateType.FAILED


class Probed(NamedTuple):
    """What `run_cached` found before a miss, handed to the engine so it is not done twice:
    the run's key and its components, and `_probe`'s answer (None: the key is None)."""

    started: float
    key: str | None
    components: dict[str, str]
    probe: tuple[ResultStore, Hit | None, bool] | None


def run_cached(
    task: TaskLike, run: TaskRun, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> State:
    """`task_steps` for a sync cached run that needs nothing else around the lookup (the
    caller checked: `Task._hit_path`, no transaction open, no upstream, no future, no print
    capture, no earlier attempt to reuse): a hit ends here, without the engine, in the state
    the engine gives; a miss (or a failing key) runs the engine from what was found."""
    recorder = _history.active
    started = _time() if recorder is not None else 0.0
    token = set_current(run)
    try:
        probed: Probed | BaseException
        try:
            where = _where(task, run)
            # The results keys once per hit (the key memo and the read both need them).
            keys = known_results_keys()
            key, components = _cache_key(task, run, args, kwargs, where, keys)
            probe = None if key is None else _probe(*where, key, keys)
        except BaseException as exc:  # the engine fails (or crashes) the run with it
            probed = exc
        else:
            hit = None if probe is None else probe[1]
            if hit is not None and probe is not None and key is not None:
                run.run_count += 1
                state = _stored(Cached(hit.value), probe[0], key, hit.header.expires)
                _keep_result(task, run, state)
                run.state = state
                state.run = run
                if recorder is not None:
                    _record(recorder, run, state, started)
                return state
            probed = Probed(started, key, components, probe)
    finally:
        reset_current(token)
    return drive(task_steps(task, run, args, kwargs, probed))


def _name_run(task: TaskLike, run: TaskRun, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
    """Give `run` the name its ``task_run_name`` makes of the call's parameters."""
    assert task.options.task_run_name is not None
    run.parameters = task.bind(args, kwargs)
    run.name = render_run_name(
        task.options.task_run_name, run.parameters, "task_run_name", f"Task {task.name!r}"
    )


def task_steps(
    task: TaskLike,
    run: TaskRun,
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    probed: Probed | BaseException | None = None,
) -> Engine:
    """The state machine of one run, sync or async: resolve inputs, name the run, look up
    the cache, attempt and retry, persist, call hooks. Yields the effects it needs.

    `probed`: what `run_cached` found (the key, its miss) or the error making the key raised.
    """
    options = task.options
    if run.log_prints:
        install_print_capture()
    recorder = _history.active
    if isinstance(probed, Probed) and recorder is not None:
        started = probed.started
    else:
        started = _time() if recorder is not None else 0.0
    token = set_current(run)
    try:
        try:
            if run.wait_for or has_futures(args, kwargs):
                ready = yield from _inputs(task, run, args, kwargs)
            else:
                ready = args, kwargs
            if isinstance(ready, State):  # an upstream did not complete: NotReady, no hooks
                run.state, ready.run = ready, run
                run_logger(run).error("Finished in state NotReady: %s", ready.message)
                if recorder is not None:
                    _record(recorder, run, ready, started)
                return ready
            args, kwargs = ready
            if options.task_run_name is not None:
                _name_run(task, run, args, kwargs)
            if options.on_running:
                yield from run_hooks(options.on_running, task, run, Running())
            earlier = _earlier_attempt(task, run, args, kwargs)
            if earlier is not None:
                state = earlier
            elif options.transactional or CURRENT.get() is not None:
                state = yield from _in_transaction(task, run, args, kwargs)
                _keep_result(task, run, state)
            else:
                state = yield from _execute(task, run, args, kwargs, probed=probed)
                _keep_result(task, run, state)
        except BaseException as exc:
            if not isinstance(exc, Exception):
                run.state = Crashed(exc)
                run.state.run = run
                if recorder is not None:
                    _record(recorder, run, run.state, started)
                raise
            state = Failed(exc)
        run.state = state
        state.run = run
        if state.is_failed():
            log_failure(run_logger(run), state, options.retries, run.run_count)
            yield from run_hooks(options.on_failure, task, run, state)
        elif options.on_completion and state.is_completed():
            yield from run_hooks(options.on_completion, task, run, state)
        if recorder is not None:
            _record(recorder, run, state, started)
        return state
    finally:
        reset_current(token)


def _inputs(
    task: TaskLike, run: TaskRun, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> Generator[Step, Any, tuple[tuple[Any, ...], dict[str, Any]] | State]:
    """The arguments with futures, states and annotations resolved, after `run.wait_for` is
    done; or a ``NotReady`` state if an upstream did not complete (as in Prefect 3)."""
    try:
        if run.wait_for:
            yield Resolve(run.wait_for)
        if has_futures(args, kwargs):
            args, kwargs = yield Resolve(args, kwargs)
    except UpstreamFailed as exc:
        return NotReady(_upstream_failed(task, exc))
    return args, kwargs


def _earlier_attempt(
    task: TaskLike, run: TaskRun, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> State | None:
    """The state of this call in an earlier attempt of a retried flow run, to reuse.

    As in Prefect 3, where the default cache policy keys on the flow run and the inputs: a
    task whose results persist, called at the same place (its n-th call in the flow body)
    with equal arguments, is not run again when the flow retries.
    """
    flow_run = run.flow_run
    if run.reuse_key is None or flow_run is None:
        return None
    persist = task.options.persist
    if persist is None:
        persist = bool(flow_run.persist_result)
    if not persist:
        run.reuse_key = None
        return None
    if run.parameters is None:
        run.parameters = task.bind(args, kwargs)
    earlier = flow_run.earlier_state(run.reuse_key, run.parameters)
    if earlier is None:
        return None
    run_logger(run).info("Reusing the result of an earlier attempt of flow run %r", flow_run.name)
    state = Cached(earlier.data, message="Completed in an earlier attempt of the flow run")
    state.ref = earlier.ref
    return state


def _keep_result(task: TaskLike, run: TaskRun, state: State) -> None:
    """Drop a persisted result from memory if asked to; remember it for flow retries."""
    if state.ref is not None and state.is_completed() and not task.options.cache_result_in_memory:
        state.data = None  # `state.result()` reads it back from the store
    else:
        state.ref = None  # kept in memory: never read back
    if run.reuse_key is not None and run.flow_run is not None and state.is_completed():
        run.flow_run.remember_state(run.reuse_key, run.parameters, state)


def _in_transaction(
    task: TaskLike, run: TaskRun, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> Engine:
    """The run as a transaction nested in the open one (or its own, for a task with commit or
    rollback hooks): its result is staged, and written when the transaction commits; a
    failure rolls the enclosing transaction back (see `engine._transactions`)."""
    txn = Transaction(logger=run_logger(run), write_on_commit=True)
    txn.open()
    try:
        state = yield from _execute(task, run, args, kwargs, txn)
    except BaseException:
        try:
            txn.end(failed=True)
        finally:
            txn.detach()
        raise
    failed = not state.is_completed()
    if not failed:
        options = task.options
        txn.stage(
            txn.staged_value,
            on_rollback_hooks=list(options.on_rollback),
            on_commit_hooks=list(options.on_commit),
        )
    try:
        yield Blocking(txn.end, failed)
    finally:
        txn.detach()
    return state


def _execute(
    task: TaskLike,
    run: TaskRun,
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    txn: Transaction | None = None,
    probed: Probed | BaseException | None = None,
) -> Engine:
    if isinstance(probed, BaseException):
        raise probed  # making the key failed in `run_cached`: fail the run as it would here
    flow_run = run.flow_run
    options = task.options
    call = Call(task.fn, args, kwargs, options.timeout_seconds, lambda: f"Task run {run.name!r}")
    persist = options.persist
    if persist is None:  # as the flow run says; outside a flow, BLOCKS_RESULTS_PERSIST_BY_DEFAULT
        persist = (
            bool(flow_run.persist_result)
            if flow_run is not None
            else runtime_defaults().persist_by_default
        )
    if not persist:
        return (yield from attempts(run, lambda: _plain(call), options))
    storage, serializer = _where(task, run)
    if probed is not None:
        key, components, probe = probed.key, probed.components, probed.probe
    else:
        key, components = _cache_key(task, run, args, kwargs, (storage, serializer))
        probe = None
    flow = flow_run.flow.name if flow_run is not None else None
    if txn is not None:
        return (yield from _transacted(task, run, call, txn, storage, serializer, key, components))
    if key is not None and not options.refresh_cache:
        # The common case of a cached task, a hit: one blocking step, no attempt machinery.
        if probe is None:
            probe = yield Blocking(_probe, storage, serializer, key)
        store, hit, missed = probe
        if hit is not None:
            run.run_count += 1
            return _stored(Cached(hit.value), store, key, hit.header.expires)
    else:
        store, missed = (yield Blocking(persistence.result_store, storage, serializer)), False
    if key is None:
        key = f"{task.cache_key_prefix}-{uuid.uuid4().hex}"  # persisted, never looked up
        new_key = key
        return (
            yield from attempts(
                run, lambda: _persisted(task, call, store, new_key, None, flow), options
            )
        )
    cache_key = key
    return (
        yield from attempts(
            run,
            lambda: _cached(task, run, call, store, cache_key, components, flow, missed),
            options,
        )
    )


def _where(task: TaskLike, run: TaskRun) -> tuple[Any, Any]:
    """The run's result storage and serializer: the task's, else its flow run's."""
    options, flow_run = task.options, run.flow_run
    storage, serializer = options.result_storage, options.result_serializer
    if flow_run is not None:
        storage = storage if storage is not None else flow_run.result_storage
        serializer = serializer if serializer is not None else flow_run.result_serializer
    return storage, serializer


def _cache_key(
    task: TaskLike,
    run: TaskRun,
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    where: tuple[Any, Any],
    keys: ResultsKeys | None = None,
) -> tuple[str | None, dict[str, str]]:
    """The key of a persisted run (its ``result_storage_key``, else its cache policy's; None:
    neither) and the policy's components (for explaining a miss); sets `run.parameters`.
    `where`: the run's storage and serializer (`_where`); `keys`: the results keys known
    under the current settings (`known_results_keys`), if the caller holds them."""
    options, flow_run = task.options, run.flow_run
    if options.result_storage_key is not None:
        from blocks.results import render_storage_key

        run.parameters = params = task.bind(args, kwargs)
        key = render_storage_key(
            options.result_storage_key,
            parameters=params,
            task_run=run,
            flow_run=flow_run,
            task=task,
        )
        return key, {}
    policy = options.policy
    if policy is None:
        return None, {}
    given = task.plain_defaults  # plain arguments bind alike: their key is kept as given
    if given:
        recalled = recall_call(policy, task, args, kwargs, keys)
        if recalled is not None:
            run.parameters = recalled[2]
            return recalled[0], recalled[1]
    run.parameters = params = task.bind(args, kwargs)
    flow_parameters = flow_run.parameters if flow_run is not None else {}
    # A key made now (a fresh home) is checked against this task's storage first.
    made = new_key_storage.set(lambda: persistence.result_store(*where).storage)
    try:
        resolved = policy.resolve(run, params, flow_parameters or {})
    finally:
        new_key_storage.reset(made)
    if given:
        remember_call(policy, task, args, kwargs, params)
    return resolved


def _transacted(
    task: TaskLike,
    run: TaskRun,
    call: Call,
    txn: Transaction,
    storage: Any,
    serializer: Any,
    key: str | None,
    components: dict[str, str],
) -> Engine:
    """`_execute` inside a transaction: begin it on the key (its lock under SERIALIZABLE, then
    its record: found, the run is Cached and the transaction committed), then attempt and stage
    the value instead of writing it."""
    options = task.options
    store: ResultStore = yield Blocking(persistence.result_store, storage, serializer)
    looked_up = key is not None
    if key is None:
        key = f"{task.cache_key_prefix}-{uuid.uuid4().hex}"  # persisted, never looked up
    txn.key, txn.store, txn.overwrite = key, store, options.refresh_cache
    if looked_up and txn.needs_lock():
        txn.hold((yield Lock(store, key)))
    if looked_up and not options.refresh_cache:
        hit = yield Blocking(store.read, key)
        if hit is not None:
            txn.state = TransactionState.COMMITTED
            run.run_count += 1
            return _stored(Cached(hit.value), store, key, hit.header.expires)
    flow_run = run.flow_run
    flow = flow_run.flow.name if flow_run is not None else None
    staged_key = key
    return (
        yield from attempts(
            run,
            lambda: _persisted(task, call, store, staged_key, components or None, flow, txn),
            options,
        )
    )


def _probe(
    storage: Any, serializer: Any, key: str, keys: ResultsKeys | None = None
) -> tuple[ResultStore, Hit | None, bool]:
    """The store, the record under `key` if any, and whether the read found none; `keys`:
    the results keys known under the current settings, if the caller holds them.

    A read that fails (storage down) is neither: the first attempt reads again and fails or
    retries as it always did; a failing store resolution fails the run here, as before.
    """
    store = persistence.result_store(storage, serializer)
    try:
        hit = store.read(key) if keys is None else store.read_with(key, keys)
    except Exception:
        return store, None, False
    return store, hit, hit is None


def _returned(value: Any) -> State:
    """The state a returned value gives (see `return_value_to_state`); raises if it failed."""
    state = return_value_to_state(value)
    if state.is_failed():
        raise ReturnedFailure(state)
    return state


def _stored(state: State, store: ResultStore, key: str, expires: datetime | None) -> State:
    """`state`, knowing where its result is stored (read back if not kept in memory) and
    the key and expiration its `state_details` show."""
    state.ref = (store, key)
    state.cache = (key, expires)
    return state


def _plain(call: Call) -> Engine:
    value = yield call
    if isinstance(value, State) or is_state_iterable(value):
        return _returned(value)
    return Completed(value)


def _persisted(
    task: TaskLike,
    call: Call,
    store: ResultStore,
    key: str,
    components: dict[str, str] | None,
    flow: str | None,
    txn: Transaction | None = None,
) -> Engine:
    """Call, then write the value under `key`; inside a transaction, stage it instead (it is
    written when the transaction commits)."""
    value = yield call
    if isinstance(value, State) or is_state_iterable(value):
        return _returned(value)  # states are not persisted: they stay in memory
    if txn is not None:
        expiration = task.options.cache_expiration
        txn.stage(StagedRecord(value, expiration, task.name, components, flow))
        state = Completed(value)
        state.cache = (key, None)  # it expires counting from when it is written
        return state
    expires = yield Blocking(
        persistence.persist,
        store,
        key,
        value,
        task.options.cache_expiration,
        task.name,
        components,
        flow,
    )
    return _stored(Completed(value), store, key, expires)


def _cached(
    task: TaskLike,
    run: TaskRun,
    call: Call,
    store: ResultStore,
    key: str,
    components: dict[str, str],
    flow: str | None,
    missed: bool = False,
) -> Engine:
    """One attempt of a cached task: a hit, or compute once under the key's lock and store.

    `missed`: `_probe` just read the key and found no record (the first attempt need not
    read it again before taking the lock)."""
    refresh = task.options.refresh_cache
    if not refresh:
        if not (missed and run.run_count == 1):
            hit = yield Blocking(store.read, key)
            if hit is not None:
                return _stored(Cached(hit.value), store, key, hit.header.expires)
        if components and run.run_count == 1:
            yield Blocking(_log_miss, run, store, key, components)
    lock: persistence.KeyLock = yield Lock(store, key)
    try:
        if not refresh:
            hit = yield Blocking(store.read, key)  # computed by whoever held the lock before
            if hit is not None:
                return _stored(Cached(hit.value), store, key, hit.header.expires)
        return (yield from _persisted(task, call, store, key, components or None, flow))
    finally:
        lock.release()


def _log_miss(run: TaskRun, store: ResultStore, key: str, components: dict[str, str]) -> None:
    """Log why `run` missed (INFO, on the run's logger); never fails the run."""
    logger = run_logger(run)
    if not logger.isEnabledFor(logging.INFO):
        return  # nobody would read it: skip the listing and header reads
    try:
        line = explain_miss(store, key, run.task.name, run.task.cache_key_prefix, components)
    except Exception:
        _caching_logger.debug("could not explain a cache miss of %r", key, exc_info=True)
        return
    if line is not None:
        logger.info(line)


def _upstream_failed(task: TaskLike, exc: Exception) -> UpstreamFailed:
    failed = UpstreamFailed(f"Task {task.name!r} did not run: {exc}")
    failed.__cause__ = exc
    return failed
