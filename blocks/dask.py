"""`DaskTaskRunner`: run a flow's submitted tasks on a Dask cluster, a temporary one or yours.

Without an `address`, the first ``.submit()`` of a flow run starts a `distributed.LocalCluster`
(worker *processes*, by Dask's defaults) and the end of the flow run closes it. With
``address="tcp://scheduler:8786"`` the runner connects a client to your cluster and only closes
that client.

What travels to the workers (cloudpickle): the `Task` (function and options), its arguments and a
small picture of the flow run (name, id, parameters, result defaults). On the worker the usual
engine runs: retries, timeouts, cache look-up, persisting the result, hooks, and the run logger
— its records are sent back and logged in the flow process. What comes back is the final `State`:
its value, or its exception (a `RemoteTaskError` standing in for one that cannot be pickled).
Futures passed to other tasks stay on the cluster: Dask hands the upstream result to the
downstream worker.

Example:
    >>> from blocks import flow, task
    >>> from blocks.task_runners import DaskTaskRunner
    >>> @task
    ... def square(x: int) -> int:
    ...     return x * x
    >>> @flow(task_runner=DaskTaskRunner(cluster_kwargs={"n_workers": 4}))
    ... def squares(n: int) -> list[int]:
    ...     return [f.result() for f in square.map(range(n))]
    >>> if __name__ == "__main__":   # worker processes re-import the main module
    ...     squares(10)
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import contextvars
import importlib
import importlib.util
import logging
import multiprocessing
import os
import pickle
import socket
import threading
import traceback
import uuid
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, cast

import cloudpickle

from blocks import futures as _futures
from blocks.context import FlowRun, TaskRun
from blocks.errors import BlocksError, MissingDependency
from blocks.futures import TaskFuture
from blocks.logging import FLOW_LOGGER, OUTSIDE_LOGGER, TASK_LOGGER, log_failure, run_logger
from blocks.states import Crashed, Failed, State
from blocks.task_runners import SequentialTaskRunner, TaskRunner
from blocks.tasks import Task

if TYPE_CHECKING:
    import distributed

__all__ = ["DaskTaskRunner", "RemoteTaskError"]

DASK_EXTRA = "pip install 'blocks[dask]'"
_MAIN_GUARD = (
    "Dask's worker processes import your main module: a script must call its flow under "
    "`if __name__ == \"__main__\":`."
)


class RemoteTaskError(BlocksError):
    """Stands in for an exception raised on a Dask worker that could not be sent back."""


class DaskTaskRunner(TaskRunner):
    """Runs submitted tasks on Dask: a temporary `LocalCluster`, or the cluster at `address`.

    `cluster_class` (a class, or its import path such as ``"dask_jobqueue.SLURMCluster"``;
    default `distributed.LocalCluster`) is built with `cluster_kwargs` when no `address` is
    given, and scaled with ``cluster.adapt(**adapt_kwargs)`` if `adapt_kwargs` is set;
    `client_kwargs` go to `distributed.Client`. The cluster (or, with `address`, only the
    client) is closed when the flow run ends.

    Worker processes import your code: a script must start its flow under
    ``if __name__ == "__main__":``, and tasks, arguments and results must be picklable.
    With no shared settings, a worker resolves a result storage of None or a saved-block
    slug in its own environment: on a remote cluster pass a storage block (e.g. `S3`).

    Example:
        >>> @flow(task_runner=DaskTaskRunner(address="tcp://10.0.0.5:8786"))
        ... def nightly() -> None: ...
    """

    def __init__(
        self,
        address: str | None = None,
        cluster_class: str | Callable[..., Any] | None = None,
        cluster_kwargs: Mapping[str, Any] | None = None,
        client_kwargs: Mapping[str, Any] | None = None,
        adapt_kwargs: Mapping[str, Any] | None = None,
    ) -> None:
        if address is not None and (cluster_class or cluster_kwargs or adapt_kwargs):
            raise ValueError(
                "DaskTaskRunner: give either address= (an existing cluster) or "
                "cluster_class/cluster_kwargs/adapt_kwargs (a temporary one), not both."
            )
        if importlib.util.find_spec("distributed") is None:
            raise MissingDependency(f"DaskTaskRunner needs dask.distributed: {DASK_EXTRA}")
        self.address = address
        self.cluster_class = cluster_class
        self.cluster_kwargs = dict(cluster_kwargs or {})
        self.client_kwargs = dict(client_kwargs or {})
        self.adapt_kwargs = None if adapt_kwargs is None else dict(adapt_kwargs)
        self._lock = threading.Lock()
        self._client: distributed.Client | None = None
        self._cluster: Any = None  # only a cluster we started ourselves
        self._collector: concurrent.futures.ThreadPoolExecutor | None = None
        self._pending: set[_Bridge] = set()
        self._flow_picture: tuple[int, int, dict[str, Any]] | None = None

    def duplicate(self) -> DaskTaskRunner:
        return type(self)(
            address=self.address,
            cluster_class=self.cluster_class,
            cluster_kwargs=self.cluster_kwargs,
            client_kwargs=self.client_kwargs,
            adapt_kwargs=self.adapt_kwargs,
        )

    def __reduce__(self) -> tuple[Any, ...]:
        # A Flow or Task holding this runner may be pickled: send the settings, never a client.
        settings = (self.address, self.cluster_class, self.cluster_kwargs, self.client_kwargs,
                    self.adapt_kwargs)
        return (type(self), settings)

    @property
    def client(self) -> distributed.Client | None:
        """The Dask client of this flow run (None until its first ``.submit()``)."""
        return self._client

    @property
    def cluster(self) -> Any:
        """The cluster this runner started (None before the first submit or with `address`)."""
        return self._cluster

    # -- lifecycle -------------------------------------------------------------------------------

    def _start(self) -> distributed.Client:
        client = self._client
        if client is not None:
            return client
        with self._lock:
            if self._client is not None:
                return self._client
            import distributed

            if getattr(multiprocessing.current_process(), "_inheriting", False):
                raise RuntimeError(_MAIN_GUARD)  # a worker process importing the user's script
            if self.address is not None:
                try:
                    client = distributed.Client(  # type: ignore[no-untyped-call]
                        self.address, **self.client_kwargs
                    )
                except OSError as exc:
                    exc.add_note(f"DaskTaskRunner could not reach the scheduler {self.address!r}.")
                    raise
            else:
                cluster_class = self.cluster_class or distributed.LocalCluster
                if isinstance(cluster_class, str):
                    module, _, name = cluster_class.rpartition(".")
                    cluster_class = getattr(importlib.import_module(module), name)
                assert callable(cluster_class)
                try:
                    cluster = cluster_class(**self.cluster_kwargs)
                except RuntimeError as exc:  # "Nanny failed to start", most often this:
                    exc.add_note(f"DaskTaskRunner could not start {cluster_class!r}. {_MAIN_GUARD}")
                    raise
                try:
                    if self.adapt_kwargs is not None:
                        cluster.adapt(**self.adapt_kwargs)
                    client = distributed.Client(  # type: ignore[no-untyped-call]
                        cluster, **self.client_kwargs
                    )
                except BaseException:
                    cluster.close()
                    raise
                self._cluster = cluster
            self._collector = concurrent.futures.ThreadPoolExecutor(
                max_workers=4, thread_name_prefix="blocks-dask-results"
            )
            self._client = client
            return client

    def shutdown(self, wait: bool = True) -> None:
        """Close the client, and the cluster if this runner started it.

        With `wait`, every submitted task finishes first (its state reaches its future); without,
        unfinished tasks are cancelled and their futures end Crashed.
        """
        with self._lock:
            client, self._client = self._client, None
            cluster, self._cluster = self._cluster, None
            collector, self._collector = self._collector, None
            pending, self._pending = list(self._pending), set()
            self._flow_picture = None
        if client is None:
            return
        try:
            if wait:
                concurrent.futures.wait(pending)
            else:
                for bridge in pending:  # settled first, so the cancellation is not reported
                    bridge.settle(Crashed(
                        message="Cancelled: the flow run ended before this task finished."
                    ))
                client.cancel(  # type: ignore[no-untyped-call]
                    [bridge.dask_future for bridge in pending]
                )
        finally:
            client.close()  # type: ignore[no-untyped-call]
            if cluster is not None:
                cluster.close()
            if collector is not None:
                collector.shutdown(wait=wait)

    # -- submitting ------------------------------------------------------------------------------

    def submit(self, fn: Callable[[], State]) -> concurrent.futures.Future[State]:
        """Run the job ``Task.submit()`` made; other callables cannot be sent to Dask."""
        task, run, args, kwargs, waits = _unpack_task_job(fn)
        return self.submit_task(task, run, args, kwargs, waits)

    def submit_task(
        self,
        task: Task[Any, Any],
        run: TaskRun,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        wait_for: Sequence[TaskFuture[Any]] = (),
    ) -> concurrent.futures.Future[State]:
        """Send one run of `task` to the cluster; its future gets the final state back."""
        client = self._start()
        upstream: list[distributed.Future[Any]] = []
        args = _swap_futures(args, upstream)
        kwargs = _swap_futures(kwargs, upstream)
        for future in wait_for:  # ordering only: the worker ignores these
            bridge = getattr(future, "_future", None)
            if isinstance(bridge, _Bridge):
                upstream.append(bridge.dask_future)
            else:
                future.wait()
        bridge = _Bridge()
        bridge.set_running_or_notify_cancel()
        try:
            spec = self._spec(task, run, args, kwargs)
        except _Unpicklable as exc:
            state = Failed(exc.error)
            run.state = state
            log_failure(run_logger(run), state, task.retries, 1)
            bridge.set_result(state)
            return bridge
        key = f"{task.name}-{uuid.uuid4().hex}"
        bridge.dask_future = client.submit(_run_on_worker, spec, *upstream, key=key, pure=False)
        with self._lock:
            collector = self._collector
            self._pending.add(bridge)
        assert collector is not None

        def collect(dask_future: distributed.Future[Any]) -> None:
            with contextlib.suppress(RuntimeError):  # shut down without waiting: settled already
                collector.submit(self._collect, bridge, run)

        bridge.dask_future.add_done_callback(collect)  # type: ignore[no-untyped-call]
        return bridge

    def _spec(
        self, task: Task[Any, Any], run: TaskRun, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> bytes:
        """The pickled run for the worker: task, arguments, run names and the flow run's picture."""
        picture = self._picture(run.flow_run)
        where = (socket.gethostname(), os.getpid())
        try:
            spec: bytes = cloudpickle.dumps((task, args, kwargs, run.name, run.id,
                                             run.log_prints, picture, where))
            return spec
        except Exception as exc:
            if picture is not None and picture["parameters"]:
                with contextlib.suppress(Exception):  # the flow's parameters stay home
                    picture = {**picture, "parameters": {}}
                    spec = cloudpickle.dumps((task, args, kwargs, run.name, run.id,
                                              run.log_prints, picture, where))
                    return spec
            what = "its arguments"
            try:
                cloudpickle.dumps(task)
            except Exception:
                what = "the task (its function, options or hooks)"
            raise _Unpicklable(TypeError(
                f"Task {task.name!r} cannot be sent to the Dask workers: {what} cannot be "
                f"pickled ({type(exc).__name__}: {exc}). Pass picklable values, or run it with "
                "ConcurrentTaskRunner."
            )) from exc

    def _picture(self, flow_run: FlowRun | None) -> dict[str, Any] | None:
        """What a task on a worker may ask of its flow run; made once per flow run attempt."""
        if flow_run is None:
            return None
        cached = self._flow_picture
        if cached is not None and cached[0] == id(flow_run) and cached[1] == flow_run.run_count:
            return cached[2]
        picture = {
            "name": flow_run.name,
            "id": flow_run.id,
            "flow_name": flow_run.flow.name,
            "flow_version": flow_run.flow.version,
            "parameters": flow_run.parameters,
            "run_count": flow_run.run_count,
            "persist_result": flow_run.persist_result,
            "result_storage": flow_run.result_storage,
            "result_serializer": flow_run.result_serializer,
            "log_prints": flow_run.log_prints,
        }
        self._flow_picture = (id(flow_run), flow_run.run_count, picture)
        return picture

    def _collect(self, bridge: _Bridge, run: TaskRun) -> None:
        """Fetch a finished run's outcome into the flow process: replay its logs, set its state."""
        if bridge.done():  # cancelled by a shutdown that did not wait
            return
        try:
            outcome: _Outcome = bridge.dask_future.result()
            state = outcome.state
            if outcome.records:
                run_logger(run)  # sets up this process's run loggers if nothing did yet
                for record in outcome.records:
                    logging.getLogger(record.name).handle(record)
            run.run_count = outcome.run_count
            if outcome.name is not None:
                run._name = outcome.name  # a task_run_name template is rendered on the worker
        except TypeError as exc:  # Dask could not pickle the result on the worker
            error = TypeError(
                f"Task {run.task.name!r} ran on a Dask worker but its result cannot be sent "
                f"back: {exc}. Return a picklable value."
            )
            state = Failed(error)
            log_failure(run_logger(run), state, run.task.retries, max(run.run_count, 1))
        except Exception as exc:  # a lost worker (KilledWorker), a cancelled key
            state = Crashed(exc)
            log_failure(run_logger(run), state, run.task.retries, max(run.run_count, 1))
        run.state = state
        bridge.settle(state)
        with self._lock:
            self._pending.discard(bridge)

    def __repr__(self) -> str:
        if self.address is not None:
            return f"{type(self).__name__}(address={self.address!r})"
        return f"{type(self).__name__}(cluster_kwargs={self.cluster_kwargs!r})"


