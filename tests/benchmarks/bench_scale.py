"""Benchmark: per-operation cost as the registry and the result store grow (10 / 1,000 / 10,000).

Run: ``.venv/bin/python tests/benchmarks/bench_scale.py [--sizes 10,1000,10000]``

At each size N (N saved blocks, half secrets; N result records, half expired), measured in this
run, on this machine:

* **save** / **load**: a new block saved (insert), ``Secret.load(name).get()`` of a random one;
* **record write** / **record read**: ``ResultStore.write`` (default store, fsync) of a new key,
  ``ResultStore.read`` of a random one;
* **block ls**, **block ls --json**, **block results ls**: the installed command in a fresh
  process, stdout a pipe (not a terminal), median of 3 after one warm-up run;
* the same two listings **on a terminal** (a pseudo-terminal of 40 x 120): time until the first
  screen is shown, and until the last row is;
* **block results prune --yes**: on a copy of the store, deleting the expired half (median of
  3, each on a fresh copy).

The baseline is the same operation at the smallest size, in the same run: per-op costs that
stay flat (ratio ~1) scale; listings also show their cost per extra row over the smallest
size (the process start-up is in every run, not in the per-row figure). ``python -c pass`` and
``block --version`` and ``import blocks.core._registry`` (SQLAlchemy) are measured too, for the
fixed cost of a process, of the CLI and of the registry. Commands run with stdout a pipe also report
their CPU time (user + system), which a busy machine inflates less than wall time.
"""

from __future__ import annotations

import argparse
import os
import random
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parents[1]))  # tests/, for the terminal runner
import terminal

# As an installed package runs, every command here reads cached bytecode (pip writes it at
# install, any first run otherwise); without it each start compiles SQLAlchemy from source.
os.environ.pop("PYTHONDONTWRITEBYTECODE", None)
BLOCK = terminal.BLOCK
PYTHON = sys.executable
SCREEN_ROWS, SCREEN_COLUMNS = 40, 120
# Floors: the least a fresh Python process printing the same listing must do, with no library.
FLOOR_LS = """
import json, sqlite3, sys
from datetime import UTC, datetime

def local(text):
    moment = datetime.fromisoformat(text).replace(tzinfo=UTC)
    return datetime.fromtimestamp(moment.timestamp()).isoformat(" ", "seconds")

rows = sqlite3.connect(sys.argv[1]).execute(
    "SELECT type_slug, name, secrets, created, updated FROM block_documents"
    " ORDER BY type_slug, name"
)
out = ["type\\tname\\tsecrets\\tcreated\\tupdated\\n"]
for slug, name, secrets, created, updated in rows:
    out.append(f"{slug}\\t{name}\\t{len(json.loads(secrets))}\\t{local(created)}\\t{local(updated)}\\n")
sys.stdout.write("".join(out))
"""
# Walk the store and read each file's first 4 KiB (where a record's header is); with an
# argument "prune", also unlink the even-numbered half (the expired ones, known in advance).
FLOOR_RECORDS = """
import os, sys
root, out = sys.argv[1], []
for folder, dirs, files in os.walk(root):
    dirs.sort()
    for name in sorted(files):
        path = os.path.join(folder, name)
        with open(path, "rb") as f:
            head = f.read(4096)
        out.append(f"{os.path.relpath(path, root)}\\t{len(head)}\\n")
        if sys.argv[2:] == ["prune"] and int(name.rsplit("-", 1)[1]) % 2 == 0:
            os.unlink(path)
sys.stdout.write("".join(out))
"""
FLOORS = {
    "block ls (piped)": "floor of block ls (sqlite3 + print)",
    "block results ls (piped)": "floor of results ls (walk + read)",
    "block results prune (half expired)": "floor of prune (walk + read + unlink half)",
}
#: The issue's targets for the largest size, in seconds of wall time.
TARGETS = {
    "block ls (piped)": 0.5,
    "block results ls (piped)": 0.5,
    "block ls: terminal, first screen": 0.3,
    "block results ls: terminal, first screen": 0.3,
    "block results prune (half expired)": 0.3,
}


def env() -> dict[str, str]:
    # As an installed package runs: bytecode cached, no forced terminal size.
    return {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "LINES")}


def piped(args: list[str], runs: int = 3, *, warm: bool = True) -> tuple[float, float]:
    """Median wall and CPU (user + system) seconds of ``ARGS`` with stdout a pipe, after one
    warm-up run (unless not `warm`). CPU time is what the command costs; wall time also
    counts waiting for a CPU on a busy machine."""
    if warm:
        subprocess.run(args, check=True, capture_output=True, env=env())
    walls, cpus = [], []
    for _ in range(runs):
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        start = time.perf_counter()
        subprocess.run(args, check=True, capture_output=True, env=env())
        walls.append(time.perf_counter() - start)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpus.append(after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime)
    return statistics.median(walls), statistics.median(cpus)


