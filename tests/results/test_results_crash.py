"""SIGKILL a process in the middle of writing result records: no torn record is ever readable.

A child process writes 1000 records (overwriting 400 keys, ~0.1-0.6 MB each) and prints a
marker before and after each write. The parent kills it with SIGKILL a few milliseconds after a
chosen "begin" marker, so the kill lands inside a write (serializing, fsync or rename). Then every
key must be absent or hold exactly a value the child wrote, every write the child reported as
done must be readable, and the temp file of the interrupted write must never pass for a record.
"""

from __future__ import annotations

import hashlib
import random
import signal
import subprocess
import sys
import warnings
from pathlib import Path

import pytest

from blocks.errors import UnsafePath
from blocks.filesystems import LocalFileSystem
from blocks.filesystems.base import TEMP_PREFIX
from blocks.results import ResultStore

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="needs SIGKILL")

WRITES = 1000
KEYS = 400

CHILD = r"""
import hashlib, sys
from blocks.filesystems import LocalFileSystem
from blocks.results import ResultStore

def payload(i):
    block = hashlib.sha256(str(i).encode()).digest()
    return block * (4000 + (i * 7919) % 16000)

store = ResultStore(LocalFileSystem(basepath=sys.argv[1]), "pickle")
for i in range(int(sys.argv[2])):
    print("begin", i, flush=True)
    store.write(f"r/{i % int(sys.argv[3]):04d}", (i, payload(i)), task="crash")
    print("done", i, flush=True)
"""


def payload(i: int) -> bytes:
    block = hashlib.sha256(str(i).encode()).digest()
    return block * (4000 + (i * 7919) % 16000)


def _write_until_killed(base: Path, kill_after: int, delay: float) -> tuple[int, int]:
    """Run the writer, SIGKILL it `delay` s after "begin kill_after"; return (last begun, done)."""
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(base), str(WRITES), str(KEYS)],
        stdout=subprocess.PIPE,
        text=True,
    )
    begun = done = -1
    killed = False
    try:
        assert child.stdout is not None
        # Keep reading after the kill: the child may have run ahead of what we had read.
        for line in child.stdout:
            word, number = line.split()
            if word == "begin":
                begun = int(number)
                if begun == kill_after and not killed:
                    # A marker, then a short timer: the kill lands inside a write.
                    _spin(delay)
                    child.send_signal(signal.SIGKILL)
                    killed = True
            else:
                done = int(number)
    finally:
        child.kill()
        child.wait(timeout=30)
    assert child.returncode == -signal.SIGKILL, "the writer finished before it was killed"
    return begun, done


def _spin(seconds: float) -> None:
    import time

    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        pass


@pytest.mark.parametrize("round_", range(3))
def test_sigkill_mid_write_leaves_no_torn_record(tmp_path: Path, round_: int) -> None:
    rng = random.Random(round_)
    base = tmp_path / "results"
    kill_after = rng.randrange(60, 250)
    begun, done = _write_until_killed(base, kill_after, delay=rng.uniform(0.0005, 0.004))
    assert begun >= kill_after and done >= kill_after - 1 and begun < WRITES - 1

    store = ResultStore(LocalFileSystem(basepath=str(base)), "pickle")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a torn or corrupt record would warn: fail instead
        listed = dict(store.records())
        for slot in range(KEYS):
            key = f"r/{slot:04d}"
            hit = store.read(key)
            # The newest write to this slot that had finished, if any.
            finished = [i for i in range(slot, done + 1, KEYS)]
            if hit is None:
                assert not finished, f"{key}: write {finished[-1]} was reported done but is lost"
                assert key not in listed
                continue
            i, data = hit.value
            assert i % KEYS == slot and i <= begun, f"{key} holds a value never written there"
            assert data == payload(i), f"{key}: value {i} is not exactly what was written"
            assert not finished or i >= finished[-1]
            assert hit.header.task == "crash" and listed[key] == hit.header
            assert store.exists(key)

    assert set(listed) <= {f"r/{slot:04d}" for slot in range(KEYS)}
    assert all(header is not None for header in listed.values())
    # The interrupted write may leave its temp file; it is never listed nor readable as a key.
    strays = [p for p in base.rglob("*") if p.is_file() and p.name.startswith(TEMP_PREFIX)]
    for stray in strays:
        with pytest.raises(UnsafePath):
            store.read(stray.relative_to(base).as_posix())
