"""A cached task in a fresh home, before any block was saved: processes racing the first
result make ONE master key (results are signed under a key derived from it), and every
process reads the others' records."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

SCRIPT = textwrap.dedent(
    """
    import os, sys, time
    from blocks import task
    from blocks.tasks import task_input_hash

    start = float(sys.argv[1])
    while time.time() < start:
        time.sleep(0.001)

    @task(cache_key_fn=task_input_hash)
    def double(x: int) -> int:
        with open(os.environ["CALLS_FILE"], "a") as f:
            f.write("call\\n")
        time.sleep(0.2)
        return x * 2

    assert double(21) == 42
    """
)


def test_processes_racing_the_first_cached_result_share_one_key(
    blocks_home: Path, tmp_path: Path
) -> None:
    processes = int(os.environ.get("BLOCKS_SOAK_PROCESSES", "6"))
    calls = tmp_path / "calls"
    env = {k: v for k, v in os.environ.items() if k != "BLOCKS_MASTER_KEY"}
    env.update(BLOCKS_KEY_SOURCE="file", CALLS_FILE=str(calls))
    start = str(time.time() + 2.0)
    runs = [
        subprocess.Popen([sys.executable, "-c", SCRIPT, start], env=env, stderr=subprocess.PIPE)
        for _ in range(processes)
    ]
    errors = [p.communicate(timeout=120)[1].decode() for p in runs]
    assert all(p.returncode == 0 for p in runs), "\n".join(errors)
    keys = (blocks_home / "master.key").read_text().split(",")
    stray = [p.name for p in blocks_home.iterdir() if p.name.startswith(".master.key")]
    computed = calls.read_text().count("call")
    print(f"{processes} processes on a fresh home: {len(keys)} key, {computed} computation(s)")
    assert len(keys) == 1 and not stray
    assert computed == 1  # one computed, the others waited for its record and read it

    again = subprocess.run(
        [sys.executable, "-c", SCRIPT, "0"], env=env, capture_output=True, text=True, timeout=120
    )
    assert again.returncode == 0, again.stderr
    assert calls.read_text().count("call") == 1  # a later process hits
