"""A deployment's `concurrency_limit` with `collision_strategy`, under two real
`block worker start` processes on one pool (SQLite and PostgreSQL): never more live runs of
the deployment than its limit. ENQUEUE runs the others later, one at a time; CANCEL_NEW
cancels the runs that came due while the deployment was full."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from blocks.deployments import Deployment, RunState, RunStore
from blocks.errors import ConfigurationError

pytestmark = pytest.mark.timeout(240, method="thread")

CLI = "from blocks.cli import main; main()"
FLOWS = """
import os
import time

from blocks import flow


@flow
def busy(out: str, seconds: float = 1.5) -> None:
    with open(out, "a") as f:
        f.write(f"start {time.time()} {os.environ['BLOCKS_FLOW_RUN_ID']}\\n")
    time.sleep(seconds)
    with open(out, "a") as f:
        f.write(f"end {time.time()} {os.environ['BLOCKS_FLOW_RUN_ID']}\\n")
"""


@pytest.fixture
def folder(backend: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    (tmp_path / "limit_flows.py").write_text(FLOWS)
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    yield tmp_path
    sys.modules.pop("limit_flows", None)


def _workers(folder: Path, pool: str, count: int) -> list[subprocess.Popen[bytes]]:
    return [
        subprocess.Popen(
            [sys.executable, "-c", CLI, "worker", "start", "--pool", pool],
            cwd=folder,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for _ in range(count)
    ]


def _stop(procs: list[subprocess.Popen[bytes]]) -> None:
    for proc in procs:
        proc.send_signal(signal.SIGTERM)
    for proc in procs:
        proc.wait(timeout=60)


def _most_live(out: Path) -> int:
    """The most flow bodies running at once, from their start and end lines."""
    events = []
    for line in out.read_text().split("\n"):
        if line:
            kind, at, _ = line.split()
            events.append((float(at), 1 if kind == "start" else -1))
    live = most = 0
    for _, step in sorted(events, key=lambda e: (e[0], e[1])):
        live += step
        most = max(most, live)
    return most


def _settle(store: RunStore, deployment_id: str, runs: int) -> list[RunState]:
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        states = [r.state for r in store.list_runs(deployment_id=deployment_id)]
        if len(states) == runs and all(
            s in (RunState.COMPLETED, RunState.CANCELLED, RunState.FAILED) for s in states
        ):
            return states
        time.sleep(0.2)
    raise AssertionError(f"runs did not finish: {states}")


@pytest.mark.parametrize("strategy", ["ENQUEUE", "CANCEL_NEW"])
def test_never_more_live_runs_than_the_deployment_limit(
    backend: str, folder: Path, strategy: str
) -> None:
    import limit_flows

    out = folder / f"{strategy}.txt"
    pool = f"limited-{strategy.lower()}"
    deployment_id = Deployment.build_from_flow(
        limit_flows.busy,
        "one-at-a-time",
        parameters={"out": str(out)},
        work_pool_name=pool,
        concurrency_limit=1,
        collision_strategy=strategy,  # type: ignore[arg-type]
    ).apply()
    store = RunStore.default()
    deployment = store.get_deployment_by_id(deployment_id)
    runs = 4
    for _ in range(runs):
        store.create_run(deployment, due=datetime.now(UTC))
    workers = _workers(folder, pool, 2)
    try:
        states = _settle(store, deployment_id, runs)
    finally:
        _stop(workers)
    most = _most_live(out)
    completed = states.count(RunState.COMPLETED)
    cancelled = states.count(RunState.CANCELLED)
    print(
        f"{backend} {strategy}: {runs} runs due at once, limit 1, 2 workers -> {completed} "
        f"completed, {cancelled} cancelled, at most {most} live"
    )
    assert most == 1
    if strategy == "ENQUEUE":
        assert completed == runs
    else:
        assert completed >= 1 and completed + cancelled == runs and cancelled >= 1
        cancelled_run = next(
            r for r in store.list_runs(deployment_id=deployment_id) if r.state is RunState.CANCELLED
        )
        assert "concurrency limit" in cancelled_run.message


def test_a_bad_limit_or_strategy_is_refused_by_name(backend: str, folder: Path) -> None:
    import limit_flows

    with pytest.raises(ConfigurationError, match="concurrency_limit=0"):
        Deployment.build_from_flow(limit_flows.busy, "x", concurrency_limit=0)
    with pytest.raises(ConfigurationError, match="collision_strategy='CANCEL'"):
        Deployment.build_from_flow(
            limit_flows.busy,
            "x",
            collision_strategy="CANCEL",  # type: ignore[arg-type]
        )
