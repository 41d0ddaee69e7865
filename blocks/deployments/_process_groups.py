"""Signal a run's process group only while its number cannot name anyone else's.

A run process leads its own session, so its process group's id is its pid. Once the leader is
reaped and no member of its group is left, that number is free: the kernel may give it to a new
process, which can lead a group of the same number (every run process this package starts does).
A `killpg` sent after that would end a stranger. While the leader is a zombie (exited, not yet
reaped) its pid, and so the group id, stays reserved. So these helpers look for the leader's exit
without reaping it (`waitid` with ``WNOWAIT``), signal the group (what the run left behind in it),
and reap only then; a leader already reaped is never signalled by group.

Example:
    >>> process = subprocess.Popen(["true"], start_new_session=True)
    >>> while not exited(process):
    ...     time.sleep(0.01)
    >>> reap(process)  # the group is sent SIGKILL, then the leader is reaped
    0
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time

__all__ = ["exited", "reap", "signal_group", "wait_exited"]

#: Seconds between two looks while waiting for a leader to exit.
_POLL_SECONDS = 0.01


def exited(process: subprocess.Popen[bytes]) -> bool:
    """Whether the leader has exited; it is left unreaped (a zombie keeps its pid reserved)."""
    if process.returncode is not None:
        return True
    try:
        found = os.waitid(os.P_PID, process.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
    except ChildProcessError:  # reaped already (not by this Popen): nothing is left to wait for
        return True
    return found is not None


def wait_exited(process: subprocess.Popen[bytes], timeout: float) -> bool:
    """Wait up to `timeout` seconds for the leader to exit, without reaping it."""
    deadline = time.monotonic() + timeout
    while not exited(process):
        if time.monotonic() >= deadline:
            return False
        time.sleep(_POLL_SECONDS)
    return True


def signal_group(process: subprocess.Popen[bytes], sig: signal.Signals) -> None:
    """Send `sig` to the process's group, unless its leader was already reaped."""
    if process.returncode is not None:
        return  # its number may be someone else's by now
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, sig)


def reap(process: subprocess.Popen[bytes]) -> int:
    """End what is left of the process's group (SIGKILL), then reap the leader: its code."""
    signal_group(process, signal.SIGKILL)
    return process.wait()
