"""A run's process group is signalled only while its leader is unreaped (its id still its own)."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from blocks.deployments import _process_groups


def _state(pid: int) -> str | None:
    """The process's state letter from /proc (Z: a zombie), None once it is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return None
    return stat.rsplit(")", 1)[1].split()[0]


def _gone(pid: int, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if _state(pid) in (None, "Z"):
            return True
        time.sleep(0.01)
    return False


def test_exit_is_seen_without_reaping_and_the_group_ends_before_the_leader_is_reaped() -> None:
    # The leader leaves a child behind in its group and exits with 3.
    process = subprocess.Popen(
        ["sh", "-c", "sleep 60 & echo $!; exit 3"],
        stdout=subprocess.PIPE,
        start_new_session=True,
    )
    assert process.stdout is not None
    child = int(process.stdout.readline())
    assert _process_groups.wait_exited(process, 10.0)
    assert process.returncode is None
    assert _state(process.pid) == "Z"  # exited, unreaped: its pid (the group id) is reserved
    assert _state(child) not in (None, "Z")  # what it left behind still runs
    assert _process_groups.reap(process) == 3
    assert _gone(child)
    assert _state(process.pid) is None
    process.stdout.close()


def test_wait_exited_gives_up_on_a_running_leader() -> None:
    process = subprocess.Popen(["sleep", "60"], start_new_session=True)
    try:
        assert not _process_groups.exited(process)
        assert not _process_groups.wait_exited(process, 0.05)
    finally:
        assert _process_groups.reap(process) == -signal.SIGKILL


def test_a_reaped_leader_is_never_signalled_by_group(monkeypatch: pytest.MonkeyPatch) -> None:
    process = subprocess.Popen(["true"], start_new_session=True)
    assert process.wait() == 0
    sent: list[tuple[int, int]] = []
    monkeypatch.setattr(os, "killpg", lambda pgid, sig: sent.append((pgid, sig)))
    # After the reap its number may already name another process's group.
    _process_groups.signal_group(process, signal.SIGKILL)
    assert _process_groups.reap(process) == 0
    assert _process_groups.exited(process)
    assert sent == []
