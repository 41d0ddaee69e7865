"""Create-only result writes on the real servers (issue 26): one request per first write.

A record is written with a create-only request (S3 ``If-None-Match: *``, Azure ``If-None-Match:
*``); only when the server refuses it, because an object is there, is that object's head read
and a record of another results key refused, as before. Checked on LocalStack S3 and Azurite
by counting the requests the client sends (botocore's event hooks, the Azure SDK's transport),
never by timing; the GCS emulator ignores ``ifGenerationMatch``, so there the probe sends the
store back to read-then-write, which must refuse alike. Two processes racing to create one key
both finish, and the key holds one whole record of theirs.
"""

from __future__ import annotations

import base64
import os
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from blocks.errors import ResultsKeyMissing
from blocks.filesystems._exclusive import RESEND_MAX, exclusive_writer
from blocks.results import ResultStore
from blocks.results._signing import ResultsKeys

BACKENDS = ["s3", "azure", "gcs"]


def _bucket(request: pytest.FixtureRequest, backend: str) -> Any:
    fixture = {"s3": "s3_bucket", "azure": "azure_container", "gcs": "gcs_bucket"}[backend]
    return request.getfixturevalue(fixture)


@pytest.fixture(params=BACKENDS)
def storage(request: pytest.FixtureRequest) -> Any:
    return _bucket(request, request.param).block("results")


def _keys() -> ResultsKeys:
    return ResultsKeys.of([os.urandom(32)], "test")


# -- counting what the client sends --------------------------------------------------------------


@contextmanager
def _s3_requests(storage: Any) -> Iterator[list[tuple[str, str | None]]]:
    from fsspec.asyn import sync

    fs = storage.filesystem()
    client = sync(fs.loop, fs.set_session)
    seen: list[tuple[str, str | None]] = []

    def hook(model: Any, params: dict[str, Any], **_: Any) -> None:
        seen.append((model.name, params.get("headers", {}).get("If-None-Match")))

    client.meta.events.register("before-call.s3", hook, unique_id="test-count")
    try:
        yield seen
    finally:
        client.meta.events.unregister("before-call.s3", unique_id="test-count")


@contextmanager
def _azure_requests(storage: Any) -> Iterator[list[tuple[str, str | None]]]:
    transport = storage.filesystem().service_client._pipeline._transport
    original = transport.send
    seen: list[tuple[str, str | None]] = []

    async def send(request: Any, **config: Any) -> Any:
        seen.append((request.method, request.headers.get("If-None-Match")))
        return await original(request, **config)

    transport.send = send
    try:
        yield seen
    finally:
        del transport.send


def _counted(storage: Any, action: Callable[[], Any]) -> list[tuple[str, str | None]]:
    requests = _s3_requests if type(storage).__name__ == "S3" else _azure_requests
    with requests(storage) as seen:
        action()
        return list(seen)


@pytest.mark.parametrize("backend", ["s3", "azure"])
def test_a_first_write_is_one_create_only_request_and_an_overwrite_reads_first(
    request: pytest.FixtureRequest, backend: str
) -> None:
    storage = _bucket(request, backend).block("results")
    keys = _keys()
    store = ResultStore(storage, "pickle", keys=keys)
    store.write("warm-up", 0)  # the probe (once per process) and the connections
    assert exclusive_writer(storage) is storage

    first = _counted(storage, lambda: store.write("etl/new", {"rows": 1}))
    print(f"{backend}: a first write sent {first}")
    put = "PutObject" if backend == "s3" else "PUT"
    assert first == [(put, "*")]  # one create-only write, no read

    # Another process's store (it knows nothing of the record): the create is refused, the
    # head is read and checked, then the record replaced.
    other = ResultStore(store.storage, "pickle", keys=keys)
    again = _counted(storage, lambda: other.write("etl/new", {"rows": 2}))
    print(f"{backend}: another store's overwrite of our record sent {again}")
    get = "GetObject" if backend == "s3" else "GET"
    assert again == [(put, "*"), (get, None), (put, None)]
    hit = store.read("etl/new")
    assert hit is not None and hit.value == {"rows": 2}
    # The store that wrote a key knows a record is there: it checks, then writes (2, not 3).
    rewrite = _counted(storage, lambda: other.write("etl/new", {"rows": 2.5}))
    print(f"{backend}: a store's rewrite of a key it wrote sent {rewrite}")
    assert rewrite == [(get, None), (put, None)]

    # A cache miss on an expired record, then its new value: the read found a record there,
    # so the write checks it and replaces it (as before create-only writes), no refused create.
    store.write("etl/new", {"rows": 3}, expires=datetime.now(UTC) - timedelta(seconds=1))

    assert store.read("etl/new") is None
    expired = _counted(storage, lambda: store.write("etl/new", {"rows": 4}))
    print(f"{backend}: a write after a miss on an expired record sent {expired}")
    assert expired == [(get, None), (put, None)]
    hit = store.read("etl/new")
    assert hit is not None and hit.value == {"rows": 4}


