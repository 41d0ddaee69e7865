"""What a dask pool's run does on the Dask worker the cluster gives it: start the run process
(`_launch`, as a process worker does) and watch it.

The run process works in the deployment's folder, in a session of its own, and dies with the Dask
worker process (its death signal). Its Dask task stops it (SIGTERM to its group, SIGKILL after
the grace period or when the run's kill `Event` is set) when the blocks worker asks (the run's
cancel `Event`), or when the task is no longer wanted: its future was cancelled, or the blocks
worker that submitted it disconnected (died), so a run never outlives its blocks worker here
either.

Distributed starts a task again on another Dask worker when the one running it dies. A run must
not start twice for one attempt: the first start sets the run's "started" `Event`, and a task
that finds it set returns at once with `EXIT_LOST`; the blocks worker then records Crashed and
the flow's retries make the next attempt.

Returns ``(exit code, output lines)``: the code as `subprocess` gives it (negative: the signal
that killed the process), the lines the run printed (at most `MAX_LOG_LINES`).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from typing import Any

from blocks.deployments import _process_groups
from blocks.deployments._launch import EXIT_LOST, WORKER_PID_ENV
from blocks.deployments._records import MAX_LOG_LINES

__all__ = ["event", "run"]

#: How often the task looks at its cancel event and at whether it is still wanted.
WATCH_SECONDS = 0.2
#: Task states in which the Dask worker no longer wants its result.
_UNWANTED = frozenset({"cancelled", "released", "forgotten"})


def run(spec: dict[str, Any]) -> tuple[int, list[str]]:
    """Run one flow run attempt on this Dask worker (see the module docstring)."""
    from distributed import get_worker

    worker = get_worker()
    key = worker.get_current_task()
    started = event(spec["started_event"])
    if started.is_set():
        return EXIT_LOST, [
            "its Dask worker was lost while the run was in progress; the cluster started it "
            f"again on {worker.address}, which did not run it a second time"
        ]
    started.set()
    cancel = event(spec["cancel_event"])
    if cancel.is_set():
        return -signal.SIGTERM, ["cancelled before it started"]
    launch_spec = {**spec, "worker_pid": os.getpid()}
    process = subprocess.Popen(
        [sys.executable, "-m", "blocks.deployments._launch"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        cwd=spec["path"],
        env={
            **{k: v for k, v in os.environ.items() if k != WORKER_PID_ENV},
            "PYTHONUNBUFFERED": "1",
        },
        start_new_session=True,
    )
    lines: list[str] = []
    reader = threading.Thread(target=_read, args=(process, lines), daemon=True)
    reader.start()
    assert process.stdin is not None
    process.stdin.write(json.dumps(launch_spec).encode())
    process.stdin.close()
    grace = float(spec.get("grace_seconds", 10.0))
    stop_at: float | None = None
    kill = event(spec["kill_event"])
    while not _process_groups.exited(process):  # left unreaped: its group id stays its own
        if stop_at is None:
            if cancel.wait(WATCH_SECONDS) or _unwanted(worker, key):
                _process_groups.signal_group(process, signal.SIGTERM)
                stop_at = time.monotonic() + grace
        elif kill.wait(WATCH_SECONDS) or time.monotonic() > stop_at:
            _process_groups.signal_group(process, signal.SIGKILL)
    code = _process_groups.reap(process)  # whatever it left behind in its group, then it
    reader.join(timeout=5)
    return code, lines


def event(name: str, client: Any = None) -> Any:
    """The cluster-wide `distributed.Event` called `name` (on this worker's client unless one
    is given)."""
    from distributed import Event

    return Event(name, client=client)  # type: ignore[no-untyped-call]


def _read(process: subprocess.Popen[bytes], lines: list[str]) -> None:
    assert process.stdout is not None
    dropped = 0
    for raw in process.stdout:
        if len(lines) < MAX_LOG_LINES:
            lines.append(raw.decode("utf-8", "replace").rstrip("\n"))
        else:
            dropped += 1
    if dropped:
        lines.append(f"{dropped} more line(s) of output were not kept")


def _unwanted(worker: Any, key: Any) -> bool:
    """Whether this task's result is no longer wanted (cancelled, or its client is gone)."""
    task = worker.state.tasks.get(key)
    return task is None or task.state in _UNWANTED
