"""What `bench_s3.py` and `bench_azure.py` share: result records on an object store through
`ResultStore` vs the raw fsspec filesystem beneath it, same run, same bytes.

Measured, one operation at a time, as a task would call them:

* **small records**: ``records`` values of ``record_kb`` KB of random bytes (pickle), written
  with ``ResultStore.write`` under new keys each run (a first write: a create-only request),
  then again over the first run's records (an overwrite: the create is refused, the record
  checked, then replaced), then read with ``ResultStore.read``; baseline: ``pipe_file`` /
  ``cat_file`` of the same payload bytes on the same fsspec client;
* **one large record**: ``mb`` MB of random bytes (pickle), ``ResultStore.write`` + ``read``;
  baseline: ``pipe_file`` + ``cat_file`` of the payload, with the peak RSS above the payload.

Each is the best of ``repeat`` runs, raw and ours alternating so that drift in the server's
speed hits both alike. Ratios are raw seconds / our seconds (1.00x: as fast as raw).
"""

from __future__ import annotations

import argparse
import gc
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import psutil
from rss import RssSampler

from blocks.filesystems.remote import FsspecFileSystem
from blocks.results import ResultStore


@dataclass
class Best:
    seconds: float = float("inf")
    rss_extra: int = 0  # highest RSS increase over the RSS just before a run


@dataclass
class Figures:
    """The best runs of each operation, raw and ours."""

    records: int
    record_kb: float
    size: int
    record_size: int
    small: dict[str, tuple[Best, Best]]  # operation -> (raw, ours)
    large: dict[str, tuple[Best, Best]]


def arguments(description: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--records", type=int, default=1000, help="small records (default 1000)")
    parser.add_argument("--record-kb", type=float, default=1.0, help="small record KB (default 1)")
    parser.add_argument("--mb", type=int, default=256, help="large record MB (default 256)")
    parser.add_argument("--repeat", type=int, default=3, help="runs per operation (best kept)")
    return parser.parse_args()


def run_once(op: Callable[[], Any], best: Best) -> None:
    gc.collect()
    before = psutil.Process().memory_info().rss
    with RssSampler() as rss:
        start = time.perf_counter()
        result = op()
        seconds = time.perf_counter() - start
    del result
    best.seconds = min(best.seconds, seconds)
    best.rss_extra = max(best.rss_extra, rss.peak - before)


def duel(repeat: int, raw: Callable[[], Any], ours: Callable[[], Any]) -> tuple[Best, Best]:
    """Best of `repeat` runs of each, alternating raw and ours."""
    raw_best, ours_best = Best(), Best()
    for _ in range(repeat):
        run_once(raw, raw_best)
        run_once(ours, ours_best)
    return raw_best, ours_best


def measure(storage: FsspecFileSystem, raw: str, args: argparse.Namespace) -> Figures:
    """Run every operation on `storage` (ours) and on its own fsspec client under the full
    path `raw` (the baseline)."""
    store = ResultStore(storage, "pickle")
    fs = storage.filesystem()
    n = args.records
    small = [os.urandom(int(args.record_kb * 1000)) for _ in range(n)]
    store.write("warm-up", b"x")  # connections and credentials resolved before timing
    fs.pipe_file(f"{raw}/warm-up", b"x")

    # Each write run makes new keys (a first write: one create-only request); "overwrite"
    # writes over the records of the first run (a refused create, a check, a write).
    runs = {"ours": 0, "raw": 0}

    def fresh(side: str) -> int:
        runs[side] += 1
        return runs[side] - 1

    def ours_small_write(run: int | None = None) -> None:
        run = fresh("ours") if run is None else run
        for i, value in enumerate(small):
            store.write(f"small/{run}/{i}", value)

    def raw_small_write(run: int | None = None) -> None:
        run = fresh("raw") if run is None else run
        for i, value in enumerate(small):
            fs.pipe_file(f"{raw}/small/{run}/{i}", value)

    def ours_small_read() -> None:
        for i, value in enumerate(small):
            hit = store.read(f"small/0/{i}")
            assert hit is not None and hit.value == value

    def raw_small_read() -> None:
        for i, value in enumerate(small):
            assert fs.cat_file(f"{raw}/small/0/{i}") == value

    small_runs = {
        "write (pipe_file)": duel(args.repeat, raw_small_write, ours_small_write),
        "overwrite": duel(args.repeat, lambda: raw_small_write(0), lambda: ours_small_write(0)),
        "read (cat_file)": duel(args.repeat, raw_small_read, ours_small_read),
    }

    size = args.mb * 1_000_000
    payload = os.urandom(size)

    def ours_large_write() -> None:
        store.write("large", payload)

    def raw_large_write() -> None:
        fs.pipe_file(f"{raw}/large", payload)

    raw_large_write()  # warm-up: multipart code paths and connection pool at full size
    ours_large_write()
    large_write = duel(args.repeat, raw_large_write, ours_large_write)

    def ours_large_read() -> Any:
        hit = store.read("large")
        assert hit is not None and len(hit.value) == size
        return hit

    def raw_large_read() -> Any:
        data = fs.cat_file(f"{raw}/large")
        assert len(data) == size
        return data

    payload = b""  # reads start without the written value alive
    large_runs = {
        "write (pipe_file)": large_write,
        "read (cat_file)": duel(args.repeat, raw_large_read, ours_large_read),
    }
    return Figures(n, args.record_kb, size, storage.size("large"), small_runs, large_runs)


def report(figures: Figures, *, small_goal: float, large_goal: float) -> None:
    """Print the tables and the worst ratio of each kind against its goal."""
    n, size = figures.records, figures.size
    print(f"{n} small records of {figures.record_kb:g} KB, sequential:")
    print(f"{'':<22}{'ours s':>9}{'raw s':>9}{'ours ms/op':>12}{'raw ms/op':>11}{'raw/ours':>10}")
    for name, (raw, ours) in figures.small.items():
        print(
            f"{name:<22}{ours.seconds:>9.2f}{raw.seconds:>9.2f}{ours.seconds / n * 1e3:>12.2f}"
            f"{raw.seconds / n * 1e3:>11.2f}{raw.seconds / ours.seconds:>9.2f}x"
        )
    mb = size / 1e6
    print()
    print(f"one {mb:.0f} MB record (random bytes, pickle; record {figures.record_size} bytes):")
    print(
        f"{'':<22}{'ours s':>9}{'raw s':>9}{'ours MB/s':>11}{'raw MB/s':>10}{'ratio':>8}"
        f"{'ours +RSS':>11}{'raw +RSS':>10}"
    )
    for name, (raw, ours) in figures.large.items():
        print(
            f"{name:<22}{ours.seconds:>9.2f}{raw.seconds:>9.2f}{mb / ours.seconds:>11.0f}"
            f"{mb / raw.seconds:>10.0f}{raw.seconds / ours.seconds:>7.2f}x"
            f"{ours.rss_extra / size:>10.2f}x{raw.rss_extra / size:>9.2f}x"
        )
    print()
    for kind, runs, goal in (
        ("small records", figures.small, small_goal),
        ("large record ", figures.large, large_goal),
    ):
        worst = min(raw.seconds / ours.seconds for raw, ours in runs.values())
        print(f"{kind} vs raw (worst of {'/'.join(runs)}): {worst:.2f}x (goal >= {goal:.2f}x)")
    print("(+RSS: peak RSS increase during the operation, relative to the payload size)")
    print(f"load average at end: {', '.join(f'{x:.1f}' for x in os.getloadavg())}")
