"""``block results why / ls --task / rm --task``: the real console script over records that real
tasks wrote."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from blocks import flow, task
from blocks.cache_policies import INPUTS, TASK_SOURCE
from blocks.results import ResultStore

BLOCK = str(Path(sys.executable).with_name("block"))


def block(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [BLOCK, *args],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        env=dict(os.environ),
        timeout=60,
    )


def ok(*args: str) -> str:
    done = block(*args)
    assert done.returncode == 0, (args, done.stdout, done.stderr)
    return done.stdout


def fill(storage: Path) -> None:
    """Two tasks, two flows; ``price`` called with two different items."""

    @task(cache_policy=INPUTS + TASK_SOURCE, result_storage=str(storage))
    def price(item: str) -> float:
        return len(item) * 0.5

    @task(cache_policy=INPUTS, result_storage=str(storage))
    def other(x: int) -> int:
        return x

    @flow(name="nightly")
    def nightly() -> None:
        price("apple-very-private")
        other(1)

    @flow(name="hourly")
    def hourly() -> None:
        price("pear-very-private")

    nightly()
    hourly()


def test_why_names_what_changed_never_the_value(tmp_path: Path) -> None:
    storage = tmp_path / "r"
    fill(storage)
    out = ok("results", "why", "--task", "price", "--storage", str(storage))
    print(out)
    assert "parameter 'item' changed" in out
    assert "private" not in out and "pear" not in out
    newest = json.loads(ok("results", "why", "--task", "price", "-s", str(storage), "--json"))
    assert newest["changes"] == ["parameter 'item' changed"]
    by_key = ok("results", "why", newest["key"], "-s", str(storage))
    assert "parameter 'item' changed" in by_key
    first = newest["compared_with"]
    assert "no earlier record" in ok("results", "why", first, "-s", str(storage))
    missing = block("results", "why", "nope", "-s", str(storage))
    assert missing.returncode == 1 and "No result record" in missing.stderr
    assert block("results", "why", "-s", str(storage)).returncode == 2


def test_inspect_shows_the_key_components(tmp_path: Path) -> None:
    storage = tmp_path / "r"
    fill(storage)
    key = json.loads(ok("results", "why", "--task", "price", "-s", str(storage), "--json"))["key"]
    out = ok("results", "inspect", key, "-s", str(storage))
    assert "param:item" in out and "code:function 'price'" in out and "hourly" in out
    assert "private" not in out


def test_ls_and_rm_by_task_and_flow(tmp_path: Path) -> None:
    storage = tmp_path / "r"
    fill(storage)
    rows = json.loads(ok("results", "ls", "--task", "price", "-s", str(storage), "--json"))
    assert len(rows) == 2 and {r["task"] for r in rows} == {"price"}
    dry = ok(
        "results", "rm", "--task", "price", "--flow", "nightly", "--dry-run", "-s", str(storage)
    )
    assert "Would delete 1 record(s) of task 'price'" in dry
    assert len(list(ResultStore.resolve(str(storage)).records())) == 3
    ok("results", "rm", "--task", "price", "--flow", "nightly", "--yes", "-s", str(storage))
    left = {h.task: h.flow for _, h in ResultStore.resolve(str(storage)).records() if h}
    assert sorted(h.flow or "" for _, h in ResultStore.resolve(str(storage)).records() if h) == [
        "hourly",
        "nightly",
    ]
    assert left["other"] == "nightly"
    ok("results", "rm", "--task", "price", "-y", "-s", str(storage))
    assert [h.task for _, h in ResultStore.resolve(str(storage)).records() if h] == ["other"]
    assert "No records of task 'gone'" in ok(
        "results", "rm", "--task", "gone", "-y", "-s", str(storage)
    )
