"""Benchmark: result records on S3 through `ResultStore(S3(...))` vs raw s3fs, same run, same bytes.

Run: ``.venv/bin/python tests/benchmarks/bench_s3.py [--records 1000] [--mb 256] [--repeat 3]``

Starts nothing: it expects LocalStack on 127.0.0.1:4566 (``bash localstack/start.sh s3``) or
the S3 named by ``BLOCKS_TEST_S3_ENDPOINT`` (+ ``BLOCKS_TEST_S3_KEY`` / ``_SECRET`` / ``_REGION``),
as the test suite does. It creates its own bucket and removes it (with everything in it) at the end.

Measured, one operation at a time, as a task would call them:

* **small records**: ``--records`` values of ``--record-kb`` KB of random bytes (pickle), written
  with ``ResultStore.write`` then read with ``ResultStore.read``; baseline: s3fs ``pipe_file`` /
  ``cat_file`` of the same payload bytes on the same s3fs client. Reported as the overhead
  (our seconds / raw seconds; target < 1.5x).
* **one large record**: ``--mb`` MB of random bytes (pickle), ``ResultStore.write`` + ``read``;
  baseline: ``pipe_file`` + ``cat_file`` of the payload. Reported as throughput relative to raw
  (raw seconds / our seconds; target >= 0.8x), with the peak RSS above the payload.

The best of ``--repeat`` runs is kept for each operation (a shared LocalStack is noisy).
"""

from __future__ import annotations

import argparse
import gc
import os
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import psutil
from rss import RssSampler

TARGET_LARGE_RATIO = 0.8
TARGET_SMALL_OVERHEAD = 1.5


