"""``block ls``, ``block results ls`` / ``prune --yes`` without click (`blocks.cli._fast`)
print the same bytes, exit codes and deletions as through click, on a store of every kind of
object: records live and expired, forged with another key, damaged, truncated, strangers'
files, temp files of writes, symlinks; and arguments the fast path does not take go through
click unchanged.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from blocks.cli._fast import fast_command
from blocks.filesystems._keys import TEMP_PREFIX
from blocks.results import ResultStore
from blocks.results._record import _DECODER, _decode_json

GONE = datetime.now(UTC) - timedelta(hours=1)
LATER = datetime.now(UTC) + timedelta(hours=1)
# `main` with the fast path on, or with it off (everything through click, as before it).
FAST = "from blocks.cli import main\nmain()\n"
SLOW = (
    "from blocks.cli import _fast\n_fast.fast_command = lambda argv: None\n"
    "from blocks.cli import main\nmain()\n"
)


def _store(storage: Path) -> None:
    """A store holding one of each kind of object a listing meets."""
    store = ResultStore.resolve(str(storage), "pickle")
    for i in range(6):
        store.write(f"flow/k{i}", i, expires=GONE if i % 2 == 0 else LATER, task=f"t{i % 3}")
    store.write("never/expires", "x", task=None)
    store.write("other/ünïcode-key", [1, 2], expires=GONE, task="tâche")
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
        env={**os.environ, "BLOCKS_RESULTS_KEY": base64.urlsafe_b64encode(os.urandom(32)).decode()},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert forger.returncode == 0, forger.stderr
    store.write("flow/damaged", 1, expires=GONE)
    damaged = bytearray((storage / "flow" / "damaged").read_bytes())
    damaged[60] ^= 1
    (storage / "flow" / "damaged").write_bytes(bytes(damaged))
    (storage / "flow" / "stranger.txt").write_text("not a record")
    (storage / "flow" / "truncated").write_bytes((storage / "flow" / "k0").read_bytes()[:30])
    (storage / "flow" / f"{TEMP_PREFIX}k9.123.host").write_bytes(b"half a write")
    os.symlink(storage / "flow" / "k2", storage / "flow" / "link-in")


def _run(code: str, args: list[str]) -> tuple[int, str, str]:
    done = subprocess.run(
        [sys.executable, "-c", "import sys\nsys.argv = ['block', *sys.argv[1:]]\n" + code, *args],
        capture_output=True,
        timeout=60,
    )
    return done.returncode, done.stdout.decode(errors="replace"), done.stderr.decode()


def _files(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


@pytest.mark.parametrize(
    "extra",
    [
        [],
        ["--json"],
        ["--all"],
        ["--all", "--json"],
        ["--task", "t1"],
        ["--prefix=flow", "-q"],
        ["--prefix", "other"],
        ["--task", "-x"],  # a value that looks like an option: click's path
        ["--bogus"],
    ],
)
def test_results_ls_prints_the_same_bytes_with_and_without_click(
    tmp_path: Path, extra: list[str]
) -> None:
    storage = tmp_path / "store"
    _store(storage)
    args = ["results", "ls", "-s", str(storage), *extra]
    fast, slow = _run(FAST, args), _run(SLOW, args)
    print(fast)
    assert fast == slow
    if extra == ["--json"]:
        rows = {row["key"]: row for row in json.loads(fast[1])}
        assert not rows["flow/forged"]["readable"] and not rows["flow/damaged"]["readable"]
        assert rows["flow/k0"]["expired"] and not rows["flow/k1"]["expired"]


def test_results_ls_errors_are_the_same_with_and_without_click(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x")
    for args in (
        ["results", "ls", "-s", str(tmp_path / "file")],
        ["results", "ls", "-s", "nope://bucket"],
        ["results", "ls", "--storage"],
        ["results", "ls", "-s", str(tmp_path), "--prefix", "../up"],
    ):
        fast, slow = _run(FAST, args), _run(SLOW, args)
        print(args, fast)
        assert fast == slow


@pytest.mark.parametrize("extra", [[], ["-q"], ["--expired", "-y"]])
def test_results_prune_yes_deletes_and_says_the_same_with_and_without_click(
    tmp_path: Path, extra: list[str]
) -> None:
    _store(tmp_path / "model")
    results: list[tuple[int, str, str, list[str]]] = []
    for code in (FAST, SLOW):
        storage = tmp_path / f"store-{len(results)}"
        shutil.copytree(tmp_path / "model", storage, symlinks=True)
        os.unlink(storage / "flow" / "link-in")  # the copy's link points into the model
        os.symlink(storage / "flow" / "k2", storage / "flow" / "link-in")
        flags = extra if "-y" in extra else ["--yes", *extra]
        done = _run(code, ["results", "prune", "-s", str(storage), *flags])
        results.append((done[0], done[1].replace(str(storage), "STORE"), done[2], _files(storage)))
    print(results[0])
    assert results[0] == results[1]
    left = results[0][3]
    assert "flow/forged" in left and "flow/damaged" in left and "flow/k0" not in left


def test_only_plain_listing_arguments_take_the_fast_path() -> None:
    assert fast_command(["results", "ls"]) is not None
    assert fast_command(["ls", "--type", "secret", "--json"]) is not None
    assert fast_command(["results", "ls", "-s", "p", "--json", "--all", "--task=t"]) is not None
    assert fast_command(["results", "prune", "--yes", "-s", "p"]) is not None
    for argv in (
        ["results", "ls", "--help"],
        ["results", "ls", "--leases"],
        ["results", "ls", "-sp"],
        ["results", "ls", "-s"],
        ["results", "ls", "extra"],
        ["results", "prune"],  # asks for confirmation
        ["results", "prune", "--yes", "--dry-run"],
        ["results", "prune", "--yes", "--older-than", "7d"],
        ["-q", "results", "ls"],
        ["ls", "--help"],
    ):
        assert fast_command(argv) is None, argv


def test_shell_completion_goes_through_click(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("_BLOCK_COMPLETE", "bash_complete")
    assert fast_command(["results", "ls"]) is None and fast_command(["ls"]) is None


@pytest.mark.parametrize(
    "text",
    [
        '{"a": 1}',
        '{"a": 1}   \n\t',
        ' {"a": 1}',
        '{"a": 1} x',
        '{"a": 1}{}',
        "",
        "nope",
        "[1]",
        '"s"',
    ],
)
def test_header_json_decodes_as_the_decoder_does(text: str) -> None:
    try:
        expected: object = _DECODER.decode(text)
    except ValueError as exc:
        expected = f"error: {exc}"
    try:
        got: object = _decode_json(text)
    except ValueError as exc:
        got = f"error: {exc}"
    assert got == expected


def test_the_listing_commands_import_no_click(tmp_path: Path) -> None:
    storage = tmp_path / "store"
    _store(storage)
    check = (
        "import atexit, sys\n"
        "atexit.register(lambda: print('CLICK', 'click' in sys.modules, file=sys.stderr))\n"
    )
    for args in (
        ["results", "ls", "-s", str(storage)],
        ["results", "prune", "-y", "-s", str(storage)],
    ):
        code, _, err = _run(check + FAST, args)
        assert code == 0 and "CLICK False" in err, err
    code, _, err = _run(check + FAST, ["results", "ls", "-s", str(storage), "--leases"])
    assert code == 0 and "CLICK True" in err, err


def test_block_ls_prints_the_same_bytes_with_and_without_click() -> None:
    from blocks.system import Secret, String

    for args in (["ls"], ["ls", "--json"], ["ls", "--type", "secret"]):
        assert _run(FAST, args) == _run(SLOW, args)  # no registry yet
    Secret(value="s3cr3t").save("api-key")
    String(value="x").save("plain")
    Secret(value="ünï").save("third")
    for args in (
        ["ls"],
        ["ls", "--json"],
        ["ls", "--type", "secret", "-q"],
        ["ls", "--type=string", "--json"],
        ["ls", "--type", "Not A Slug!"],
        ["ls", "--type", "nothing-saved"],
        ["ls", "--type"],
        ["ls", "extra"],
    ):
        fast, slow = _run(FAST, args), _run(SLOW, args)
        print(args, fast)
        assert fast == slow
        assert "s3cr3t" not in fast[1] + fast[2]
