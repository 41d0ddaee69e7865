"""The `process` worker: claims its pool's due runs and runs each in a subprocess.

One loop, on the main thread (the thread that starts run processes: Linux's PDEATHSIG fires
when the *thread* that forked the child ends): reap expired leases, make the next slots (a
scheduler pass every few seconds), claim while under the limit, start a run process per claim,
collect the ones that ended. A side thread renews the leases of the runs it holds every third
of the lease and reports runs it lost (reaped: stop the process) or that a user is cancelling.

A run's process is ``python -m blocks.deployments._launch``, started one run ahead and warmed up
(a spare: see `_launch`), working in the deployment's folder, in its own session (process group
= its pid), so cancel ends the whole tree: SIGTERM to the group, SIGKILL after
`CANCEL_GRACE_SECONDS`. It dies with its worker (see `_launch`). A worker
only runs entrypoints under the folders it serves (its working folder, or `paths`).

A pool type that runs its processes elsewhere (`_dask_worker`) overrides `_open`, `_begin` and
`_close` and hands back a `RunHandle` where this worker has a `subprocess.Popen`.

Example:
    >>> Worker("my-pool", limit=4).run()
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
import weakref
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import IO, Any, Protocol

from blocks import settings
from blocks.deployments import _launch, _process_groups
from blocks.deployments._scheduler import schedule_pass
from blocks.deployments._states import RunState
from blocks.deployments._store import FlowRun, RunStore, utcnow

__all__ = ["CANCEL_GRACE_SECONDS", "CANCEL_POLL_SECONDS", "Worker"]

CANCEL_GRACE_SECONDS = 10.0
#: Seconds between two looks for a cancel of the runs a worker holds.
CANCEL_POLL_SECONDS = 0.5
#: Seconds between two scheduler passes of a worker.
SCHEDULE_EVERY = 5.0
_LOG_FLUSH_LINES = 200


class RunHandle(Protocol):
    """A run started elsewhere than in a local process (a dask pool's run on its cluster),
    driven as a `subprocess.Popen` is: an exit code when it ended (negative: the signal that
    killed it), and a signal for its whole process tree."""

    def poll(self) -> int | None: ...

    def wait(self, timeout: float | None = None) -> int: ...

    def signal_tree(self, sig: signal.Signals) -> None: ...


@dataclass
class _Active:
    """A run this worker started: its process and the output not yet stored."""

    run: FlowRun
    process: subprocess.Popen[bytes] | RunHandle
    lines: list[tuple[datetime, str, str]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    cancel_at: float | None = None
    lost: bool = False
    reader: threading.Thread | None = None
    last_line: str = ""

    def add_line(self, text: str) -> None:
        """One line of the run's output, kept until the next flush."""
        with self.lock:
            self.lines.append((utcnow(), "INFO", text))
            if text.strip():
                self.last_line = text.strip()


class Worker:
    """Runs the due runs of one work pool, each in its own process."""

    #: Whether a run process is started ahead of the next claim (see `_launch`).
    spares: bool = True

    def __init__(
        self,
        pool: str,
        *,
        limit: int | None = None,
        run_once: bool = False,
        paths: Sequence[str | os.PathLike[str]] = (),
        lease_seconds: float | None = None,
        poll_seconds: float = 0.1,
        store: RunStore | None = None,
        name: str | None = None,
    ) -> None:
        self.pool = pool
        self.limit = limit
        self.run_once = run_once
        self.roots = [Path(p).resolve() for p in paths] or [Path.cwd().resolve()]
        self.lease_seconds = lease_seconds or settings.lease_seconds()
        self.poll_seconds = poll_seconds
        self.store = store or RunStore.default()
        self.name = name or f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"
        self.active: dict[str, _Active] = {}
        self.finished = 0
        # Asked to stop: a plain flag and a byte down a pipe, so a signal handler takes no lock
        # (an Event's lock, held by the loop when the signal lands, would never be released).
        self._stopping = False
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_w, False)
        weakref.finalize(self, _close_fds, self._wake_r, self._wake_w)
        # Set by the loop once it has seen the request: the heartbeat thread ends with it.
        self._stop = threading.Event()
        self._beats: dict[str, RunState | None] = {}
        self._beats_lock = threading.Lock()
        self._spare: subprocess.Popen[bytes] | None = None

    # -- the loop -----------------------------------------------------------------------------

    def stop(self, *_: Any) -> None:
        """Ask the loop to end: no new claims; running runs are stopped and marked Crashed.

        Safe as a signal handler (`signal.signal(signal.SIGTERM, worker.stop)`) and from any
        thread: it sets a flag and wakes the loop, taking no lock.
        """
        self._stopping = True
        with contextlib.suppress(OSError):  # full (already woken) or closed (already ended)
            os.write(self._wake_w, b"\0")

    def _pause(self, seconds: float) -> None:
        """Wait `seconds`, or less when `stop` is asked for."""
        with contextlib.suppress(OSError, ValueError):
            select.select([self._wake_r], [], [], seconds)

    def run(self) -> int:
        """Work until stopped (or, with `run_once`, until nothing due is left); return how many
        runs this worker finished."""
        self._open()
        heart = threading.Thread(target=self._heartbeats, name="blocks-heartbeat", daemon=True)
        heart.start()
        if not self.run_once and self.spares:
            with contextlib.suppress(OSError):
                self._spare = self._spawn()  # warm before the first run is due
        next_pass = next_look = 0.0
        try:
            while not self._stopping:
                now = time.monotonic()
                try:
                    self.store.reap()
                    if now >= next_pass:
                        schedule_pass(self.store, pool_name=self.pool)
                        next_pass = now + SCHEDULE_EVERY
                    claimed = self._claim_some()
                    if self.active and now >= next_look:
                        self._look_for_cancels()
                        next_look = now + CANCEL_POLL_SECONDS
                    self._tend()
                except Exception as exc:
                    # The registry is away (a restarting PostgreSQL, a full disk): keep the runs,
                    # say so, try again; the leases say whether the runs are still ours.
                    print(f"Worker {self.name}: {type(exc).__name__}: {exc}", file=sys.stderr)
                    self._pause(min(5.0, self.lease_seconds / 3))
                    continue
                if self.run_once and not claimed and not self.active:
                    break
                self._pause(self.poll_seconds)
        finally:
            self._shutdown()
        return self.finished

    def _open(self) -> None:
        """Before the loop: the pool, created as a process pool when missing."""
        _, created = self.store.ensure_pool(self.pool)
        if created:
            print(f"Created work pool {self.pool!r} of type process.", file=sys.stderr)

    def _close(self) -> None:
        """After the loop, once every run it held is recorded."""

    def _look_for_cancels(self) -> None:
        """A user's cancel is seen within `CANCEL_POLL_SECONDS` (a read), not at the next
        heartbeat (a third of the lease)."""
        for run_id, state in self.store.states(list(self.active)).items():
            if state is RunState.CANCELLING:
                with self._beats_lock:
                    self._beats.setdefault(run_id, state)

    def _claim_some(self) -> int:
        claimed = 0
        while (self.limit is None or len(self.active) < self.limit) and not self._stopping:
            if not self.store.has_due(self.pool):
                break
            run = self.store.claim(self.pool, worker=self.name, lease_seconds=self.lease_seconds)
            if run is None:
                break
            claimed += 1
            self._start(run)
        return claimed

    def _start(self, run: FlowRun) -> None:
        try:
            deployment = self.store.get_deployment_by_id(run.deployment_id)
            parameters = self.store.verified_parameters(run)
        except Exception as exc:  # tampered, deleted: never run it
            self.store.transition(
                run.id, RunState.FAILED, attempt=run.attempt, worker=self.name, message=str(exc)
            )
            return
        document = deployment.document
        folder = Path(document["path"])
        if not _launch.inside(folder.resolve(), self.roots):
            self.store.transition(
                run.id,
                RunState.FAILED,
                attempt=run.attempt,
                worker=self.name,
                message=(
                    f"refused: the deployment's folder {folder} is outside the folders this "
                    f"worker serves ({', '.join(map(str, self.roots))}); start a worker there "
                    "or give it --path"
                ),
            )
            return
        spec = {
            "entrypoint": document["entrypoint"],
            "path": str(folder),
            "parameters": parameters,
            "roots": [str(root) for root in self.roots],
            "worker_pid": os.getpid(),
        }
        spec["env"] = {
            "BLOCKS_FLOW_RUN_ID": run.id,
            "BLOCKS_FLOW_RUN_ATTEMPT": str(run.attempt),
            "BLOCKS_FLOW_RUN_SLOT": run.slot.isoformat() if run.slot else "",
            "BLOCKS_FLOW_RUN_SCHEDULED": (run.slot or run.due).isoformat(),
            "BLOCKS_DEPLOYMENT": deployment.full_name,
        }
        try:
            active, where = self._begin(run, spec)
        except Exception as exc:  # no process, no cluster: the run cannot start here
            self.store.transition(
                run.id,
                RunState.FAILED,
                attempt=run.attempt,
                worker=self.name,
                message=f"could not start the run process in {folder}: {exc}",
            )
            return
        self.active[run.id] = active
        self.store.transition(
            run.id, RunState.RUNNING, attempt=run.attempt, worker=self.name, message=where
        )

    def _begin(self, run: FlowRun, spec: dict[str, Any]) -> tuple[_Active, str]:
        """Start the run's process with its spec; the run and where it runs."""
        process = self._take_spare()
        active = _Active(run, process)
        assert process.stdin is not None
        try:
            process.stdin.write(json.dumps(spec).encode())
            process.stdin.close()
        except OSError:
            _process_groups.reap(process)  # never a process this worker does not track
            raise
        active.reader = threading.Thread(
            target=self._read_output, args=(active, process.stdout), daemon=True
        )
        active.reader.start()
        return active, f"process {process.pid}"

    def _take_spare(self) -> subprocess.Popen[bytes]:
        """The warm run process started ahead (a fresh one if it died), and a new spare."""
        spare, self._spare = self._spare, None
        if spare is None or _process_groups.exited(spare):
            if spare is not None:
                _process_groups.reap(spare)
            spare = self._spawn()
        if not self._stopping and not self.run_once:
            with contextlib.suppress(OSError):
                self._spare = self._spawn()
        return spare

    def _spawn(self) -> subprocess.Popen[bytes]:
        """A run process that sets its death signal, warms up and waits for its spec."""
        env = dict(os.environ)
        env.update({_launch.WORKER_PID_ENV: str(os.getpid()), "PYTHONUNBUFFERED": "1"})
        return subprocess.Popen(
            [sys.executable, "-m", "blocks.deployments._launch"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
        )

    def _read_output(self, active: _Active, stream: IO[bytes] | None) -> None:
        if stream is None:
            return
        for raw in stream:
            active.add_line(raw.decode("utf-8", "replace").rstrip("\n"))
        stream.close()

    def _flush_logs(self, active: _Active) -> None:
        with active.lock:
            lines, active.lines = active.lines, []
        if lines:
            self.store.append_logs(active.run.id, lines)

    def _tend(self) -> None:
        """Act on heartbeats (lost or cancelling runs) and record runs whose process ended."""
        with self._beats_lock:
            beats, self._beats = self._beats, {}
        for run_id, state in beats.items():
            active = self.active.get(run_id)
            if active is None:
                continue
            if state is None and not active.lost:
                # Another worker reaped it: this attempt is over here, whatever it was doing.
                active.lost = True
                _kill_group(active.process, signal.SIGKILL)
            elif state is RunState.CANCELLING and active.cancel_at is None:
                active.cancel_at = time.monotonic() + CANCEL_GRACE_SECONDS
                _kill_group(active.process, signal.SIGTERM)
        for run_id, active in list(self.active.items()):
            if active.cancel_at is not None and time.monotonic() > active.cancel_at:
                _kill_group(active.process, signal.SIGKILL)
            if not _exited(active.process):
                if len(active.lines) >= _LOG_FLUSH_LINES:
                    self._flush_logs(active)
                continue
            # The run's whole group ends with it (a child it left behind included), signalled
            # before the leader is reaped: until then its group id cannot be anyone else's.
            code = _reap(active.process)
            if active.reader is not None:
                active.reader.join(timeout=5)
            self._flush_logs(active)
            del self.active[run_id]
            self.finished += 1
            if not active.lost:
                self._record_end(active, code)

    def _record_end(self, active: _Active, code: int) -> None:
        run = active.run
        if active.cancel_at is not None:
            target, message = RunState.CANCELLED, "cancelled: its process tree was ended"
        elif code == _launch.EXIT_COMPLETED:
            target, message = RunState.COMPLETED, ""
        elif code == _launch.EXIT_LOST:
            self.store.crash(
                run.id, attempt=run.attempt, worker=self.name, message=active.last_line
            )
            return
        elif code < 0:
            name = signal.Signals(-code).name if -code in signal.valid_signals() else str(-code)
            self.store.crash(
                run.id,
                attempt=run.attempt,
                worker=self.name,
                message=f"the run process was killed by {name}",
            )
            return
        else:
            target = RunState.FAILED
            message = active.last_line or f"the run process exited with code {code}"
        done = self.store.transition(
            run.id, target, attempt=run.attempt, worker=self.name, message=message
        )
        if not done and target is RunState.CANCELLED:
            self.store.transition(run.id, RunState.CANCELLED, attempt=run.attempt, message=message)

    # -- heartbeats and shutdown ----------------------------------------------------------------

    def _heartbeats(self) -> None:
        every = self.lease_seconds / 3
        while not self._stop.wait(every):
            held = [(run_id, a.run.attempt) for run_id, a in list(self.active.items())]
            if not held:
                continue
            try:
                beats = self.store.heartbeat(self.name, held, self.lease_seconds)
            except Exception as exc:  # the database is away: the lease runs out, we keep trying
                print(f"heartbeat failed: {exc}", file=sys.stderr)
                continue
            with self._beats_lock:
                self._beats.update(beats)

    def _shutdown(self) -> None:
        self._stopping = True
        self._stop.set()
        spare, self._spare = self._spare, None
        if spare is not None:
            _process_groups.reap(spare)
        for active in self.active.values():
            _kill_group(active.process, signal.SIGTERM)
        deadline = time.monotonic() + CANCEL_GRACE_SECONDS
        for active in self.active.values():
            _wait_exited(active.process, max(0.0, deadline - time.monotonic()))
            _reap(active.process)  # SIGKILL to what is left of its group, then reaped
            self._flush_logs(active)
            if not active.lost:
                self.store.crash(
                    active.run.id,
                    attempt=active.run.attempt,
                    worker=self.name,
                    message=f"its worker {self.name} was stopped",
                )
        self.active.clear()
        self._close()


def _close_fds(*fds: int) -> None:
    for fd in fds:
        with contextlib.suppress(OSError):
            os.close(fd)


def _kill_group(process: subprocess.Popen[bytes] | RunHandle, sig: signal.Signals) -> None:
    """Signal the run's process group (its pid: it leads its own session), never once the
    leader was reaped (see `_process_groups`)."""
    if isinstance(process, subprocess.Popen):
        _process_groups.signal_group(process, sig)
    else:
        process.signal_tree(sig)


def _exited(process: subprocess.Popen[bytes] | RunHandle) -> bool:
    """Whether the run's process ended; a local one is left unreaped (see `_reap`)."""
    if isinstance(process, subprocess.Popen):
        return _process_groups.exited(process)
    return process.poll() is not None


def _wait_exited(process: subprocess.Popen[bytes] | RunHandle, timeout: float) -> None:
    if isinstance(process, subprocess.Popen):
        _process_groups.wait_exited(process, timeout)
        return
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(timeout)


def _reap(process: subprocess.Popen[bytes] | RunHandle) -> int:
    """The run's exit code, after SIGKILL to whatever is left of its process tree."""
    if isinstance(process, subprocess.Popen):
        return _process_groups.reap(process)
    code = process.poll()
    if code is None:
        process.signal_tree(signal.SIGKILL)
        code = process.wait()
    return code
