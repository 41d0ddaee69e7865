"""Benchmark: task call overhead inside a flow, and a cached-task hit against joblib.Memory.

Run: ``.venv/bin/python tests/benchmarks/bench_runtime.py [--ops 20000]``

Measured side by side in one run, on the same machine, best of 5 rounds each:

* **plain task call**: a ``@task`` called inside a ``@flow``, minus the same function called
  bare in the same loop (target: under 50 µs of overhead);
* **cached hit**: a ``@task(cache_key_fn=task_input_hash)`` already computed, read back from
  the default local result store (pickle), against ``joblib.Memory(...).cache`` on the same
  function and argument (target: ratio <= 1.0);
* for scale: the same cached task with the JSON serializer, and a first (miss) call.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import timedelta
from typing import Any


def best_per_call(fn: Callable[[], Any], ops: int, rounds: int = 5) -> float:
    """Seconds per call: the best of `rounds` rounds of `ops` calls."""
    samples = []
    for _ in range(rounds):
        start = time.perf_counter()
        for _ in range(ops):
            fn()
        samples.append((time.perf_counter() - start) / ops)
    return min(samples)


def work(x: int, scale: float = 1.5) -> dict[str, Any]:
    return {"x": x, "records": [x * scale, x * 2 * scale]}


def plain_overhead(ops: int) -> tuple[float, float]:
    from blocks import flow, task

    t = task(work)
    results: dict[str, float] = {}

    @flow
    def measure() -> None:
        results["bare"] = best_per_call(lambda: work(3), ops)
        results["task"] = best_per_call(lambda: t(3), ops)

    measure()
    return results["bare"], results["task"]


def cached_hit(ops: int, serializer: str) -> float:
    from blocks import task
    from blocks.tasks import task_input_hash

    t = task(
        cache_key_fn=task_input_hash,
        cache_expiration=timedelta(hours=1),
        result_serializer=serializer,
        name=f"work-{serializer}",
    )(work)
    t(3)
    assert t(3, return_state=True).is_cached()
    return best_per_call(lambda: t(3), ops)


def joblib_hit(ops: int, folder: str) -> float:
    import joblib

    memory = joblib.Memory(folder, verbose=0)
    cached = memory.cache(work)
    cached(3)
    return best_per_call(lambda: cached(3), ops)


def miss(ops: int) -> float:
    from blocks import task
    from blocks.tasks import task_input_hash

    t = task(cache_key_fn=task_input_hash, name="work-miss")(work)
    counter = iter(range(10**9))
    return best_per_call(lambda: t(next(counter)), ops, rounds=3)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--ops", type=int, default=20000, help="calls per round (plain calls)")
    parser.add_argument("--cached-ops", type=int, default=3000, help="calls per round (cache)")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as home:
        os.environ["BLOCKS_HOME"] = os.path.join(home, "blocks-home")
        os.environ.pop("BLOCKS_RESULTS_STORAGE", None)
        os.environ.pop("BLOCKS_RESULTS_SERIALIZER", None)

        bare, in_flow = plain_overhead(args.ops)
        overhead = in_flow - bare
        blocks_hit = cached_hit(args.cached_ops, "pickle")
        blocks_hit_json = cached_hit(args.cached_ops, "json")
        joblib_s = joblib_hit(args.cached_ops, os.path.join(home, "joblib"))
        first = miss(max(200, args.cached_ops // 10))

    us = 1e6
    rows = [
        ("bare function call", f"{bare * us:9.2f} µs", ""),
        ("plain task call in a flow", f"{in_flow * us:9.2f} µs", ""),
        (
            "  overhead over bare call",
            f"{overhead * us:9.2f} µs",
            "target < 50 µs: " + ("OK" if overhead * us < 50 else "MISSED"),
        ),
        ("cached hit (pickle, local)", f"{blocks_hit * us:9.2f} µs", ""),
        ("cached hit (json, local)", f"{blocks_hit_json * us:9.2f} µs", ""),
        ("joblib.Memory hit", f"{joblib_s * us:9.2f} µs", ""),
        (
            "  ratio blocks / joblib",
            f"{blocks_hit / joblib_s:9.2f} x",
            "target <= 1.0: " + ("OK" if blocks_hit <= joblib_s else "MISSED"),
        ),
        ("cache miss (compute + write)", f"{first * us:9.2f} µs", "for scale"),
    ]
    width = max(len(r[0]) for r in rows)
    print(f"Python {sys.version.split()[0]}, best of 5 rounds")
    print(f"{'measure':<{width}}  {'value':>12}  note")
    print("-" * (width + 40))
    for name, value, note in rows:
        print(f"{name:<{width}}  {value:>12}  {note}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