class _Bridge(concurrent.futures.Future[State]):
    """The future `TaskFuture` wraps: settled from the Dask future of the same run."""

    dask_future: distributed.Future[Any]

    def settle(self, state: State) -> None:
        with contextlib.suppress(concurrent.futures.InvalidStateError):
            self.set_result(state)


class _Unpicklable(Exception):
    def __init__(self, error: TypeError) -> None:
        super().__init__(str(error))
        self.error = error


class _Upstream:
    """Marks where the state of the `index`-th upstream Dask future goes in the arguments."""

    __slots__ = ("index",)

    def __init__(self, index: int) -> None:
        self.index = index


def _swap_futures(value: Any, upstream: list[distributed.Future[Any]], depth: int = 0) -> Any:
    """`value` with each of our futures replaced by an `_Upstream` mark (as deep as resolution
    looks); other futures are waited for here and replaced by their states."""
    if isinstance(value, TaskFuture):
        bridge = getattr(value, "_future", None)
        if isinstance(bridge, _Bridge):
            upstream.append(bridge.dask_future)
            return _Upstream(len(upstream) - 1)
        value.wait()
        return value.state
    if depth >= 3:
        return value
    kind = type(value)
    if kind in (list, tuple, set, frozenset):
        return kind(_swap_futures(v, upstream, depth + 1) for v in value)
    if kind is dict:
        return {k: _swap_futures(v, upstream, depth + 1) for k, v in value.items()}
    return value


