"""Real `block worker start` processes on a 1 s interval (SQLite and PostgreSQL): every worker
stopped for 5+ slots and restarted keeps the deployment's catch-up policy (latest / all /
none), and a redeploy with a changed interval mid-test never runs a slot twice.

The missed slots are the ones a restarted worker's first scheduler pass found overdue
(``BLOCKS_LATE_AFTER_SECONDS=1`` here): read from the state history, not guessed from clocks.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from live_processes import wait_for

from blocks.deployments import Deployment, IntervalSchedule, RunState, RunStore
from blocks.deployments._store import FlowRun

pytestmark = pytest.mark.timeout(300, method="thread")

CLI = "from blocks.cli import main; main()"
FLOWS = """
import os

from blocks import flow


@flow
def record_slot(out: str) -> None:
    with open(out, "a") as f:
        f.write(os.environ["BLOCKS_FLOW_RUN_SLOT"] + "\\n")
"""
FINAL = {RunState.COMPLETED, RunState.SKIPPED, RunState.CRASHED, RunState.FAILED}


@pytest.fixture
def folder(backend: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    (tmp_path / "catchup_flows.py").write_text(FLOWS)
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv("BLOCKS_LATE_AFTER_SECONDS", "1")
    yield tmp_path
    sys.modules.pop("catchup_flows", None)


def _workers(folder: Path, pool: str, count: int) -> list[subprocess.Popen[bytes]]:
    procs = []
    for _ in range(count):
        with open(folder / f"worker-{time.monotonic_ns()}.log", "wb") as log:
            procs.append(
                subprocess.Popen(
                    [sys.executable, "-c", CLI, "worker", "start", "--pool", pool],
                    cwd=folder,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                )
            )
    return procs


def _worker_logs(folder: Path) -> str:
    return "\n".join(log.read_text() for log in sorted(folder.glob("worker-*.log")))


def _stop(procs: list[subprocess.Popen[bytes]]) -> None:
    for proc in procs:
        proc.send_signal(signal.SIGTERM)
    for proc in procs:
        proc.wait(60)


def _settled(store: RunStore, deployment_id: str, until: datetime) -> list[FlowRun]:
    runs = [r for r in store.list_runs(deployment_id=deployment_id) if r.due <= until]
    return sorted(runs, key=lambda r: r.due) if all(r.state in FINAL for r in runs) else []


@pytest.mark.parametrize("policy", ["latest", "all", "none"])
def test_stopping_every_worker_for_five_slots_keeps_the_catch_up_policy(
    backend: str, folder: Path, policy: str
) -> None:
    import catchup_flows

    out = folder / f"slots-{policy}.txt"
    deployment_id = Deployment.build_from_flow(
        catchup_flows.record_slot,
        f"catchup-{policy}",
        schedule=IntervalSchedule(interval=timedelta(seconds=1)),
        parameters={"out": str(out)},
        work_pool_name=f"catchup-{policy}",
        catchup=policy,  # type: ignore[arg-type]
    ).apply()
    store = RunStore.default()
    pool = f"catchup-{policy}"
    first = _workers(folder, pool, 2)
    wait_for("two slots run", lambda: out.exists() and len(out.read_text().split()) >= 2)
    _stop(first)
    time.sleep(7)  # 5+ slots pass with no worker, and the late threshold of 1 s
    restarted = datetime.now(UTC)
    second = _workers(folder, pool, 2)
    try:
        # A slot that came due after the restart ran: the restarted workers are at work.
        wait_for(
            "a slot after the restart to run",
            lambda: any(
                datetime.fromisoformat(line) > restarted for line in out.read_text().split()
            ),
        )
        end = datetime.now(UTC)
        runs = wait_for("every run due to end", lambda: _settled(store, deployment_id, end))
    finally:
        _stop(second)

    # The first pass after the restart decided about the slots missed while stopped: every
    # Late or Skipped it wrote carries the same time (one transaction).
    decisions = [
        (change.at, change.state, run)
        for run in runs
        for change in store.history(run.id)
        if change.state in (RunState.LATE, RunState.SKIPPED) and change.at >= restarted
    ]
    assert decisions, _worker_logs(folder)
    first_pass = min(at for at, _, _ in decisions)
    decided = {run.id: state for at, state, run in decisions if at == first_pass}
    boundary = max(run.due for run in runs if run.id in decided)
    # Missed while stopped: due by then, and nothing happened to them before the restart (a
    # slot the first workers started or decided about is not one of them).
    missed = [
        r
        for r in runs
        if r.due <= boundary
        and all(c.state is RunState.SCHEDULED for c in store.history(r.id) if c.at < restarted)
    ]
    assert {r.id for r in missed} == set(decided)  # the pass decided about exactly those
    ran = {r.slot for r in missed if r.state is RunState.COMPLETED}
    skipped = {r.slot for r in missed if r.state is RunState.SKIPPED}
    late = [r for r in missed if decided[r.id] is RunState.LATE]
    assert out.exists(), _worker_logs(folder)
    lines = out.read_text().split()
    print(
        f"{backend} catchup={policy}: {len(runs)} slots, {len(missed)} missed while stopped -> "
        f"{len(ran)} ran, {len(skipped)} skipped; {len(lines)} lines, "
        f"{len(lines) - len(set(lines))} twice (first pass {first_pass:%H:%M:%S.%f})"
    )
    assert len(missed) >= 5
    assert len(lines) == len(set(lines))  # no slot twice
    newest = max(r.slot for r in missed if r.slot is not None)
    if policy == "latest":
        # Only the newest missed slot was kept (Late); it ran unless a worker's next pass found
        # a newer slot missed before anyone claimed it (a loaded machine), which then ran.
        assert [r.slot for r in late] == [newest] and ran <= {newest}
        assert len(skipped) == len(missed) - len(ran)
        assert any(r.state is RunState.COMPLETED and r.due >= boundary for r in runs)
    elif policy == "all":
        states = [r.state.value for r in missed]
        assert len(late) == len(ran) == len(missed) and not skipped, states
    else:
        assert not late and not ran and len(skipped) == len(missed)
    if policy == "all":  # nothing is ever skipped: every slot ran (or crashed with a worker)
        assert all(r.state in (RunState.COMPLETED, RunState.CRASHED) for r in runs)


@pytest.mark.parametrize("slug", [None, "every"])
def test_a_redeploy_with_a_changed_interval_mid_test_runs_no_slot_twice(
    backend: str, folder: Path, slug: str | None
) -> None:
    import catchup_flows

    out = folder / "slots.txt"
    pool = "redeploy"

    def deploy(seconds: int) -> str:
        from blocks.deployments import Interval

        return Deployment.build_from_flow(
            catchup_flows.record_slot,
            "redeployed",
            schedules=[Interval(seconds, slug=slug)],
            parameters={"out": str(out)},
            work_pool_name=pool,
            catchup="all",
        ).apply()

    deployment_id = deploy(1)
    store = RunStore.default()
    workers = _workers(folder, pool, 3)
    try:
        wait_for("two slots run", lambda: out.exists() and len(out.read_text().split()) >= 2)
        assert deploy(2) == deployment_id
        redeployed = datetime.now(UTC)
        time.sleep(6)
        end = datetime.now(UTC)
        runs = wait_for("every run due to end", lambda: _settled(store, deployment_id, end))
    finally:
        _stop(workers)
    lines = out.read_text().split()
    after = sorted(
        r.slot for r in runs if r.slot and r.due > redeployed and r.state is RunState.COMPLETED
    )
    odd = [s for s in after if s.second % 2]
    print(
        f"{backend} slug={slug}: {len(runs)} runs, {len(lines)} slots written, "
        f"{len(lines) - len(set(lines))} twice; after the redeploy {len(after)} slots, "
        f"{len(odd)} on the old 1 s schedule"
    )
    assert len(lines) == len(set(lines))
    assert len(after) >= 2 and not odd  # the new 2 s interval only (slots count from 2020)
