"""Benchmark: cache-key computation and the cached hit, beside joblib.Memory and diskcache.

Run: ``.venv/bin/python tests/benchmarks/bench_cache_keys.py [--ops 5000] [--mb 100]``

Measured side by side in one run, on the same machine, best of 5 rounds each:

* **key, small call**: ``(INPUTS + TASK_SOURCE).resolve`` for a call with three small
  arguments, warm (the fingerprint is computed once per process) — goal <= 20 µs;
* **numpy array**: the digest of a ``--mb`` MB float64 array, in GB/s — goal >= 1 GB/s;
  beside it, ``hashlib.sha256`` over the same bytes (for scale);
* **DataFrame**: the digest of a 1M-row pandas DataFrame (int, float, string columns);
* **cached hit**: ``@task(cache_key_fn=task_input_hash)`` (code-aware key + local record
  read) against ``diskcache.Cache.memoize`` and ``joblib.Memory.cache`` on the same function
  and argument — goal <= 1.5x diskcache.

A library that is not installed is printed as "not installed", never replaced by a number.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import sys
import tempfile

# The timing loop, the cached function and the peers' hits are bench_runtime's (same folder):
# one definition of "a hit", measured the same way in both scripts.
from bench_runtime import best_per_call, cached_hit, diskcache_hit, installed, joblib_hit, work


def key_small(ops: int) -> float:
    from blocks import task
    from blocks.cache_policies import INPUTS, TASK_SOURCE
    from blocks.context import TaskRun

    t = task(work)
    run = TaskRun(t, None, None, False)
    policy = INPUTS + TASK_SOURCE
    params = {"x": 3, "scale": 1.5}
    policy.resolve(run, params, {})
    seconds: float = best_per_call(lambda: policy.resolve(run, params, {}), ops)
    return seconds


def array_rate(mb: int) -> tuple[float, float] | None:
    try:
        import numpy as np
    except ImportError:
        return None
    from blocks.hashing import digest

    array = np.random.default_rng(0).random(mb * 1_000_000 // 8)
    size = array.nbytes
    ours = best_per_call(lambda: digest(array), 1, rounds=3)
    floor = best_per_call(lambda: hashlib.sha256(array.data).digest(), 1, rounds=3)
    return size / ours / 1e9, size / floor / 1e9


def frame_time() -> float | None:
    try:
        import numpy as np
        import pandas as pd
    except ImportError:
        return None
    from blocks.hashing import digest

    rng = np.random.default_rng(0)
    rows = 1_000_000
    frame = pd.DataFrame(
        {
            "id": np.arange(rows),
            "value": rng.random(rows),
            "label": pd.Series(rng.integers(0, 1000, rows)).map(lambda i: f"item-{i}"),
        }
    )
    seconds: float = best_per_call(lambda: digest(frame), 1, rounds=3)
    return seconds


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--ops", type=int, default=5000, help="calls per round (keys, hits)")
    parser.add_argument("--mb", type=int, default=100, help="size of the numpy array in MB")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as home:
        os.environ["BLOCKS_HOME"] = os.path.join(home, "blocks-home")
        os.environ.pop("BLOCKS_RESULTS_STORAGE", None)
        os.environ.pop("BLOCKS_RESULTS_SERIALIZER", None)
        key = key_small(args.ops)
        rates = array_rate(args.mb)
        frame = frame_time()
        ours = cached_hit(args.ops, "pickle")
        disk = (
            diskcache_hit(args.ops, os.path.join(home, "diskcache"))
            if installed("diskcache")
            else None
        )
        job = (
            joblib_hit(max(200, args.ops // 5), os.path.join(home, "joblib"))
            if installed("joblib")
            else None
        )

    us = 1e6
    missing = "not installed"
    rows: list[tuple[str, str, str]] = [
        (
            "key, small call (warm)",
            f"{key * us:9.2f} µs",
            "goal <= 20 µs: " + ("OK" if key * us <= 20 else "MISSED"),
        ),
    ]
    if rates is None:
        rows.append((f"digest of a {args.mb} MB numpy array", missing, ""))
    else:
        rows.append(
            (
                f"digest of a {args.mb} MB numpy array",
                f"{rates[0]:9.2f} GB/s",
                "goal >= 1 GB/s: " + ("OK" if rates[0] >= 1 else "MISSED"),
            )
        )
        rows.append(("  hashlib.sha256 over the same bytes", f"{rates[1]:9.2f} GB/s", ""))
    rows.append(
        (
            "digest of a 1M-row DataFrame",
            missing if frame is None else f"{frame * 1e3:9.1f} ms",
            "3 columns",
        )
    )
    rows.append(("cached hit, blocks (code-aware key)", f"{ours * us:9.2f} µs", ""))
    rows.append(
        ("cached hit, diskcache.memoize", missing if disk is None else f"{disk * us:9.2f} µs", "")
    )
    rows.append(
        ("cached hit, joblib.Memory", missing if job is None else f"{job * us:9.2f} µs", "")
    )
    if disk is not None:
        rows.append(
            (
                "  ratio blocks / diskcache",
                f"{ours / disk:9.2f} x",
                "goal <= 1.5x: " + ("OK" if ours <= 1.5 * disk else "MISSED"),
            )
        )
    if job is not None:
        rows.append(("  ratio blocks / joblib", f"{ours / job:9.2f} x", ""))
    width = max(len(r[0]) for r in rows)
    print(f"Python {sys.version.split()[0]}, best of 5 rounds (3 for the big inputs)")
    print(f"{'measure':<{width}}  {'value':>14}  note")
    print("-" * (width + 40))
    for name, value, note in rows:
        print(f"{name:<{width}}  {value:>14}  {note}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
