"""`AzureBlobStorageContainer` on Azurite: what the shared storage suite does not cover.

The shared suite (tests/filesystems/test_filesystems.py) and the result store suite
(tests/results/test_results.py) already run over Azure. Here: saved-block slugs and ``az://``
URLs as result storage, ``block results ls/prune``, a streamed record, an upload killed mid-way
(whole blob or none), and errors that name the container and endpoint but never the key.

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
from blocks.results import ResultStore, resolve_storage

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


_WRITER = textwrap.dedent(
    """
    import os, sys
    from blocks.filesystems import AzureBlobStorageContainer, AzureBlobStorageCredentials
    from blocks.results import ResultStore
    store = ResultStore(AzureBlobStorageContainer(
        container_name=sys.argv[1], base_folder="killed",
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