@dataclass
class Best:
    seconds: float = float("inf")
    rss_extra: int = 0  # highest RSS increase over the RSS just before a run


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
    """Best of `repeat` runs of each, alternating raw and ours so that drift in the server's
    speed hits both alike."""
    raw_best, ours_best = Best(), Best()
    for _ in range(repeat):
        run_once(raw, raw_best)
        run_once(ours, ours_best)
    return raw_best, ours_best


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--records", type=int, default=1000, help="small records (default 1000)")
    parser.add_argument("--record-kb", type=float, default=1.0, help="small record KB (default 1)")
    parser.add_argument("--mb", type=int, default=256, help="large record MB (default 256)")
    parser.add_argument("--repeat", type=int, default=3, help="runs per operation (best kept)")
    args = parser.parse_args()

    import boto3
    from botocore.config import Config

    from blocks.filesystems import S3
    from blocks.results import ResultStore

    endpoint = os.environ.get("BLOCKS_TEST_S3_ENDPOINT") or "http://127.0.0.1:4566"
    key = os.environ.get("BLOCKS_TEST_S3_KEY", "test")
    secret = os.environ.get("BLOCKS_TEST_S3_SECRET", "test")
    region = os.environ.get("BLOCKS_TEST_S3_REGION", "us-east-1")
    client = boto3.client(
        "s3",
        endpoint_url=endpoint,
        aws_access_key_id=key,
        aws_secret_access_key=secret,
        region_name=region,
        config=Config(connect_timeout=3, retries={"max_attempts": 1}),
    )
    try:
        client.list_buckets()
    except Exception as exc:
        print(
            f"No S3 at {endpoint} ({type(exc).__name__}). Start LocalStack with "
            "`bash localstack/start.sh s3`, or set BLOCKS_TEST_S3_ENDPOINT.",
            file=sys.stderr,
        )
        return 2

    bucket = f"bench-s3-{uuid.uuid4().hex[:12]}"
    params: dict[str, Any] = {"Bucket": bucket}
    if region != "us-east-1":
        params["CreateBucketConfiguration"] = {"LocationConstraint": region}
    client.create_bucket(**params)
    storage = S3(
        bucket_path=f"{bucket}/ours",
        endpoint_url=endpoint,
        aws_access_key_id=key,
        aws_secret_access_key=secret,
        region_name=region,
    )
    store = ResultStore(storage, "pickle")
    fs = storage.filesystem()  # raw baseline on the very same s3fs client and connection pool
    raw = f"{bucket}/raw"

    try:
        # -- small records --------------------------------------------------------------------
        n = args.records
        small = [os.urandom(int(args.record_kb * 1000)) for _ in range(n)]
        store.write("warm-up", b"x")  # connections and credentials resolved before timing
        fs.pipe_file(f"{raw}/warm-up", b"x")

        def ours_small_write() -> None:
            for i, value in enumerate(small):
                store.write(f"small/{i}", value)

        def raw_small_write() -> None:
            for i, value in enumerate(small):
                fs.pipe_file(f"{raw}/small/{i}", value)

        def ours_small_read() -> None:
            for i, value in enumerate(small):
                hit = store.read(f"small/{i}")
                assert hit is not None and hit.value == value

        def raw_small_read() -> None:
            for i, value in enumerate(small):
                assert fs.cat_file(f"{raw}/small/{i}") == value

        raw_sw, ours_sw = duel(args.repeat, raw_small_write, ours_small_write)
        raw_sr, ours_sr = duel(args.repeat, raw_small_read, ours_small_read)

        # -- one large record -----------------------------------------------------------------
        size = args.mb * 1_000_000
        payload = os.urandom(size)

        def ours_large_write() -> None:
            store.write("large", payload)

        def raw_large_write() -> None:
            fs.pipe_file(f"{raw}/large", payload)

        raw_large_write()  # warm-up: multipart code paths and connection pool at full size
        ours_large_write()
        raw_lw, ours_lw = duel(args.repeat, raw_large_write, ours_large_write)
        record_size = storage.size("large")

        def ours_large_read() -> Any:
            hit = store.read("large")
            assert hit is not None and len(hit.value) == size
            return hit

        def raw_large_read() -> Any:
            data = fs.cat_file(f"{raw}/large")
            assert len(data) == size
            return data

        payload = b""  # reads start without the written value alive
        raw_lr, ours_lr = duel(args.repeat, raw_large_read, ours_large_read)
    finally:
        fs.invalidate_cache()
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket):
            doomed = [{"Key": o["Key"]} for o in page.get("Contents", [])]
            if doomed:
                client.delete_objects(Bucket=bucket, Delete={"Objects": doomed})
        client.delete_bucket(Bucket=bucket)

    mb = size / 1e6
    print(f"S3 endpoint {endpoint}, bucket {bucket} (removed); best of {args.repeat} runs")
    print()
    print(f"{n} small records of {args.record_kb:g} KB, sequential:")
    print(f"{'':<22}{'ours s':>9}{'raw s':>9}{'ours ms/op':>12}{'raw ms/op':>11}{'overhead':>10}")
    for name, ours_b, base_b in (
        ("write (pipe_file)", ours_sw, raw_sw),
        ("read (cat_file)", ours_sr, raw_sr),
    ):
        ours, base = ours_b.seconds, base_b.seconds
        print(
            f"{name:<22}{ours:>9.2f}{base:>9.2f}{ours / n * 1e3:>12.2f}{base / n * 1e3:>11.2f}"
            f"{ours / base:>9.2f}x"
        )
    print()
    print(f"one {mb:.0f} MB record (random bytes, pickle; record {record_size} bytes):")
    print(
        f"{'':<22}{'ours s':>9}{'raw s':>9}{'ours MB/s':>11}{'raw MB/s':>10}{'ratio':>8}"
        f"{'ours +RSS':>11}{'raw +RSS':>10}"
    )
    for name, ours_b, base_b in (
        ("write (pipe_file)", ours_lw, raw_lw),
        ("read (cat_file)", ours_lr, raw_lr),
    ):
        ours, base = ours_b.seconds, base_b.seconds
        ours_rss, base_rss = ours_b.rss_extra, base_b.rss_extra
        print(
            f"{name:<22}{ours:>9.2f}{base:>9.2f}{mb / ours:>11.0f}{mb / base:>10.0f}"
            f"{base / ours:>7.2f}x{ours_rss / size:>10.2f}x{base_rss / size:>9.2f}x"
        )
    print()
    worst_small = max(ours_sw.seconds / raw_sw.seconds, ours_sr.seconds / raw_sr.seconds)
    worst_large = min(raw_lw.seconds / ours_lw.seconds, raw_lr.seconds / ours_lr.seconds)
    print(
        f"small-record overhead (worst of write/read): {worst_small:.2f}x "
        f"(target < {TARGET_SMALL_OVERHEAD}x)"
    )
    print(
        f"large-record throughput vs raw (worst):      {worst_large:.2f}x "
        f"(target >= {TARGET_LARGE_RATIO}x)"
    )
    print("(+RSS: peak RSS increase during the operation, relative to the payload size)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
