"""Benchmark: a 1M-row x 10-column mixed DataFrame and a large float64 array through
`ResultStore`, against the same libraries called directly, in the same run.

Run: ``.venv/bin/python tests/benchmarks/bench_dataframes.py [--rows 1000000] [--array-mb 256]
[--repeat 3]`` (``--array-mb 1024`` for the 1 GB array of issue #25, if the machine has the
memory: the array, its read-back copy and the page cache of its file must fit).

Compared, each best of ``--repeat``, all on local disk in one temporary folder:

* frame, ours: ``ResultStore(LocalFileSystem(fsync=False), "parquet")`` write and read (zstd
  level 1, as pyarrow; the record is signed and verified);
* frame, baselines: ``DataFrame.to_parquet`` / ``pandas.read_parquet`` with zstd (the same
  work) and with pandas' default (snappy); our ``"pickle"`` store (cloudpickle);
* array, ours: the ``"npy"`` store; baselines ``numpy.save`` / ``numpy.load``, and
  ``numpy.save`` to a new file renamed over the old one (atomic, as our store writes); in
  interleaved rounds (one run of each per round), best of ``--repeat``.

``fsync=False`` on our side because the baselines do not fsync either (the default store
fsyncs before its rename: ``bench_persist.py`` measures that). Throughput ratios are baseline
time / our time (1.0x = as fast, goal >= 0.9x); size is the record's bytes on disk; peak RSS
is the highest resident memory above the level just before the operation, relative to the
frame's in-memory size (``memory_usage(deep=True)``) or the array's ``nbytes``: in the timed
loop (where arrow's and malloc's pools reuse memory freed by earlier runs, so it reads low)
and, for the frame, once per operation in a fresh process (the figures to quote).
"""

from __future__ import annotations

import argparse
import gc
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import psutil
from rss import RssSampler

from blocks.filesystems import LocalFileSystem
from blocks.results import ResultStore


@dataclass
class Measure:
    seconds: float
    extra_rss: int
    cpu: float = 0.0  # process CPU seconds (all threads) of the fastest run


def measure(op: Callable[[], Any], repeat: int) -> Measure:
    """Best time of `repeat` runs after one untimed warm-up (imports, page cache); the peak
    RSS is the largest seen in the timed runs."""
    return measure_interleaved({"op": op}, repeat)["op"]


def measure_interleaved(ops: dict[str, Callable[[], Any]], repeat: int) -> dict[str, Measure]:
    """`measure` for several operations in turn, one run of each per round: each sees the
    memory and page cache the others leave, not only its own (a 1 GB read right after four
    1 GB writes pays the kernel's compaction for huge pages; the next one does not)."""
    for op in ops.values():
        op()
    best: dict[str, Measure] = {}
    for _ in range(repeat):
        for name, op in ops.items():
            gc.collect()
            before = psutil.Process().memory_info().rss
            with RssSampler() as rss:
                cpu = time.process_time()
                started = time.perf_counter()
                result = op()
                seconds = time.perf_counter() - started
                cpu = time.process_time() - cpu
            del result
            run = Measure(seconds, max(0, rss.peak - before), cpu)
            old = best.get(name)
            extra = max(run.extra_rss, old.extra_rss if old else 0)
            best[name] = (
                Measure(run.seconds, extra, cpu)
                if old is None or run.seconds < old.seconds
                else Measure(old.seconds, extra, old.cpu)
            )
    return best


def mixed_frame(rows: int) -> pd.DataFrame:
    rng = np.random.default_rng(25)
    ints = rng.integers(0, 1_000_000, rows)
    nullable = pd.array(ints, dtype="Int64")
    nullable[rng.random(rows) < 0.1] = pd.NA
    return pd.DataFrame(
        {
            "id": np.arange(rows, dtype=np.int64),
            "amount": rng.normal(100, 25, rows),
            "quantity": nullable,
            "ratio": rng.random(rows).astype(np.float32),
            "store": rng.integers(0, 500, rows).astype(np.int32),
            "active": rng.random(rows) < 0.5,
            "city": pd.Categorical.from_codes(
                rng.integers(0, 5, rows), ["Seoul", "Paris", "Tokyo", "Lima", "Oslo"]
            ),
            "status": rng.choice(np.array(["new", "paid", "shipped", "returned"]), rows),
            "sku": [f"SKU-{n:08d}" for n in ints],
            "at": pd.date_range("2024-01-01", periods=rows, freq="s", tz="Europe/Paris"),
        }
    )


