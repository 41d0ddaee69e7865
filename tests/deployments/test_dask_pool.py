"""A dask work pool for real: a `dask scheduler` and two `dask worker` processes, a `block worker
start` process submitting the pool's runs to them, on SQLite and PostgreSQL. A run completes in a
process whose parent is a Dask worker, a cancelled run is Cancelled with no process left, and a
SIGKILLed Dask worker's run is Crashed once and retried on the other Dask worker."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from live_processes import stop, wait_for

from blocks.deployments import Deployment, RunState, RunStore, run_deployment

pytest.importorskip("distributed")

BIN = Path(sys.executable).parent
LEASE = 2.0

FLOWS = """
import os
import time

from blocks import flow


@flow
def where(out: str) -> None:
    print("ran on a dask worker", flush=True)
    with open(out, "a") as f:
        f.write(f"{os.getpid()} {os.getppid()}\\n")


@flow(retries=1)
def sleepy(out: str, seconds: float = 30.0) -> None:
    with open(out, "a") as f:
        f.write(f"{os.environ['BLOCKS_FLOW_RUN_ATTEMPT']} {os.getpid()} {os.getppid()}\\n")
    time.sleep(seconds)
"""


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie is dead too: its parent (a killed Dask worker) has not reaped it yet.
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(") ")[1][0] != "Z"
    except (OSError, IndexError):
        return False


class Cluster:
    """A real `dask scheduler` and `dask worker` processes (no nanny: a worker's pid is the
    process that runs tasks), and the `block worker` processes; all stopped at the end."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.scheduler_file = folder / "scheduler.json"
        self.procs: list[subprocess.Popen[bytes]] = []
        self.workers: dict[str, subprocess.Popen[bytes]] = {}

    def _start(self, argv: list[str], log: str) -> subprocess.Popen[bytes]:
        with open(self.folder / log, "wb") as out:
            proc = subprocess.Popen(argv, cwd=self.folder, stdout=out, stderr=subprocess.STDOUT)
        self.procs.append(proc)
        return proc

    def start(self, workers: int) -> str:
        self._start(
            [
                str(BIN / "dask"),
                "scheduler",
                "--host",
                "127.0.0.1",
                "--port",
                "0",
                "--no-dashboard",
                "--scheduler-file",
                str(self.scheduler_file),
            ],
            "scheduler.log",
        )
        wait_for("the Dask scheduler", self.scheduler_file.exists, timeout=60)
        address = str(json.loads(self.scheduler_file.read_text())["address"])
        for index in range(workers):
            name = f"dask-{index}"
            self.workers[name] = self._start(
                [
                    str(BIN / "dask"),
                    "worker",
                    "--scheduler-file",
                    str(self.scheduler_file),
                    "--no-nanny",
                    "--nthreads",
                    "2",
                    "--no-dashboard",
                    "--name",
                    name,
                ],
                f"{name}.log",
            )
        from distributed import Client

        with Client(address, timeout=60) as client:  # type: ignore[no-untyped-call]
            client.wait_for_workers(workers, timeout=60)
        return address

    def block_worker(self, pool: str) -> subprocess.Popen[bytes]:
        return self._start(
            [str(BIN / "block"), "worker", "start", "--pool", pool],
            f"block-worker-{len(self.procs)}.log",
        )

    def stop_all(self) -> None:
        stop(reversed(self.procs))

    def log(self, name: str) -> str:
        return (self.folder / name).read_text()


@pytest.fixture
def cluster(backend: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Cluster]:
    folder = tmp_path / "project"
    folder.mkdir()
    (folder / "dask_flows.py").write_text(FLOWS)
    monkeypatch.setenv("BLOCKS_LEASE_SECONDS", str(LEASE))
    monkeypatch.chdir(folder)
    monkeypatch.syspath_prepend(str(folder))
    started = Cluster(folder)
    yield started
    started.stop_all()
    sys.modules.pop("dask_flows", None)


def block(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BIN / "block"), *args],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=120,
    )