def _unpack_task_job(fn: Callable[[], State]) -> tuple[
    Task[Any, Any], TaskRun, tuple[Any, ...], dict[str, Any], list[TaskFuture[Any]]
]:
    """The task, run, arguments and wait_for of the closure ``Task.submit()`` hands a runner.

    Until ``Task.submit`` calls `TaskRunner.submit_task` itself, this is how a runner that
    cannot run the closure in place (it holds the flow run) learns what to send.
    """
    code = getattr(fn, "__code__", None)
    cells = getattr(fn, "__closure__", None) or ()
    if code is not None and len(code.co_freevars) == len(cells):
        names = {name: cell.cell_contents for name, cell in zip(code.co_freevars, cells,
                                                                  strict=True)}
        task, run = names.get("self"), names.get("run")
        args, kwargs = names.get("args"), names.get("kwargs")
        if (isinstance(task, Task) and isinstance(run, TaskRun) and isinstance(args, tuple)
                and isinstance(kwargs, dict)):
            return task, run, args, kwargs, list(names.get("waits") or ())
    raise TypeError(
        f"DaskTaskRunner runs tasks submitted with task.submit()/.map(), not {fn!r}: "
        "an arbitrary callable cannot be sent to a Dask worker."
    )


# -- on the worker -------------------------------------------------------------------------------


