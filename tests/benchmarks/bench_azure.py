"""Benchmark: result records on Azure Blob Storage through `ResultStore(AzureBlobStorageContainer)`
vs raw adlfs, same run, same bytes.

Run: ``.venv/bin/python tests/benchmarks/bench_azure.py [--records 1000] [--mb 256] [--repeat 3]``

Starts nothing: it expects Azurite on 127.0.0.1:10000 (``bash localstack/start.sh azure``) or the
account of ``BLOCKS_TEST_AZURE_CONNECTION_STRING``, as the test suite does. It creates its own
container and removes it (with everything in it) at the end.

Measured as in ``bench_s3.py`` (whose timing helpers it shares): ``--records`` values of
``--record-kb`` KB written with ``ResultStore.write`` and read with ``ResultStore.read`` vs adlfs
``pipe_file`` / ``cat_file`` of the same payload on the same adlfs client; then one ``--mb`` MB
record. Reported as ratios (issue #26's goal: >= 0.95x raw on both), with the peak RSS above the
payload for the large record.
"""

from __future__ import annotations

import argparse
import os
import sys
import uuid
from typing import Any

from bench_s3 import duel

# Azurite's documented development account: a public, well-known key.
AZURITE = (
    "DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;"
    "AccountKey=Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/"
    "K1SZFPTOtr/KBHBeksoGMGw==;BlobEndpoint=http://127.0.0.1:10000/devstoreaccount1;"
)
TARGET_RATIO = 0.95


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--records", type=int, default=1000, help="small records (default 1000)")
    parser.add_argument("--record-kb", type=float, default=1.0, help="small record KB (default 1)")
    parser.add_argument("--mb", type=int, default=256, help="large record MB (default 256)")
    parser.add_argument("--repeat", type=int, default=3, help="runs per operation (best kept)")
    args = parser.parse_args()

    from blocks.filesystems import AzureBlobStorageContainer, AzureBlobStorageCredentials
    from blocks.results import ResultStore

    connection_string = os.environ.get("BLOCKS_TEST_AZURE_CONNECTION_STRING") or AZURITE
    container = f"bench-azure-{uuid.uuid4().hex[:12]}"
    storage = AzureBlobStorageContainer(
        container_name=container,
        base_folder="ours",
        credentials=AzureBlobStorageCredentials(connection_string=connection_string),
    )
    fs = storage.filesystem()  # raw baseline on the very same adlfs client
    try:
        fs.mkdir(container)
    except Exception as exc:
        print(
            f"No Azure Blob Storage at {storage.credentials.endpoint()} ({type(exc).__name__}). "
            "Start Azurite with `bash localstack/start.sh azure`, or set "
            "BLOCKS_TEST_AZURE_CONNECTION_STRING.",
            file=sys.stderr,
        )
        return 2
    store = ResultStore(storage, "pickle")
    raw = f"{container}/raw"

    try:
        n = args.records
        small = [os.urandom(int(args.record_kb * 1000)) for _ in range(n)]
        store.write("warm-up", b"x")
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

        size = args.mb * 1_000_000
        payload = os.urandom(size)

        def ours_large_write() -> None:
            store.write("large", payload)

        def raw_large_write() -> None:
            fs.pipe_file(f"{raw}/large", payload)

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

        payload = b""
        raw_lr, ours_lr = duel(args.repeat, raw_large_read, ours_large_read)
    finally:
        fs.invalidate_cache()
        fs.rm(container, recursive=True)

    mb = size / 1e6
    print(f"Azure endpoint {storage.credentials.endpoint()}, container {container} (removed);")
    print(f"best of {args.repeat} runs")
    print()
    print(f"{n} small records of {args.record_kb:g} KB, sequential:")
    print(f"{'':<22}{'ours s':>9}{'raw s':>9}{'ours ms/op':>12}{'raw ms/op':>11}{'raw/ours':>10}")
    for name, ours_b, base_b in (
        ("write (pipe_file)", ours_sw, raw_sw),
        ("read (cat_file)", ours_sr, raw_sr),
    ):
        ours, base = ours_b.seconds, base_b.seconds
        print(
            f"{name:<22}{ours:>9.2f}{base:>9.2f}{ours / n * 1e3:>12.2f}{base / n * 1e3:>11.2f}"
            f"{base / ours:>9.2f}x"
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
        print(
            f"{name:<22}{ours:>9.2f}{base:>9.2f}{mb / ours:>11.0f}{mb / base:>10.0f}"
            f"{base / ours:>7.2f}x{ours_b.rss_extra / size:>10.2f}x"
            f"{base_b.rss_extra / size:>9.2f}x"
        )
    print()
    worst_small = min(raw_sw.seconds / ours_sw.seconds, raw_sr.seconds / ours_sr.seconds)
    worst_large = min(raw_lw.seconds / ours_lw.seconds, raw_lr.seconds / ours_lr.seconds)
    print(
        f"small records vs raw (worst of write/read): {worst_small:.2f}x (goal >= {TARGET_RATIO}x)"
    )
    print(
        f"large record vs raw (worst of write/read):  {worst_large:.2f}x (goal >= {TARGET_RATIO}x)"
    )
    print("(+RSS: peak RSS increase during the operation, relative to the payload size)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