class ScreenClock:
    """Fed a terminal's output as it arrives: when the first `lines` lines had come."""

    def __init__(self, lines: int) -> None:
        self.wanted, self.lines = lines, 0
        self.start = time.perf_counter()
        self.first: float | None = None

    def __call__(self, chunk: bytes) -> None:
        self.lines += chunk.count(b"\n")
        if self.first is None and self.lines >= self.wanted:
            self.first = time.perf_counter() - self.start


def on_terminal(args: list[str], runs: int = 3) -> tuple[float, float]:
    """Median (first screen shown, last row shown) of ``block ARGS`` on a 40 x 120
    pseudo-terminal (`tests/terminal.py`), after one warm-up run."""
    firsts, totals = [], []
    for _ in range(runs + 1):
        clock = ScreenClock(SCREEN_ROWS - 2)  # rows shown with the heading and its rule
        code, text = terminal.on_terminal(
            *args, rows=SCREEN_ROWS, columns=SCREEN_COLUMNS, on_output=clock
        )
        total = time.perf_counter() - clock.start
        if code != 0:
            raise RuntimeError(f"block {args} failed on a terminal: {text[-2000:]}")
        firsts.append(clock.first if clock.first is not None else total)
        totals.append(total)
    return statistics.median(firsts[1:]), statistics.median(totals[1:])


