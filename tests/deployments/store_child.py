"""A process that works on the run store, for the multi-process tests (run as a script).

    python store_child.py insert GO_FILE DEPLOYMENT_ID SLOTS_JSON   -> prints ids it inserted
    python store_child.py claim GO_FILE POOL WORKER                 -> prints ids it claimed
    python store_child.py reap GO_FILE                              -> prints ids it retried

Each waits for GO_FILE to exist before starting, so every process starts at once.
"""

from __future__ import annotations

import json
import os
import sys
import time
from datetime import datetime


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


if __name__ == "__main__":
    main(sys.argv[1:])
