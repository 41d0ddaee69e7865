"""Processes that race on the run store, for the multi-process tests.

`race(tmp_path, *commands)` starts this file once per command and releases them together:

    python racing.py insert GO_FILE DEPLOYMENT_ID SLOTS_JSON   -> prints ids it inserted
    python racing.py claim GO_FILE POOL WORKER                 -> prints ids it claimed
    python racing.py reap GO_FILE                              -> prints ids it crashed, retried
    python racing.py pass GO_FILE                              -> prints a scheduler pass's report

Each waits for GO_FILE to exist before starting, so every process starts at once.
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

#: Processes racing in each test (BLOCKS_STRESS=1 for more).
STRESS = os.environ.get("BLOCKS_STRESS") == "1"
PROCESSES = 8 if STRESS else 4


def race(tmp_path: Path, *commands: list[str]) -> list[str]:
    """Start every command as a process, release them at once, return their stdouts."""
    go = tmp_path / f"go-{random.random()}"
    procs = [
        subprocess.Popen(
            [sys.executable, __file__, command[0], str(go), *command[1:]],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for command in commands
    ]
    time.sleep(0.5)  # let them import and connect; they wait for the file (no timing assert)
    go.touch()
    outputs = []
    for proc in procs:
        out, err = proc.communicate(timeout=240)
        assert proc.returncode == 0, err
        outputs.append(out)
    return outputs


def main(argv: list[str]) -> None:
    from blocks.deployments._store import RunStore

    action, go = argv[0], argv[1]
    store = RunStore.default()
    while not os.path.exists(go):
        time.sleep(0.005)
    if action == "insert":
        deployment = store.get_deployment_by_id(argv[2])
        slots = [(slug, datetime.fromisoformat(at)) for slug, at in json.loads(argv[3])]
        inserted: list[str] = []
        for i in range(0, len(slots), 5):  # several small passes, as a scheduler loop makes
            inserted += store.insert_slots(deployment, slots[i : i + 5], max_attempts=1)
        print(json.dumps(inserted))
    elif action == "claim":
        claimed: list[str] = []
        while (run := store.claim(argv[2], worker=argv[3], lease_seconds=60)) is not None:
            claimed.append(run.id)
            time.sleep(0.002)  # let the others take the lock between two claims
        print(json.dumps(claimed))
    elif action == "reap":
        report = store.reap()
        print(json.dumps({"crashed": report.crashed, "retried": report.retried}))
    elif action == "pass":
        from blocks.deployments._scheduler import schedule_pass

        done = schedule_pass(store)
        print(json.dumps({"inserted": done.inserted, "late": done.late}))


if __name__ == "__main__":
    main(sys.argv[1:])
