"""Benchmark: what signing costs a record write, against the unkeyed checksum it replaced.

Run: ``.venv/bin/python tests/benchmarks/bench_signing.py [--mb 256] [--rounds 7]``

The only change signing makes to the write path is the hash that runs over the payload as it
streams to the file: format 1 hashed it with ``xxh3_128`` (not keyed: anyone could recompute it),
format 2 with the payload MAC (`blocks.results._signing.PayloadTag`: AES-256-GMAC for large
payloads). Both run here through the store's own `HashingWriter` into a file that is then
fsynced, interleaved round by round in one process, so machine load hits both alike; the best
and the median of ``--rounds`` are reported as ratios. Alternatives that were measured and
rejected run too (HMAC-SHA256, keyed BLAKE2b). Small records: signing plus verifying a 200-byte
payload and header, per record, against xxh3 doing the same.
"""

from __future__ import annotations

import argparse
import hashlib
import hmac
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from typing import Any

import xxhash

from blocks.results import _streams as streams
from blocks.results._signing import ResultsKey


class _Hasher:
    """Adapts a hashlib/hmac object to the `HashingWriter` protocol."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner

    def update(self, data: Any) -> None:
        self.inner.update(data)

    def checksum(self) -> str:
        return str(self.inner.hexdigest())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--mb", type=int, default=256)
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()
    key = ResultsKey(os.urandom(32), "bench")
    payload = os.urandom(args.mb * 1_000_000)
    kinds: dict[str, Callable[[], Any]] = {
        "xxh3_128 (format 1)": lambda: _Hasher(xxhash.xxh3_128()),
        "signed (format 2)": lambda: key.payload_hasher(),
        "HMAC-SHA256 (rejected)": lambda: _Hasher(hmac.new(b"k" * 32, None, "sha256")),
        "keyed BLAKE2b (rejected)": lambda: _Hasher(hashlib.blake2b(key=b"k" * 32)),
    }
    times: dict[str, list[float]] = {name: [] for name in kinds}
    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, "record")
        for _ in range(args.rounds):
            for name, make in kinds.items():
                os.sync()
                start = time.perf_counter()
                with open(path, "wb") as f:
                    writer = streams.HashingWriter(f, make())
                    writer.write(payload)
                    writer.hasher.checksum()
                    f.flush()
                    os.fsync(f.fileno())
                times[name].append(time.perf_counter() - start)
                os.unlink(path)
    base = times["xxh3_128 (format 1)"]
    print(f"write + fsync of {args.mb} MB through HashingWriter, {args.rounds} interleaved rounds")
    print(f"{'hash':26} {'best s':>8} {'median s':>9} {'throughput vs format 1':>24}")
    for name, runs in times.items():
        best, median = min(runs), statistics.median(runs)
        print(
            f"{name:26} {best:8.3f} {median:9.3f}   "
            f"best {min(base) / best:4.2f}x, median {statistics.median(base) / median:4.2f}x"
        )

    small = os.urandom(200)
    header = os.urandom(400)

    def signed() -> None:
        tag = key.payload_hasher()
        tag.update(small)
        checksum = tag.checksum()
        key.header_tag(header)
        check = key.payload_hasher(checksum)
        check.update(small)
        check.checksum()
        key.header_tag(header)

    def unkeyed() -> None:
        for _ in range(2):
            xxhash.xxh3_128(small).hexdigest()
            xxhash.xxh3_64_intdigest(header)

    for name, op in (("xxh3 (format 1)", unkeyed), ("signed (format 2)", signed)):
        best = min(_per_call(op) for _ in range(5))
        print(f"small record, write + read checks, {name:18} {best * 1e6:6.2f} us")
    return 0


def _per_call(op: Callable[[], None], n: int = 20_000) -> float:
    start = time.perf_counter()
    for _ in range(n):
        op()
    return (time.perf_counter() - start) / n


if __name__ == "__main__":
    raise SystemExit(main())
