"""`block deployment`, `block work-pool`, `block flow-run` and `block worker start`, run for real
as subprocesses, and the seed's section 5 (5.1 applied from Python, 5.3's pool and worker)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from blocks.deployments import RunState, RunStore

BLOCK = str(Path(sys.executable).with_name("block"))
EXAMPLES = Path(__file__).parents[1] / "examples"

FLOWS = """
from blocks import flow


@flow
def hello(name: str = "world", n: int = 1) -> None:
    print(f"hello {name} x{n * 2}")
"""


def block(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    """``block ARGS`` without a terminal: piped output is TSV, errors one line on stderr."""
    return subprocess.run(
        [BLOCK, *args],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        env=dict(os.environ),
        cwd=cwd,
        timeout=120,
    )


def ok(*args: str, cwd: Path | None = None) -> str:
    done = block(*args, cwd=cwd)
    assert done.returncode == 0, (args, done.stdout, done.stderr)
    return done.stdout


def one_line_error(*args: str, cwd: Path | None = None) -> str:
    done = block(*args, cwd=cwd)
    assert done.returncode != 0, (args, done.stdout)
    assert "Traceback" not in done.stderr + done.stdout
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), done.stderr
    return lines[0]


def python(code: str, cwd: Path) -> str:
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=cwd, timeout=120
    )
    assert done.returncode == 0, done.stderr
    return done.stdout + done.stderr


@pytest.fixture
def project(tmp_path: Path) -> Path:
    folder = tmp_path / "project"
    folder.mkdir()
    (folder / "hello_flows.py").write_text(FLOWS)
    python(
        "from blocks.deployments import Deployment, Interval\n"
        "from hello_flows import hello\n"
        "Deployment.build_from_flow(hello, 'hourly', version='2', parameters={'n': 2},\n"
        "    schedules=[Interval(3600, slug='hourly')], work_pool_name='my-pool').apply()\n",
        folder,
    )
    return folder


def test_work_pool_commands(project: Path) -> None:
    assert "Created work pool 'big'" in ok(
        "work-pool", "create", "big", "--type", "process", "--concurrency-limit", "3"
    )
    assert "exists already" in one_line_error("work-pool", "create", "big")
    for kind in ("docker", "kubernetes"):
        error = one_line_error("work-pool", "create", f"{kind}-pool", "--type", kind)
        assert f"type '{kind}' is not run by this version" in error and "process" in error
    lines = ok("work-pool", "ls").splitlines()
    assert lines[0].split("\t") == ["name", "type", "concurrency limit", "status"]
    assert "big\tprocess\t3\tready" in lines and "my-pool\tprocess\t\tready" in lines
    pools = json.loads(ok("work-pool", "ls", "--json"))
    assert {p["name"] for p in pools} == {"big", "my-pool"}
    shown = json.loads(ok("work-pool", "inspect", "my-pool", "--json"))
    assert shown["deployments"] == ["hello/hourly"] and shown["scheduled"] == 3
    assert "used by deployment(s) hello/hourly" in one_line_error("work-pool", "delete", "my-pool")
    ok("work-pool", "delete", "big")
    assert "No work pool named 'big'" in one_line_error("work-pool", "inspect", "big")


def test_deployment_commands(project: Path) -> None:
    lines = ok("deployment", "ls").splitlines()
    assert lines[0].split("\t") == ["name", "version", "pool", "schedules", "status", "next run"]
    name, version, pool, schedules, status, _next = lines[1].split("\t")
    assert (name, version, pool, schedules, status) == (
        "hello/hourly",
        "2",
        "my-pool",
        "interval 3600.0 UTC",
        "active",
    )
    (listed,) = json.loads(ok("deployment", "ls", "--json"))
    assert listed["entrypoint"] == "hello_flows.py:hello"
    assert listed["path"] == str(project.resolve()) and len(listed["next_runs"]) == 5
    shown = ok("deployment", "inspect", "hello/hourly")
    assert "entrypoint  hello_flows.py:hello" in shown and '{"n": 2}' in shown
    assert "No deployment named 'hello/nope'" in one_line_error(
        "deployment", "inspect", "hello/nope"
    )
    error = one_line_error("deployment", "run", "hello/hourly", "--param", "color=red")
    assert "takes no parameter(s) 'color'" in error
    made = json.loads(
        ok("deployment", "run", "hello/hourly", "--param", "name=cli", "--start-in", "1h", "--json")
    )
    store = RunStore.default()
    later = store.get_run(made["id"])
    assert later.parameters == {"n": 2, "name": "cli"} and later.state is RunState.SCHEDULED
    deployment_id = store.get_deployment("hello/hourly").id
    scheduled = len(store.list_runs(deployment_id=deployment_id, states=[RunState.SCHEDULED]))
    assert "scheduled run(s) removed" in ok("deployment", "pause", "hello/hourly")
    # Pausing drops the schedule's runs; the run made by hand stays.
    left = store.list_runs(deployment_id=deployment_id, states=[RunState.SCHEDULED])
    assert [r.id for r in left] == [made["id"]] and scheduled > 1
    assert "paused" in ok("deployment", "ls")
    assert "Resumed hello/hourly" in ok("deployment", "resume", "hello/hourly")
    assert len(store.list_runs(deployment_id=deployment_id, states=[RunState.SCHEDULED])) > 1
    assert "Pass --yes" in one_line_error("deployment", "delete", "hello/hourly")
    ok("deployment", "delete", "hello/hourly", "--yes")
    assert ok("deployment", "ls").splitlines()[1:] == []


def test_flow_run_commands_and_a_run_once_worker(project: Path) -> None:
    made = json.loads(ok("deployment", "run", "hello/hourly", "--param", 'n="21"', "--json"))
    pending = ok("flow-run", "ls", "--deployment", "hello/hourly", "--state", "scheduled")
    assert made["id"][:12] in pending
    out = ok("worker", "start", "--pool", "my-pool", "--run-once", cwd=project)
    assert out == ""  # the worker talks on stderr
    run = RunStore.default().get_run(made["id"])
    assert run.state is RunState.COMPLETED, run.message
    # "21" was coerced to 21 for `n: int`, as a direct call would: 21 * 2.
    assert "hello world x42" in ok("flow-run", "logs", made["id"][:8])
    shown = json.loads(ok("flow-run", "inspect", made["id"][:8], "--json"))
    assert [c["state"] for c in shown["history"]] == [
        "Scheduled",
        "Pending",
        "Running",
        "Completed",
    ]
    assert shown["worker"] and shown["deployment"] == "hello/hourly"
    rows = json.loads(ok("flow-run", "ls", "--json"))
    assert {"id", "flow", "deployment", "state", "worker", "due", "started", "ended"} <= set(
        rows[0]
    )
    # Cancel: a run not started is Cancelled at once; a final run cannot be cancelled.
    later = json.loads(ok("deployment", "run", "hello/hourly", "--start-in", "1h", "--json"))
    assert "is Cancelled" in ok("flow-run", "cancel", later["id"])
    assert "nothing to cancel" in one_line_error("flow-run", "cancel", later["id"])
    assert "No flow run with id" in one_line_error("flow-run", "inspect", "ffffffffff")


def test_seed_5_1_applies_from_python_and_5_3_runs_it_on_a_worker(tmp_path: Path) -> None:
    """5.1 verbatim but for imports, run as a user runs it from their project folder; then
    5.3's `block work-pool create my-pool --type process` and `block worker start --pool`."""
    folder = tmp_path / "flows"
    folder.mkdir()
    shutil.copy(EXAMPLES / "ex_5_1_deployment.py", folder / "etl.py")
    first = subprocess.run(
        [sys.executable, "etl.py"], capture_output=True, text=True, cwd=folder, timeout=120
    )
    assert first.returncode == 0, first.stderr
    assert "Created work pool 'default-agent-pool' of type process" in first.stderr
    again = subprocess.run(
        [sys.executable, "etl.py"], capture_output=True, text=True, cwd=folder, timeout=120
    )
    assert again.returncode == 0 and "Created" not in again.stderr  # applying again: no change
    store = RunStore.default()
    deployment = store.get_deployment("my-etl-flow/daily-etl")
    assert (deployment.version, deployment.pool_name) == ("1.0", "default-agent-pool")
    assert deployment.document["entrypoint"] == "etl.py:my_etl_flow"
    assert deployment.document["tags"] == ["etl", "production"]
    slots = store.list_runs(deployment_id=deployment.id)
    assert len(slots) == 3 and all(r.slot and r.slot.hour == 6 for r in slots)
    # 5.3
    assert "Created work pool 'my-pool'" in ok(
        "work-pool", "create", "my-pool", "--type", "process"
    )
    made = json.loads(ok("deployment", "run", "my-etl-flow/daily-etl", "--json"))
    ok("worker", "start", "--pool", "default-agent-pool", "--run-once", cwd=folder)
    run = store.get_run(made["id"])
    assert run.state is RunState.COMPLETED, run.message
    logged = ok("flow-run", "logs", run.id)
    assert "Running ETL for 20" in logged  # today's date: the flow's default for date=None
    # The worker imported etl.py, which applies the deployment again: nothing changed.
    assert store.get_deployment("my-etl-flow/daily-etl") == deployment
    assert len(store.list_runs(deployment_id=deployment.id)) == 4
    for kind in ("docker", "kubernetes"):
        one_line_error("work-pool", "create", f"{kind}-pool", "--type", kind)
