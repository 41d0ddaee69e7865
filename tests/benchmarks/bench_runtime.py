"""Benchmark: task call overhead, cached hits and misses against diskcache and joblib, and
``.submit()`` on threads against a sequential flow.

Run: ``.venv/bin/python tests/benchmarks/bench_runtime.py [--ops 20000] [--cpu-time]``

Measured side by side in one run, on the same machine, best of 5 rounds each; the cache figures
(ours and the peers', back to back) are the median of ``--repeats`` such runs:

* **plain task call**: a ``@task`` called inside a ``@flow``, minus the same function called
  bare in the same loop (target: <= 1 µs of overhead);
* **cached hit**: a ``@task(cache_key_fn=task_input_hash)`` already computed, read back from
  the default local result store (pickle), against ``diskcache.Cache(...).memoize()`` and
  ``joblib.Memory(...).cache`` on the same function and argument (target: <= 1.5x diskcache);
* **cached miss**: a new argument each call (compute + write), ours with the default store
  (fsync) and with ``LocalFileSystem(fsync=False)``, against diskcache's and joblib's misses
  (target: ours without fsync <= joblib);
* **300 tasks via .submit()** on the thread runner, against the same 300 tasks called in a
  sequential flow and submitted to ``SequentialTaskRunner`` (target: <= 2x the sequential flow);
* for scale: the same cached task with the JSON serializer.

A peer that is not installed is reported as such, with no ratio.
"""

from __future__ import annotations

import argparse
import itertools
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import timedelta
from typing import Any


def best_per_call(fn: Callable[[], Any], ops: int, rounds: int = 5) -> float:
    """Seconds per call: the best of `rounds` rounds of `ops` calls (by `_clock`)."""
    clock = _clock[0]
    samples = []
    for _ in range(rounds):
        start = clock()
        for _ in range(ops):
            fn()
        samples.append((clock() - start) / ops)
    return min(samples)


#: What `best_per_call` times with: wall time, or with ``--cpu-time`` the process's CPU time
#: (all threads, system time included), which a loaded machine's waits for a core do not
#: inflate: ranks changes when the load average is far above the core count.
_clock: list[Callable[[], float]] = [time.perf_counter]


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