class _Outcome:
    """What a worker sends back: the final state, the run's log records, its attempt count."""

    __slots__ = ("name", "records", "run_count", "state")

    def __init__(self, state: State, records: list[logging.LogRecord], run_count: int,
                 name: str | None) -> None:
        self.state = state
        self.records = records
        self.run_count = run_count
        self.name = name


class _FlowInfo:
    """Stands in for the `Flow` on a worker: its name and version."""

    __slots__ = ("name", "version")

    def __init__(self, name: str, version: str | None) -> None:
        self.name = name
        self.version = version

    def __repr__(self) -> str:
        return f"Flow(name={self.name!r})"


class _WorkerFlowRun(FlowRun):
    """The flow run as a task on a worker sees it. Tasks it submits run inline."""

    __slots__ = ()

    def __init__(self, picture: dict[str, Any]) -> None:  # no Flow object here: no super()
        self.flow = cast(Any, _FlowInfo(picture["flow_name"], picture["flow_version"]))
        self.name = picture["name"]
        self._id = picture["id"]
        self.parameters = picture["parameters"]
        self.run_count = picture["run_count"]
        self.persist_result = picture["persist_result"]
        self.result_storage = picture["result_storage"]
        self.result_serializer = picture["result_serializer"]
        self.log_prints = picture["log_prints"]
        self.parent = None
        self.state = None
        self.task_runner = SequentialTaskRunner()
        self._logger = None


