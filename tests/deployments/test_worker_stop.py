"""A worker asked to stop stops, whatever it was doing when the signal landed.

`block worker start` stops on SIGTERM / Ctrl-C through a signal handler. Python runs a handler
on the main thread between two bytecodes, so the handler must never wait for a lock the loop
may hold at that moment: an `Event.set()` there once hung a stopping worker forever when the
signal arrived inside the loop's own `Event.wait` (CI saw one in ~1,000 worker stops).

Two attacks: the signal raised at every traced line of the worker's loop and of `threading`
(deterministic, in a child process with a deadline), and real worker processes SIGTERMed at
random moments while they claim and run a deployment's runs (SQLite and PostgreSQL).
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import textwrap
import time
from datetime import timedelta
from pathlib import Path

import pytest
from live_processes import wait_for

from blocks.deployments import Deployment, IntervalSchedule, RunState, RunStore
from blocks.deployments._store import FlowRun

#: Real worker processes stopped at random moments: CI size, and more with BLOCKS_SOAK=1.
KILLS = int(
    os.environ.get(
        "BLOCKS_SOAK_WORKER_STOPS", "200" if os.environ.get("BLOCKS_SOAK") == "1" else "10"
    )
)

CLI = "from blocks.cli import main; main()"

FLOWS = """
from blocks import flow


@flow
def tick(out: str) -> None:
    with open(out, "a") as f:
        f.write("x\\n")
"""

#: The child: for each n, a worker whose loop gets SIGUSR1 (its stop handler) at the n-th line
#: event of the traced files; each must return from `run()`. Prints how many points it tried.
STOP_AT_EVERY_LINE = textwrap.dedent(
    """
    import signal, sys, threading

    from blocks.deployments._worker import Worker

    class Quiet(Worker):
        spares = False  # no warm run process: the loop alone

    TRACED = ("threading.py", "_worker.py")
    points = int(sys.argv[1])
    for n in range(1, points + 1):
        worker = Quiet("stop-at-every-line", poll_seconds=0.0005)
        signal.signal(signal.SIGUSR1, worker.stop)
        seen = 0

        def local(frame, event, arg):
            global seen
            if event == "line":
                seen += 1
                if seen == n:
                    signal.raise_signal(signal.SIGUSR1)
            return local

        def tracer(frame, event, arg):
            return local if frame.f_code.co_filename.endswith(TRACED) else None

        sys.settrace(tracer)
        try:
            worker.run()
        finally:
            sys.settrace(None)
        if seen < n:
            break  # the loop ended before the n-th line: every point was tried
    print(n, flush=True)
    """
)


def test_a_stop_signal_at_every_line_of_the_loop_ends_the_worker(
    backend: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    points = 400
    done = subprocess.run(
        [sys.executable, "-c", STOP_AT_EVERY_LINE, str(points)],
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    tried = int(done.stdout.split()[-1])
    print(f"a stop signal at {tried} points of the worker loop: every worker stopped")
    assert tried >= 100


def test_workers_sigtermed_at_random_moments_stop_and_leave_no_run_running(
    backend: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "stop_flows.py").write_text(FLOWS)
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    import stop_flows

    out = tmp_path / "ticks.txt"
    try:
        deployment_id = Deployment.build_from_flow(
            stop_flows.tick,
            "stop-at-random",
            schedule=IntervalSchedule(interval=timedelta(seconds=1)),
            parameters={"out": str(out)},
            work_pool_name="stop-at-random",
        ).apply()
    finally:
        sys.modules.pop("stop_flows", None)
    rng = random.Random(KILLS)
    slowest, early = 0.0, 0
    for round_ in range(0, KILLS, 2):
        procs = [
            subprocess.Popen(
                [sys.executable, "-c", CLI, "worker", "start", "--pool", "stop-at-random"],
                cwd=tmp_path,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
            )
            for _ in range(min(2, KILLS - round_))
        ]
        # Every other round counts from the moment both serve: on a loaded machine (load 25)
        # a moment counted from the spawn fell while importing in every round.
        seen = [_until_serving(proc) for proc in procs] if round_ % 4 else [b""] * len(procs)
        time.sleep(rng.uniform(0.8, 3.5))
        for proc in procs:
            proc.send_signal(signal.SIGTERM)
        asked = time.monotonic()
        for proc, before in zip(procs, seen, strict=True):
            try:
                _, rest = proc.communicate(timeout=30)
                err = before + rest
            except subprocess.TimeoutExpired:
                proc.kill()
                _, rest = proc.communicate()
                err = before + rest
                pytest.fail(
                    f"a worker did not stop within 30 s of SIGTERM:\n{err.decode()[-3000:]}"
                )
            # Before its handler is installed (still importing, on a loaded machine) SIGTERM's
            # default action ends a worker that holds nothing yet; once it serves, it stops.
            serving = b"serving pool" in err
            assert proc.returncode == 0 if serving else proc.returncode in (0, -signal.SIGTERM), (
                err.decode()[-3000:]
            )
            early += not serving
        slowest = max(slowest, time.monotonic() - asked)
    store = RunStore.default()

    # A stopping worker ends its runs (Crashed, retried by the next one): none stays Running.
    def settled() -> list[FlowRun] | None:
        runs = store.list_runs(deployment_id=deployment_id)
        busy = any(r.state in (RunState.RUNNING, RunState.PENDING) for r in runs)
        return None if busy else runs

    runs = wait_for("no run left running", settled, timeout=30)
    completed = sum(r.state is RunState.COMPLETED for r in runs)
    stopped = sum(r.state is RunState.CRASHED for r in runs)
    print(
        f"{KILLS} workers SIGTERMed at random moments ({early} while starting): all stopped "
        f"(slowest {slowest:.1f} s), "
        f"{completed} runs completed, {stopped} stopped mid-run (Crashed), none left running"
    )
    assert completed + stopped >= 1  # the workers were at work when they were stopped


def _until_serving(proc: subprocess.Popen[bytes], timeout: float = 120.0) -> bytes:
    """What `proc` wrote to stderr up to its "serving pool" line (at most `timeout` seconds)."""
    assert proc.stderr is not None
    seen = b""
    deadline = time.monotonic() + timeout
    while b"serving pool" not in seen and time.monotonic() < deadline:
        line = proc.stderr.readline()
        if not line:  # ended before serving: the assertions after the stop say why
            break
        seen += line
    return seen
