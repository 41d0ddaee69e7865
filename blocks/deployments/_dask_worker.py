"""The `dask` worker: claims its pool's due runs like the process worker and submits each to the
pool's Dask cluster (the `distributed` client the Dask task runner uses), where `_dask_run`
starts the run's process on a Dask worker.

Claims, leases, heartbeats, the scheduler pass and recording are the process worker's; only
where a run's process lives changes. Differences, as the README says: a run's output reaches its
log when the run ends (not line by line), and a run whose Dask worker dies is Crashed only once
the cluster gives the task to another Dask worker (with none left, it waits for one).

Example:
    >>> worker_for("my-dask-pool", limit=8).run()
"""

from __future__ import annotations

import signal
import subprocess
import time
from collections.abc import Callable
from typing import Any

from blocks.deployments import _dask_run
from blocks.deployments._launch import EXIT_LOST
from blocks.deployments._store import FlowRun, RunStore
from blocks.deployments._worker import CANCEL_GRACE_SECONDS, Worker, _Active
from blocks.errors import ConfigurationError, MissingDependency, WorkPoolNotFound

__all__ = ["DaskRun", "DaskWorker", "worker_for"]

#: Seconds to reach the pool's Dask scheduler.
CONNECT_SECONDS = 30.0


def worker_for(pool: str, **options: Any) -> Worker:
    """The worker for `pool`'s type: `DaskWorker` for a dask pool, else the process `Worker`
    (a missing pool is created as a process pool)."""
    store = options.get("store") or RunStore.default()
    try:
        kind = store.get_pool(pool).type
    except WorkPoolNotFound:
        kind = "process"
    return (DaskWorker if kind == "dask" else Worker)(pool, **options)


class DaskRun:
    """A run submitted to the Dask cluster, driven like a local run process."""

    def __init__(self, client: Any, future: Any, name: str) -> None:
        self.client = client
        self.future = future
        self.name = name
        self.code: int | None = None
        self.sink: Callable[[str], None] = lambda line: None

    def poll(self) -> int | None:
        if self.code is not None:
            return self.code
        if not self.future.done():
            return None
        try:
            code, lines = self.future.result()
        except Exception as exc:  # the cluster lost it (KilledWorker, cancelled, gone)
            code, lines = EXIT_LOST, [f"its Dask task was lost: {type(exc).__name__}: {exc}"]
        for line in lines:
            self.sink(line)
        self.code = int(code)
        self._clear()
        return self.code

    def wait(self, timeout: float | None = None) -> int:
        deadline = None if timeout is None else time.monotonic() + timeout
        while (code := self.poll()) is None:
            if deadline is not None and time.monotonic() > deadline:
                raise subprocess.TimeoutExpired(self.name, timeout or 0.0)
            time.sleep(0.1)
        return code

    def signal_tree(self, sig: Any) -> None:
        """Ask the task to end the run's process tree: SIGTERM, then SIGKILL after the grace
        period; `signal.SIGKILL` kills it at once and lets go of the task (so a worker stopping
        never waits on a cluster that cannot run it)."""
        if self.code is not None:
            return
        try:
            _dask_run.event(f"{self.name}-cancel", self.client).set()
            if sig == signal.SIGKILL:
                _dask_run.event(f"{self.name}-kill", self.client).set()
        except Exception:  # the scheduler is gone: so is the task, with its process
            pass
        if sig == signal.SIGKILL:
            self.future.cancel()

    def _clear(self) -> None:
        for suffix in ("-started", "-cancel", "-kill"):
            try:
                _dask_run.event(f"{self.name}{suffix}", self.client).clear()
            except Exception:
                return


class DaskWorker(Worker):
    """Runs the due runs of one dask pool on the pool's Dask cluster."""

    spares = False

    def __init__(self, pool: str, **options: Any) -> None:
        super().__init__(pool, **options)
        self.client: Any = None
        self.address = ""

    def _open(self) -> None:
        pool = self.store.get_pool(self.pool)
        if pool.type != "dask" or not pool.address:
            raise ConfigurationError(
                f"Work pool {self.pool!r} is a {pool.type} pool, not a dask pool with an address."
            )
        try:
            from distributed import Client
        except ImportError:
            raise MissingDependency(
                "A dask work pool needs distributed: pip install 'blocks[dask]'"
            ) from None
        self.address = pool.address
        try:
            self.client = Client(pool.address, timeout=CONNECT_SECONDS, set_as_default=False)  # type: ignore[no-untyped-call]
        except (OSError, TimeoutError) as exc:
            raise ConfigurationError(
                f"Cannot reach the Dask scheduler of work pool {self.pool!r} at {pool.address}: "
                f"{exc}. Start it (dask scheduler) or fix the pool's address."
            ) from None

    def _close(self) -> None:
        if self.client is not None:
            self.client.close()

    def _begin(self, run: FlowRun, spec: dict[str, Any]) -> tuple[_Active, str]:
        name = f"blocks-run-{run.id}-{run.attempt}"
        spec = {
            **spec,
            "started_event": f"{name}-started",
            "cancel_event": f"{name}-cancel",
            "kill_event": f"{name}-kill",
            "grace_seconds": CANCEL_GRACE_SECONDS,
        }
        future = self.client.submit(_dask_run.run, spec, key=name, pure=False, retries=0)
        handle = DaskRun(self.client, future, name)
        active = _Active(run, handle)
        handle.sink = active.add_line
        return active, f"on the Dask cluster at {self.address}"
