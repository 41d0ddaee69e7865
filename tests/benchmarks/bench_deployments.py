"""Benchmark: deployments and workers on a real registry (SQLite by default).

Run: ``.venv/bin/python tests/benchmarks/bench_deployments.py [--runs 20] [--deployments 1000]
[--url postgresql+psycopg://...]``

Measured, each in a fresh BLOCKS_HOME with its own master key:

* **due -> flow body start** on an idle `process` worker (a real ``block worker start``
  process): `--runs` runs made by hand, each due ~1.5 s after it is made and the next made once
  the previous body started; the body writes ``time.time()``. Median and p95 of body start minus
  due, and of the two steps inside (due -> claimed, claimed -> body). Goal p95 <= 1 s.
* **a scheduler pass over `--deployments` deployments** (each with an hourly, then a 1-minute
  interval schedule): the first pass (makes every slot), the steady pass (nothing new), best
  and median of 5, and a pass one interval later (a new slot per deployment, the missed ones
  Late or Skipped: one transaction). Goal <= 0.2 s for the steady pass.
* **recording a flow run**: what a worker writes for one run (claim, Running, 20 log lines,
  Completed), per run.
* **run history of a flow run of 100 plain tasks** (`--history-runs` rounds, in this process):
  the flow called unrecorded, then recorded into a run of the store (task runs and run-log
  lines handed to the recorder, written by its thread), alternating round by round. Medians
  of the flow call alone (goal <= 1.2x), and of the call plus the write of its history (the
  recorder closed: one transaction).

The run processes use compiled bytecode as an installed package does (``pip install`` writes
.pyc files): the script unsets PYTHONDONTWRITEBYTECODE and points PYTHONPYCACHEPREFIX at a
temporary folder, and warms it with one run before measuring. The load average is printed.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

FLOWS = """
import time

from blocks import flow


@flow
def stamp(out: str) -> None:
    body = time.time()
    with open(out, "a") as f:
        f.write(f"{body}\\n")
