"""``block results ls`` / ``prune`` on a local path start light and delete only what verifies.

Real subprocesses of the installed command: the listing and the prune of a local store must not
import pydantic (the Block machinery), SQLAlchemy or keyring (key source env or file), and the
one-pass ``prune --yes`` must leave every file that is not a verified, expired record of ours:
forged or foreign records, damaged ones, strangers' files, symlinks and what they point at.
"""

from __future__ import annotations

import base64
import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from blocks.results import ResultStore
from blocks.results._signing import forget
from blocks.system import Secret

BLOCK = str(Path(sys.executable).with_name("block"))
HEAVY = ("pydantic", "sqlalchemy", "keyring", "fsspec", "rich")
GONE = datetime.now(UTC) - timedelta(hours=1)
LATER = datetime.now(UTC) + timedelta(hours=1)


def _fill(storage: Path, count: int = 6) -> ResultStore:
    store = ResultStore.resolve(str(storage), "pickle")
    for i in range(count):
        store.write(f"flow/k{i}", i, expires=GONE if i % 2 == 0 else LATER, task="t")
    return store


def _run_in_process(args: list[str], env: dict[str, str]) -> str:
    """``block ARGS`` run by `blocks.cli.main` in a fresh interpreter; its output, then the
    heavy modules it imported."""
    code = (
        "import sys\n"
        f"sys.argv = ['block', *{args!r}]\n"
        "from blocks.cli import main\n"
        "try:\n    main()\nexcept SystemExit as exc:\n    assert not exc.code, exc.code\n"
        f"print('HEAVY', sorted(m for m in sys.modules if m.split('.')[0] in {HEAVY!r}))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=60
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


@pytest.mark.parametrize("source", ["env", "file"])
def test_results_ls_and_prune_of_a_local_path_import_no_pydantic_sqlalchemy_or_keyring(
    tmp_path: Path, blocks_home: Path, source: str
) -> None:
    env = dict(os.environ)
    if source == "file":  # the master key in $BLOCKS_HOME/master.key, not in the environment
        blocks_home.mkdir(parents=True, exist_ok=True)
        (blocks_home / "master.key").write_text(env.pop("BLOCKS_MASTER_KEY") + "\n")
        os.chmod(blocks_home / "master.key", 0o600)
        env["BLOCKS_KEY_SOURCE"] = "file"
    Secret(value="other").save("unrelated")  # a registry exists, without a results-key block
    storage = tmp_path / "store"
    _fill(storage)
    listed = _run_in_process(["results", "ls", "-s", str(storage)], env)
    print(listed)
    assert listed.count("flow/k") == 6 and "unreadable" not in listed
    assert "HEAVY []" in listed
    pruned = _run_in_process(["results", "prune", "--yes", "-s", str(storage)], env)
    print(pruned)
    assert "Deleted 3 record(s)" in pruned and "HEAVY []" in pruned
    assert sorted(p.name for p in (storage / "flow").iterdir()) == ["k1", "k3", "k5"]


def test_a_results_key_block_is_still_found_without_loading_pydantic_first(
    tmp_path: Path,
) -> None:
    # The cheap registry look-up must not hide a saved results-key block: records signed
    # with it list as readable, and those signed with the master key's do not.
    storage = tmp_path / "store"
    _fill(storage, 2)  # signed with the master key's results key
    Secret(value=base64.urlsafe_b64encode(os.urandom(32)).decode()).save("results-key")
    forget()
    try:
        store = ResultStore.resolve(str(storage), "pickle")
        store.write("flow/block-signed", 1, expires=GONE)
    finally:
        forget()
    done = subprocess.run(
        [BLOCK, "results", "ls", "-s", str(storage)], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    rows = dict(line.split("\t", 1) for line in done.stdout.splitlines()[1:])
    print(rows)
    assert "unreadable" not in rows["flow/block-signed"]
    assert rows["flow/k0"].endswith("unreadable") and rows["flow/k1"].endswith("unreadable")


def test_prune_yes_deletes_only_verified_expired_records(tmp_path: Path) -> None:
    storage, outside = tmp_path / "store", tmp_path / "outside"
    store = _fill(storage)
    # A record forged with another results key, expired: someone else's, never ours to delete.
    other_key = base64.urlsafe_b64encode(os.urandom(32)).decode()
    forger = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys; from datetime import UTC, datetime, timedelta\n"
            "from blocks.results import ResultStore\n"
            "ResultStore.resolve(sys.argv[1], 'pickle').write('flow/forged', 1,"
            " expires=datetime.now(UTC) - timedelta(hours=1))\n",
            str(storage),
        ],
        env={**os.environ, "BLOCKS_RESULTS_KEY": other_key},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert forger.returncode == 0, forger.stderr
    # An expired record of ours, then damaged: its header no longer verifies.
    store.write("flow/damaged", 1, expires=GONE)
    damaged = bytearray((storage / "flow" / "damaged").read_bytes())
    damaged[60] ^= 1
    (storage / "flow" / "damaged").write_bytes(bytes(damaged))
    (storage / "flow" / "stranger.txt").write_text("not a record")
    (storage / "flow" / "truncated").write_bytes((storage / "flow" / "k0").read_bytes()[:30])
    # Symlinks: to an expired record outside the base, and (inside) to an expired record.
    outside.mkdir()
    ResultStore.resolve(str(outside), "pickle").write("flow/k0", 0, expires=GONE)
    os.symlink(outside / "flow" / "k0", storage / "flow" / "link-out")
    os.symlink(storage / "flow" / "k2", storage / "flow" / "link-in")
    os.symlink(outside / "flow", storage / "folder-link")
    kept_before = {"forged", "damaged", "stranger.txt", "truncated", "link-out", "link-in"}
    done = subprocess.run(
        [BLOCK, "results", "prune", "--yes", "-s", str(storage)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    left = {p.name for p in (storage / "flow").iterdir()}
    print(done.stdout.strip(), "| left:", sorted(left))
    assert "Deleted 3 record(s)" in done.stdout
    assert left == {"k1", "k3", "k5"} | kept_before
    assert (outside / "flow" / "k0").exists() and (storage / "folder-link").is_symlink()
