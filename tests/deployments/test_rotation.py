"""`block key rotate` with deployments and scheduled runs in the registry: the rotation re-seals
them in its own transaction, so a worker that only holds the new key still runs every run that
was waiting (before, it refused them as tampered and the schedules silently stopped).

The rotation runs in a separate `block key rotate` process that never imports the deployments
layer itself: the registry's ``resealer:`` row makes it load the hook.
"""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from blocks.core._encryption import KeyManager, format_keys, generate_key
from blocks.deployments import Deployment, RunState, RunStore

pytestmark = pytest.mark.timeout(120, method="thread")

FLOWS = """
from blocks import flow


@flow
def note(out: str, tag: str = "scheduled") -> None:
    with open(out, "a") as f:
        f.write(tag + "\\n")
"""


def _block(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", "from blocks.cli import main; main()", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=90,
    )


def test_runs_scheduled_before_a_rotation_run_under_the_new_key_alone(
    backend: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    old, new = generate_key(), generate_key()
    monkeypatch.setenv("BLOCKS_MASTER_KEY", format_keys([old]))
    KeyManager._instances.clear()
    (tmp_path / "rot_flows.py").write_text(FLOWS)
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    import rot_flows

    out = tmp_path / "out.txt"
    deployment_id = Deployment.build_from_flow(
        rot_flows.note,
        "nightly",
        parameters={"out": str(out)},
        work_pool_name="rotpool",
        catchup="all",
    ).apply()
    store = RunStore.default()
    deployment = store.get_deployment_by_id(deployment_id)
    now = datetime.now(UTC)
    slots = [("manual-slots", now - timedelta(seconds=s)) for s in (3, 2, 1)]
    scheduled = store.insert_slots(deployment, slots)
    by_hand = store.create_run(deployment, parameters={"tag": "by-hand"})
    before = {row.id: row for row in store.list_runs(deployment_id=deployment_id)}

    # Rotate in another process (env keys: NEW first, OLD kept to open what exists).
    monkeypatch.setenv("BLOCKS_MASTER_KEY", format_keys([new, old]))
    rotated = _block("key", "rotate", cwd=tmp_path)
    assert rotated.returncode == 0, rotated.stderr + rotated.stdout
    # The deployment and its 4 waiting runs, counted beside the blocks.
    assert "0 block(s) and 5 deployment/run row(s)" in rotated.stdout, rotated.stdout

    # The worker holds the NEW key only: every old seal is now unverifiable.
    monkeypatch.setenv("BLOCKS_MASTER_KEY", format_keys([new]))
    KeyManager._instances.clear()
    worker = _block("worker", "start", "--pool", "rotpool", "--run-once", cwd=tmp_path)
    runs = store.list_runs(deployment_id=deployment_id)
    states = sorted(run.state.value for run in runs)
    print(
        f"{backend}: {len(scheduled)} scheduled + 1 by hand before the rotation -> {states}; "
        f"rotate said {rotated.stdout.strip()!r}; "
        f"worker exit {worker.returncode}; lines {out.read_text().split() if out.exists() else []}"
    )
    assert worker.returncode == 0, worker.stderr + worker.stdout
    assert len(before) == 4
    assert all(run.state is RunState.COMPLETED for run in runs), worker.stderr + worker.stdout
    assert sorted(out.read_text().split()) == ["by-hand", *["scheduled"] * 3]
    assert by_hand.id in {run.id for run in runs}
    assert store.get_deployment_by_id(deployment_id).full_name == "note/nightly"
    assert "tampered" not in (worker.stderr + worker.stdout).lower()


def test_a_run_edited_in_the_database_stays_refused_after_a_rotation(
    backend: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Re-sealing must not bless an edit: a run whose parameters were changed in the database
    keeps its broken seal through the rotation and is still refused."""
    from blocks.core._rotation import rotate_master_key
    from blocks.deployments import _tables as t
    from blocks.errors import BlocksError

    old, new = generate_key(), generate_key()
    monkeypatch.setenv("BLOCKS_MASTER_KEY", format_keys([old]))
    KeyManager._instances.clear()
    (tmp_path / "rot_flows.py").write_text(FLOWS)
    monkeypatch.syspath_prepend(str(tmp_path))
    import rot_flows

    deployment_id = Deployment.build_from_flow(
        rot_flows.note, "edited", parameters={"out": os.devnull}, work_pool_name="rotpool2"
    ).apply()
    store = RunStore.default()
    run = store.create_run(store.get_deployment_by_id(deployment_id))
    with store.registry.write() as conn:
        conn.execute(
            t.flow_runs.update()
            .where(t.flow_runs.c.id == run.id)
            .values(parameters='{"out":"/tmp/evil","tag":"x"}')
        )
    monkeypatch.setenv("BLOCKS_MASTER_KEY", format_keys([new, old]))
    KeyManager._instances.clear()
    with pytest.warns(UserWarning, match="do not verify"):
        report = rotate_master_key()
    monkeypatch.setenv("BLOCKS_MASTER_KEY", format_keys([new]))
    KeyManager._instances.clear()
    print(f"{backend}: rotation re-sealed {report.resealed} row(s); the edited run left as is")
    assert report.resealed == 1  # the deployment only
    with pytest.raises(BlocksError):
        store.verified_parameters(run)
    store.get_deployment_by_id(deployment_id)  # the deployment itself opens under NEW
