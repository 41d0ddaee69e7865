"""Compute-once leases of a local folder as byte-range locks (`blocks.results._range_leases`).

Real processes, each with its own ``BLOCKS_HOME`` (so its own machine lock), sharing one
folder outside both homes:

- racing on one key, they compute it once, and the folder holds no lease file per key (only
  the long-lived lock file and the holders' files);
- a lease file of an older version (which knows only lease files), live, is honoured: the new
  process waits until its holder lets go, then computes;
- a SIGKILLed holder's byte goes with it: the waiter takes the key over, and the next listing
  removes the killed process's holder file;
- a SIGSTOPped holder (its heartbeat count stands still) is given up on after a lease length;
- which mounts are trusted (``nolock`` NFS is not).
"""

from __future__ import annotations

import base64
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
import uuid
from pathlib import Path

import pytest

from blocks.results import _range_leases

pytestmark = pytest.mark.skipif(
    not _range_leases.trusted("/tmp"), reason="byte-range leases need Linux and a local /tmp"
)

_MACHINE = textwrap.dedent(
    """
    import json, logging, os, sys, threading, time
    from blocks import task
    from blocks.filesystems import LocalFileSystem

    logging.basicConfig(format="%(message)s")
    logging.getLogger("blocks.results").setLevel(logging.DEBUG)
    folder, side, key, seconds = sys.argv[1], sys.argv[2], sys.argv[3], float(sys.argv[4])

    @task(result_storage=LocalFileSystem(basepath=folder, fsync=False), persist_result=True,
          cache_key_fn=lambda *a, **k: key)
    def slow(x: int) -> str:
        with open(side, "a") as out:
            out.write(f"start {os.getpid()} {time.time()}\\n")
        time.sleep(seconds)
        return f"value of {x}"

    print("calling", file=sys.stderr, flush=True)
    values = []
    threads = [threading.Thread(target=lambda: values.append(slow(6))) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    print(json.dumps(values))
    """
)

#: An older version's lease holder: a lease file, created and renewed as before.
_OLD_HOLDER = textwrap.dedent(
    """
    import sys
    from blocks.filesystems import LocalFileSystem
    from blocks.filesystems._conditional import LocalObjects
    from blocks.results import ResultStore
    from blocks.results._leases import _ObjectLeases, lease_name

    folder, key = sys.argv[1], sys.argv[2]
    store = ResultStore(LocalFileSystem(basepath=folder))
    objects = LocalObjects(folder, store.storage.describe())
    waiter = _ObjectLeases(objects).waiter(lease_name(store, key), key)
    assert waiter.acquire(True)
    print("held", flush=True)
    sys.stdin.readline()
    waiter.release()
    print("released", flush=True)
    """
)


def _env(home: Path) -> dict[str, str]:
    environ = {k: v for k, v in os.environ.items() if not k.startswith("BLOCKS_")}
    environ.update(
        BLOCKS_HOME=str(home),
        BLOCKS_MACHINE_ID=f"machine-{home.name}",
        BLOCKS_RESULTS_LEASE_SECONDS="2",
        BLOCKS_RESULTS_LEASE_WAIT="120",
        BLOCKS_RESULTS_KEY=_TEAM_KEY,  # one team's key: each reads the others' records
        BLOCKS_MASTER_KEY=_TEAM_KEY,
    )
    return environ


_TEAM_KEY = base64.urlsafe_b64encode(os.urandom(32)).decode()


def _machine(tmp: Path, name: str, side: Path, key: str, seconds: float) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", _MACHINE, str(tmp / "shared"), str(side), key, str(seconds)],
        env=_env(tmp / f"home-{name}"),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        text=True,
    )


def _values(proc: subprocess.Popen[str]) -> list[str]:
    out, err = proc.communicate(timeout=180)
    assert proc.returncode == 0, err[-3000:]
    values: list[str] = json.loads(out.strip().splitlines()[-1])
    return values


def _starts(side: Path) -> list[tuple[int, float]]:
    if not side.exists():
        return []
    lines = [line.split() for line in side.read_text().splitlines()]
    return [(int(pid), float(when)) for _, pid, when in lines]


def _wait_until_waiting(proc: subprocess.Popen[str]) -> None:
    assert proc.stderr is not None
    while not proc.stderr.readline().startswith("Waiting for the compute-once lease"):
        assert proc.poll() is None, proc.stderr.read()[-3000:]


def test_two_processes_racing_one_key_compute_it_once_with_no_lease_file(tmp_path: Path) -> None:
    side, key = tmp_path / "side", f"race-{uuid.uuid4().hex[:8]}"
    machines = [_machine(tmp_path, name, side, key, 1.0) for name in "ab"]
    values = [v for proc in machines for v in _values(proc)]
    assert values == ["value of 6"] * 8
    assert len(_starts(side)) == 1
    # No lease file per key, and nothing once the processes exited (the last one out removes
    # the lock file and the folder).
    assert not (tmp_path / "shared" / ".blocks-leases").exists()


