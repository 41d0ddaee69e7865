"""Benchmark: warm ``Secret.load(name).get()``, cold start, and ``block ls``.

Run: ``.venv/bin/python tests/benchmarks/bench_secrets.py [--ops 5000]``

Baselines measured in the same run, on the same machine:

* the floor: one raw ``sqlite3`` SELECT of the same row plus one AES-GCM decrypt, no
  validation (what any registry-backed secret store must at least pay);
* the interpreter itself: ``python -c pass``, subtracted from nothing, shown for scale;
* the incumbent: Prefect 3's ``Secret.load``, measured when ``prefect`` is importable in this
  interpreter (it starts its own ephemeral server first); otherwise the line says "not
  installed" and no ratio is printed.

Cold runs are subprocesses with bytecode caching allowed (``PYTHONDONTWRITEBYTECODE`` removed)
after one untimed warm-up, as an installed package runs.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

# A save is one SQLite write transaction, committed (WAL, synchronous=NORMAL).


def warm_load(ops: int) -> float:
    from blocks.system import Secret

    Secret(value="s3cr3t").save("bench-key", overwrite=True)
    assert Secret.load("bench-key").get() == "s3cr3t"
    samples = []
    for _ in range(5):
        start = time.perf_counter()
        for _ in range(ops):
            Secret.load("bench-key").get()
        samples.append((time.perf_counter() - start) / ops)
    return min(samples)


def warm_save(ops: int) -> float:
    from blocks.system import Secret

    block = Secret(value="s3cr3t")
    start = time.perf_counter()
    for _ in range(ops):
        block.save("bench-save", overwrite=True)
    return (time.perf_counter() - start) / ops


def floor_load(ops: int, home: Path) -> float:
    """Raw sqlite3 + AES-GCM: the cost with every convenience removed."""
    import json
    import sqlite3

    from blocks.core._encryption import KeyManager
    from blocks.core._registry import Registry

    keys = KeyManager.for_registry(Registry.default().url).keyset()
    conn = sqlite3.connect(home / "registry.db")
    query = "select secrets from block_documents where type_slug = ? and name = ?"
    samples = []
    for _ in range(5):
        start = time.perf_counter()
        for _ in range(ops):
            token = json.loads(conn.execute(query, ("secret", "bench-key")).fetchone()[0])["value"]
            keys.decrypt(token, aad=b"secret/bench-key#value")
        samples.append((time.perf_counter() - start) / ops)
    conn.close()
    return min(samples)


def floor_save(ops: int, home: Path) -> float:
    """Raw sqlite3: the same row rewritten (one UPDATE, committed) with the registry's pragmas."""
    import sqlite3

    conn = sqlite3.connect(home / "registry.db", isolation_level=None)
    conn.execute("pragma journal_mode=WAL")
    conn.execute("pragma synchronous=NORMAL")
    query = "update block_documents set data = ?, updated = ? where type_slug = ? and name = ?"
    start = time.perf_counter()
    for i in range(ops):
        conn.execute("begin immediate")
        conn.execute(query, ("{}", f"2026-01-01 00:00:{i % 60:02d}", "secret", "bench-save"))
        conn.execute("commit")
    elapsed = (time.perf_counter() - start) / ops
    conn.close()
    return elapsed


def wall(cmd: list[str], runs: int = 7) -> float:
    """Median wall time of `cmd` in a fresh process, after one untimed warm-up run."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    subprocess.run(cmd, check=True, capture_output=True, env=env)
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        subprocess.run(cmd, check=True, capture_output=True, env=env)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def prefect_installed() -> bool:
    import importlib.util

    return importlib.util.find_spec("prefect") is not None


def prefect_warm(ops: int) -> float:
    from prefect.blocks.system import Secret as PrefectSecret

    PrefectSecret(value="s3cr3t").save("bench-key", overwrite=True)
    start = time.perf_counter()
    for _ in range(ops):
        PrefectSecret.load("bench-key").get()
    return (time.perf_counter() - start) / ops


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ops", type=int, default=2000)
    parser.add_argument(
        "--no-prefect", action="store_true", help="skip Prefect 3 even if it is installed"
    )
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        home = Path(tmp)
        os.environ["BLOCKS_HOME"] = str(home)
        os.environ.pop("BLOCKS_REGISTRY_URL", None)
        os.environ.setdefault("BLOCKS_KEY_SOURCE", "file")

        ours = warm_load(args.ops)
        floor = floor_load(args.ops, home)
        save = warm_save(min(args.ops, 500))
        save_floor = floor_save(min(args.ops, 500), home)
        block = str(Path(sys.executable).with_name("block"))
        cold = wall(
            [
                sys.executable,
                "-c",
                "from blocks.system import Secret; Secret.load('bench-key').get()",
            ]
        )
        ls = wall([block, "ls"]) if Path(block).exists() else float("nan")
        bare = wall([sys.executable, "-c", "pass"])
        measure_prefect = prefect_installed() and not args.no_prefect
        prefect = prefect_warm(min(args.ops, 200)) if measure_prefect else None

    if prefect is not None:
        prefect_row = (
            "  Prefect 3 Secret.load (measured)",
            f"{prefect * 1e6:8.1f} µs/op",
            f"ours {prefect / ours:.0f}x faster",
        )
    else:
        why = "skipped (--no-prefect)" if args.no_prefect else "not installed"
        prefect_row = ("  Prefect 3 Secret.load", f"{why:>14}", "no ratio")
    rows = [
        ("warm Secret.load().get()", f"{ours * 1e6:8.1f} µs/op", ""),
        (
            "  floor: raw sqlite3 + AES-GCM",
            f"{floor * 1e6:8.1f} µs/op",
            f"ours = {ours / floor:.1f}x floor (target <= 3x)",
        ),
        prefect_row,
        ("warm Secret(...).save(overwrite=True)", f"{save * 1e6:8.1f} µs/op", ""),
        (
            "  floor: raw sqlite3 UPDATE + commit",
            f"{save_floor * 1e6:8.1f} µs/op",
            f"ours = {save / save_floor:.1f}x floor (target <= 5x)",
        ),
        ("cold: python -c import + load", f"{cold:8.3f} s", "target <= 0.2 s"),
        ("cold: block ls (1 block)", f"{ls:8.3f} s", ""),
        ("  python -c pass", f"{bare:8.3f} s", "interpreter start-up"),
    ]
    width = max(len(r[0]) for r in rows)
    print(
        f"bench_secrets: Python {sys.version.split()[0]}, {args.ops} ops x 5 rounds (best round), "
        f"cold = median of 7 runs; load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs"
    )
    for name, value, note in rows:
        print(f"{name:<{width}}  {value}   {note}")


if __name__ == "__main__":
    main()