def test_a_dask_pool_runs_cancels_and_survives_a_killed_dask_worker(
    backend: str, cluster: Cluster
) -> None:
    import dask_flows

    folder = cluster.folder
    address = cluster.start(workers=2)
    worker_pids = {proc.pid: name for name, proc in cluster.workers.items()}

    refused = block("work-pool", "create", "nowhere", "--type", "dask", cwd=folder)
    assert refused.returncode == 1 and "--address" in refused.stderr, refused.stderr
    assert len(refused.stderr.strip().splitlines()) == 1
    template = folder / "template.json"
    template.write_text(
        json.dumps({"variables": {"properties": {"address": {"default": address}}}})
    )
    made = block(
        "work-pool", "create", "dask-pool", "--type", "dask", "--base-job-template", str(template),
        cwd=folder,
    )  # fmt: skip
    assert made.returncode == 0 and address in made.stdout, made.stderr
    store = RunStore.default()
    assert store.get_pool("dask-pool").address == address

    out = folder / "where.txt"
    Deployment.build_from_flow(
        dask_flows.where, "d", parameters={"out": str(out)}, work_pool_name="dask-pool"
    ).apply()
    slow = folder / "sleepy.txt"
    Deployment.build_from_flow(
        dask_flows.sleepy, "d", parameters={"out": str(slow)}, work_pool_name="dask-pool"
    ).apply()
    blocks_worker = cluster.block_worker("dask-pool")

    # 1. A run completes on a Dask worker: its process's parent is one of them.
    done = run_deployment("where/d", timeout=120)
    assert done.state is RunState.COMPLETED, (
        done,
        cluster.log(f"block-worker-{len(cluster.procs) - 1}.log"),
    )
    pid, parent = map(int, out.read_text().split())
    assert parent in worker_pids and pid not in worker_pids
    assert any("ran on a dask worker" in line for *_, line in store.logs(done.id))
    assert "Dask cluster" in store.history(done.id)[-2].message  # Running: where it runs

    # 2. Cancel a sleeping run: Cancelled within 5 s, its process gone.
    run = store.create_run(store.get_deployment("sleepy/d"), parameters={"seconds": 60})
    wait_for("the sleepy run to start", lambda: slow.exists() and slow.read_text().strip())
    _, sleeper, _ = map(int, slow.read_text().split())
    typed = time.monotonic()
    cancelled = block("flow-run", "cancel", run.id, cwd=folder)
    asked = time.monotonic()  # the cancel is recorded (Cancelling) once the command returns
    assert cancelled.returncode == 0, cancelled.stderr
    wait_for("Cancelled", lambda: store.get_run(run.id).state is RunState.CANCELLED, timeout=30)
    cancel_seconds = time.monotonic() - asked
    with_command = time.monotonic() - typed
    wait_for("the cancelled run's process to end", lambda: not _alive(sleeper), timeout=10)
    assert cancel_seconds < 5.0, cancel_seconds

    # 3. SIGKILL the Dask worker running a run: Crashed once, retried on the other one.
    slow.unlink()
    run = store.create_run(store.get_deployment("sleepy/d"), parameters={"seconds": 3})
    wait_for("the run to start", lambda: slow.exists() and slow.read_text().strip())
    attempt, first_pid, host = map(int, slow.read_text().split())
    assert attempt == 1 and host in worker_pids
    killed_at = time.monotonic()
    os.kill(host, signal.SIGKILL)
    cluster.workers[worker_pids[host]].wait(timeout=10)
    final = wait_for(
        "the retry to complete",
        lambda: (r := store.get_run(run.id)).state in (RunState.COMPLETED, RunState.FAILED) and r,
        timeout=120,
    )
    retried_in = time.monotonic() - killed_at
    history = store.history(run.id)
    crashed = [c for c in history if c.state is RunState.CRASHED]
    lines = slow.read_text().split("\n")
    starts = [line.split() for line in lines if line.strip()]
    print(
        f"{backend}: dask pool at {address}: 1 run done, Cancelled {cancel_seconds:.2f} s after "
        f"`block flow-run cancel` returned ({with_command:.2f} s with its start-up), "
        f"killed Dask worker's run Crashed {len(crashed)}x and completed as attempt "
        f"{final.attempt} after {retried_in:.1f} s ({len(starts)} starts), "
        f"load {os.getloadavg()[0]:.1f}"
    )
    assert final.state is RunState.COMPLETED and final.attempt == 2, history
    assert len(crashed) == 1 and "Dask" in crashed[0].message, crashed
    assert [s[0] for s in starts] == ["1", "2"]  # never two starts of one attempt
    assert int(starts[1][2]) != host
    assert not _alive(first_pid)  # the run process died with its Dask worker

    # 4. SIGKILL the blocks worker: its Dask task is released and ends the run's process; a
    # new blocks worker reaps the lease (Crashed) and runs the retry.
    slow.unlink()
    run = store.create_run(store.get_deployment("sleepy/d"), parameters={"seconds": 60})
    wait_for("the run to start", lambda: slow.exists() and slow.read_text().strip())
    _, orphan, _ = map(int, slow.read_text().split())
    killed_at = time.monotonic()
    blocks_worker.send_signal(signal.SIGKILL)
    blocks_worker.wait(timeout=10)
    wait_for("the run's process to end with its blocks worker", lambda: not _alive(orphan), 30)
    ended_in = time.monotonic() - killed_at
    cluster.block_worker("dask-pool")
    wait_for("the retry to start", lambda: len(slow.read_text().split("\n")) > 2, timeout=60)
    run = store.get_run(run.id)
    reaped = [c for c in store.history(run.id) if c.state is RunState.CRASHED]
    print(
        f"{backend}: blocks worker SIGKILLed: its run's process on the Dask worker ended "
        f"{ended_in:.1f} s later; Crashed {len(reaped)}x, now attempt {run.attempt} {run.state}"
    )
    assert run.attempt == 2 and len(reaped) == 1, store.history(run.id)
    store.cancel(run.id)
