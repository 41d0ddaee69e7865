"""Run history through real `block worker start` processes (SQLite and PostgreSQL): a
deployment's run records its task runs and the lines of `get_run_logger()` and `log_prints`,
masked and capped; SIGTERM to a run process is Crashed naming the signal; the flow's states
carry the run's scheduled time. And SIGTERM to a plain ``python flow.py``: Crashed too."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from live_processes import wait_for

from blocks.deployments import Deployment, RunState, RunStore

pytestmark = pytest.mark.timeout(240, method="thread")

CLI = "from blocks.cli import main; main()"
SECRET = "s3cr3t-history-value-42"
FLOWS = """
import os
import time

from blocks import flow, get_run_logger, task
from blocks.system import Secret


@task
def add(x: int) -> int:
    get_run_logger().info("adding %s", x)
    return x + 1


@task
def broken() -> None:
    raise ValueError("broken on purpose")


@flow(log_prints=True)
def history(n: int = 3, lines: int = 0) -> int:
    token = Secret.load("history-token").get()
    print(f"printed with the token {token}")
    total = sum(add(i) for i in range(n))
    for i in range(lines):
        get_run_logger().info("line %s", i)
    broken(return_state=True)
    return total


def _stamp(flow, flow_run, state):
    with open(os.environ["STAMP_FILE"], "a") as f:
        f.write(f"{state.name}|{state.state_details.scheduled_time}|{state.message}\\n")


@flow(on_completion=[_stamp], on_crashed=[_stamp])
def stamped(seconds: float = 0.0) -> None:
    with open(os.environ["STAMP_FILE"] + ".pid", "w") as f:
        f.write(str(os.getpid()))
    time.sleep(seconds)


if __name__ == "__main__":
    stamped(seconds=60)
