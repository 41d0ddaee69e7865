"""Secrets under real concurrency: many processes, rotations, a flapping keyring, SIGKILL.

Every test uses real processes (not threads) and prints its figures ("secrets saved N /
readable N"). CI sizes keep each test to seconds; ``BLOCKS_SOAK=1`` runs bigger loops.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from blocks.core._encryption import KeyManager
from blocks.core._registry import Registry
from blocks.errors import KeyManagementError, KeyMismatch
from blocks.system import Secret

SOAK = os.environ.get("BLOCKS_SOAK") == "1"
TESTS = Path(__file__).parents[1]

# A worker: wait for the start signal, save its secrets, print each name it saved, then exit.
SAVER = """
import os, sys, time
from pathlib import Path
go = Path(os.environ["GO_FILE"])
print("ready", flush=True)
while not go.exists():
    time.sleep(0.002)
from blocks.system import Secret
if os.environ.get("WITH_RUN_STORE"):
    from blocks.deployments import RunStore
    RunStore.default()  # the deployments' tables too, made on first use
tag = sys.argv[1]
for i in range(int(sys.argv[2])):
    name = f"s-{tag}-{i}"
    try:
        Secret(value="value-of-" + name).save(name, overwrite=True)
    except Exception as exc:
        print("refused", type(exc).__name__, str(exc).replace("\\n", " "), flush=True)
    else:
        print("saved", name, flush=True)
"""


def fresh_process_state() -> None:
    """Forget cached keys and connections, as a new process would start."""
    KeyManager._instances.clear()
    Registry.dispose_all()


def key_env(source: str, tmp_path: Path, env: dict[str, str] | None = None) -> dict[str, str]:
    """The environment of a worker that takes its key from `source` (in a fresh BLOCKS_HOME)."""
    env = dict(env or os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(TESTS), env.get("PYTHONPATH", "")])
    env["BLOCKS_KEY_SOURCE"] = source
    if source != "env":
        env.pop("BLOCKS_MASTER_KEY", None)
    if source in ("keyring", "auto"):
        env["XDG_DATA_HOME"] = str(tmp_path / "xdg")
        env["PYTHON_KEYRING_BACKEND"] = "keyrings.alt.file.PlaintextKeyring"
    return env


def use_env(monkeypatch: pytest.MonkeyPatch, env: dict[str, str]) -> None:
    """Make this (the checking) process read keys as the workers did."""
    for name in (
        "BLOCKS_MASTER_KEY",
        "BLOCKS_KEY_SOURCE",
        "XDG_DATA_HOME",
        "PYTHON_KEYRING_BACKEND",
        "BLOCKS_REGISTRY_URL",
    ):
        if name in env:
            monkeypatch.setenv(name, env[name])
        else:
            monkeypatch.delenv(name, raising=False)
    import keyring
    import keyring.core

    keyring.core._keyring_backend = None  # re-chosen from PYTHON_KEYRING_BACKEND on next use
    fresh_process_state()


def race(env: dict[str, str], tmp_path: Path, processes: int, per_process: int) -> list[str]:
    """Start `processes` savers, release them at one instant, return the names they saved."""
    go = tmp_path / f"go-{random.getrandbits(32)}"
    env = {**env, "GO_FILE": str(go)}
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", SAVER, f"p{n}", str(per_process)],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for n in range(processes)
    ]
    for proc in procs:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
    go.touch()
    saved: list[str] = []
    for proc in procs:
        out, err = proc.communicate(timeout=240)
        assert proc.returncode == 0, err
        for line in out.splitlines():
            kind, _, rest = line.partition(" ")
            if kind == "saved":
                saved.append(rest)
            else:
                pytest.fail(f"a racing first save was refused: {rest}")
    return saved


def readable(names: list[str]) -> int:
    fresh_process_state()
    return sum(Secret.load(name).get() == "value-of-" + name for name in names)


def stray_key_files(home: Path) -> list[str]:
    return sorted(p.name for p in home.glob(".master.key.*")) if home.exists() else []


@pytest.mark.parametrize("source", ["file", "env", "keyring"])
def test_sixteen_processes_racing_first_use_share_one_key(
    source: str, tmp_path: Path, blocks_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    trials = 5 if SOAK else 1
    total_saved = total_readable = 0
    for trial in range(trials):
        home = tmp_path / f"home-{trial}"
        env = key_env(source, tmp_path / f"t{trial}", {**os.environ, "BLOCKS_HOME": str(home)})
        saved = race(env, tmp_path, processes=16, per_process=10)
        use_env(monkeypatch, env)
        monkeypatch.setenv("BLOCKS_HOME", str(home))
        fresh_process_state()
        total_saved += len(saved)
        total_readable += readable(saved)
        record = Registry.default().key_record()
        assert record is not None
        assert KeyManager.for_registry(Registry.default().url).keyset().ids == [
            record.active_key_id
        ], "one key, the recorded one"
        assert stray_key_files(home) == []
        assert (home / "master.key").exists() == (source == "file")
    print(
        f"\n[{source}] {trials} trial(s) x 16 processes: secrets saved {total_saved} / "
        f"readable {total_readable}"
    )
    assert total_saved == trials * 160
    assert total_readable == total_saved


def test_processes_racing_a_fresh_postgres_registry_make_its_tables_once(
    tmp_path: Path, postgres_server: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # PostgreSQL's CREATE TABLE IF NOT EXISTS fails (a unique violation on pg_type) when
    # another session creates the same table at the same moment: first use must serialise it.
    trials = 20 if SOAK else 4
    total = 0
    for trial in range(trials):
        database = f"first_use_{trial}_{random.getrandbits(24):x}"
        url = postgres_server.create_database(database)
        try:
            env = key_env("env", tmp_path / f"t{trial}", {**os.environ, "BLOCKS_REGISTRY_URL": url})
            env.update(BLOCKS_HOME=str(tmp_path / f"home-{trial}"), WITH_RUN_STORE="1")
            saved = race(env, tmp_path, processes=8, per_process=2)
            use_env(monkeypatch, env)
            assert readable(saved) == len(saved) == 16
            total += len(saved)
        finally:
            fresh_process_state()
            postgres_server.drop_database(database)
    print(f"\n{trials} fresh PostgreSQL registries x 8 processes at first use: {total} saved")


ROTATOR = """
import sys
from blocks.core._encryption import KeyManager
from blocks.core._rotation import rotate_master_key
verified = 0
for _ in range(int(sys.argv[1])):
    KeyManager._instances.clear()
    verified += rotate_master_key().verified
