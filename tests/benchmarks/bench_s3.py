"""Benchmark: result records on S3 through `ResultStore(S3(...))` vs raw s3fs, same run, same bytes.

Run: ``.venv/bin/python tests/benchmarks/bench_s3.py [--records 1000] [--mb 256] [--repeat 3]``

Starts nothing: it expects LocalStack on 127.0.0.1:4566 (``bash localstack/start.sh s3``) or
the S3 named by ``BLOCKS_TEST_S3_ENDPOINT`` (+ ``BLOCKS_TEST_S3_KEY`` / ``_SECRET`` / ``_REGION``),
as the test suite does. It creates its own bucket and removes it (with everything in it) at the end.

What is measured, and how, is in `objects.py` (shared with ``bench_azure.py``): small records
written and read one at a time, then one large record, each vs s3fs ``pipe_file`` /
``cat_file`` of the same payload on the same s3fs client. Goals: small records at least 0.67x
raw (an overhead under 1.5x), the large record at least 0.8x.
"""

from __future__ import annotations

import os
import sys
import uuid
from typing import Any

import objects

SMALL_GOAL = 1 / 1.5
LARGE_GOAL = 0.8


def main() -> int:
    args = objects.arguments(__doc__.split("\n")[0])

    import boto3
    from botocore.config import Config

    from blocks.filesystems import S3

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
    try:
        figures = objects.measure(storage, f"{bucket}/raw", args)
    finally:
        storage.filesystem().invalidate_cache()
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket):
            doomed = [{"Key": o["Key"]} for o in page.get("Contents", [])]
            if doomed:
                client.delete_objects(Bucket=bucket, Delete={"Objects": doomed})
        client.delete_bucket(Bucket=bucket)

    print(f"S3 endpoint {endpoint}, bucket {bucket} (removed); best of {args.repeat} runs")
    print()
    objects.report(figures, small_goal=SMALL_GOAL, large_goal=LARGE_GOAL)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
