"""Long ``block`` commands draw progress on a terminal, never into pipes, and not with --quiet.

Each command runs for real on a pseudo-terminal (as in a shell) and through pipes (as in a
script); the bar's label in the terminal transcript proves it was drawn.
"""

from __future__ import annotations

import base64
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from terminal import on_terminal

from blocks.results import ResultStore
from blocks.system import Secret

BLOCK = str(Path(sys.executable).with_name("block"))
MANY = 40  # over the threshold (20) at which a bar is worth drawing


def piped(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [BLOCK, *args],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        timeout=60,
    )


def check_progress(label: str, *args: str, env: dict[str, str] | None = None) -> None:
    """`label` is drawn on a terminal, not with --quiet (after the command or before
    it), and never into a pipe; the command succeeds each time."""
    code, transcript = on_terminal(*args, env=env)
    assert code == 0, transcript
    assert label in transcript, transcript[-2000:]
    for quiet in ([*args, "--quiet"], ["-q", *args]):
        code, transcript = on_terminal(*quiet, env=env)
        assert code == 0, transcript
        assert label not in transcript
    done = piped(*args, env=env)
    assert done.returncode == 0, done.stderr
    assert label not in done.stdout + done.stderr


def test_results_ls_and_prune_show_progress_over_many_records(tmp_path: Path) -> None:
    storage = str(tmp_path / "results")
    store = ResultStore.resolve(storage, "json")
    for i in range(MANY):
        store.write(f"etl/k{i}", {"i": i})
    # `results ls` draws no bar: its rows stream as each header is read (the rows are the
    # progress); the first one is on screen long before the last record is read.
    code, transcript = on_terminal("results", "ls", "--storage", storage)
    assert code == 0, transcript
    assert "Reading result records" not in transcript and "etl/k0" in transcript

    code, transcript = on_terminal(
        "results", "prune", "--all", "--older-than", "0s", "--yes", "--storage", storage
    )
    assert code == 0, transcript
    assert "Deleting" in transcript and f"{MANY}/{MANY}" in transcript
    assert f"Deleted {MANY} record(s)" in transcript
    assert list(store.records()) == []


def test_results_ls_over_a_few_records_draws_nothing(tmp_path: Path) -> None:
    storage = str(tmp_path / "results")
    ResultStore.resolve(storage, "json").write("one", 1)
    code, transcript = on_terminal("results", "ls", "--storage", storage)
    assert code == 0, transcript
    assert "Reading result records" not in transcript and "one" in transcript


def test_key_rotate_shows_progress_over_many_secrets() -> None:
    # Saved in this process (the same registry and key as the commands): 40 `block create`
    # processes took minutes on a busy machine and are not what this test is about.
    for i in range(MANY):
        Secret(value=f"v{i}").save(f"s{i}")
    old = os.environ["BLOCKS_MASTER_KEY"]
    for _ in range(3):  # three rotations: terminal, --quiet twice
        new = base64.urlsafe_b64encode(os.urandom(32)).decode()
        env = {"BLOCKS_MASTER_KEY": f"{new},{old}"}
        if _ == 0:
            code, transcript = on_terminal("key", "rotate", env=env)
            assert code == 0, transcript
            assert "Re-encrypting secrets" in transcript and f"{MANY}/{MANY}" in transcript
        else:
            args = ["key", "rotate", "--quiet"] if _ == 1 else ["-q", "key", "rotate"]
            code, transcript = on_terminal(*args, env=env)
            assert code == 0, transcript
            assert "Re-encrypting secrets" not in transcript
        assert f"Re-encrypted {MANY} block(s)" in transcript
        old = new
    done = piped("inspect", "secret/s7", "--show-secrets", env={"BLOCKS_MASTER_KEY": old})
    assert done.returncode == 0 and "v7" in done.stdout, done.stderr


def test_register_of_a_big_module_shows_progress(tmp_path: Path) -> None:
    classes = "".join(
        f"\nclass Source{i}(Block):\n    url: str\n    retries: int = {i}\n" for i in range(MANY)
    )
    module = tmp_path / "many_blocks.py"
    module.write_text("from blocks import Block\n" + textwrap.dedent(classes))
    code, transcript = on_terminal("register", "-f", str(module))
    assert code == 0, transcript
    assert "Registering block types" in transcript
    assert transcript.count("Registered block type source") == MANY
    code, transcript = on_terminal("register", "-q", "-f", str(module))
    assert code == 0 and "Registering block types" not in transcript, transcript


@pytest.mark.parametrize("args", [["ls", "--quiet"], ["-q", "type", "ls"], ["results", "ls", "-q"]])
def test_every_command_takes_quiet(args: list[str]) -> None:
    done = piped(*args)
    assert done.returncode == 0, done.stderr