def mb(n: float) -> str:
    return f"{n / 1e6:,.1f} MB"


def vs(base: Measure, ours: Measure) -> str:
    """Our throughput relative to `base`: by wall time, then by CPU time (steadier on a busy
    machine)."""
    return f"{base.seconds / ours.seconds:.2f}x wall, {base.cpu / ours.cpu:.2f}x CPU"


def bench_frame(rows: int, repeat: int, root: Path, storage: LocalFileSystem) -> None:
    parquet, pickled = ResultStore(storage, "parquet"), ResultStore(storage, "pickle")
    frame = mixed_frame(rows)
    frame_bytes = int(frame.memory_usage(deep=True).sum())
    print(f"frame: {rows:,} rows x {frame.shape[1]} columns, {mb(frame_bytes)} in memory")
    zstd, snappy = root / "zstd.parquet", root / "snappy.parquet"
    ours_w = measure(lambda: parquet.write("frame", frame), repeat)
    zstd_w = measure(lambda: frame.to_parquet(zstd, compression="zstd"), repeat)
    snappy_w = measure(lambda: frame.to_parquet(snappy), repeat)
    pickle_w = measure(lambda: pickled.write("frame-pickle", frame), repeat)
    ours_r = measure(lambda: parquet.read("frame"), repeat)
    zstd_r = measure(lambda: pd.read_parquet(zstd), repeat)
    snappy_r = measure(lambda: pd.read_parquet(snappy), repeat)
    pickle_r = measure(lambda: pickled.read("frame-pickle"), repeat)
    hit = parquet.read("frame")
    assert hit is not None
    pd.testing.assert_frame_equal(hit.value, frame)

    print(f"\n{'operation':32} {'seconds':>9} {'CPU s':>7} {'peak RSS +':>12} {'/frame':>7}  ours")
    for name, m, ratio in [
        ("persist, ours parquet", ours_w, ""),
        ("persist, to_parquet zstd", zstd_w, vs(zstd_w, ours_w)),
        ("persist, to_parquet snappy", snappy_w, vs(snappy_w, ours_w)),
        ("persist, ours pickle", pickle_w, vs(pickle_w, ours_w)),
        ("read, ours parquet", ours_r, ""),
        ("read, read_parquet zstd", zstd_r, vs(zstd_r, ours_r)),
        ("read, read_parquet snappy", snappy_r, vs(snappy_r, ours_r)),
        ("read, ours pickle", pickle_r, vs(pickle_r, ours_r)),
    ]:
        share = m.extra_rss / frame_bytes
        print(
            f"{name:32} {m.seconds:9.3f} {m.cpu:7.3f} {mb(m.extra_rss):>12} {share:6.2f}x  {ratio}"
        )
    sizes = {
        "ours (parquet record)": storage.size("frame"),
        "to_parquet zstd": zstd.stat().st_size,
        "to_parquet snappy": snappy.stat().st_size,
        "ours (pickle record)": storage.size("frame-pickle"),
    }
    print("\non disk:")
    for name, size in sizes.items():
        print(f"  {name:24} {mb(size):>10}  {size / sizes['ours (pickle record)']:.2f}x of pickle")


def save_atomically(path: Path, array: Any) -> None:
    """`numpy.save` the way our store writes: a new file, then renamed over the old one (the
    old file's pages stay until the rename, where `numpy.save` to one path truncates first)."""
    temp = path.with_suffix(".tmp")
    with temp.open("wb") as file:  # a file: numpy.save would add ".npy" to a bare name
        np.save(file, array)
    os.replace(temp, path)


