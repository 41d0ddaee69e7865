"""Shell completion of ``block`` (click's), as the README sets it up: real bash, real command."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

BLOCK = str(Path(sys.executable).with_name("block"))
README = (Path(__file__).parents[2] / "README.md").read_text()


def complete(*words: str) -> list[str]:
    """What bash would offer after ``block WORDS`` (the last word being typed)."""
    done = subprocess.run(
        [BLOCK],
        env={
            **os.environ,
            "COMP_WORDS": " ".join(["block", *words]),
            "COMP_CWORD": str(len(words)),
            "_BLOCK_COMPLETE": "bash_complete",
        },
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0 and not done.stderr, done.stderr
    return [line.split(",", 1)[1] for line in done.stdout.splitlines() if line]


def test_commands_options_and_saved_blocks_complete() -> None:
    subprocess.run([BLOCK, "create", "secret", "api-key", "--set", "value=x"], check=True)
    assert complete("res") == ["results"]
    assert complete("results", "pr") == ["prune"]
    assert "--older-than" in complete("results", "prune", "--ol")
    assert complete("inspect", "secret/") == ["secret/api-key"]
    assert complete("create", "se") == ["secret"]
    assert "local-file-system" in complete("type", "inspect", "lo")


def test_a_broken_registry_completes_nothing_and_prints_nothing(blocks_home: Path) -> None:
    blocks_home.mkdir()
    (blocks_home / "registry.db").write_text("not a database\n" * 100)
    assert complete("inspect", "") == []
    assert complete("create", "se") == ["secret"]  # the built-in types still complete


@pytest.mark.skipif(shutil.which("bash") is None, reason="bash is not installed")
def test_the_readme_bash_line_installs_the_completion() -> None:
    (line,) = re.findall(r'^eval "\$\(_BLOCK_COMPLETE=bash_source block\)".*$', README, re.M)
    script = line.split("#")[0] + "\ncomplete -p block\n"
    env = {**os.environ, "PATH": f"{Path(BLOCK).parent}{os.pathsep}{os.environ['PATH']}"}
    done = subprocess.run(
        ["bash", "-c", script], env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert "_block_completion" in done.stdout and done.stdout.strip().endswith(" block")
