"""Cached tasks whose results live in a real bucket: S3 on LocalStack, GCS on its emulator.

Only the server fixtures are used (tests/servers.py), so ``BLOCKS_TEST_S3_ENDPOINT`` /
``BLOCKS_TEST_GCS_ENDPOINT`` point these tests at any other server.
"""

from __future__ import annotations

import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from blocks import flow, task
from blocks.filesystems.remote import FsspecFileSystem
from blocks.results import ResultStore
from blocks.tasks import task_input_hash


@pytest.fixture(params=["s3", "gcs"])
def bucket_storage(request: pytest.FixtureRequest) -> FsspecFileSystem:
    prefix = f"cache-{uuid.uuid4().hex[:8]}"
    bucket = request.getfixturevalue(f"{request.param}_bucket")
    storage: FsspecFileSystem = bucket.block(prefix)
    return storage


def test_cached_task_hits_the_bucket_then_recomputes_after_expiry(
    bucket_storage: FsspecFileSystem,
) -> None:
    calls: list[int] = []

    @task(
        cache_key_fn=task_input_hash,
        cache_expiration=timedelta(seconds=2),
        result_storage=bucket_storage,
        result_serializer="json",
    )
    def double(x: int) -> dict[str, Any]:
        calls.append(x)
        return {"x": x, "double": 2 * x, "run": len(calls)}

    first = double(21, return_state=True)
    assert first.is_completed() and not first.is_cached()
    assert first.result() == {"x": 21, "double": 42, "run": 1}

    # The record is in the bucket, under the cache key, as one object.
    store = ResultStore(bucket_storage, "json")
    keys = bucket_storage.ls()
    assert len(keys) == 1 and keys[0].startswith("double-")
    header = store.header(keys[0])
    assert header is not None and header.task == "double"
    assert header.expires is not None and header.expires > datetime.now(UTC)

    second = double(21, return_state=True)
    assert second.is_cached() and second.name == "Cached"
    assert second.result() == {"x": 21, "double": 42, "run": 1}
    assert calls == [21]

    # The hit comes from the bucket, not from memory: change the stored record, see the change.
    store.write(
        keys[0],
        {"x": 21, "double": 42, "run": "rewritten in the bucket"},
        expires=datetime.now(UTC) + timedelta(seconds=2),
    )
    third = double(21, return_state=True)
    assert third.is_cached() and third.result()["run"] == "rewritten in the bucket"
    assert calls == [21]

    # Other inputs are other keys.
    assert double(5)["run"] == 2
    assert calls == [21, 5]

    # Expired: a miss that recomputes and overwrites the same object.
    time.sleep(2.2)
    fourth = double(21, return_state=True)
    assert fourth.is_completed() and not fourth.is_cached()
    assert fourth.result()["run"] == 3
    assert calls == [21, 5, 21]
    assert double(21, return_state=True).is_cached()
    assert len(bucket_storage.ls()) == 2


def test_flow_tasks_default_to_the_flows_bucket_storage(bucket_storage: FsspecFileSystem) -> None:
    calls: list[str] = []

    @task(cache_key_fn=lambda: "static_key", cache_expiration=timedelta(hours=1))
    def extract(source: str) -> dict[str, Any]:
        calls.append(source)
        return {"source": source, "records": [1, 2, 3]}

    @flow(result_storage=bucket_storage, result_serializer="json", persist_result=True)
    def etl(source: str) -> dict[str, Any]:
        return extract(source)

    assert etl("database") == {"source": "database", "records": [1, 2, 3]}
    assert etl("api") == {"source": "database", "records": [1, 2, 3]}  # the static key: a hit
    assert calls == ["database"]
    hit = ResultStore(bucket_storage, "json").read("static_key")
    assert hit is not None and hit.value == {"source": "database", "records": [1, 2, 3]}