def bench_array(megabytes: int, repeat: int, root: Path, storage: LocalFileSystem) -> None:
    npy = ResultStore(storage, "npy")
    count = megabytes * 1024 * 1024 // 8
    array = np.random.default_rng(1).random(count)
    print(f"\narray: float64 x {count:,} = {mb(array.nbytes)}")
    print(f"{'operation':32} {'seconds':>9} {'CPU s':>7} {'peak RSS +':>12} {'/array':>7}  ours")
    path = root / "array.npy"
    # Interleaved rounds (writes, then reads): see `measure_interleaved`.
    writes = measure_interleaved(
        {
            "ours": lambda: npy.write("array", array),
            "save": lambda: np.save(path, array),
            "atomic": lambda: save_atomically(root / "array-atomic.npy", array),
        },
        repeat,
    )
    reads = measure_interleaved(
        {"ours": lambda: npy.read("array"), "load": lambda: np.load(path)}, repeat
    )
    npy_w, save_w, atomic_w = writes["ours"], writes["save"], writes["atomic"]
    npy_r, load_r = reads["ours"], reads["load"]
    for name, m, ratio in [
        ("persist, ours npy", npy_w, ""),
        ("persist, numpy.save", save_w, vs(save_w, npy_w)),
        ("persist, numpy.save + replace", atomic_w, vs(atomic_w, npy_w)),
        ("read, ours npy", npy_r, ""),
        ("read, numpy.load", load_r, vs(load_r, npy_r)),
    ]:
        share = m.extra_rss / array.nbytes
        print(
            f"{name:32} {m.seconds:9.3f} {m.cpu:7.3f} {mb(m.extra_rss):>12} {share:6.2f}x  {ratio}"
        )


#: Operations whose peak memory is measured each in a fresh process (``--rss``).
RSS_OPS = (
    "persist-parquet",
    "persist-to_parquet",
    "persist-pickle",
    "read-parquet",
    "read-read_parquet",
    "read-pickle",
)


def child(op: str, rows: int, root: Path) -> None:
    """Run one operation in this fresh process; print its peak RSS above the level before it.

    Writes start with the frame built (the result: memory beyond the frame); reads start
    with the libraries imported and a small record read (the result: the frame it builds plus
    whatever the read holds besides)."""
    storage = LocalFileSystem(basepath=str(root / "store"), fsync=False)
    kind = "pickle" if op.endswith("pickle") else "parquet"
    store = ResultStore(storage, kind)
    zstd = root / "zstd.parquet"
    if op.startswith("persist"):
        frame = mixed_frame(rows)
        warm = mixed_frame(1000)
        store.write("warm", warm)
        warm.to_parquet(root / "warm.parquet", compression="zstd")
        run: Callable[[], Any] = {
            "persist-parquet": lambda: store.write("rss", frame),
            "persist-to_parquet": lambda: frame.to_parquet(
                root / "rss.parquet", compression="zstd"
            ),
            "persist-pickle": lambda: store.write("rss", frame),
        }[op]
    else:
        store.write("warm", mixed_frame(1000))
        store.read("warm")
        pd.read_parquet(zstd, columns=["id"])
        key = "frame" if kind == "parquet" else "frame-pickle"
        run = {
            "read-parquet": lambda: store.read(key),
            "read-read_parquet": lambda: pd.read_parquet(zstd),
            "read-pickle": lambda: store.read(key),
        }[op]
    gc.collect()
    before = psutil.Process().memory_info().rss
    with RssSampler() as rss:
        result = run()
    del result
    print(rss.peak - before)


def bench_rss(rows: int, root: Path) -> None:
    frame_bytes = int(mixed_frame(rows).memory_usage(deep=True).sum())
    print(f"\npeak RSS, each operation in a fresh process ({mb(frame_bytes)} frame):")
    for op in RSS_OPS:
        done = subprocess.run(
            [sys.executable, __file__, "--child", op, "--rows", str(rows), "--folder", str(root)],
            capture_output=True,
            text=True,
            check=True,
        )
        peak = int(done.stdout.split()[-1])
        what = "beyond the frame" if op.startswith("persist") else "total"
        print(f"  {op:24} {mb(peak):>10}  {peak / frame_bytes:.2f}x of the frame ({what})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--array-mb", type=int, default=256)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--child", choices=RSS_OPS, help=argparse.SUPPRESS)
    parser.add_argument("--folder", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child, args.rows, Path(args.folder))
        return

    print(f"load average at start: {', '.join(f'{x:.1f}' for x in os.getloadavg())}")
    with tempfile.TemporaryDirectory(prefix="bench-dataframes-") as folder:
        root = Path(folder)
        storage = LocalFileSystem(basepath=str(root / "store"), fsync=False)
        bench_frame(args.rows, args.repeat, root, storage)
        gc.collect()
        bench_rss(args.rows, root)
        bench_array(args.array_mb, args.repeat, root, storage)
    print(f"\nload average at end: {', '.join(f'{x:.1f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