def per_op(fn: Callable[[int], object], ops: int) -> float:
    start = time.perf_counter()
    for i in range(ops):
        fn(i)
    return (time.perf_counter() - start) / ops


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="10,1000,10000")
    parser.add_argument("--samples", type=int, default=200, help="ops timed per size")
    args = parser.parse_args()
    sizes = [int(n) for n in args.sizes.split(",")]

    tmp = Path(tempfile.mkdtemp(prefix="bench-scale-"))
    os.environ["BLOCKS_HOME"] = str(tmp / "home")
    os.environ.pop("BLOCKS_REGISTRY_URL", None)
    os.environ.setdefault("BLOCKS_KEY_SOURCE", "file")
    os.environ["BLOCKS_LOG_LEVEL"] = "WARNING"

    from blocks.core._block import Block
    from blocks.filesystems import LocalFileSystem
    from blocks.results import ResultStore
    from blocks.system import Secret, String

    records = tmp / "records"
    filler = ResultStore(LocalFileSystem(basepath=str(records), fsync=False), "pickle")
    store = ResultStore(LocalFileSystem(basepath=str(records)), "pickle")
    rng = random.Random(12)
    now = datetime.now(UTC)
    saved = written = 0
    table: dict[str, dict[int, float]] = {}

    def record(name: str, size: int, value: float) -> None:
        table.setdefault(name, {})[size] = value

    fixed = {"python -c pass": piped([sys.executable, "-c", "pass"])}
    fixed["block --version"] = piped([BLOCK, "--version"])
    registry_import = "import blocks.core._registry"
    fixed[registry_import] = piped([sys.executable, "-c", registry_import])
    for n in sizes:
        fill_start = time.perf_counter()
        while saved < n:  # untimed filling (timed in total only, for information)
            block = Secret(value=f"s3cr3t-{saved}") if saved % 2 else String(value="x")
            block.save(f"b-{saved:06d}")
            saved += 1
        while written < n:
            expires = now + (timedelta(hours=1) if written % 2 else -timedelta(hours=1))
            filler.write(f"flow/task-{written:06d}", {"i": written}, expires=expires, task="t")
            written += 1
        fill = time.perf_counter() - fill_start
        secrets = [f"b-{i:06d}" for i in range(1, n, 2)]
        keys = [f"flow/task-{i:06d}" for i in range(1, n, 2)]  # unexpired ones

        # Defaults bind this size's names (a lambda's defaults would hide its type from mypy).
        def load_secret(i: int, names: list[str] = secrets) -> object:
            return Secret.load(rng.choice(names)).get()

        def read_record(i: int, names: list[str] = keys) -> object:
            return store.read(rng.choice(names))

        save = per_op(lambda i: String(value="y").save(f"new-{i}"), args.samples)
        record("save (insert)", n, save)
        for i in range(args.samples):
            Block.delete(f"string/new-{i}")
        record(
            "Secret.load().get()",
            n,
            per_op(load_secret, args.samples),
        )
        record(
            "record write (fsync)",
            n,
            per_op(lambda i: store.write(f"new/k-{i}", {"i": i}, task="t"), args.samples // 2),
        )
        for i in range(args.samples // 2):
            store.delete(f"new/k-{i}")
        read = per_op(read_record, args.samples)
        record("record read", n, read)
        for name, command in (
            ("block ls (piped)", [BLOCK, "ls"]),
            ("block ls --json (piped)", [BLOCK, "ls", "--json"]),
            ("block results ls (piped)", [BLOCK, "results", "ls", "-s", str(records)]),
        ):
            wall, cpu = piped(command)
            record(name, n, wall)
            record(f"  CPU time of {name.split(' (')[0]}", n, cpu)
        registry_file = str(Path(os.environ["BLOCKS_HOME"]) / "registry.db")
        for name, command in (
            ("floor of block ls (sqlite3 + print)", [PYTHON, "-c", FLOOR_LS, registry_file]),
            ("floor of results ls (walk + read)", [PYTHON, "-c", FLOOR_RECORDS, str(records)]),
        ):
            wall, cpu = piped(command)
            record(name, n, wall)
            record(f"  CPU time of {name.split(' (')[0]}", n, cpu)
        first, total = on_terminal(["ls"])
        record("block ls: terminal, first screen", n, first)
        record("block ls: terminal, last row", n, total)
        first, total = on_terminal(["results", "ls", "-s", str(records)])
        record("block results ls: terminal, first screen", n, first)
        record("block results ls: terminal, last row", n, total)
        walls, cpus = [], []
        for attempt in range(3):  # each on a fresh copy of the store
            copy = tmp / f"prune-{n}-{attempt}"
            shutil.copytree(records, copy)
            before = resource.getrusage(resource.RUSAGE_CHILDREN)
            start = time.perf_counter()
            subprocess.run(
                [BLOCK, "results", "prune", "--yes", "-s", str(copy)],
                check=True,
                capture_output=True,
                env=env(),
            )
            walls.append(time.perf_counter() - start)
            after = resource.getrusage(resource.RUSAGE_CHILDREN)
            cpus.append(after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime)
            shutil.rmtree(copy)
        record("block results prune (half expired)", n, statistics.median(walls))
        record("  CPU time of block results prune", n, statistics.median(cpus))
        copy = tmp / f"prune-{n}-floor"
        shutil.copytree(records, copy)
        floor = piped([PYTHON, "-c", FLOOR_RECORDS, str(copy), "prune"], runs=1, warm=False)
        record("floor of prune (walk + read + unlink half)", n, floor[0])
        record("  CPU time of floor of prune", n, floor[1])
        shutil.rmtree(copy)
        print(f"  size {n}: filled in {fill:.1f} s", file=sys.stderr)

    shutil.rmtree(tmp, ignore_errors=True)
    small = sizes[0]
    print(
        f"bench_scale: Python {sys.version.split()[0]}, sizes {sizes}, {args.samples} ops per "
        f"size; load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs"
    )
    for name, (wall, cpu) in fixed.items():
        print(f"{name}: {wall:.3f} s wall, {cpu:.3f} s CPU")
    head = f"{'operation':<42}" + "".join(f"{n:>24,}" for n in sizes) + "   largest / smallest"
    print(head)
    print("-" * len(head))
    for name, by_size in table.items():
        listing = not name.startswith(("save", "Secret", "record"))
        cells = []
        for n in sizes:
            value = by_size[n]
            cells.append(
                f"{value:>8.3f} s ({(value - by_size[small]) / (n - small) * 1e6:+5.0f} µs/row)"
                if listing and n > small
                else (f"{value:>11.3f} s" if listing else f"{value * 1e6:>12.1f} µs/op")
            )
        ratio = by_size[sizes[-1]] / by_size[small]
        print(f"{name:<42}" + "".join(f"{c:>24}" for c in cells) + f"   {ratio:6.2f}x")
    largest = sizes[-1]
    print(f"targets (issue #12) at {largest:,} rows, wall time on this machine now:")
    for name, target in TARGETS.items():
        value = table[name][largest]
        target_cpu = table.get(f"  CPU time of {name.split(' (')[0]}", {}).get(largest)
        also = f" ({target_cpu:.3f} s CPU)" if target_cpu is not None else ""
        verdict = "ok" if value <= target else "OVER"
        print(f"  {name:<42} {value:6.3f} s{also}; target <= {target} s: {verdict}")
    print(f"against the floors (fresh processes doing only the work), at {largest:,} rows:")
    for name, floor_name in FLOORS.items():
        ours, least = table[name][largest], table[floor_name][largest]
        ours_cpu = table[f"  CPU time of {name.split(' (')[0]}"][largest]
        least_cpu = table[f"  CPU time of {floor_name.split(' (')[0]}"][largest]
        print(
            f"  {name:<42} {ours / least:5.1f}x wall, {ours_cpu / least_cpu:5.1f}x CPU of "
            f"{floor_name}"
        )


if __name__ == "__main__":
    main()
