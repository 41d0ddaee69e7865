"""The README's first command ends in `python -m blocks.demo`: it must keep working."""

from __future__ import annotations

import os
import subprocess
import sys


def test_demo_runs_end_to_end_and_caches_on_the_second_run() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "blocks.demo"],
        capture_output=True,
        text=True,
        env=os.environ.copy(),
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert "run 1: 15 records loaded" in out and "extract ran 3 time(s)" in out
    assert "extract ran 0 time(s)" in out
    assert "Cached: orders" in out
    assert "sk-demo-0123456789" not in out + proc.stderr
    assert "secret/demo-api-key" in out