_capture: contextvars.ContextVar[list[logging.LogRecord] | None] = contextvars.ContextVar(
    "blocks_dask_capture", default=None
)
_capture_installed = False
_capture_guard = threading.Lock()
_STANDARD_RECORD_FIELDS = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None)))


class _CaptureFilter(logging.Filter):
    """Takes the run loggers' records of a task running here, to be sent back with its state."""

    def filter(self, record: logging.LogRecord) -> bool:
        records = _capture.get()
        if records is None:
            return True
        records.append(_portable_record(record))
        return False  # logged in the flow process instead


def _install_capture() -> None:
    global _capture_installed
    with _capture_guard:
        if not _capture_installed:
            for name in (FLOW_LOGGER, TASK_LOGGER, OUTSIDE_LOGGER):
                logging.getLogger(name).addFilter(_CaptureFilter())
            _capture_installed = True


def _portable_record(record: logging.LogRecord) -> logging.LogRecord:
    """A picklable copy: message formatted, traceback as text, odd extras as their repr."""
    fields = dict(vars(record))
    fields["msg"] = record.getMessage()
    fields["args"] = None
    if record.exc_info:
        fields["exc_text"] = record.exc_text or logging.Formatter().formatException(
            record.exc_info
        )
    fields["exc_info"] = None
    for name, value in fields.items():
        if name not in _STANDARD_RECORD_FIELDS and not isinstance(
            value, str | int | float | bool | type(None)
        ):
            fields[name] = repr(value)
    return logging.makeLogRecord(fields)


def _run_on_worker(spec: bytes, *upstream: _Outcome) -> _Outcome:
    """Run one task with the ordinary engine on this worker; never raises."""
    _install_capture()
    records: list[logging.LogRecord] = []
    token = _capture.set(records)
    run: TaskRun | None = None
    try:
        task, args, kwargs, name, run_id, log_prints, picture, where = cloudpickle.loads(spec)
        args = _fill(args, upstream)
        kwargs = _fill(kwargs, upstream)
        # States among the arguments are resolved (or fail the run as upstream failures) only
        # when this process knows futures exist; a worker never made one itself.
        _futures._futures_exist = True
        flow_run = None if picture is None else _WorkerFlowRun(picture)
        run = TaskRun(task, flow_run, flow_run, log_prints)
        run._name, run._id = name, run_id
        try:
            state = task._run(run, args, kwargs)
        except BaseException as exc:  # KeyboardInterrupt, SystemExit: the engine re-raises
            state = Crashed(exc)
        if state.exception is not None and (socket.gethostname(), os.getpid()) != tuple(where):
            state.exception = _portable_exception(state.exception)
    except Exception as exc:  # the run could not even start here (unpickling, say)
        state = Failed(_portable_exception(exc))
    finally:
        _capture.reset(token)
    if run is None:
        return _Outcome(state, records, 0, None)
    return _Outcome(state, records, run.run_count, run.name)


def _fill(value: Any, upstream: Sequence[_Outcome], depth: int = 0) -> Any:
    """Put the upstream states back where `_swap_futures` left its marks."""
    if isinstance(value, _Upstream):
        return upstream[value.index].state
    if depth >= 3:
        return value
    kind = type(value)
    if kind in (list, tuple, set, frozenset):
        return kind(_fill(v, upstream, depth + 1) for v in value)
    if kind is dict:
        return {k: _fill(v, upstream, depth + 1) for k, v in value.items()}
    return value


def _portable_exception(exc: BaseException) -> BaseException:
    """`exc` with its worker-side traceback as a note, or a `RemoteTaskError` if unpicklable."""
    text = "".join(traceback.format_exception(exc)).rstrip()
    try:
        exc.add_note(f"Raised on Dask worker {_worker_name()}:\n{text}")
        pickle.loads(cloudpickle.dumps(exc))
        return exc
    except Exception:
        error = RemoteTaskError(
            f"{type(exc).__module__}.{type(exc).__qualname__}: {exc} (the exception could "
            "not be pickled; it was raised on a Dask worker)"
        )
        error.add_note(f"Raised on Dask worker {_worker_name()}:\n{text}")
        return error


def _worker_name() -> str:
    try:
        from distributed import get_worker

        return f"{get_worker().address} (pid {os.getpid()})"
    except (ImportError, ValueError):
        return f"{socket.gethostname()} (pid {os.getpid()})"
