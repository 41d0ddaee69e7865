"""The compute-once lock, attacked: another local user, a stopped holder, a lock file deleted
while held, one storage reached by two paths.

Each test races real processes (or a real second user, ``nobody`` through ``setpriv``) over one
cached key, counts computations through a log file the task appends to, and prints the figures.
Before these fixes: another user held a read lock on the 0644 lock file and hung the owner's
cached tasks for good; a SIGSTOPped holder did the same; a lock file deleted while held, or a
storage reached through a symlink, let two processes compute the same key at once.
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import textwrap
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from blocks import settings
from blocks.errors import ConfigurationError, StorageError
from blocks.filesystems import LocalFileSystem
from blocks.results import ResultStore
from blocks.results._locks import KeyLock, storage_identity

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX locks and signals")

SOAK = os.environ.get("BLOCKS_SOAK") == "1"
RACERS = 16 if SOAK else 6
SETPRIV = shutil.which("setpriv")
SYSTEM_PYTHON = "/usr/bin/python3"  # the venv lives under /root, which nobody cannot enter
as_root_with_setpriv = pytest.mark.skipif(
    os.geteuid() != 0 or SETPRIV is None or not os.path.exists(SYSTEM_PYTHON),
    reason="needs root, setpriv and a system python to act as a second user",
)

# A cached task with a fixed key: it notes each computation in a shared log, then waits for a
# "go" file, so every process that gets past the lock is inside it at the same time.
WORKER = textwrap.dedent(
    """
    import logging, os, sys, time
    logging.basicConfig(level=logging.WARNING, format="%(name)s %(levelname)s %(message)s")
    from blocks import task

    storage, log = sys.argv[1], sys.argv[2]

    @task(cache_key_fn=lambda context, parameters: "the-key", result_storage=storage)
    def compute(x):
        with open(log, "a") as fh:  # one short append: atomic for O_APPEND
            fh.write(f"computed {os.getpid()}\\n")
        print("computing", flush=True)
        while not os.path.exists(log + ".go"):
            time.sleep(0.01)
        return x * 7

    print("ready", flush=True)
    print("value", compute(6), flush=True)
    """
)


def _spawn(storage: Path, log: Path, **env: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", WORKER, str(storage), str(log)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, **env},
    )


def _ready(proc: subprocess.Popen[str]) -> None:
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "ready"


def _computations(log: Path) -> int:
    return len(log.read_text().splitlines()) if log.exists() else 0


def _wait_for_a_computation(log: Path) -> None:
    deadline = time.monotonic() + 120
    while not _computations(log) and time.monotonic() < deadline:
        time.sleep(0.05)


def _finish(procs: list[subprocess.Popen[str]]) -> list[tuple[str, str]]:
    outs = [p.communicate(timeout=300) for p in procs]
    for proc, (out, err) in zip(procs, outs, strict=True):
        assert proc.returncode == 0, err
        assert "value 42" in out, (out, err)
    return outs


@pytest.fixture
def traversable_home(monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A BLOCKS_HOME that another local user can enter and list (0755, under /tmp)."""
    parent = Path(tempfile.mkdtemp(prefix="blocks-locks-", dir="/tmp"))
    parent.chmod(0o755)
    home = parent / "home"
    home.mkdir(mode=0o755)
    home.chmod(0o755)
    monkeypatch.setenv("BLOCKS_HOME", str(home))
    yield home
    shutil.rmtree(parent, ignore_errors=True)