"""


CLI = "from blocks.cli import main; main()"


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def _fresh_home(root: Path, url: str | None) -> None:
    import base64

    os.environ["BLOCKS_HOME"] = str(root / "home")
    os.environ["BLOCKS_MASTER_KEY"] = base64.urlsafe_b64encode(os.urandom(32)).decode()
    if url:
        os.environ["BLOCKS_REGISTRY_URL"] = url
    os.environ.pop("PYTHONDONTWRITEBYTECODE", None)
    os.environ["PYTHONPYCACHEPREFIX"] = str(root / "pycache")


def latency(runs: int, root: Path) -> None:
    from blocks.deployments import Deployment, RunState, RunStore

    folder = root / "project"
    folder.mkdir()
    (folder / "bench_flows.py").write_text(FLOWS)
    sys.path.insert(0, str(folder))
    os.chdir(folder)
    import bench_flows

    out = folder / "stamps.txt"
    deployment_id = Deployment.build_from_flow(
        bench_flows.stamp, "latency", parameters={"out": str(out)}, work_pool_name="bench"
    ).apply()
    store = RunStore.default()
    deployment = store.get_deployment_by_id(deployment_id)
    worker = subprocess.Popen(
        [sys.executable, "-c", CLI, "worker", "start", "--pool", "bench"],
        cwd=folder,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    body_lag: list[float] = []
    claim_lag: list[float] = []
    try:
        for i in range(runs + 1):  # the first warms the bytecode cache and is not counted
            seen = len(out.read_text().split()) if out.exists() else 0
            due = datetime.now(UTC) + timedelta(seconds=1.5)
            run = store.create_run(deployment, due=due)
            deadline = time.monotonic() + 60
            while (len(out.read_text().split()) if out.exists() else 0) <= seen:
                if time.monotonic() > deadline:
                    raise SystemExit("a run did not start within 60 s")
                time.sleep(0.01)
            body = float(out.read_text().split()[seen])
            while store.get_run(run.id).state is not RunState.COMPLETED:
                time.sleep(0.02)
            pending = next(c.at for c in store.history(run.id) if c.state is RunState.PENDING)
            if i:
                body_lag.append(body - due.timestamp())
                claim_lag.append((pending - due).total_seconds())
    finally:
        worker.terminate()
        worker.wait(30)
    step = [b - c for b, c in zip(body_lag, claim_lag, strict=True)]
    print(
        f"due -> body start, {runs} runs, idle process worker: median "
        f"{statistics.median(body_lag):.3f} s, p95 {_pct(body_lag, 0.95):.3f} s, max "
        f"{max(body_lag):.3f} s (goal p95 <= 1 s)\n"
        f"  due -> claimed: median {statistics.median(claim_lag):.3f} s, p95 "
        f"{_pct(claim_lag, 0.95):.3f} s; claimed -> body: median {statistics.median(step):.3f} s,"
        f" p95 {_pct(step, 0.95):.3f} s"
    )


def scheduler_pass(count: int, root: Path, every: timedelta) -> None:
    from blocks.deployments import RunStore
    from blocks.deployments._records import dumps
    from blocks.deployments._scheduler import schedule_pass
    from blocks.deployments.schedules import IntervalSchedule

    store = RunStore.default()
    pool = f"sched-{every.total_seconds():.0f}"
    store.ensure_pool(pool)
    schedule = IntervalSchedule(interval=every)
    entry = {"slug": "every", "active": True, "schedule": schedule.model_dump(mode="json")}
    begin = time.perf_counter()
    for i in range(count):
        store.put_deployment(
            f"flow-{i}",
            pool,
            version=None,
            pool_name=pool,
            document={
                "entrypoint": "x.py:f",
                "path": str(root),
                "parameters": {},
                "schedules": [entry],
                "catchup": "latest",
            },
        )
    made = time.perf_counter() - begin
    dumps({})
    begin = time.perf_counter()
    first = schedule_pass(store, pool_name=pool)
    first_s = time.perf_counter() - begin
    steady = []
    for _ in range(5):
        begin = time.perf_counter()
        schedule_pass(store, pool_name=pool)
        steady.append(time.perf_counter() - begin)
    # A pass one interval later (no worker ran): every deployment gets its next slot, and the
    # catch-up policy marks the slot no worker started Late (and an older one Skipped).
    later = []
    for step in range(1, 4):
        begin = time.perf_counter()
        moved = schedule_pass(store, datetime.now(UTC) + every * step, pool_name=pool)
        later.append(time.perf_counter() - begin)
    print(
        f"scheduler pass, {count} deployments (interval {every.total_seconds():.0f} s): first "
        f"pass {first_s:.2f} s "
        f"({first.inserted} runs made), steady pass best {min(steady):.3f} s, median "
        f"{statistics.median(steady):.3f} s (goal <= 0.2 s); a pass one interval later "
        f"({moved.inserted} made, {moved.late} Late, {moved.skipped} Skipped) median "
        f"{statistics.median(later):.3f} s; {count} deployments stored in {made:.1f} s"
    )


def recording(runs: int) -> None:
    from blocks.deployments import RunState, RunStore

    store = RunStore.default()
    deployment = store.list_deployments(pool_name="bench")[0]
    made = [store.create_run(deployment) for _ in range(runs)]
    lines = [(datetime.now(UTC), "INFO", f"line {i}") for i in range(20)]
    begin = time.perf_counter()
    for _ in made:
        run = store.claim("bench", worker="bench", lease_seconds=30)
        assert run is not None
        store.transition(run.id, RunState.RUNNING, attempt=run.attempt, worker="bench")
        store.append_logs(run.id, lines)
        store.transition(run.id, RunState.COMPLETED, attempt=run.attempt, worker="bench")
    per_run = (time.perf_counter() - begin) / runs
    print(
        f"recording a run (claim, Running, 20 log lines, Completed): {per_run * 1000:.1f} ms "
        f"per run over {runs} runs"
    )


def history(rounds: int, root: Path) -> None:
    import logging

    from blocks import flow, task
    from blocks.deployments import Deployment, RunStore
    from blocks.deployments._history import recording

    # Run logs go nowhere in both cases (a root handler silences our console printer), so
    # the unrecorded run pays for its log records as the recorded one does, not for a terminal.
    logging.root.addHandler(logging.NullHandler())

    @task
    def inc(x: int) -> int:
        return x + 1

    @flow
    def hundred() -> list[int]:
        return [inc(i) for i in range(100)]

    folder = root / "history"
    folder.mkdir()
    deployment_id = Deployment.build_from_flow(
        hundred, "history", work_pool_name="bench-history", path=str(folder), entrypoint="x.py:f"
    ).apply()
    store = RunStore.default()
    deployment = store.get_deployment_by_id(deployment_id)
    runs = [store.create_run(deployment) for _ in range(rounds)]
    hundred()
    plain: list[float] = []
    called: list[float] = []
    written: list[float] = []
    for run in runs:
        begin = time.perf_counter()
        hundred()
        plain.append(time.perf_counter() - begin)
        with recording(lambda: store, run.id, 1) as recorder:
            begin = time.perf_counter()
            hundred()
            called.append(time.perf_counter() - begin)
            recorder.close()
            written.append(time.perf_counter() - begin)
    tasks, total = store.task_runs(runs[-1].id)
    assert total == len(tasks) == 100
    base = statistics.median(plain)
    print(
        f"run history, a flow of 100 plain tasks, {rounds} rounds: unrecorded "
        f"{base * 1e3:.3f} ms; recorded {statistics.median(called) * 1e3:.3f} ms "
        f"({statistics.median(called) / base:.2f}x, goal <= 1.2x); with its history written "
        f"(one transaction) {statistics.median(written) * 1e3:.3f} ms "
        f"({statistics.median(written) / base:.1f}x)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--deployments", type=int, default=1000)
    parser.add_argument("--url", default=None, help="a registry URL (default: SQLite)")
    parser.add_argument("--only-scheduler", action="store_true", help="only the scheduler passes")
    parser.add_argument("--history-runs", type=int, default=200)
    parser.add_argument("--only-history", action="store_true", help="only the run history")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        _fresh_home(root, args.url)
        print(f"registry: {args.url or 'SQLite'}; load average {os.getloadavg()}")
        if args.only_history:
            history(args.history_runs, root)
            return
        if not args.only_scheduler:
            latency(args.runs, root)
            recording(50)
            history(args.history_runs, root)
        # An hourly schedule keeps 3 runs ahead per deployment, a 1-minute one 60 (the hour
        # the scheduler looks ahead): the steady pass reads every live run still to come.
        scheduler_pass(args.deployments, root, timedelta(hours=1))
        scheduler_pass(args.deployments, root, timedelta(minutes=1))
        print(f"load average at the end {os.getloadavg()}")


if __name__ == "__main__":
    main()