def test_our_own_record_is_overwritten_and_another_keys_is_refused(
    storage: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("BLOCKS_RESULTS_OVERWRITE_FOREIGN", raising=False)
    team = ResultStore(storage, "pickle", keys=_keys())
    team.write("k", "team 1")
    team.write("k", "team 2")  # our own record: replaced
    hit = team.read("k")
    assert hit is not None and hit.value == "team 2"
    before = storage.read_path("k")

    other = ResultStore(storage, "pickle", keys=_keys())
    with pytest.raises(ResultsKeyMissing, match="BLOCKS_RESULTS_OVERWRITE_FOREIGN"):
        other.write("k", "other")
    assert storage.read_path("k") == before  # not one byte changed
    monkeypatch.setenv("BLOCKS_RESULTS_OVERWRITE_FOREIGN", "1")
    other.write("k", "other")  # asked explicitly
    hit = other.read("k")
    assert hit is not None and hit.value == "other"
    print(f"{type(storage).__name__}: create-only writes: {exclusive_writer(storage) is not None}")


def test_the_gcs_emulator_writes_after_a_check_since_it_ignores_the_precondition(
    gcs_bucket: Any,
) -> None:
    assert exclusive_writer(gcs_bucket.block("results")) is None  # the probe says why


@pytest.mark.parametrize("backend", ["s3", "azure"])
def test_a_large_record_of_another_key_is_refused_and_our_own_replaced(
    request: pytest.FixtureRequest, backend: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Azure: over one 8 MiB block, so staged blocks and a create-only Put Block List, committed
    # again over our own blob; S3: past the 16 MiB spool, checked before its upload.
    monkeypatch.delenv("BLOCKS_RESULTS_OVERWRITE_FOREIGN", raising=False)
    storage = _bucket(request, backend).block("results")
    size = (9 if backend == "azure" else 17) * 1024 * 1024
    team = ResultStore(storage, "pickle", keys=_keys())
    team.write("big", b"a" * size)
    team.write("big", b"b" * size)
    hit = team.read("big")
    assert hit is not None and hit.value == b"b" * size
    other = ResultStore(storage, "pickle", keys=_keys())
    with pytest.raises(ResultsKeyMissing):
        other.write("big", b"c" * size)
    hit = team.read("big")
    assert hit is not None and hit.value == b"b" * size


@pytest.mark.parametrize("backend", ["s3", "azure"])
def test_an_object_gone_before_its_check_is_created_again(
    request: pytest.FixtureRequest, backend: str
) -> None:
    storage = _bucket(request, backend).block("results")
    storage.write_path("k", b"there")
    writer = exclusive_writer(storage)
    assert writer is not None
    checks: list[str] = []

    def before_overwrite() -> bool:  # the object vanishes between the refusal and the read
        checks.append("check")
        storage.delete("k")
        return False

    sent = _counted(storage, lambda: _write(writer, "k", b"mine", before_overwrite))
    assert checks == ["check"]
    assert sent[0][1] == "*" and sent[-1][1] == "*"  # created, not written over
    assert storage.read_path("k") == b"mine"


def _write(writer: Any, key: str, data: bytes, before_overwrite: Callable[[], bool]) -> None:
    with writer.open_exclusive_write(key, before_overwrite) as out:
        out.write(data)


# -- two processes racing to create one key ------------------------------------------------

_RACER = textwrap.dedent(
    """
    import base64, os, sys, time
    from blocks.filesystems import AzureBlobStorageContainer, AzureBlobStorageCredentials, S3
    from blocks.results import ResultStore, _store
    from blocks.results._signing import ResultsKeys

    checks = []
    check = _store.refuse_overwrite

    def counted(*args):
        checks.append(args[-1])
        return check(*args)

    _store.refuse_overwrite = counted  # counts the refused creates (each is checked once)

    backend, where, extra, me, start = sys.argv[1:]
    if backend == "s3":
        url, key, secret, region = extra.split("|")
        storage = S3(bucket_path=where, endpoint_url=url, aws_access_key_id=key,
                     aws_secret_access_key=secret, region_name=region)
    else:
        storage = AzureBlobStorageContainer(
            container_name=where, base_folder="results",
            credentials=AzureBlobStorageCredentials(connection_string=extra))
    keys = ResultsKeys.of([base64.b64decode(os.environ["RACE_KEY"])], "test")
    store = ResultStore(storage, "pickle", keys=keys)
    store.write("warm-up", me)  # the probe, before the start
    time.sleep(max(0.0, float(start) - time.time()))
    for i in range(20):
        store.write(f"race/{i}", (me, i, "x" * 5000))
    print("done", len([k for k in checks if k.startswith("race/")]))
    """
)


@pytest.mark.parametrize("backend", ["s3", "azure"])
def test_two_processes_racing_to_create_one_key_both_end_with_a_whole_record(
    request: pytest.FixtureRequest, backend: str
) -> None:
    bucket = _bucket(request, backend)
    if backend == "s3":
        end = bucket.endpoint
        where, extra = f"{bucket}/results", f"{end}|{end.key}|{end.secret}|{end.region}"
    else:
        where, extra = str(bucket), bucket.endpoint.connection_string
    secret = os.urandom(32)
    env = {**os.environ, "RACE_KEY": base64.b64encode(secret).decode()}
    start = f"{time.time() + 4:.3f}"
    racers = [
        subprocess.Popen(
            [sys.executable, "-c", _RACER, backend, where, extra, me, start],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for me in ("A", "B")
    ]
    checked = 0
    for racer in racers:
        out, err = racer.communicate(timeout=120)
        assert racer.returncode == 0 and "done" in out, err[-2000:]
        checked += int(out.split()[-1])
    # Each key was created by one of them; the other's create was refused, then checked.
    assert checked >= 20
    store = ResultStore(bucket.block("results"), "pickle", keys=ResultsKeys.of([secret], "test"))
    winners = []
    for i in range(20):
        hit = store.read(f"race/{i}")
        assert hit is not None, f"race/{i}"
        me, index, filler = hit.value
        assert me in ("A", "B") and index == i and filler == "x" * 5000
        winners.append(me)
    print(f"{backend}: {checked} refused creates checked; last writer: {''.join(winners)}")


@pytest.mark.parametrize("backend", ["s3", "azure"])
def test_a_record_too_big_to_send_twice_is_checked_before_it_is_sent_once(
    request: pytest.FixtureRequest, backend: str
) -> None:
    """Over `RESEND_MAX` a refused create would upload the payload again: the head is read
    first and the record sent once, new or not."""
    storage = _bucket(request, backend).block("results")
    keys = _keys()
    store = ResultStore(storage, "pickle", keys=keys)
    store.write("warm-up", 0)
    assert store.read("absent") is None  # Azure asks once whether a 404 is the container's
    big = os.urandom(RESEND_MAX + 1)
    put = "PutObject" if backend == "s3" else "PUT"
    get = "GetObject" if backend == "s3" else "GET"
    first = _counted(storage, lambda: store.write("etl/big", big))
    other = ResultStore(storage, "pickle", keys=keys)
    again = _counted(storage, lambda: other.write("etl/big", big[::-1]))
    print(f"{backend}: a {len(big)}-byte record, new and over another store's: {first}, {again}")
    assert first == again == [(get, None), (put, None)]
    hit = store.read("etl/big")
    assert hit is not None and hit.value == big[::-1]
