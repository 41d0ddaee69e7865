"""`run_deployment` called by a deployment's flow makes a subflow run (Prefect's ``as_subflow``):
a real worker runs the parent, whose flow asks for the child and waits for it; the child's row
names its parent, and `block flow-run inspect` and the UI's run page show the link both ways.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from live_processes import stop
from ui_server import serve_ui

from blocks.deployments import Deployment, RunState, RunStore, run_deployment

BLOCK = str(Path(sys.executable).with_name("block"))
FLOWS = """
from blocks import flow
from blocks.deployments import run_deployment


@flow
def child(n: int) -> None:
    print(n)


@flow
def parent(linked: bool = True) -> None:
    made = run_deployment("child/sub", parameters={"n": 7}, timeout=120, as_subflow=linked)
    assert made.state.value == "Completed", made.state
"""


@pytest.fixture
def folder(backend: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    (tmp_path / "subflow_flows.py").write_text(FLOWS)
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    return tmp_path


def test_a_deployment_run_that_calls_run_deployment_is_the_parent_of_the_run_it_made(
    folder: Path,
) -> None:
    import subflow_flows

    try:
        for fn, name in ((subflow_flows.child, "sub"), (subflow_flows.parent, "main")):
            Deployment.build_from_flow(fn, name, work_pool_name="subflows").apply()
    finally:
        sys.modules.pop("subflow_flows", None)
    store = RunStore.default()
    worker = subprocess.Popen(
        [BLOCK, "worker", "start", "--pool", "subflows"],
        cwd=folder,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        linked = run_deployment("parent/main", timeout=180)
        unlinked = run_deployment("parent/main", parameters={"linked": False}, timeout=180)
    finally:
        stop([worker])
    assert linked.state is RunState.COMPLETED, store.history(linked.id)
    assert unlinked.state is RunState.COMPLETED, store.history(unlinked.id)
    [child] = store.child_runs(linked.id)
    assert child.parent_run_id == linked.id and child.state is RunState.COMPLETED
    assert child.parameters == {"n": 7}
    assert store.child_runs(unlinked.id) == []  # as_subflow=False: no link
    assert linked.parent_run_id is None  # made by hand here, outside any run
    # The as_subflow=False child has no parent; the linked one has.
    children = [r for r in store.list_runs() if r.flow_name == "child"]
    assert sorted(r.parent_run_id is None for r in children) == [False, True]

    shown = subprocess.run(
        [BLOCK, "flow-run", "inspect", linked.id, "--json"], capture_output=True, text=True
    )
    assert shown.returncode == 0, shown.stderr
    assert json.loads(shown.stdout)["subflow_runs"] == [child.id]
    shown = subprocess.run(
        [BLOCK, "flow-run", "inspect", child.id], capture_output=True, text=True, cwd=folder
    )
    assert shown.returncode == 0 and linked.id in shown.stdout, shown.stderr

    with serve_ui() as ui, ui.client() as client:
        page = client.get(f"/flow-runs/{linked.id}").text
        assert 'id="subflow-runs"' in page and f'data-run="{child.id}"' in page
        page = client.get(f"/flow-runs/{child.id}").text
        assert f'href="/flow-runs/{linked.id}"' in page
    print(f"subflow run {child.id[:12]} of {linked.id[:12]}: linked in the store, CLI and UI")
