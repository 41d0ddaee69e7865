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
import importlib
import importlib.util
import logging
import multiprocessing
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import cloudpickle

from blocks.errors import ConfigurationError, MissingDependency, RemoteTaskError
from blocks.runtime import _history
from blocks.runtime._annotations import BaseAnnotation, quote
from blocks.runtime._context import FlowRun, TaskRun
from blocks.runtime._futures import TaskFuture, TaskFutureList
from blocks.runtime._logging import log_failure, run_logger
from blocks.runtime._options import TaskLike
from blocks.runtime._states import Crashed, Failed, State
from blocks.runtime.runners._base import TaskRunner
from blocks.runtime.runners._dask_worker import Outcome, Upstream, run_on_worker

if TYPE_CHECKING:
    import distributed

__all__ = ["DaskTaskRunner", "RemoteTaskError"]

DASK_EXTRA = "pip install 'blocks[dask]'"
_MAIN_GUARD = (
    "Dask's worker processes import your main module: a script must call its flow under "
    '`if __name__ == "__main__":`.'
)


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
            raise ConfigurationError(
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

    def __eq__(self, other: object) -> bool:
        """Equal when the settings are (as Prefect's): two copies of one template compare
        equal, whatever client or cluster each has started."""
        if not isinstance(other, DaskTaskRunner):
            return NotImplemented
        return self._settings() == other._settings()

    __hash__ = None  # type: ignore[assignment]  # equal by mutable settings, as Prefect's

    def _settings(self) -> tuple[Any, ...]:
        return (
            type(self),
            self.address,
            self.cluster_class,
            self.cluster_kwargs,
            self.client_kwargs,
            self.adapt_kwargs,
        )

    def __reduce__(self) -> tuple[Any, ...]:
        # A Flow or Task holding this runner may be pickled: send the settings, never a client.
        settings = (
            self.address,
            self.cluster_class,
            self.cluster_kwargs,
            self.client_kwargs,
            self.adapt_kwargs,
        )
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
                    bridge.settle(
                        Crashed(message="Cancelled: the flow run ended before this task finished.")
                    )
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
        """Refused: an arbitrary callable cannot be sent to Dask (tasks go via `submit_task`)."""
        raise TypeError(
            f"DaskTaskRunner runs tasks submitted with task.submit()/.map(), not {fn!r}: "
            "an arbitrary callable cannot be sent to a Dask worker."
        )

    def submit_task(
        self,
        task: TaskLike,
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
            log_failure(run_logger(run), state, task.options.retries, 1)
            recorder = _history.active
            if recorder is not None:
                recorder.task_run(run, state, time.time())
            bridge.set_result(state)
            return bridge
        key = f"{task.name}-{uuid.uuid4().hex}"
        bridge.dask_future = client.submit(run_on_worker, spec, *upstream, key=key, pure=False)
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
        self, task: TaskLike, run: TaskRun, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> bytes:
        """The pickled run for the worker: task, arguments, run names and the flow run's picture."""
        picture = self._picture(run.flow_run)
        where = (socket.gethostname(), os.getpid())
        try:
            spec: bytes = cloudpickle.dumps(
                (task, args, kwargs, run.name, run.id, run.log_prints, picture, where)
            )
            return spec
        except Exception as exc:
            if picture is not None and picture["parameters"]:
                with contextlib.suppress(Exception):  # the flow's parameters stay home
                    picture = {**picture, "parameters": {}}
                    spec = cloudpickle.dumps(
                        (task, args, kwargs, run.name, run.id, run.log_prints, picture, where)
                    )
                    return spec
            what = "its arguments"
            try:
                cloudpickle.dumps(task)
            except Exception:
                what = "the task (its function, options or hooks)"
            raise _Unpicklable(
                TypeError(
                    f"Task {task.name!r} cannot be sent to the Dask workers: {what} cannot be "
                    f"pickled ({type(exc).__name__}: {exc}). Pass picklable values, or run it with "
                    "ConcurrentTaskRunner."
                )
            ) from exc

    def _picture(self, flow_run: FlowRun | None) -> dict[str, Any] | None:
        """What a task on a worker may ask of its flow run; made once per flow run attempt."""
        if flow_run is None:
            return None
        cached = self._flow_picture
        if cached is not None and cached[0] == id(flow_run) and cached[1] == flow_run.run_count:
            return cached[2]
        picture = flow_run.snapshot()
        self._flow_picture = (id(flow_run), flow_run.run_count, picture)
        return picture

    def _collect(self, bridge: _Bridge, run: TaskRun) -> None:
        """Fetch a finished run's outcome into the flow process: replay its logs, set its state."""
        if bridge.done():  # cancelled by a shutdown that did not wait
            return
        started, recorded = time.time(), False
        try:
            outcome: Outcome = bridge.dask_future.result()
            started, recorded = outcome.started, outcome.recorded
            state = outcome.state
            if outcome.records:
                run_logger(run)  # sets up this process's run loggers if nothing did yet
                for record in outcome.records:
                    logging.getLogger(record.name).handle(record)
            run.run_count = outcome.run_count
            if outcome.name is not None:
                run.name = outcome.name  # a task_run_name template is rendered on the worker
        except TypeError as exc:  # Dask could not pickle the result on the worker
            error = TypeError(
                f"Task {run.task.name!r} ran on a Dask worker but its result cannot be sent "
                f"back: {exc}. Return a picklable value."
            )
            state = Failed(error)
            log_failure(run_logger(run), state, run.task.options.retries, max(run.run_count, 1))
        except Exception as exc:  # a lost worker (KilledWorker), a cancelled key
            state = Crashed(exc)
            log_failure(run_logger(run), state, run.task.options.retries, max(run.run_count, 1))
        run.state = state
        recorder = _history.active  # a deployment's run: the run's history lists it
        if recorder is not None and not recorded:
            recorder.task_run(run, state, started)
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


def _swap_futures(value: Any, upstream: list[distributed.Future[Any]], depth: int = 0) -> Any:
    """`value` with each of our futures replaced by an `Upstream` mark (as deep as resolution
    looks); other futures are waited for here and replaced by their states."""
    if isinstance(value, TaskFuture):
        bridge = getattr(value, "_future", None)
        if isinstance(bridge, _Bridge):
            upstream.append(bridge.dask_future)
            return Upstream(len(upstream) - 1)
        value.wait()
        return value.state
    if isinstance(value, BaseAnnotation):  # allow_failure(future) etc.: swap inside, keep it
        return (
            value
            if isinstance(value, quote)
            else value.rewrap(_swap_futures(value[0], upstream, depth))
        )
    if depth >= 3:
        return value
    kind = list if isinstance(value, TaskFutureList) else type(value)  # .map()'s list
    if kind in (list, tuple, set, frozenset):
        return kind(_swap_futures(v, upstream, depth + 1) for v in value)
    if kind is dict:
        return {k: _swap_futures(v, upstream, depth + 1) for k, v in value.items()}
    return value
