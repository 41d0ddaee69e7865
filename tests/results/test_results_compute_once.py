"""Compute once across processes and threads, even when the process computing a key is killed.

Real processes race over the same cached keys, each with several threads: every key is computed
exactly once (counted in a shared log that each computation appends to), and every caller gets
the right value. A process SIGKILLed while it computes (holding the key's lock) leaves no lock
behind: another process computes that key, once.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from collections import Counter
from pathlib import Path

import pytest

from blocks.filesystems import LocalFileSystem
from blocks.results import ResultStore
from blocks.results import _persistence as persistence

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="needs SIGKILL")

SOAK = os.environ.get("BLOCKS_SOAK") == "1"
PROCESSES = 12 if SOAK else 5
KEYS = 200 if SOAK else 24

WORKER = textwrap.dedent(
    """
    import os, random, sys, time
    from concurrent.futures import ThreadPoolExecutor
    from blocks import task
    from blocks.tasks import task_input_hash

    storage, log, keys, role = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]

    def note(line):
        with open(log, "a") as fh:  # one short append per line: atomic for O_APPEND
            fh.write(line + "\\n")

    @task(cache_key_fn=task_input_hash, result_storage=storage)
    def compute(k):
        note(f"start {k} {os.getpid()}")
        if role == "victim":
            print("holding", flush=True)
            time.sleep(60)  # killed here, holding the lock of key 0
        time.sleep(0.01)
        note(f"done {k} {os.getpid()}")
        return k * k

    if role == "victim":
        compute(0)
    order = list(range(keys))
    random.shuffle(order)
    with ThreadPoolExecutor(4) as pool:
        values = list(pool.map(compute, order))
    assert values == [k * k for k in order], values
    print("ok", flush=True)
    """
)


def _log(path: Path) -> tuple[Counter[int], Counter[int]]:
    started: Counter[int] = Counter()
    done: Counter[int] = Counter()
    for line in path.read_text().splitlines():
        word, key, _ = line.split()
        (started if word == "start" else done)[int(key)] += 1
    return started, done


def test_processes_and_threads_compute_each_key_once_even_when_the_holder_is_killed(
    tmp_path: Path,
) -> None:
    storage, log = tmp_path / "shared", tmp_path / "calls.log"
    log.touch()

    def spawn(role: str) -> subprocess.Popen[str]:
        return subprocess.Popen(
            [sys.executable, "-c", WORKER, str(storage), str(log), str(KEYS), role],
            stdout=subprocess.PIPE,
            text=True,
        )

    victim = spawn("victim")
    assert victim.stdout is not None
    assert victim.stdout.readline().strip() == "holding"  # it holds key 0's lock now
    workers = [spawn("worker") for _ in range(PROCESSES)]
    time.sleep(0.5)  # let the workers start and queue behind the lock of key 0
    victim.send_signal(signal.SIGKILL)
    victim.wait(timeout=30)
    outs = [w.communicate(timeout=300)[0].strip() for w in workers]
    started, done = _log(log)
    print(
        f"{PROCESSES} processes x 4 threads, {KEYS} keys: {sum(started.values())} computations "
        f"started, {sum(done.values())} finished, 1 killed while holding a lock"
    )
    assert [w.returncode for w in workers] == [0] * PROCESSES and outs == ["ok"] * PROCESSES
    assert done == Counter(range(KEYS)), "a key was computed more than once, or never"
    assert started[0] == 2  # the killed computation, then one more
    assert all(started[k] == 1 for k in range(1, KEYS))
    store = ResultStore(LocalFileSystem(basepath=str(storage)), "pickle")
    assert len(list(store.records())) == KEYS


def test_a_lock_held_by_one_thread_is_refused_to_a_non_blocking_try(tmp_path: Path) -> None:
    store = ResultStore(LocalFileSystem(basepath=str(tmp_path)), "pickle")
    first, second = persistence.KeyLock(store, "k"), persistence.KeyLock(store, "k")
    assert first.acquire(blocking=False)
    assert not second.acquire(blocking=False)
    other = persistence.KeyLock(store, "other")
    assert other.acquire(blocking=False)  # another key is free
    other.release()
    first.release()
    assert second.acquire(blocking=False)
    second.release()


def test_a_lock_held_by_another_process_is_refused_until_it_exits(tmp_path: Path) -> None:
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time\n"
            "from blocks.filesystems import LocalFileSystem\n"
            "from blocks.results import ResultStore, _persistence as persistence\n"
            "store = ResultStore(LocalFileSystem(basepath=sys.argv[1]), 'pickle')\n"
            "persistence.KeyLock(store, 'k').acquire()\n"
            "print('held', flush=True)\n"
            "time.sleep(60)\n",
            str(tmp_path),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
    store = ResultStore(LocalFileSystem(basepath=str(tmp_path)), "pickle")
    lock = persistence.KeyLock(store, "k")
    assert not lock.acquire(blocking=False)
    holder.send_signal(signal.SIGKILL)
    holder.wait(timeout=30)
    assert lock.acquire(blocking=False)  # the kernel dropped the dead holder's lock
    lock.release()
    assert list((Path(os.environ["BLOCKS_HOME"]) / "locks").iterdir()) == [
        Path(os.environ["BLOCKS_HOME"]) / "locks" / "keys.lock"
    ]  # one lock file, not one per key