def _as_nobody(script: str, *args: str) -> subprocess.Popen[str]:
    assert SETPRIV is not None
    return subprocess.Popen(
        [
            SETPRIV,
            "--reuid=nobody",
            "--regid=nogroup",
            "--clear-groups",
            *(SYSTEM_PYTHON, "-I", "-c", textwrap.dedent(script), *args),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd="/tmp",
    )


# The attacker: open the lock folder and file every way it can, then try to hold a lock.
PROBE = """
    import fcntl, os, sys
    folder = sys.argv[1]
    path = os.path.join(folder, "keys.lock")
    def attempt(what, fn):
        try:
            fd = fn()
        except PermissionError:
            print(what, "denied")
            return
        try:
            fcntl.lockf(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
            print(what, "opened and locked")
        except OSError:
            print(what, "opened")
    attempt("list folder", lambda: os.open(folder, os.O_RDONLY | os.O_DIRECTORY))
    attempt("open file read-only", lambda: os.open(path, os.O_RDONLY))
    attempt("open file read-write", lambda: os.open(path, os.O_RDWR))
"""


def _modes(folder: Path) -> tuple[int, int]:
    return (
        stat.S_IMODE(folder.stat().st_mode),
        stat.S_IMODE((folder / "keys.lock").stat().st_mode),
    )


def _store(storage: Path | str) -> ResultStore:
    return ResultStore(LocalFileSystem(basepath=str(storage)), "pickle")


@as_root_with_setpriv
@pytest.mark.parametrize("umask", [0o000, 0o022, 0o277])
def test_another_local_user_can_neither_open_nor_lock_the_lock_file(
    traversable_home: Path, tmp_path: Path, umask: int
) -> None:
    old = os.umask(umask)
    try:
        lock = KeyLock(_store(tmp_path / "storage"), "k")
        assert lock.acquire() and lock.held
        lock.release()
    finally:
        os.umask(old)
    folder = traversable_home / "locks"
    modes = _modes(folder)
    probe = _as_nobody(PROBE, str(folder))
    out, err = probe.communicate(timeout=60)
    lines = out.splitlines()
    print(
        f"umask {umask:04o}: folder {modes[0]:04o}, file {modes[1]:04o}; as nobody: "
        f"{sum(line.endswith('denied') for line in lines)} of {len(lines)} attempts denied"
    )
    assert modes == (0o700, 0o600)  # exactly, whatever the umask
    assert lines == [
        "list folder denied",
        "open file read-only denied",
        "open file read-write denied",
    ], err


@as_root_with_setpriv
def test_a_lax_lock_file_held_open_by_another_user_is_replaced_and_blocks_nothing(
    traversable_home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The layout an older version left: folder 0755, file 0644. Another user opens the file
    # and holds a read lock over all of it: every key of the owner's, for good.
    folder = traversable_home / "locks"
    folder.mkdir(mode=0o755)
    folder.chmod(0o755)
    (folder / "keys.lock").touch(mode=0o644)
    (folder / "keys.lock").chmod(0o644)
    attacker = _as_nobody(
        """
        import fcntl, os, sys, time
        fd = os.open(os.path.join(sys.argv[1], "keys.lock"), os.O_RDONLY)
        fcntl.lockf(fd, fcntl.LOCK_SH)  # the whole file
        print("holding", flush=True)
        time.sleep(120)
        """,
        str(folder),
    )
    try:
        assert attacker.stdout is not None
        assert attacker.stdout.readline().strip() == "holding", attacker.stderr
        monkeypatch.setenv("BLOCKS_LOCK_TIMEOUT", "60")  # a failure fails, never hangs
        locks = [KeyLock(_store(tmp_path / "storage"), f"key-{i}") for i in range(20)]
        taken = [lock.acquire(blocking=False) for lock in locks]
        held = sum(lock.held for lock in locks)
        for lock in locks:
            lock.release()
    finally:
        attacker.kill()
        attacker.wait(timeout=30)
    modes = _modes(folder)
    print(
        f"another user held a read lock on the old 0644 file: {held} of {len(locks)} keys taken "
        f"at once, without waiting; folder now {modes[0]:04o}, file {modes[1]:04o}"
    )
    assert all(taken) and held == len(locks)
    assert modes == (0o700, 0o600)
    assert sorted(p.name for p in traversable_home.iterdir()) == ["locks"]  # no debris


@as_root_with_setpriv
@pytest.mark.parametrize("what", ["folder", "file"])
def test_a_lock_folder_or_file_owned_by_another_user_is_refused(
    blocks_home: Path, tmp_path: Path, what: str
) -> None:
    folder = blocks_home / "locks"
    folder.mkdir(parents=True, mode=0o700)
    (folder / "keys.lock").touch(mode=0o600)
    nobody = 65534
    os.chown(folder if what == "folder" else folder / "keys.lock", nobody, nobody)
    lock = KeyLock(_store(tmp_path / "storage"), "k")
    with pytest.raises(StorageError, match="owned by user id 65534, not by this user") as caught:
        lock.acquire()
    print(caught.value)
    assert "Remove it" in str(caught.value)
    assert not lock.held


def test_a_symlinked_lock_file_is_refused(blocks_home: Path, tmp_path: Path) -> None:
    folder = blocks_home / "locks"
    folder.mkdir(parents=True, mode=0o700)
    elsewhere = tmp_path / "elsewhere.lock"
    elsewhere.touch(mode=0o600)
    (folder / "keys.lock").symlink_to(elsewhere)
    with pytest.raises(StorageError, match="is a symlink"):
        KeyLock(_store(tmp_path / "storage"), "k").acquire()


def test_a_stopped_holder_delays_waiters_only_until_the_timeout(tmp_path: Path) -> None:
    storage, log = tmp_path / "storage", tmp_path / "calls.log"
    holder = _spawn(storage, log)
    try:
        _ready(holder)
        assert holder.stdout is not None and holder.stdout.readline().strip() == "computing"
        holder.send_signal(signal.SIGSTOP)  # holds the key's lock, and will never let go
        (tmp_path / "calls.log.go").touch()
        waiters = [_spawn(storage, log, BLOCKS_LOCK_TIMEOUT="3") for _ in range(RACERS)]
        outs = _finish(waiters)
    finally:
        holder.kill()
        holder.wait(timeout=30)
    said = [f"held by process {holder.pid}" in e and "BLOCKS_LOCK_TIMEOUT=3" in e for _, e in outs]
    computed = _computations(log)
    print(
        f"1 stopped holder, {RACERS} waiters (timeout 3 s): {len(outs)} finished with 42, "
        f"{sum(said)} logged the timeout naming the holder, {computed - 1} computed it "
        f"({computed} computations in all, the stopped one included)"
    )
    assert all(said), outs[0][1]
    assert computed == 2  # the stopped holder's, then one of the waiters' (the others read it)
    hit = _store(storage).read("the-key")
    assert hit is not None and hit.value == 42


def test_an_event_loop_polling_the_lock_also_stops_after_the_timeout(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time\n"
            "from blocks.filesystems import LocalFileSystem\n"
            "from blocks.results import ResultStore\n"
            "from blocks.results._locks import KeyLock\n"
            "KeyLock(ResultStore(LocalFileSystem(basepath=sys.argv[1]), 'pickle'), 'k').acquire()\n"
            "print('held', flush=True)\n"
            "time.sleep(120)\n",
            str(tmp_path),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        holder.send_signal(signal.SIGSTOP)
        monkeypatch.setenv("BLOCKS_LOCK_TIMEOUT", "0.3")
        lock = KeyLock(_store(tmp_path), "k")
        refused = 0
        with caplog.at_level(logging.WARNING, logger="blocks.results"):
            while not lock.acquire(blocking=False):
                refused += 1
                time.sleep(0.01)
        print(f"{refused} polls refused, then: {caplog.records[-1].getMessage()}")
        assert refused > 0 and lock.held  # the takers-over' byte: free
        assert f"held by process {holder.pid}" in caplog.text
        lock.release()
    finally:
        holder.kill()
        holder.wait(timeout=30)


def test_deleting_the_lock_file_while_held_still_computes_once(
    blocks_home: Path, tmp_path: Path
) -> None:
    storage, log = tmp_path / "storage", tmp_path / "calls.log"
    env = {"BLOCKS_LOCK_TIMEOUT": "240"}  # not what ends any wait here
    holder = _spawn(storage, log, **env)
    _ready(holder)
    assert holder.stdout is not None and holder.stdout.readline().strip() == "computing"
    early = [_spawn(storage, log, **env) for _ in range(RACERS // 2)]
    for proc in early:
        _ready(proc)
    time.sleep(0.5)  # they queue behind the holder, on the file about to be deleted
    (blocks_home / "locks" / "keys.lock").unlink()
    late = [_spawn(storage, log, **env) for _ in range(RACERS - RACERS // 2)]
    for proc in late:
        _ready(proc)
    time.sleep(2.0)  # they find no lock file: before the fix, one made a new one and computed
    inside = _computations(log)
    (tmp_path / "calls.log.go").touch()
    _finish([holder, *early, *late])
    computed = _computations(log)
    print(
        f"lock file deleted while held: 1 holder, {len(early)} waiting before, {len(late)} "
        f"arriving after; {inside} inside the task at once, {computed} computation(s) in all"
    )
    assert inside == 1 and computed == 1
    assert stat.S_IMODE((blocks_home / "locks" / "keys.lock").stat().st_mode) == 0o600


STORM_WORKER = textwrap.dedent(
    """
    import os, random, sys, time
    from concurrent.futures import ThreadPoolExecutor
    from blocks import task
    from blocks.tasks import task_input_hash

    storage, log, keys = sys.argv[1], sys.argv[2], int(sys.argv[3])

    @task(cache_key_fn=task_input_hash, result_storage=storage)
    def compute(k):
        with open(log, "a") as fh:
            fh.write(f"{k}\\n")
        time.sleep(0.02)
        return k * k

    order = list(range(keys))
    random.shuffle(order)
    with ThreadPoolExecutor(4) as pool:
        values = list(pool.map(compute, order))
    assert values == [k * k for k in order], values
    print("ok", flush=True)
    """
)


def test_a_lock_file_deleted_again_and_again_under_racing_threads_computes_each_key_once(
    blocks_home: Path, tmp_path: Path
) -> None:
    processes, keys = (12, 200) if SOAK else (4, 40)
    storage, log = tmp_path / "storage", tmp_path / "calls.log"
    log.touch()
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", STORM_WORKER, str(storage), str(log), str(keys)],
            stdout=subprocess.PIPE,
            text=True,
            env={**os.environ, "BLOCKS_LOCK_TIMEOUT": "240"},
        )
        for _ in range(processes)
    ]
    deleted = 0
    while any(p.poll() is None for p in procs):
        try:
            (blocks_home / "locks" / "keys.lock").unlink()
            deleted += 1
        except FileNotFoundError:
            pass
        time.sleep(0.005)
    outs = [p.communicate(timeout=60)[0].strip() for p in procs]
    counts = Counter(int(line) for line in log.read_text().splitlines())
    print(
        f"{processes} processes x 4 threads, {keys} keys, lock file deleted {deleted} times: "
        f"{sum(counts.values())} computations, most of one key {max(counts.values())}"
    )
    assert outs == ["ok"] * processes
    assert counts == Counter(range(keys)), "a key computed twice, or never"
    assert deleted > 0


def test_a_storage_reached_through_a_symlink_shares_one_lock_with_its_real_path(
    tmp_path: Path,
) -> None:
    real, link, log = tmp_path / "real", tmp_path / "link", tmp_path / "calls.log"
    real.mkdir()
    link.symlink_to(real, target_is_directory=True)
    procs = [_spawn(real if i % 2 else link, log) for i in range(RACERS)]
    for proc in procs:
        _ready(proc)
    _wait_for_a_computation(log)
    time.sleep(1.0)  # every process past its miss: before the fix, one per path computed
    inside = _computations(log)
    (tmp_path / "calls.log.go").touch()
    _finish(procs)
    computed = _computations(log)
    print(
        f"{RACERS} processes, half through a symlink to the storage: {inside} inside the task "
        f"at once, {computed} computation(s) in all"
    )
    assert inside == 1 and computed == 1


def test_one_lock_name_per_real_storage(tmp_path: Path) -> None:
    real = tmp_path / "real"
    real.mkdir()
    (tmp_path / "link").symlink_to(real, target_is_directory=True)
    same = [
        ("S3A://bucket//results/", "s3://bucket/results"),
        ("gcs://Bucket/a//b", "gs://bucket/a/b"),
        (
            "s3://b/p (endpoint HTTP://LocalHost:4566/)",
            "s3://b/p (endpoint http://localhost:4566)",
        ),
        (f"file://{tmp_path}/link", f"file://{real}"),
        (f"file://{tmp_path}/real/../link/", f"file://{real}"),
    ]
    for one, other in same:
        assert storage_identity(one) == storage_identity(other), (one, other)
    assert storage_identity("s3://bucket/A") != storage_identity("s3://bucket/a")  # keys' case
    stores = [_store(real), _store(tmp_path / "link")]
    names = {KeyLock(store, "k").name for store in stores}
    print(f"{len(same)} pairs of descriptions of one storage: one identity each; 2 paths: {names}")
    assert len(names) == 1


def test_the_wait_timeout_setting_is_read_and_checked(monkeypatch: pytest.MonkeyPatch) -> None:
    assert settings.lock_timeout() == settings.DEFAULT_LOCK_TIMEOUT == 300
    monkeypatch.setenv("BLOCKS_LOCK_TIMEOUT", "inf")
    assert settings.lock_timeout() == float("inf")
    monkeypatch.setenv("BLOCKS_LOCK_TIMEOUT", "2.5")
    assert settings.lock_timeout() == 2.5
    for bad in ("-1", "soon", "nan"):
        monkeypatch.setenv("BLOCKS_LOCK_TIMEOUT", bad)
        with pytest.raises(ConfigurationError, match="BLOCKS_LOCK_TIMEOUT"):
            settings.lock_timeout()


def test_a_home_that_is_not_a_folder_is_a_clear_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "home").write_text("not a folder")
    monkeypatch.setenv("BLOCKS_HOME", str(tmp_path / "home"))
    with pytest.raises(StorageError, match="compute-once lock") as caught:
        KeyLock(_store(tmp_path / "storage"), "k").acquire()
    print(caught.value)
