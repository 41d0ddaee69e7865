"""A whole-store scan of local storage (``records()``, hence ``block results ls`` and ``prune``)
reads each file once through its folder's descriptor; it must list exactly what the key-by-key
path lists, with the same headers, whatever else sits in the folder.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

from blocks.filesystems import LocalFileSystem
from blocks.filesystems.base import KeyLike, temp_name_prefix
from blocks.results import RecordHeader, ResultStore
from blocks.results._record import FIRST_READ, PREFIX_SIZE


class KeyByKey(LocalFileSystem):
    """Local storage that lists key by key (a subclass with its own walk: no scan)."""

    _block_type_slug = "key-by-key-file-system-for-tests"

    def walk_keys(self, prefix: KeyLike = "") -> Iterator[str]:
        yield from super().walk_keys(prefix)


def _fill(base: Path, outside: Path) -> None:
    store = ResultStore(LocalFileSystem(basepath=str(base)), "pickle")
    now = datetime.now(UTC)
    for i in range(30):
        expires = now + timedelta(hours=1 if i % 2 else -1)
        store.write(f"flow-{i % 3}/task/{i:03d}", {"i": i}, expires=expires, task=f"t{i % 4}")
    store.write("top", [1, 2, 3])
    # A header longer than the first read: its rest is read by key.
    wide = {f"param:p{i}": "0" * 32 for i in range(200)}
    store.write("wide", 1, components=wide)
    assert len(store.header("wide").to_json()) > FIRST_READ  # type: ignore[union-attr]
    (base / "foreign.txt").write_text("not a record")
    (base / "empty").write_bytes(b"")
    (base / "flow-0" / f"{temp_name_prefix()}abc").write_bytes(b"half a record")
    outside.mkdir()
    (outside / "secret").write_text("outside the base")
    os.symlink(base / "top", base / "link-inside")
    os.symlink(outside / "secret", base / "link-outside")
    os.symlink(outside, base / "folder-link")
    os.mkfifo(base / "fifo")


def test_a_scan_lists_what_key_by_key_reads_list(tmp_path: Path) -> None:
    base = tmp_path / "store"
    _fill(base, tmp_path / "outside")
    scanned = list(ResultStore(LocalFileSystem(basepath=str(base)), "pickle").records())
    one_by_one = list(ResultStore(KeyByKey(basepath=str(base)), "pickle").records())
    print(f"{len(scanned)} objects listed, {sum(h is not None for _, h in scanned)} records")
    assert [key for key, _ in scanned] == [key for key, _ in one_by_one]
    assert scanned == one_by_one  # same headers (dataclass equality), same Nones
    found = dict(scanned)
    assert isinstance(found["wide"], RecordHeader)
    assert found["link-inside"] is None  # listed, read by key: its record was written for "top"
    assert found["foreign.txt"] is None and found["empty"] is None
    assert "link-outside" not in found and not any(k.startswith("folder-link") for k in found)
    assert "fifo" not in found and not any("abc" in k for k in found)
    assert len([h for h in found.values() if h is not None]) == 32


def test_prune_by_scan_deletes_only_expired_records(tmp_path: Path) -> None:
    base = tmp_path / "store"
    _fill(base, tmp_path / "outside")
    store = ResultStore(LocalFileSystem(basepath=str(base)), "pickle")
    pruned = store.prune(temp_grace=None)
    assert sorted(pruned) == sorted(f"flow-{i % 3}/task/{i:03d}" for i in range(0, 30, 2))
    left = dict(store.records())
    assert len([h for h in left.values() if h is not None]) == 17
    assert (base / "foreign.txt").exists() and (tmp_path / "outside" / "secret").exists()


def test_a_missing_base_scans_as_empty(tmp_path: Path) -> None:
    store = ResultStore(LocalFileSystem(basepath=str(tmp_path / "never-written")), "pickle")
    assert list(store.records()) == []
    assert store.prune() == []


def test_the_fast_header_build_equals_the_field_by_field_one(tmp_path: Path) -> None:
    # `_fast_header` fills the frozen dataclass without its __init__ (a scan builds 10,000):
    # it must give exactly what the plain constructor gives, every field set.
    import dataclasses
    import json

    from blocks.results._record import _fast_header, _typed_header, header_length

    store = ResultStore(LocalFileSystem(basepath=str(tmp_path)), "json")
    store.write("plain", 1)
    store.write("full", [1], expires=datetime.now(UTC), task="t", flow="f", components={"a": "b"})
    for key in ("plain", "full"):
        data = (tmp_path / key).read_bytes()
        raw = json.loads(data[PREFIX_SIZE : PREFIX_SIZE + header_length(data, key=key)])
        fast, typed = _fast_header(raw), _typed_header(raw)
        assert fast == typed and fast is not None
        assert set(vars(fast)) == {f.name for f in dataclasses.fields(RecordHeader)}
        assert fast == store.header(key)
