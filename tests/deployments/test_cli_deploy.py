"""`block init` and `block deploy`, run for real as subprocesses: the seed's 5.2 prefect.yaml
unchanged (`prefect-version` ignored, unknown keys named in one warning), our commented
blocks.yaml, and one flow deployed without a file; then a real worker runs what was deployed."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from blocks.deployments import RunState, RunStore

pytestmark = pytest.mark.timeout(300, method="thread")

BLOCK = str(Path(sys.executable).with_name("block"))
EXAMPLES = Path(__file__).parents[1] / "examples"

# The seed's 5.1 flow (5.2's entrypoint names it as flows/etl.py:my_etl_flow), without 5.1's
# apply-at-import.
ETL = """
from blocks import flow


@flow
def my_etl_flow(date: str = None):
    from datetime import datetime

    date = date or datetime.now().strftime("%Y-%m-%d")
    print(f"Running ETL for {date}")
"""


def block(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [BLOCK, *args],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        env=dict(os.environ),
        cwd=cwd,
        timeout=120,
    )


def ok(*args: str, cwd: Path) -> str:
    done = block(*args, cwd=cwd)
    assert done.returncode == 0, done.stderr + done.stdout
    return done.stdout + done.stderr


def one_line_error(*args: str, cwd: Path) -> str:
    done = block(*args, cwd=cwd)
    assert done.returncode != 0, done.stdout
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    return lines[0]


def _project(tmp_path: Path) -> Path:
    folder = tmp_path / "project"
    (folder / "flows").mkdir(parents=True)
    (folder / "flows" / "etl.py").write_text(ETL)
    return folder


def test_seed_5_2_prefect_yaml_deploys_unchanged_and_a_worker_runs_it(tmp_path: Path) -> None:
    folder = _project(tmp_path)
    shutil.copy(EXAMPLES / "ex_5_2_prefect.yaml", folder / "prefect.yaml")
    out = ok("deploy", "--name", "daily-etl", cwd=folder)
    assert "Applied deployment my-etl-flow/daily-etl (pool default-agent-pool)" in out
    assert "prefect-version" not in out  # ignored, not warned about
    store = RunStore.default()
    deployment = store.get_deployment("my-etl-flow/daily-etl")
    document = deployment.document
    assert document["entrypoint"] == "flows/etl.py:my_etl_flow"
    assert document["tags"] == ["etl", "production"] and document["parameters"] == {"date": None}
    slots = store.list_runs(deployment_id=deployment.id)
    assert len(slots) == 3 and all(r.slot and r.slot.hour == 6 for r in slots)
    again = ok("deploy", "--name", "daily-etl", cwd=folder)  # idempotent
    assert store.get_deployment("my-etl-flow/daily-etl") == deployment and "Applied" in again
    made = json.loads(ok("deployment", "run", "my-etl-flow/daily-etl", "--json", cwd=folder))
    ok("worker", "start", "--pool", "default-agent-pool", "--run-once", cwd=folder)
    run = store.get_run(made["id"])
    print(f"5.2: deployed {deployment.full_name}, {len(slots)} slots, run {run.state.value}")
    assert run.state is RunState.COMPLETED, run.message
    assert "Running ETL for 20" in ok("flow-run", "logs", run.id, cwd=folder)


def test_unknown_keys_are_named_in_one_warning_and_mistakes_are_one_line(tmp_path: Path) -> None:
    folder = _project(tmp_path)
    text = (EXAMPLES / "ex_5_2_prefect.yaml").read_text()
    text = text.replace("deployments:", "build: null\npull: []\ndeployments:")
    text = text.replace("    tags:", "    job_variables: {}\n    tags:")
    (folder / "prefect.yaml").write_text(text)
    done = block("deploy", "--all", cwd=folder)
    assert done.returncode == 0, done.stderr
    warned = [line for line in done.stderr.splitlines() if "ignored key" in line]
    print(f"warning: {warned}")
    assert len(warned) == 1
    assert all(key in warned[0] for key in ("build", "pull", "daily-etl.job_variables"))
    assert "prefect-version" not in warned[0]
    assert "--name NAME" in one_line_error("deploy", cwd=folder)
    assert "no deployment named 'nope'" in one_line_error("deploy", "--name", "nope", cwd=folder)
    assert "No blocks.yaml or prefect.yaml" in one_line_error("deploy", "-n", "x", cwd=tmp_path)
    bad = folder / "bad.yaml"
    bad.write_text(
        "deployments:\n  - name: x\n    entrypoint: flows/etl.py:my_etl_flow\n"
        "    schedule: {every: 5}\n"
    )
    refused = one_line_error("deploy", "--all", "-f", str(bad), cwd=folder)
    assert "cron:, interval: or rrule:" in refused
    outside = folder / "outside.yaml"
    outside.write_text("deployments:\n  - name: x\n    entrypoint: ../../evil.py:f\n")
    assert "outside" in one_line_error("deploy", "--all", "-f", str(outside), cwd=folder)


def test_init_writes_a_blocks_yaml_that_deploys(tmp_path: Path) -> None:
    folder = _project(tmp_path)
    assert "Wrote" in ok("init", cwd=folder)
    text = (folder / "blocks.yaml").read_text()
    assert text.count("#") >= 5  # commented
    assert "exists" in one_line_error("init", cwd=folder)
    # Uncomment one of its options, as a user would.
    (folder / "blocks.yaml").write_text(
        text.replace("    # concurrency_limit: 1", "    concurrency_limit: 1")
    )
    ok("deploy", "--name", "daily-etl", cwd=folder)
    deployment = RunStore.default().get_deployment("my-etl-flow/daily-etl")
    assert deployment.pool_name == "default-agent-pool"
    assert deployment.document["concurrency_limit"] == 1
    assert deployment.document["collision_strategy"] == "ENQUEUE"
    assert deployment.document["schedules"][0]["schedule"]["cron"] == "0 6 * * *"


def test_one_flow_deploys_without_a_file(tmp_path: Path) -> None:
    folder = _project(tmp_path)
    done = block(
        "deploy",
        "flows/etl.py:my_etl_flow",
        "--name",
        "every-hour",
        "--pool",
        "p1",
        "--interval",
        "3600",
        "--param",
        "date=2024-01-01",
        "--json",
        cwd=folder,
    )
    assert done.returncode == 0, done.stderr
    rows = json.loads(done.stdout)
    assert rows[0]["name"] == "my-etl-flow/every-hour"
    deployment = RunStore.default().get_deployment("my-etl-flow/every-hour")
    assert deployment.document["parameters"] == {"date": "2024-01-01"}
    assert deployment.document["schedules"][0]["schedule"]["interval"] == 3600.0
    ok(
        "deploy",
        "flows/etl.py:my_etl_flow",
        "-n",
        "cron",
        "-p",
        "p1",
        "--cron",
        "0 6 * * *",
        "--timezone",
        "Europe/Berlin",
        cwd=folder,
    )
    assert "at most one" in one_line_error(
        "deploy",
        "flows/etl.py:my_etl_flow",
        "-n",
        "x",
        "-p",
        "p1",
        "--cron",
        "* * * * *",
        "--interval",
        "5",
        cwd=folder,
    )
    assert "--pool" in one_line_error("deploy", "flows/etl.py:my_etl_flow", "-n", "x", cwd=folder)
    assert "is not a @flow" in one_line_error(
        "deploy", "flows/etl.py:nope", "-n", "x", "-p", "p1", cwd=folder
    )