def installed(module: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(module) is not None


def diskcache_hit(ops: int, folder: str) -> float:
    import diskcache

    with diskcache.Cache(folder) as cache:
        cached = cache.memoize()(work)
        cached(3)
        return best_per_call(lambda: cached(3), ops)


def diskcache_miss(ops: int, folder: str) -> float:
    import diskcache

    with diskcache.Cache(folder) as cache:
        cached = cache.memoize()(work)
        counter = iter(range(10**9))
        return best_per_call(lambda: cached(next(counter)), ops, rounds=3)


def joblib_miss(ops: int, folder: str) -> float:
    import joblib

    cached = joblib.Memory(folder, verbose=0).cache(work)
    counter = iter(range(10**9))
    return best_per_call(lambda: cached(next(counter)), ops, rounds=3)


def miss(ops: int, folder: str | None = None) -> float:
    from blocks import task
    from blocks.filesystems import LocalFileSystem
    from blocks.tasks import task_input_hash

    storage = LocalFileSystem(basepath=folder, fsync=False) if folder else None
    name = "work-miss-nofsync" if folder else "work-miss"
    t = task(cache_key_fn=task_input_hash, name=name, result_storage=storage)(work)
    return best_per_call(lambda: t(next(_NEW_ARGUMENTS)), ops, rounds=3)


#: Arguments never seen before in this process, so every call of `miss` misses, round after round.
_NEW_ARGUMENTS = itertools.count()


def cache_figures(ops: int, repeats: int, home: str) -> dict[str, float]:
    """Cached hits and misses, ours and the installed peers', measured back to back in each of
    `repeats` rounds; the median of the rounds for each figure (a shared machine's load moves
    between rounds, not within one). Ratios printed from these are ratios of medians."""
    miss_ops = max(200, ops // 10)
    rounds: dict[str, list[float]] = {}
    for round_ in range(repeats):
        figures = {
            "hit": cached_hit(ops, "pickle"),
            "hit json": cached_hit(ops, "json"),
            "miss": miss(miss_ops),
            "miss nofsync": miss(miss_ops, os.path.join(home, f"nofsync-{round_}")),
        }
        for peer, hit, missed in (
            ("diskcache", diskcache_hit, diskcache_miss),
            ("joblib", joblib_hit, joblib_miss),
        ):
            if installed(peer):
                folder = os.path.join(home, f"{peer}-{round_}")
                figures[f"{peer} hit"] = hit(ops, folder)
                figures[f"{peer} miss"] = missed(miss_ops, folder + "-miss")
        for name, value in figures.items():
            rounds.setdefault(name, []).append(value)
    return {name: statistics.median(values) for name, values in rounds.items()}


def submitted(tasks: int = 300, rounds: int = 30) -> tuple[float, float, float, float]:
    """Best flow-run time: `tasks` called in order, submitted sequentially, on threads; and
    the same `tasks` calls of the bare function submitted to a bare ``ThreadPoolExecutor``
    (made once, as the runner's threads are, with the runner's default worker count) and
    waited for."""
    from concurrent.futures import ThreadPoolExecutor

    from blocks import flow, task
    from blocks.task_runners import ConcurrentTaskRunner, SequentialTaskRunner

    t = task(work)
    pool = ThreadPoolExecutor()  # min(32, cpus + 4) workers, the runner's default too

    def bare_pool() -> list[Any]:
        return [f.result() for f in [pool.submit(work, i) for i in range(tasks)]]

    @flow
    def called() -> list[Any]:
        return [t(i) for i in range(tasks)]

    @flow(task_runner=SequentialTaskRunner())
    def in_order() -> list[Any]:
        return [f.result() for f in [t.submit(i) for i in range(tasks)]]

    @flow(task_runner=ConcurrentTaskRunner())
    def on_threads() -> list[Any]:
        return [f.result() for f in [t.submit(i) for i in range(tasks)]]

    try:
        # Interleaved round by round: a load change on a shared machine hits both alike.
        figures: dict[str, list[float]] = {"pool": [], "threads": []}
        for _ in range(rounds):
            figures["pool"].append(best_per_call(bare_pool, 1, 1))
            figures["threads"].append(best_per_call(on_threads, 1, 1))
    finally:
        pool.shutdown()
    return (
        best_per_call(called, 1, rounds),
        best_per_call(in_order, 1, rounds),
        min(figures["threads"]),
        min(figures["pool"]),
    )


def log_throughput(ops: int) -> dict[str, float]:
    """Seconds per run-log line, formatted by a handler on the root logger into memory: a
    plain stdlib logger (the floor), then a task's run logger and a ``log_prints`` print with
    0, 10 and 1,000 secret values known to the masker (none of them in the lines)."""
    import io
    import logging

    from blocks import flow, get_run_logger, task

    try:
        from blocks import mask_secret
    except ImportError:  # before masking existed: only the no-secret figures
        mask_secret = None  # type: ignore[assignment]

    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s %(message)s"))
    root = logging.getLogger()
    root.addHandler(handler)
    plain = logging.getLogger("bench.plain")
    plain.setLevel(logging.INFO)
    results: dict[str, float] = {}

    def reset() -> None:
        stream.seek(0)
        stream.truncate()

    def plain_line() -> None:
        plain.info("loaded %d rows from %s", 1234, "warehouse.orders")
        reset()

    @task(log_prints=True)
    def emit(label: str) -> None:
        logger = get_run_logger()
        logger.logger.setLevel(logging.INFO)

        def logged() -> None:
            logger.info("loaded %d rows from %s", 1234, "warehouse.orders")
            reset()

        def printed() -> None:
            print("loaded", 1234, "rows from warehouse.orders")
            reset()

        results[f"run logger, {label}"] = best_per_call(logged, ops)
        results[f"log_prints, {label}"] = best_per_call(printed, ops)

    @flow
    def measure() -> None:
        results["stdlib logger (floor)"] = best_per_call(plain_line, ops)
        emit("0 secrets known")
        if mask_secret is not None:
            for i in range(10):
                mask_secret(f"secret-value-{i:04d}-{os.urandom(8).hex()}")
            emit("10 secrets known")
            for i in range(10, 1000):
                mask_secret(f"secret-value-{i:04d}-{os.urandom(8).hex()}")
            emit("1,000 secrets known")

    try:
        measure()
    finally:
        root.removeHandler(handler)
    return results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--ops", type=int, default=20000, help="calls per round (plain calls)")
    parser.add_argument("--cached-ops", type=int, default=3000, help="calls per round (cache)")
    parser.add_argument(
        "--repeats", type=int, default=3, help="cache figures: median of this many runs"
    )
    parser.add_argument(
        "--only",
        choices=["plain", "logs"],
        help="just the plain task overhead, or just the log throughput (masking)",
    )
    parser.add_argument(
        "--cpu-time",
        action="store_true",
        help="time by the process's CPU time, not wall time (a loaded machine)",
    )
    args = parser.parse_args()
    if args.cpu_time:
        _clock[0] = time.process_time
    if args.only:
        return _only(args.only, args.ops)

    with tempfile.TemporaryDirectory() as home:
        os.environ["BLOCKS_HOME"] = os.path.join(home, "blocks-home")
        os.environ.pop("BLOCKS_RESULTS_STORAGE", None)
        os.environ.pop("BLOCKS_RESULTS_SERIALIZER", None)
        os.environ.setdefault("BLOCKS_LOG_LEVEL", "WARNING")  # flow-run lines are not measured

        bare, in_flow = plain_overhead(args.ops)
        overhead = in_flow - bare
        cache = cache_figures(args.cached_ops, args.repeats, home)
        blocks_hit, blocks_hit_json = cache["hit"], cache["hit json"]
        first, first_nofsync = cache["miss"], cache["miss nofsync"]
        peers: dict[str, tuple[float, float] | None] = {
            peer: (cache[f"{peer} hit"], cache[f"{peer} miss"]) if f"{peer} hit" in cache else None
            for peer in ("diskcache", "joblib")
        }
        called, in_order, on_threads, bare_pool = submitted()

    us = 1e6
    rows = [
        ("bare function call", f"{bare * us:9.2f} µs", ""),
        ("plain task call in a flow", f"{in_flow * us:9.2f} µs", ""),
        (
            "  overhead over bare call",
            f"{overhead * us:9.2f} µs",
            "target <= 1 µs: " + ("OK" if overhead * us <= 1 else "MISSED"),
        ),
        ("cached hit (pickle, local)", f"{blocks_hit * us:9.2f} µs", ""),
        ("cached hit (json, local)", f"{blocks_hit_json * us:9.2f} µs", ""),
    ]
    for peer, label, target in (
        ("diskcache", "diskcache Cache.memoize hit", 1.5),
        ("joblib", "joblib.Memory hit", None),
    ):
        measured = peers[peer]
        if measured is None:
            rows.append((label, "not installed", "no ratio"))
            continue
        verdict = ""
        if target is not None:
            verdict = f"target <= {target}x: " + (
                "OK" if blocks_hit <= target * measured[0] else "MISSED"
            )
        rows.append((label, f"{measured[0] * us:9.2f} µs", ""))
        rows.append((f"  ours / {peer} (hit)", f"{blocks_hit / measured[0]:9.2f} x", verdict))
    rows.append(("cache miss (compute + write, fsync)", f"{first * us:9.2f} µs", ""))
    rows.append(("cache miss (fsync=False)", f"{first_nofsync * us:9.2f} µs", ""))
    for peer, label in (("diskcache", "diskcache miss"), ("joblib", "joblib.Memory miss")):
        measured = peers[peer]
        if measured is None:
            rows.append((label, "not installed", "no ratio"))
            continue
        verdict = ""
        if peer == "joblib":
            verdict = "target <= 1.0x: " + ("OK" if first_nofsync <= measured[1] else "MISSED")
        rows.append((label, f"{measured[1] * us:9.2f} µs", ""))
        rows.append(
            (f"  ours (fsync=False) / {peer}", f"{first_nofsync / measured[1]:9.2f} x", verdict)
        )
    rows += [
        ("300 tasks called in a flow", f"{called * 1e3:9.2f} ms", "the sequential flow"),
        ("300 .submit(), SequentialTaskRunner", f"{in_order * 1e3:9.2f} ms", ""),
        ("300 .submit(), ConcurrentTaskRunner", f"{on_threads * 1e3:9.2f} ms", ""),
        (
            "  threads / sequential flow",
            f"{on_threads / called:9.2f} x",
            "target <= 2x: " + ("OK" if on_threads <= 2 * called else "MISSED"),
        ),
        ("  threads / SequentialTaskRunner", f"{on_threads / in_order:9.2f} x", ""),
        ("300 submits to a bare ThreadPoolExecutor", f"{bare_pool * 1e3:9.2f} ms", "interleaved"),
        (
            "  threads / bare ThreadPoolExecutor",
            f"{on_threads / bare_pool:9.2f} x",
            "target <= 0.8x: " + ("OK" if on_threads <= 0.8 * bare_pool else "MISSED"),
        ),
    ]
    rows += _log_rows(log_throughput(max(args.ops // 4, 1000)))
    width = max(len(r[0]) for r in rows)
    print(
        f"bench_runtime: Python {sys.version.split()[0]}, best of 5 rounds (3 for misses, 30 for "
        f"flows){', CPU time' if args.cpu_time else ''}; cache figures: median of {args.repeats} "
        f"such runs; load average "
        f"{os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs"
    )
    print(f"{'measure':<{width}}  {'value':>12}  note")
    print("-" * (width + 40))
    for name, value, note in rows:
        print(f"{name:<{width}}  {value:>12}  {note}")
    return 0


def _log_rows(logs: dict[str, float]) -> list[tuple[str, str, str]]:
    floor = logs["stdlib logger (floor)"]
    return [
        (f"log line: {name}", f"{value * 1e6:9.2f} µs", f"{value / floor:5.2f}x the stdlib floor")
        for name, value in logs.items()
    ]


def _only(which: str, ops: int) -> int:
    """One group of figures, quickly (before/after comparisons of one change)."""
    with tempfile.TemporaryDirectory() as home:
        os.environ["BLOCKS_HOME"] = os.path.join(home, "blocks-home")
        os.environ.setdefault("BLOCKS_LOG_LEVEL", "WARNING")
        if which == "plain":
            bare, in_flow = plain_overhead(ops)
            rows = [
                ("bare function call", f"{bare * 1e6:9.3f} µs", ""),
                ("plain task call in a flow", f"{in_flow * 1e6:9.3f} µs", ""),
                ("  overhead over bare call", f"{(in_flow - bare) * 1e6:9.3f} µs", ""),
            ]
        else:
            rows = _log_rows(log_throughput(ops))
    width = max(len(r[0]) for r in rows)
    print(f"bench_runtime --only {which}: best of 5 rounds of {ops} calls")
    for name, value, note in rows:
        print(f"{name:<{width}}  {value:>12}  {note}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
