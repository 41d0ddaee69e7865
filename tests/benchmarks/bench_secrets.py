"""Benchmark: warm ``Secret.load(name).get()``, cold start, and ``block ls``.

Run: ``.venv/bin/python tests/benchmarks/bench_secrets.py [--ops 5000]``

Baselines measured in the same run, on the same machine:

* the floor: one raw ``sqlite3`` SELECT of the same row plus one AES-GCM decrypt, no
  validation (what any registry-backed secret store must at least pay);
* the interpreter itself: ``python -c pass``, subtracted from nothing, shown for scale;
* the incumbent: Prefect 3's ``Secret.load`` takes about 30 ms warm (DESIGN.md, measured in
  Prefect 3.9.1); pass ``--prefect`` with Prefect installed in this interpreter to measure it.
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

PREFECT_WARM_SECONDS = 0.030  # DESIGN.md: Prefect 3.9.1, warm Secret.load
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

    from blocks.encryption import KeyManager
    from blocks.registry import Registry

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


def wall(cmd: list[str], runs: int = 7) -> float:
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        subprocess.run(cmd, check=True, capture_output=True, env=os.environ.copy())
        times.append(time.perf_counter() - start)
    return statistics.median(times)


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
    parser.add_argument("--prefect", action="store_true", help="also measure Prefect 3")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        home = Path(tmp)
        os.environ["BLOCKS_HOME"] = str(home)
        os.environ.pop("BLOCKS_REGISTRY_URL", None)
        os.environ.setdefault("BLOCKS_KEY_SOURCE", "file")

        ours = warm_load(args.ops)
        floor = floor_load(args.ops, home)
        save = warm_save(min(args.ops, 500))
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
        prefect = prefect_warm(min(args.ops, 200)) if args.prefect else PREFECT_WARM_SECONDS

    source = "measured" if args.prefect else "DESIGN.md figure"
    rows = [
        ("warm Secret.load().get()", f"{ours * 1e6:8.1f} µs/op", "target < 300 µs"),
        (
            "  floor: raw sqlite3 + AES-GCM",
            f"{floor * 1e6:8.1f} µs/op",
            f"ours = {ours / floor:.1f}x floor",
        ),
        (
            f"  Prefect 3 ({source})",
            f"{prefect * 1e6:8.1f} µs/op",
            f"ours {prefect / ours:.0f}x faster (target >= 100x)",
        ),
        (
            "warm Secret(...).save(overwrite=True)",
            f"{save * 1e6:8.1f} µs/op",
            "Prefect 3: ~60-80 ms",
        ),
        ("cold: python -c import + load", f"{cold:8.3f} s", "target < 0.5 s"),
        ("cold: block ls", f"{ls:8.3f} s", "target < 0.5 s"),
        ("  python -c pass", f"{bare:8.3f} s", "interpreter start-up"),
    ]
    width = max(len(r[0]) for r in rows)
    print(f"bench_secrets: {args.ops} ops x 5 rounds (best round), cold = median of 7 runs")
    for name, value, note in rows:
        print(f"{name:<{width}}  {value}   {note}")


if __name__ == "__main__":
    main()
