"""Conditional objects on the real servers: what each one refuses (issue 24).

A lease needs three refusals from its storage: a second create-if-absent of one name, a
replace at a version that is not the current one, and a delete at such a version. LocalStack
S3, Azurite and local folders give all three; the GCS emulator accepts ``ifGenerationMatch``
and ignores it (this test pins that, and that the lease probe catches it); a ``memory://``
URL through plain fsspec has no conditional writes at all and warns once.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import Any

import pytest

from blocks.errors import ConfigurationError
from blocks.filesystems._conditional import conditional_objects
from blocks.filesystems._exclusive import probe_create
from blocks.results import _leases


def _refusals(storage: Any) -> dict[str, bool]:
    objects = conditional_objects(storage)
    assert objects is not None
    first = objects.create("k", b"one")
    assert first is not None
    listed = objects.names()
    second = objects.create("k", b"two")
    found = objects.read("k")
    assert found is not None
    current = found[1]
    wrong_replace = objects.replace("k", b"three", "0:0" if ":" in current else '"0x1"')
    replaced = objects.replace("k", b"four", current)
    stale_delete = objects.delete("k", current)  # the version before the replace
    now = objects.read("k")
    deleted = now is not None and objects.delete("k", now[1])
    return {
        "second create refused": second is None,
        "replace at a wrong version refused": wrong_replace is None,
        "replace at the current version done": replaced is not None,
        "delete at an old version refused": not stale_delete,
        "delete at the current version done": deleted and objects.read("k") is None,
        "listed while there": listed == ["k"],
        "gone after": objects.names() == [],
    }


def _check_all(label: str, storage: Any) -> None:
    found = _refusals(storage)
    print(f"{label}: {found}")
    assert all(found.values()), found
    assert probe_create(conditional_objects(storage)) is None  # type: ignore[arg-type]


def test_a_local_folder_refuses_what_a_lease_needs(tmp_path: Path) -> None:
    from blocks.filesystems import LocalFileSystem

    _check_all("local folder", LocalFileSystem(basepath=str(tmp_path)))


@pytest.mark.parametrize("unnamed", [True, False], ids=["O_TMPFILE", "named temp file"])
def test_a_local_folder_refuses_either_way_it_creates_and_leaves_no_temp_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, unnamed: bool
) -> None:
    from blocks.filesystems import LocalFileSystem, _conditional

    if not unnamed:
        monkeypatch.setattr(_conditional, "_UNNAMED", 0)
    storage = LocalFileSystem(basepath=str(tmp_path))
    objects = conditional_objects(storage)
    assert objects is not None
    made = objects.create("first", b"makes the folder")  # then later ones may go unnamed
    assert made is not None and objects.delete("first", made)
    _check_all("local folder", storage)
    assert objects.create("k", b"one") is not None and objects.create("k", b"two") is None
    assert objects.read("k") == (b"one", objects.read("k")[1])  # type: ignore[index]
    assert [p.name for p in (tmp_path / ".blocks-leases").iterdir()] == ["k"]  # no temp file


def test_localstack_s3_refuses_what_a_lease_needs(s3_bucket: Any) -> None:
    _check_all("LocalStack S3", s3_bucket.block("results"))


def test_azurite_refuses_what_a_lease_needs(azure_container: Any) -> None:
    _check_all("Azurite", azure_container.block("results"))


def test_the_gcs_emulator_ignores_if_generation_match_and_the_probe_says_so(
    gcs_bucket: Any,
) -> None:
    storage = gcs_bucket.block("results")
    objects = conditional_objects(storage)
    assert objects is not None
    assert objects.create("k", b"one") is not None
    second = objects.create("k", b"two")
    print(f"GCS emulator: a second create with ifGenerationMatch=0 returned {second!r}")
    assert second is not None  # accepted: the emulator does not check preconditions
    why = probe_create(objects)
    print(f"GCS emulator: the lease probe says {why!r}")
    assert why is not None and "second create-if-absent" in why


def test_a_storage_without_conditional_writes_warns_once_and_computes(
    caplog: pytest.LogCaptureFixture, azure_container: Any
) -> None:
    from blocks import task
    from blocks.filesystems import RemoteFileSystem

    # An az:// URL through plain fsspec (not the Azure block): no conditional create here.
    storage = RemoteFileSystem(
        basepath=f"{azure_container.url}/plain", settings=azure_container.endpoint.storage_options()
    )
    calls: list[int] = []

    @task(result_storage=storage, persist_result=True, cache_key_fn=lambda *a: "k")
    def double(x: int) -> int:
        calls.append(x)
        return 2 * x

    @task(result_storage="memory://leases", persist_result=True, cache_key_fn=lambda *a: "k")
    def triple(x: int) -> int:
        return 3 * x

    with caplog.at_level(logging.WARNING, logger="blocks.results"):
        threads = [threading.Thread(target=double, args=(4,)) for _ in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert double(4) == 8
        assert triple(4) == 12  # one process's memory: no lease, no warning
    warned = [r for r in caplog.records if "cannot hold compute-once leases" in r.getMessage()]
    print(f"az:// through fsspec: {len(calls)} computation(s), {len(warned)} warning(s)")
    assert len(warned) == 1 and "no conditional create" in warned[0].getMessage()
    assert "az://" in warned[0].getMessage()
    assert calls == [4]  # one process: its machine lock still computes once


def test_lease_settings_are_checked(monkeypatch: pytest.MonkeyPatch) -> None:
    from blocks import settings

    monkeypatch.setenv("BLOCKS_RESULTS_LEASES", "sometimes")
    with pytest.raises(ConfigurationError, match="BLOCKS_RESULTS_LEASES"):
        settings.results_leases()
    monkeypatch.setenv("BLOCKS_RESULTS_LEASE_SECONDS", "0")
    with pytest.raises(ConfigurationError, match="BLOCKS_RESULTS_LEASE_SECONDS"):
        settings.results_lease_seconds()
    monkeypatch.setenv("BLOCKS_RESULTS_LEASE_WAIT", "-1")
    with pytest.raises(ConfigurationError, match="BLOCKS_RESULTS_LEASE_WAIT"):
        settings.results_lease_wait()
    with pytest.raises(ConfigurationError, match="PostgreSQL registry"):
        _leases._postgres("sqlite:///x.db")


def test_the_lease_backend_follows_the_settings_within_a_process(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # `leases_for` keeps its answer per storage and raw settings: each change is seen, and an
    # invalid mode raises on every call (never kept).
    from blocks.filesystems import LocalFileSystem
    from blocks.results import ResultStore

    store = ResultStore(LocalFileSystem(basepath=str(tmp_path / "shared")))
    monkeypatch.setenv("BLOCKS_RESULTS_LEASES", "off")
    assert _leases.leases_for(store) is None
    monkeypatch.setenv("BLOCKS_RESULTS_LEASES", "storage")
    # A local folder: byte-range locks where they are trusted (Linux, local or NFS with locks).
    assert isinstance(_leases.leases_for(store), (_leases._ObjectLeases, _leases._RangeLeases))
    monkeypatch.setenv("BLOCKS_RESULTS_LEASES", "sometimes")
    for _ in range(2):
        with pytest.raises(ConfigurationError, match="BLOCKS_RESULTS_LEASES"):
            _leases.leases_for(store)
    monkeypatch.setenv("BLOCKS_RESULTS_LEASES", "off")
    assert _leases.leases_for(store) is None