print("rotated", sys.argv[1], verified, flush=True)
"""


@pytest.fixture(params=["sqlite", "postgres"])
def registry_url(
    request: pytest.FixtureRequest, blocks_home: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[str]:
    """Each concurrency test on the SQLite registry and on a fresh PostgreSQL database."""
    if request.param == "postgres":
        url = request.getfixturevalue("postgres_db_url")
        monkeypatch.setenv("BLOCKS_REGISTRY_URL", url)
        yield url
    else:
        yield f"sqlite:///{blocks_home / 'registry.db'}"


@pytest.mark.parametrize("source", ["file", "keyring"])
def test_saves_during_rotations_lose_nothing(
    source: str,
    registry_url: str,
    tmp_path: Path,
    blocks_home: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    rotations = 200 if SOAK else 40
    env = key_env(source, tmp_path, {**os.environ, "BLOCKS_REGISTRY_URL": registry_url})
    use_env(monkeypatch, env)
    Secret(value="value-of-first").save("first")  # the key exists before the race starts
    go = tmp_path / "go"
    env["GO_FILE"] = str(go)
    writers = [
        subprocess.Popen(
            [sys.executable, "-c", SAVER, f"w{n}", str(400 if SOAK else 60)],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for n in range(2)
    ]
    for proc in writers:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
    rotator = subprocess.Popen(
        [sys.executable, "-c", ROTATOR, str(rotations)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    go.touch()
    saved = ["first"]
    for proc in writers:
        out, err = proc.communicate(timeout=600)
        assert proc.returncode == 0, err
        for line in out.splitlines():
            kind, _, rest = line.partition(" ")
            assert kind == "saved", f"a save was refused during rotation: {rest}"
            saved.append(rest)
    out, err = rotator.communicate(timeout=600)
    assert rotator.returncode == 0, err
    assert out.split()[:2] == ["rotated", str(rotations)]
    ok = readable(saved)
    print(
        f"\n[{source}, {registry_url.split(':')[0]}] {rotations} rotations, 2 writers: "
        f"secrets saved {len(saved)} / readable {ok}; tokens proven by rotate {out.split()[2]}"
    )
    assert ok == len(saved)
    assert KeyManager.for_registry(Registry.default().url).keyset().ids == [
        Registry.default().key_record().active_key_id  # type: ignore[union-attr]
    ], "every old key retired"
    assert stray_key_files(blocks_home) == []


def test_a_keyring_that_comes_and_goes_never_forks_the_key(
    tmp_path: Path, blocks_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """auto key source; each process randomly has the keyring, a flaky one, or none at all."""
    rounds = 20 if SOAK else 6
    base = key_env("auto", tmp_path)
    flavours = {
        "keyring": base,
        "flaky": {**base, "PYTHON_KEYRING_BACKEND": "flaky_keyring.FlakyKeyring"},
        "none": {**base, "PYTHON_KEYRING_BACKEND": "keyring.backends.fail.Keyring"},
    }
    use_env(monkeypatch, base)
    Secret(value="value-of-first").save("first")  # the key is set up in the keyring first
    rng = random.Random(7)
    saved: list[str] = ["first"]
    refused = {"none": 0, "keyring": 0, "flaky": 0}
    attempts = 0
    for round_ in range(rounds):
        go = tmp_path / f"go-{round_}"
        picks = [rng.choice(list(flavours)) for _ in range(4)]
        procs = []
        for n, flavour in enumerate(picks):
            env = {**flavours[flavour], "GO_FILE": str(go)}
            procs.append(
                (
                    flavour,
                    subprocess.Popen(
                        [sys.executable, "-c", SAVER, f"r{round_}-{n}-{flavour}", "5"],
                        env=env,
                        stdout=subprocess.PIPE,
                        stderr=subprocess.PIPE,
                        text=True,
                    ),
                )
            )
        for _, proc in procs:
            assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
        go.touch()
        for flavour, proc in procs:
            out, err = proc.communicate(timeout=240)
            assert proc.returncode == 0, err
            for line in out.splitlines():
                attempts += 1
                kind, _, rest = line.partition(" ")
                if kind == "saved":
                    saved.append(rest)
                else:
                    assert flavour == "none", rest
                    assert "KeyMismatch" in rest, rest
                    refused[flavour] += 1
    use_env(monkeypatch, base)
    ok = readable(saved)
    print(
        f"\nflapping keyring, {rounds} rounds x 4 processes: {attempts} saves tried, "
        f"secrets saved {len(saved)} / readable {ok}; refused without a keyring "
        f"{refused['none']}, refused with one {refused['keyring'] + refused['flaky']}"
    )
    assert ok == len(saved) > 1
    assert refused["keyring"] == refused["flaky"] == 0
    assert refused["none"] > 0, "a process without the keyring must be refused, not fork"
    assert not (blocks_home / "master.key").exists(), "no second key was created in a file"


def test_rotation_sigkilled_at_random_moments_loses_nothing(
    tmp_path: Path, blocks_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    kills = 40 if SOAK else 8
    env = key_env("file", tmp_path)
    use_env(monkeypatch, env)
    names = [f"k{i}" for i in range(40)]
    for name in names:
        Secret(value="value-of-" + name).save(name)
    script = (
        "from blocks.core._rotation import rotate_master_key\n"
        "from blocks.core._encryption import KeyManager\n"
        "print('ready', flush=True)\n"
        "while True:\n"
        "    KeyManager._instances.clear()\n"
        "    rotate_master_key()\n"
    )
    rng = random.Random(11)
    lost = 0
    for _ in range(kills):
        proc = subprocess.Popen(
            [sys.executable, "-c", script], env=env, stdout=subprocess.PIPE, text=True
        )
        assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
        time.sleep(rng.uniform(0.0, 0.6))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        lost += len(names) - readable(names)  # a load also clears a dead writer's temp file
        assert stray_key_files(blocks_home) == []
        # and a save after the kill still works under the recorded key
        Secret(value="value-of-k0").save("k0", overwrite=True)
    print(
        f"\nSIGKILL during rotation x{kills}: secrets {len(names)}, lost {lost}, "
        f"stray key files {len(stray_key_files(blocks_home))}"
    )
    assert lost == 0


def test_a_process_with_another_key_is_refused_naming_both_sources(
    tmp_path: Path, blocks_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    env = key_env("file", tmp_path)
    use_env(monkeypatch, env)
    Secret(value="v").save("a")
    other = tmp_path / "other-home"
    other_key = subprocess.run(
        [
            sys.executable,
            "-c",
            "from blocks.core._encryption import *; print(format_keys([generate_key()]))",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    monkeypatch.setenv("BLOCKS_KEY_SOURCE", "env")
    monkeypatch.setenv("BLOCKS_MASTER_KEY", other_key)
    fresh_process_state()
    with pytest.raises(KeyMismatch) as info:
        Secret(value="w").save("b")
    message = str(info.value)
    assert "BLOCKS_MASTER_KEY" in message and str(blocks_home / "master.key") in message
    assert other_key not in message
    assert Registry.default().get_document("secret", "b") is None
    del other


def test_a_load_never_creates_a_key(
    tmp_path: Path, blocks_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    use_env(monkeypatch, key_env("file", tmp_path))
    Secret(value="v").save("a")
    (blocks_home / "master.key").unlink()
    fresh_process_state()
    with pytest.raises(KeyManagementError):
        Secret.load("a")
    with pytest.raises(KeyMismatch):  # nor does a save into a registry that has a key
        Secret(value="w").save("b")
    assert not (blocks_home / "master.key").exists()