def test_a_live_lease_file_of_an_older_version_is_honoured(tmp_path: Path) -> None:
    side, key = tmp_path / "side", f"old-{uuid.uuid4().hex[:8]}"
    (tmp_path / "shared").mkdir()
    old = subprocess.Popen(
        [sys.executable, "-c", _OLD_HOLDER, str(tmp_path / "shared"), key],
        env=_env(tmp_path / "home-old"),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert old.stdout is not None and old.stdin is not None
    assert old.stdout.readline().strip() == "held"
    new = _machine(tmp_path, "new", side, key, 0.1)
    _wait_until_waiting(new)
    time.sleep(3)  # longer than the lease: the old holder's heartbeat keeps it live
    assert _starts(side) == []
    released = time.time()
    old.stdin.write("\n")
    old.stdin.flush()
    assert old.stdout.readline().strip() == "released"
    old.wait(timeout=60)
    assert _values(new) == ["value of 6"] * 4
    starts = _starts(side)
    assert len(starts) == 1 and starts[0][1] >= released


def test_a_killed_holder_is_taken_over_and_its_holder_file_removed(tmp_path: Path) -> None:
    from blocks.filesystems import LocalFileSystem
    from blocks.results._leases import live_leases

    side, key = tmp_path / "side", f"kill-{uuid.uuid4().hex[:8]}"
    first = _machine(tmp_path, "a", side, key, 60.0)
    deadline = time.monotonic() + 120
    while not _starts(side):
        assert time.monotonic() < deadline and first.poll() is None
        time.sleep(0.05)
    second = _machine(tmp_path, "b", side, key, 0.1)
    _wait_until_waiting(second)
    storage = LocalFileSystem(basepath=str(tmp_path / "shared"))
    (held,) = live_leases(storage)
    assert held.key == key and f":{first.pid}:" in held.owner
    os.kill(first.pid, signal.SIGKILL)
    first.wait()
    assert _values(second) == ["value of 6"] * 4
    assert [pid for pid, _ in _starts(side)] == [first.pid, second.pid]
    assert live_leases(storage) == []
    # The killed holder's file went with the listing; the lock file is this process's now.
    left = sorted(os.listdir(tmp_path / "shared" / ".blocks-leases"))
    assert left == [_range_leases.LOCK_FILE], left


_MOUNTS = (
    "22 1 252:1 / / rw,relatime shared:1 - ext4 /dev/vda rw\n"
    "40 22 0:50 / /mnt/nfs rw,relatime shared:2 - nfs4 srv:/x rw,vers=4.2,local_lock=none\n"
    "41 22 0:51 / /mnt/nolock rw,relatime shared:3 - nfs srv:/y rw,vers=3,local_lock=all\n"
    "42 22 0:52 / /mnt/fuse rw,relatime shared:4 - fuse.sshfs host:/z rw\n"
    "43 22 0:53 / /mnt/with\\040space rw shared:5 - tmpfs tmpfs rw\n"
)


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("/home/me/results", True),
        ("/mnt/nfs/results", True),
        ("/mnt/nolock/results", False),
        ("/mnt/fuse", False),
        ("/mnt/with space/r", True),
        ("/mnt/nfsx", True),  # not below /mnt/nfs: the root's ext4
    ],
)
def test_byte_range_locks_are_trusted_on_local_and_locking_nfs_mounts_only(
    path: str, expected: bool
) -> None:
    assert _range_leases.mount_trusted(path, _MOUNTS) is expected


def test_a_stopped_holder_is_given_up_on_after_a_lease_length(tmp_path: Path) -> None:
    # A stopped process keeps its byte-range lock; its heartbeat count stands still, so the
    # waiter gives up on it after a lease length (2 s here) and computes on the key's second byte.
    side, key = tmp_path / "side", f"stop-{uuid.uuid4().hex[:8]}"
    first = _machine(tmp_path, "a", side, key, 60.0)
    try:
        deadline = time.monotonic() + 120
        while not _starts(side):
            assert time.monotonic() < deadline and first.poll() is None
            time.sleep(0.05)
        time.sleep(1.0)  # a beat or more counted (every third of the 2 s lease)
        first.send_signal(signal.SIGSTOP)
        second = _machine(tmp_path, "b", side, key, 0.1)
        _wait_until_waiting(second)
        assert _values(second) == ["value of 6"] * 4
    finally:
        first.kill()
        first.wait()
    assert [pid for pid, _ in _starts(side)] == [first.pid, second.pid]
