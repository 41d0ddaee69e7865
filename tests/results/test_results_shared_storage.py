"""Two machines share result storage; the second was never given the team's key (issue 20).

Each "machine" is a real process with its own fresh ``BLOCKS_HOME`` and no key of any kind
(the key file source, so no keyring is shared between them). Machine A, a brand-new user on
an empty storage, just works: it makes its key, computes, then hits. Machine B, pointed at the
same storage, must not make a key of its own and overwrite A's records: its task fails with
`ResultsKeyMissing` naming ``BLOCKS_RESULTS_KEY``, A's record is byte for byte unchanged and A
still hits. With one ``BLOCKS_RESULTS_KEY`` on both, B reads what A wrote. Run over a local
folder and over S3 on LocalStack.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

_MACHINE = textwrap.dedent(
    """
    import json, os, sys
    from blocks import task
    from blocks.filesystems import LocalFileSystem, S3
    from blocks.tasks import task_input_hash

    spec, machine, policy = sys.argv[1:]
    storage = S3(bucket_path=spec[3:]) if spec.startswith("s3:") else LocalFileSystem(basepath=spec)
    calls = []
    options = {"cache_key_fn": (lambda: "shared-report") if policy == "static" else task_input_hash}

    @task(result_storage=storage, persist_result=True, **options)
    def report(day: str) -> str:
        calls.append(day)
        # The machine's name is read at run time (not a global the code fingerprint follows):
        # both machines run the same code, so B's hit on A's record is the right value.
        return f"report of {day} by {os.environ['MACHINE']}"

    state = report("2026-12-07", return_state=True)
    value = state.result(raise_on_failure=False) if state.is_completed() else None
    print(json.dumps({"type": state.type.value, "cached": state.is_cached(), "value": value,
                      "computed": len(calls), "message": state.message or ""}))
    """
)


def _machine(home: Path, storage: str, name: str, policy: str, **env: str) -> dict[str, Any]:
    environ = {
        k: v
        for k, v in os.environ.items()
        if k not in {"BLOCKS_MASTER_KEY", "BLOCKS_RESULTS_KEY", "BLOCKS_REGISTRY_URL"}
    }
    environ.update(BLOCKS_HOME=str(home), BLOCKS_KEY_SOURCE="file", MACHINE=name, **env)
    done = subprocess.run(
        [sys.executable, "-c", _MACHINE, storage, name, policy],
        capture_output=True,
        text=True,
        env=environ,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    outcome: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return outcome


def _snapshot(read_all: Any) -> dict[str, bytes]:
    snapshot: dict[str, bytes] = read_all()
    return snapshot


def _play(tmp_path: Path, storage: str, read_all: Any, policy: str, read_all_shared: Any) -> None:
    home_a, home_b = tmp_path / "machine-a", tmp_path / "machine-b"
    first = _machine(home_a, storage, "A", policy)
    again = _machine(home_a, storage, "A", policy)
    assert (first["computed"], again["cached"]) == (1, True), (first, again)
    assert not (home_a / "results-key.new").exists()  # A's key signed a record: adopted
    before = _snapshot(read_all)
    assert len(before) == 1

    b = _machine(home_b, storage, "B", policy)
    after = _snapshot(read_all)
    a_still = _machine(home_a, storage, "A", policy)
    print(f"{policy} key, machine B without the key: {b['type']}: {b['message'][:160]}...")
    print(
        f"records before/after B: {len(before)}/{len(after)}, A's record unchanged: "
        f"{before == after}, A afterwards: cached={a_still['cached']}"
    )
    assert b["type"] == "FAILED" and b["computed"] == 0
    assert "ResultsKeyMissing" in b["message"] and "BLOCKS_RESULTS_KEY" in b["message"]
    assert after == before
    assert a_still["cached"] and a_still["value"] == "report of 2026-12-07 by A"
    # B refused before making anything: no registry, no key, no marker in its home.
    made = sorted(p.name for p in home_b.iterdir()) if home_b.exists() else []
    print(f"machine B's home after the refusal: {made}")
    assert not {"registry.db", "master.key", "results-key.new"} & set(made), made
    assert _machine(home_b, storage, "B", policy)["type"] == "FAILED"

    # The fix the message names: one results key for the team (a fresh storage folder).
    team = {"BLOCKS_RESULTS_KEY": base64.urlsafe_b64encode(os.urandom(32)).decode()}
    shared = storage + "-team"
    wrote = _machine(home_a, shared, "A", policy, **team)
    read = _machine(home_b, shared, "B", policy, **team)
    assert wrote["computed"] == 1 and read["cached"] and read["computed"] == 0
    assert read["value"] == "report of 2026-12-07 by A"

    # A worker with a key of its own, not the team's: its read is a miss, and its write
    # refuses rather than replace the team's record (only the static key shares a path).
    if policy == "static":
        own = {"BLOCKS_RESULTS_KEY": base64.urlsafe_b64encode(os.urandom(32)).decode()}
        before = _snapshot(read_all_shared)
        other = _machine(home_b, shared, "B", policy, **own)
        print(f"machine B with its own key: {other['type']}: {other['message'][:160]}...")
        assert other["type"] == "FAILED" and other["computed"] == 1
        assert "ResultsKeyMissing" in other["message"]
        assert "BLOCKS_RESULTS_KEY" in other["message"]
        assert _snapshot(read_all_shared) == before
        assert _machine(home_a, shared, "A", policy, **team)["cached"]
        # Asked explicitly, it overwrites.
        forced = _machine(home_b, shared, "B", policy, BLOCKS_RESULTS_OVERWRITE_FOREIGN="1", **own)
        assert forced["type"] == "COMPLETED" and _snapshot(read_all_shared) != before


@pytest.mark.parametrize("policy", ["static", "task_input_hash"])
def test_a_keyless_worker_on_shared_local_storage_refuses_instead_of_overwriting(
    tmp_path: Path, policy: str
) -> None:
    folder = tmp_path / "shared"

    def read_all() -> dict[str, bytes]:
        if not folder.exists():
            return {}
        return {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file()}

    def read_all_shared() -> dict[str, bytes]:
        shared = tmp_path / "shared-team"
        return {p.name: p.read_bytes() for p in shared.iterdir() if p.is_file()}

    _play(tmp_path, str(folder), read_all, policy, read_all_shared)


def test_a_keyless_worker_on_shared_s3_refuses_instead_of_overwriting(
    tmp_path: Path, ambient_s3: str, s3_endpoint: Any
) -> None:
    bucket = ambient_s3.split("/", 1)[0]
    client = s3_endpoint.client()

    def read_all(prefix: str = "results/") -> dict[str, bytes]:
        listed = client.list_objects_v2(Bucket=bucket, Prefix=prefix).get("Contents", [])
        return {
            o["Key"]: client.get_object(Bucket=bucket, Key=o["Key"])["Body"].read()
            for o in listed
            if ".blocks-leases/" not in o["Key"]
        }

    _play(tmp_path, f"s3:{bucket}/results", read_all, "static", lambda: read_all("results-team/"))