"""


@pytest.fixture
def folder(backend: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    from blocks.system import Secret

    (tmp_path / "history_flows.py").write_text(FLOWS)
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv("STAMP_FILE", str(tmp_path / "stamps.txt"))
    Secret(value=SECRET).save("history-token", overwrite=True)
    yield tmp_path
    sys.modules.pop("history_flows", None)


def _worker(folder: Path, pool: str, *args: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-c", CLI, "worker", "start", "--pool", pool, *args],
        cwd=folder,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def test_a_deployment_run_records_its_task_runs_and_run_logs_masked(
    backend: str, folder: Path
) -> None:
    import history_flows

    deployment_id = Deployment.build_from_flow(
        history_flows.history, "history", parameters={"n": 3}, work_pool_name="hist"
    ).apply()
    store = RunStore.default()
    run = store.create_run(store.get_deployment_by_id(deployment_id))
    done = subprocess.run(
        [sys.executable, "-c", CLI, "worker", "start", "--pool", "hist", "--run-once"],
        cwd=folder,
        capture_output=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert store.get_run(run.id).state is RunState.COMPLETED
    tasks, total = store.task_runs(run.id)
    lines = [message for _, _, _, message in store.logs(run.id)]
    print(f"{backend}: {total} task runs, {len(lines)} log lines: {lines}")
    assert total == 4
    assert [(t.task_name, t.state) for t in tasks] == [
        ("add", "Completed"),
        ("add", "Completed"),
        ("add", "Completed"),
        ("broken", "Failed"),
    ]
    assert "broken on purpose" in tasks[-1].message
    assert all(t.started <= t.ended and not t.cached and t.attempt == 1 for t in tasks)
    assert any("adding 2" in line and "Task run 'add-" in line for line in lines)
    assert any("printed with the token ***" in line for line in lines)  # log_prints, masked
    assert not any(SECRET in line for line in lines)
    assert not any(SECRET in t.message or SECRET in t.name for t in tasks)

    # The CLI shows them: inspect lists the task runs, logs prints the lines.
    cli = [sys.executable, "-c", CLI, "flow-run"]
    shown = subprocess.run([*cli, "inspect", run.id], capture_output=True, text=True, cwd=folder)
    assert shown.returncode == 0, shown.stderr
    assert "task runs" in shown.stdout and "broken-" in shown.stdout and "Failed" in shown.stdout
    logs = subprocess.run([*cli, "logs", run.id], capture_output=True, text=True, cwd=folder)
    assert "adding 1" in logs.stdout and SECRET not in logs.stdout + shown.stdout


def test_run_history_is_capped_per_run(
    backend: str, folder: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import history_flows

    monkeypatch.setenv("BLOCKS_RUN_LOG_LINES", "50")
    monkeypatch.setenv("BLOCKS_RUN_TASK_RUNS", "20")
    deployment_id = Deployment.build_from_flow(
        history_flows.history, "capped", parameters={"n": 100, "lines": 200}, work_pool_name="cap"
    ).apply()
    store = RunStore.default()
    run = store.create_run(store.get_deployment_by_id(deployment_id))
    done = subprocess.run(
        [sys.executable, "-c", CLI, "worker", "start", "--pool", "cap", "--run-once"],
        cwd=folder,
        capture_output=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    tasks, total = store.task_runs(run.id)
    lines = store.logs(run.id)
    counted = store.get_run(run.id).log_lines
    print(
        f"{backend}: {total} task runs reported, {len(tasks)} kept; {counted} lines, "
        f"{len(lines)} kept; last: {lines[-1][3]}"
    )
    assert total == 101 and len(tasks) == 20
    assert len(lines) == 51 and "log capped at 50 lines" in lines[-1][3]
    assert counted > 300  # every line is counted: 100 adds, 200 lines, print, begin/end


def test_sigterm_to_a_worker_run_process_is_crashed_naming_the_signal_and_scheduled_time(
    backend: str, folder: Path
) -> None:
    import history_flows

    stamps = folder / "stamps.txt"
    deployment_id = Deployment.build_from_flow(
        history_flows.stamped, "stamped", parameters={"seconds": 60}, work_pool_name="term"
    ).apply()
    store = RunStore.default()
    deployment = store.get_deployment_by_id(deployment_id)
    slot = datetime.now(UTC).replace(microsecond=0) + timedelta(seconds=1)
    (run_id,) = store.insert_slots(deployment, [("by-hand", slot)], max_attempts=1)
    worker = _worker(folder, "term")
    try:
        pid_file = Path(str(stamps) + ".pid")
        wait_for("the flow body", pid_file.exists)
        time.sleep(0.3)
        os.kill(int(pid_file.read_text()), signal.SIGTERM)
        crashed = wait_for(
            "Crashed",
            lambda: (r := store.get_run(run_id)).state is RunState.CRASHED and r,
            timeout=30,
        )
    finally:
        worker.terminate()
        worker.wait(30)
    stamp = stamps.read_text().strip()
    lines = [message for _, _, _, message in store.logs(run_id)]
    print(f"{backend}: {crashed.message!r}; on_crashed saw {stamp!r}; log {lines[-1]!r}")
    assert "SIGTERM" in crashed.message
    name, scheduled, message = stamp.split("|", 2)
    assert name == "Crashed" and "SIGTERM" in message
    assert datetime.fromisoformat(scheduled) == slot  # the slot, in the flow's state
    assert any("Crashed" in line and "SIGTERM" in line for line in lines)  # flushed first


def test_sigterm_to_a_plain_python_flow_is_crashed_naming_the_signal(folder: Path) -> None:
    stamps = folder / "stamps.txt"
    proc = subprocess.Popen(
        [sys.executable, "history_flows.py"],
        cwd=folder,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    pid_file = Path(str(stamps) + ".pid")
    wait_for("the flow body", pid_file.exists, timeout=60)
    time.sleep(0.3)
    proc.send_signal(signal.SIGTERM)
    _, errors = proc.communicate(timeout=30)
    stamp = stamps.read_text().strip()
    print(f"python flow.py + SIGTERM: exit {proc.returncode}; on_crashed saw {stamp!r}")
    assert proc.returncode == 128 + signal.SIGTERM
    assert stamp.startswith("Crashed|None|") and "SIGTERM" in stamp  # no scheduled time
    assert "Crashed" in errors and "SIGTERM" in errors  # the run logger said so
