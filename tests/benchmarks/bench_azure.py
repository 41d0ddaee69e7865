"""Benchmark: result records on Azure Blob Storage through `ResultStore(AzureBlobStorageContainer)`
vs raw adlfs, same run, same bytes.

Run: ``.venv/bin/python tests/benchmarks/bench_azure.py [--records 1000] [--mb 256] [--repeat 3]``

Starts nothing: it expects Azurite on 127.0.0.1:10000 (``bash localstack/start.sh azure``) or the
account of ``BLOCKS_TEST_AZURE_CONNECTION_STRING``, as the test suite does. It creates its own
container and removes it (with everything in it) at the end.

What is measured, and how, is in `objects.py` (shared with ``bench_s3.py``): small records
written and read one at a time, then one large record, each vs adlfs ``pipe_file`` /
``cat_file`` of the same payload on the same adlfs client. Goal (issue #26): at least 0.95x
raw on both.
"""

from __future__ import annotations

import os
import sys
import uuid

import objects

# Azurite's documented development account: a public, well-known key.
AZURITE = (
    "DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;"
    "AccountKey=Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/"
    "K1SZFPTOtr/KBHBeksoGMGw==;BlobEndpoint=http://127.0.0.1:10000/devstoreaccount1;"
)
TARGET_RATIO = 0.95


def main() -> int:
    args = objects.arguments(__doc__.split("\n")[0])

    from blocks.filesystems import AzureBlobStorageContainer, AzureBlobStorageCredentials

    connection_string = os.environ.get("BLOCKS_TEST_AZURE_CONNECTION_STRING") or AZURITE
    container = f"bench-azure-{uuid.uuid4().hex[:12]}"
    storage = AzureBlobStorageContainer(
        container_name=container,
        base_folder="ours",
        credentials=AzureBlobStorageCredentials(connection_string=connection_string),
    )
    fs = storage.filesystem()
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
    try:
        figures = objects.measure(storage, f"{container}/raw", args)
    finally:
        fs.invalidate_cache()
        fs.rm(container, recursive=True)

    print(f"Azure endpoint {storage.credentials.endpoint()}, container {container} (removed);")
    print(f"best of {args.repeat} runs")
    print()
    objects.report(figures, small_goal=TARGET_RATIO, large_goal=TARGET_RATIO)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
