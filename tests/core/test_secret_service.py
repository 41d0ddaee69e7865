"""The master key in a real Secret Service: gnome-keyring on a private D-Bus session bus.

The other keyring tests use keyrings.alt's file backend; these drive the backend desktop Linux
users have, through `keyring`'s SecretService backend, in real processes: racing first use, and
the daemon SIGKILLed and restarted while processes save. Figures are printed; ``BLOCKS_SOAK=1``
runs bigger loops.
"""

from __future__ import annotations

import os
import random
import subprocess
import sys
import time
from pathlib import Path

from servers import SecretService

from blocks.core._encryption import KEYRING_SERVICE

SOAK = os.environ.get("BLOCKS_SOAK") == "1"

# Saves secrets until STOP_FILE appears; one line per attempt: "saved NAME" or "refused TYPE MSG".
SAVER = """
import os, sys, time
from pathlib import Path
stop = Path(os.environ["STOP_FILE"])
from blocks.system import Secret
tag, n, most = sys.argv[1], 0, int(sys.argv[2])
print("ready", flush=True)
while not stop.exists() and n < most:
    name = f"s-{tag}-{n}"
    n += 1
    try:
        Secret(value="value-of-" + name).save(name)
    except Exception as exc:
        print("refused", type(exc).__name__, str(exc).replace("\\n", " "), flush=True)
        time.sleep(0.02)
    else:
        print("saved", name, flush=True)
    time.sleep(0.01)
"""

# Loads every name given on stdin; prints how many read back right, or the error's type.
READER = """
import sys
from blocks.system import Secret
names = sys.stdin.read().split()
try:
    ok = sum(Secret.load(n).get() == "value-of-" + n for n in names)
except Exception as exc:
    print("error", type(exc).__name__, str(exc).replace("\\n", " "))
else:
    print("readable", ok)
"""


def worker_env(service: SecretService, home: Path, source: str = "keyring") -> dict[str, str]:
    env = {**os.environ, **service.env, "BLOCKS_HOME": str(home), "BLOCKS_KEY_SOURCE": source}
    env.pop("BLOCKS_MASTER_KEY", None)
    return env


def read_back(env: dict[str, str], names: list[str]) -> str:
    done = subprocess.run(
        [sys.executable, "-c", READER],
        input=" ".join(names),
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def key_items(service: SecretService) -> int:
    """How many items of ours the Secret Service holds (read with secretstorage directly)."""
    code = (
        "import secretstorage, sys\n"
        "bus = secretstorage.dbus_init()\n"
        "items = secretstorage.search_items(bus, {'service': sys.argv[1]})\n"
        "print(sum(1 for _ in items))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code, KEYRING_SERVICE],
        env={**os.environ, **service.env},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    return int(done.stdout)


def start_savers(
    env: dict[str, str], stop: Path, count: int, tag: str, most: int = 1_000_000
) -> list[subprocess.Popen[str]]:
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", SAVER, f"{tag}-{n}", str(most)],
            env={**env, "STOP_FILE": str(stop)},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for n in range(count)
    ]
    for proc in procs:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
    return procs


def collect(procs: list[subprocess.Popen[str]]) -> tuple[list[str], list[str]]:
    saved: list[str] = []
    refused: list[str] = []
    for proc in procs:
        out, err = proc.communicate(timeout=240)
        assert proc.returncode == 0, err
        for line in out.splitlines():
            kind, _, rest = line.partition(" ")
            (saved if kind == "saved" else refused).append(rest)
    return saved, refused


def test_processes_racing_first_use_share_one_key_in_the_secret_service(
    secret_service: SecretService, tmp_path: Path
) -> None:
    processes = 16 if SOAK else 6
    home = tmp_path / "home"
    env = worker_env(secret_service, home)
    stop = tmp_path / "stop"
    procs = start_savers(env, stop, processes, "first", most=5)
    saved, refused = collect(procs)
    result = read_back(env, saved)
    print(
        f"\nreal Secret Service, {processes} processes racing first use: secrets saved "
        f"{len(saved)}, refused {len(refused)}, {result}"
    )
    assert refused == []
    assert len(saved) == processes * 5
    assert result == f"readable {len(saved)}"
    assert not (home / "master.key").exists(), "the key went to the Secret Service, not a file"
    assert key_items(secret_service) == 1, "one master key item in the Secret Service"


def test_a_secret_service_killed_and_restarted_under_load_loses_nothing(
    secret_service: SecretService, tmp_path: Path
) -> None:
    rounds = 8 if SOAK else 2
    home = tmp_path / "home"
    env = worker_env(secret_service, home)
    seeded, refused = collect(start_savers(env, tmp_path / "never", 2, "seed", most=5))
    assert len(seeded) == 10 and refused == []
    rng = random.Random(11)
    all_saved: list[str] = list(seeded)
    all_refused: list[str] = []
    down_errors: list[str] = []
    for round_ in range(rounds):
        stop = tmp_path / f"stop-{round_}"
        procs = start_savers(env, stop, 3, f"r{round_}")
        time.sleep(rng.uniform(0.2, 0.6))
        secret_service.stop()  # SIGKILL while processes save
        time.sleep(rng.uniform(0.2, 0.6))
        # While it is down, a fresh process cannot read the key: a typed error, no file key.
        down_errors.append(read_back(env, all_saved[:5]))
        secret_service.start()
        time.sleep(rng.uniform(0.2, 0.6))
        stop.touch()
        saved, refused = collect(procs)
        all_saved += saved
        all_refused += refused
    result = read_back(env, all_saved)
    kinds = sorted({r.split(" ", 1)[0] for r in all_refused})
    print(
        f"\nreal Secret Service killed and restarted {rounds} times under 3 saving processes: "
        f"secrets saved {len(all_saved)}, refused while down {len(all_refused)} {kinds}, "
        f"{result}"
    )
    assert all_saved, "nothing was saved"
    assert result == f"readable {len(all_saved)}", "a saved secret was lost"
    assert set(kinds) <= {"KeyManagementError", "KeyMismatch"}, all_refused[:3]
    for error in down_errors:
        assert error.startswith("error KeyManagementError"), error
        assert "keyring" in error and "value-of-" not in error, error
    assert not (home / "master.key").exists(), "a second key was created in a file"
