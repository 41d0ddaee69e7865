"""``block results`` against an HTTP storage that cannot be reached: one error line naming the
storage (never a secret) and a non-zero exit, never "0 records" (issue 20).

The storage is a real local port that refuses connections: a socket bound but not listening.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from blocks.filesystems import RemoteFileSystem

BLOCK = str(Path(sys.executable).with_name("block"))
TOKEN = "Bearer tok-3f9a-never-printed"


def block(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [BLOCK, *args],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        env=dict(os.environ),
        timeout=60,
    )


@pytest.fixture
def refused_port() -> Iterator[int]:
    """A local port that refuses connections (bound, never listening), held for the test."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        yield sock.getsockname()[1]


@pytest.mark.parametrize(
    "command",
    [
        ["ls"],
        ["ls", "--json"],
        ["prune", "--dry-run"],
        ["prune", "--yes"],
        ["why", "--task", "extract"],
    ],
    ids=" ".join,
)
def test_an_unreachable_http_storage_is_one_error_line_never_zero_records(
    refused_port: int, command: list[str]
) -> None:
    RemoteFileSystem(
        basepath=f"http://127.0.0.1:{refused_port}/results",
        settings={"client_kwargs": {"headers": {"Authorization": TOKEN}}},
    ).save("down")
    outcomes = []
    for storage in (
        f"http://alice:pw-{TOKEN[-6:]}@127.0.0.1:{refused_port}/results",  # a password in the URL
        "remote-file-system/down",  # a saved block whose settings hold a token
    ):
        done = block("results", *command, "-s", storage)
        lines = done.stderr.strip().splitlines()
        outcomes.append((done.returncode, lines))
        print(f"block results {' '.join(command)} -s {storage.split('@')[-1]}: {done.stderr!r}")
        assert done.returncode != 0
        assert done.stdout == "" and len(lines) == 1 and lines[0].startswith("Error: ")
        assert f"127.0.0.1:{refused_port}" in lines[0] and "Could not list" in lines[0]
        assert "0 result record" not in done.stderr and "Traceback" not in done.stderr
        assert TOKEN[-6:] not in done.stderr and "tok-" not in done.stderr
    assert [code for code, _ in outcomes] == [1, 1]


def test_an_empty_reachable_folder_still_lists_zero_records(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    done = block("results", "ls", "-s", str(tmp_path / "empty"))
    assert done.returncode == 0 and "0 result record(s)" in done.stderr
