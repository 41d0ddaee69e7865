"""Benchmark: persist and read back a 256 MB ``bytes`` result through `ResultStore` locally.

Run: ``.venv/bin/python tests/benchmarks/bench_persist.py [--mb 256] [--repeat 3]``

Baselines measured in the same run, same folder, same payload:

* ``raw write``: ``open(path, "wb").write(payload)``, no fsync (what DESIGN.md's target names);
* ``raw write+fsync``: the same plus ``flush`` and ``os.fsync``, the durability our store pays
  (its temp file is fsynced before the rename, and the folder after it);
* ``... fsync=False``: our store on ``LocalFileSystem(fsync=False)``, the like-for-like
  comparison with the raw write (atomic rename and checksum kept, no flush to disk);
* ``raw read``: ``open(path, "rb").read()`` of the same bytes (page cache warm for both).

Memory: a thread samples the process RSS every millisecond (psutil) during each operation;
tracemalloc gives the exact peak of Python allocations. Figures are relative to the payload;
the payload itself is live during writes, so 1.0x is the floor for "peak RSS / payload" and the
"extra" column is what the operation adds on top of it. Each operation writes a fresh file and
deletes it afterwards; the best of ``--repeat`` runs is reported.
"""

from __future__ import annotations

import argparse
import gc
import os
import shutil
import tempfile
import time
import tracemalloc
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil
from rss import RssSampler

TARGET_THROUGHPUT_RATIO = 0.7
TARGET_PEAK_RATIO = 1.5


@dataclass
class Measure:
    name: str
    seconds: float
    peak_rss: int  # above the RSS before the payload existed
    extra_rss: int  # above the RSS just before the operation
    traced_peak: int  # tracemalloc peak during the operation


def measure(name: str, op: Callable[[], Any], baseline_rss: int, repeat: int) -> Measure:
    best: Measure | None = None
    for _ in range(repeat):
        gc.collect()
        os.sync()  # start each run with no dirty pages from the previous one
        before = psutil.Process().memory_info().rss
        tracemalloc.start()
        with RssSampler() as rss:
            start = time.perf_counter()
            result = op()
            seconds = time.perf_counter() - start
        _, traced = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        del result
        run = Measure(name, seconds, rss.peak - baseline_rss, rss.peak - before, traced)
        if best is None or run.seconds < best.seconds:
            best = run
    assert best is not None
    return best


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--mb", type=int, default=256, help="payload size in MB (default 256)")
    parser.add_argument("--repeat", type=int, default=3, help="runs per operation (best kept)")
    parser.add_argument("--dir", default=None, help="folder to write in (default: a temp dir)")
    args = parser.parse_args()

    from blocks.filesystems import LocalFileSystem
    from blocks.results import ResultStore

    folder = Path(tempfile.mkdtemp(prefix="bench-persist-", dir=args.dir))
    os.environ.setdefault("BLOCKS_HOME", str(folder / "home"))
    store = ResultStore(LocalFileSystem(basepath=str(folder / "store")), "pickle")
    fast_store = ResultStore(LocalFileSystem(basepath=str(folder / "store"), fsync=False), "pickle")
    raw_path = folder / "raw.bin"
    counter = iter(range(1_000_000))

    gc.collect()
    baseline = psutil.Process().memory_info().rss
    size = args.mb * 1_000_000
    payload = os.urandom(size)

    def raw_write(fsync: bool) -> Callable[[], None]:
        def op() -> None:
            with open(raw_path, "wb") as f:
                f.write(payload)
                if fsync:
                    f.flush()
                    os.fsync(f.fileno())

        return op

    def store_write() -> None:
        store.write(f"bench-{next(counter)}", payload)

    def fast_store_write() -> None:
        fast_store.write(f"bench-{next(counter)}", payload)

    def cleanup() -> None:
        raw_path.unlink(missing_ok=True)
        for key in store.storage.ls():
            store.storage.delete(key)

    try:
        rows: list[Measure] = []
        for name, op in (
            ("raw write", raw_write(False)),
            ("raw write+fsync", raw_write(True)),
            ("ResultStore.write", store_write),
            ("  ... fsync=False", fast_store_write),
        ):
            best: Measure | None = None
            for _ in range(args.repeat):
                run = measure(name, op, baseline, 1)
                cleanup()
                if best is None or run.seconds < best.seconds:
                    best = run
            assert best is not None
            rows.append(best)

        # Read-back: both files written once, then read with the page cache warm.
        raw_write(True)()
        store.write("readback", payload)
        header = store.header("readback")
        assert header is not None
        payload = b""  # the read phase starts without the written value alive
        gc.collect()
        baseline_read = psutil.Process().memory_info().rss
        rows.append(measure("raw read", lambda: raw_path.read_bytes(), baseline_read, args.repeat))

        def store_read() -> Any:
            hit = store.read("readback")
            assert hit is not None and len(hit.value) == size
            return hit

        rows.append(measure("ResultStore.read", store_read, baseline_read, args.repeat))
        record_size = store.storage.size("readback")
    finally:
        shutil.rmtree(folder, ignore_errors=True)

    by_name = {row.name: row for row in rows}
    mb = size / 1e6
    print(f"payload: {mb:.0f} MB of random bytes, pickle serializer, folder {folder.parent}")
    print(f"record on disk: {record_size} bytes ({record_size / size:.5f}x payload)")
    print()
    print(
        f"{'operation':<20}{'seconds':>9}{'MB/s':>9}{'peak RSS':>11}{'extra RSS':>11}{'traced':>9}"
    )
    for row in rows:
        print(
            f"{row.name:<20}{row.seconds:>9.3f}{mb / row.seconds:>9.0f}"
            f"{row.peak_rss / size:>10.2f}x{row.extra_rss / size:>10.2f}x"
            f"{row.traced_peak / size:>8.2f}x"
        )
    write = by_name["ResultStore.write"]
    ratio = by_name["raw write"].seconds / write.seconds
    ratio_fsync = by_name["raw write+fsync"].seconds / write.seconds
    read_ratio = by_name["raw read"].seconds / by_name["ResultStore.read"].seconds
    print()
    print(
        f"write throughput vs raw open().write():       {ratio:.2f}x "
        f"(target >= {TARGET_THROUGHPUT_RATIO}x)"
    )
    print(f"write throughput vs raw write + fsync:        {ratio_fsync:.2f}x")
    fast_ratio = by_name["raw write"].seconds / by_name["  ... fsync=False"].seconds
    print(
        f"write throughput, LocalFileSystem(fsync=False) vs raw open().write(): "
        f"{fast_ratio:.2f}x (target >= {TARGET_THROUGHPUT_RATIO}x)"
    )
    print(
        f"write peak RSS (payload included):            {write.peak_rss / size:.2f}x payload "
        f"(target < {TARGET_PEAK_RATIO}x)"
    )
    print(f"read throughput vs raw open().read():         {read_ratio:.2f}x")
    print(
        f"read peak RSS (value included):               "
        f"{by_name['ResultStore.read'].peak_rss / size:.2f}x payload"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
