"""`AzureBlobStorageContainer` on Azurite: what the shared storage suite does not cover.

The shared suite (tests/filesystems/test_filesystems.py) and the result store suite
(tests/results/test_results.py) already run over Azure. Here: saved-block slugs and ``az://``
URLs as result storage, ``block results ls/prune``, a streamed record (staged in blocks and
committed at once, its signature checked), an upload killed mid-way (whole blob or none; killed
while its blocks are staged: no blob, a miss), and errors that name the container and endpoint
but never the key.

``BLOCKS_TEST_AZURE_STREAM_MB`` sets the streamed record's size (CI default 32; the issue's
figure is 256).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
import traceback
from typing import Any

import pytest
from click.testing import CliRunner

from blocks.cli.results import results
from blocks.errors import StorageError
from blocks.filesystems import AzureBlobStorageContainer, AzureBlobStorageCredentials
from blocks.filesystems._azure_blocks import BLOCK_SIZE
from blocks.results import CorruptRecordWarning, ResultStore, resolve_storage

STREAM_MB = int(os.environ.get("BLOCKS_TEST_AZURE_STREAM_MB", "32"))


def test_saved_container_resolves_as_result_storage(azure_container: Any) -> None:
    azure_container.block("prod").save("prod")
    storage = resolve_storage("azure-blob-storage-container/prod")
    assert isinstance(storage, AzureBlobStorageContainer)
    store = ResultStore(storage, "json")
    store.write("etl/extract", {"rows": [1, 2]}, task="extract")
    again = ResultStore(resolve_storage("azure-blob-storage-container/prod"), "json")
    hit = again.read("etl/extract")
    assert hit is not None and hit.value == {"rows": [1, 2]}
    # The connection string is sealed at rest and masked everywhere.
    key = azure_container.endpoint.account_key
    assert key not in repr(storage) and key not in storage.describe()


def test_az_url_with_ambient_connection_string(
    azure_container: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AZURE_STORAGE_CONNECTION_STRING", azure_container.endpoint)
    storage = resolve_storage(f"az://{azure_container}/by-url")
    ResultStore(storage, "pickle").write("k", [1, 2, 3])
    assert azure_container.fs.cat(f"{azure_container}/by-url/k")  # really there
    hit = ResultStore(storage, "pickle").read("k")
    assert hit is not None and hit.value == [1, 2, 3]


def test_cli_results_ls_and_prune_over_azure(azure_container: Any) -> None:
    azure_container.block("cli").save("cli")
    store = ResultStore(resolve_storage("azure-blob-storage-container/cli"), "json")
    for i in range(3):
        store.write(f"etl/{i}", i, task="t")
    where = "azure-blob-storage-container/cli"
    out = CliRunner().invoke(results, ["ls", "--storage", where, "--json"])
    assert out.exit_code == 0, out.output
    assert sorted(row["key"] for row in json.loads(out.output)) == ["etl/0", "etl/1", "etl/2"]
    out = CliRunner().invoke(results, ["prune", "--storage", where, "--all", "--yes"])
    assert out.exit_code == 0 and "Deleted 3 record" in out.output, out.output
    assert store.storage.ls() == []


def test_streamed_record_round_trips(azure_container: Any) -> None:
    store = ResultStore(azure_container.block("stream"), "pickle")
    value = os.urandom(1024 * 1024) * STREAM_MB
    t0 = time.perf_counter()
    header = store.write("big", value)
    wrote = time.perf_counter() - t0
    t0 = time.perf_counter()
    hit = store.read("big")
    read = time.perf_counter() - t0
    assert hit is not None and hit.value == value
    assert store.storage.size("big") > header.payload_size >= len(value)
    print(f"\n{STREAM_MB} MB record on Azurite: written in {wrote:.2f} s, read in {read:.2f} s")


def _blocks(container: Any, blob: str) -> tuple[list[int], list[int]]:
    """Sizes of the committed and the uncommitted blocks of `blob` (Get Block List)."""
    from azure.core.exceptions import ResourceNotFoundError
    from azure.storage.blob import BlobClient

    client = BlobClient.from_connection_string(container.endpoint, str(container), blob)
    try:
        committed, uncommitted = client.get_block_list("all")
    except ResourceNotFoundError:
        return [], []
    return [b.size for b in committed], [b.size for b in uncommitted]


def test_a_multi_block_record_is_staged_committed_once_and_verified(azure_container: Any) -> None:
    store = ResultStore(azure_container.block("blocks"), "pickle")
    value = os.urandom(3 * BLOCK_SIZE + 12345)  # three whole blocks and a part, plus the header
    store.write("big", value)
    committed, uncommitted = _blocks(azure_container, "blocks/big")
    assert len(committed) == 4 and uncommitted == []
    assert committed[:3] == [BLOCK_SIZE] * 3 and sum(committed) == store.storage.size("big")
    hit = store.read("big")  # the header and the payload signatures are checked first
    assert hit is not None and hit.value == value
    # One byte changed in a middle block: the payload signature no longer matches, a miss.
    record = bytearray(store.storage.read_path("big"))
    record[2 * BLOCK_SIZE + 7] ^= 1
    store.storage.write_path("big", bytes(record))
    with pytest.warns(CorruptRecordWarning, match="signature"):
        assert store.read("big") is None
    print(f"\n{len(value)} bytes: {len(committed)} blocks {committed}, one Put Block List")


def test_writes_around_a_block_boundary_round_trip(azure_container: Any) -> None:
    storage = azure_container.block("edges")
    for size in (0, 1, BLOCK_SIZE - 1, BLOCK_SIZE, BLOCK_SIZE + 1, 2 * BLOCK_SIZE + 3):
        data = os.urandom(size)
        with storage.open_atomic_write(f"k{size}") as out:
            out.write(data[:5])
            out.write(data[5:])  # one large write: split into blocks as it streams
            if size >= 4:
                out.seek(0)
                out.write(b"HEAD")  # rewritten in the first block, still in memory
                out.seek(0, os.SEEK_END)
        expected = b"HEAD" + data[4:] if size >= 4 else data
        assert storage.read_path(f"k{size}") == expected
        committed, _ = _blocks(azure_container, f"edges/k{size}")
        # Up to one block: one Put Blob (no block list); past it: staged blocks.
        assert len(committed) == (0 if size <= BLOCK_SIZE else -(-size // BLOCK_SIZE))


def test_a_failed_write_commits_nothing(azure_container: Any) -> None:
    storage = azure_container.block("failed")
    with pytest.raises(RuntimeError), storage.open_atomic_write("k") as out:
        out.write(os.urandom(3 * BLOCK_SIZE))  # two blocks staged
        raise RuntimeError("the serializer failed")
    assert not storage.exists("k") and storage.ls() == []


_WRITER = textwrap.dedent(
    """
    import os, sys
    from blocks.filesystems import AzureBlobStorageContainer, AzureBlobStorageCredentials
    from blocks.results import ResultStore
    store = ResultStore(AzureBlobStorageContainer(
        container_name=sys.argv[1], base_folder=sys.argv[4],
        credentials=AzureBlobStorageCredentials(connection_string=sys.argv[2])), "pickle")
    print("writing", flush=True)
    store.write("victim", b"v" * (int(sys.argv[3]) * 1024 * 1024))
    print("done", flush=True)
    """
)


def test_a_killed_upload_leaves_the_whole_blob_or_none(azure_container: Any) -> None:
    size_mb = max(STREAM_MB, 24)  # past the 16 MiB spool: a staged, block-committed upload
    store = ResultStore(azure_container.block("killed"), "pickle")
    outcomes: list[str] = []
    for delay in (0.5, 1.0, 2.0, 4.0, 8.0):
        store.storage.delete("victim")
        proc = subprocess.Popen(
            [
                sys.executable,
                "-c",
                _WRITER,
                azure_container,
                azure_container.endpoint,
                str(size_mb),
                "killed",
            ],
            stdout=subprocess.PIPE,
            text=True,
        )
        assert proc.stdout is not None and proc.stdout.readline().strip() == "writing"
        time.sleep(delay)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        if not store.storage.exists("victim"):
            outcomes.append(f"killed after {delay} s: no blob")
            continue
        hit = store.read("victim")
        assert hit is not None and hit.value == b"v" * (size_mb * 1024 * 1024)
        outcomes.append(f"killed after {delay} s: whole blob")
    print("\n" + "\n".join(outcomes))


def test_an_upload_killed_while_staging_blocks_leaves_no_blob(azure_container: Any) -> None:
    # A real writer, SIGKILLed once Azure holds some of its blocks but before the commit:
    # the staged blocks stay uncommitted, so no blob is visible and a reader sees a miss.
    size_mb = max(STREAM_MB, 64)
    store = ResultStore(azure_container.block("staging"), "pickle")
    proc = subprocess.Popen(
        [
            *(sys.executable, "-c", _WRITER),
            *(azure_container, azure_container.endpoint, str(size_mb), "staging"),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "writing"
        deadline = time.monotonic() + 120
        while not _blocks(azure_container, "staging/victim")[1]:
            assert proc.poll() is None, "the writer ended before a block was staged"
            assert time.monotonic() < deadline, "no block staged in 120 s"
            time.sleep(0.02)
        assert proc.poll() is None, "the writer ended before it was killed"
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    committed, uncommitted = _blocks(azure_container, "staging/victim")
    assert committed == [] and uncommitted  # killed mid-upload: blocks staged, none committed
    assert not store.storage.exists("victim")
    assert store.storage.ls() == []
    assert store.read("victim") is None
    print(
        f"\nkilled with {len(uncommitted)} of {-(-size_mb * 1024 * 1024 // BLOCK_SIZE)} blocks "
        "staged: no blob, a miss"
    )


def test_errors_name_container_and_endpoint_never_the_key(azure_endpoint: Any) -> None:
    real_key = azure_endpoint.account_key
    wrong_key = "V3Jvbmcga2V5IGZvciBibG9ja3MgdGVzdHMgb25seQ=="
    missing = AzureBlobStorageContainer(
        container_name="no-such-container",
        credentials=AzureBlobStorageCredentials(connection_string=azure_endpoint),
    )
    with pytest.raises(StorageError) as info:
        missing.write_path("k", b"1")
    message = str(info.value)
    assert "az://no-such-container" in message and "127.0.0.1:10000" in message
    assert "does not exist" in message
    bad = AzureBlobStorageContainer(
        container_name="anything",
        credentials=AzureBlobStorageCredentials(
            connection_string=str(azure_endpoint).replace(real_key, wrong_key)
        ),
    )
    texts = []
    for call in (lambda: bad.write_path("k", b"1"), lambda: bad.read_path("k"), bad.ls):
        with pytest.raises((StorageError, FileNotFoundError)) as failed:
            call()
        texts.append("".join(traceback.format_exception(failed.value)))
    for text in [message, *texts]:
        assert real_key not in text and wrong_key not in text
    print(f"\n{len(texts) + 1} failures, none naming a key; the first:\n{message}")


def test_bad_container_settings_are_refused() -> None:
    creds = AzureBlobStorageCredentials(account_url="https://acct.blob.core.windows.net")
    for bad in ("", "a/b", "../x"):
        with pytest.raises(ValueError):
            AzureBlobStorageContainer(container_name=bad, credentials=creds)
    with pytest.raises(ValueError):
        AzureBlobStorageContainer(container_name="c", base_folder="a/../b", credentials=creds)
    with pytest.raises(ValueError, match="connection_string or an account_url"):
        AzureBlobStorageCredentials()
    with pytest.raises(ValueError, match="service principal"):
        AzureBlobStorageCredentials(account_url="https://a.blob.core.windows.net", client_id="x")
    store = AzureBlobStorageContainer(container_name="c", base_folder="p", credentials=creds)
    assert store.describe() == "az://c/p (endpoint https://acct.blob.core.windows.net)"
