"""The cache-hit read path keeps every guarantee on a *repeat* hit: headers verified once are
remembered by their exact signed bytes, the payload is read on every hit and either equals
bytes that verified under the same tag and key or is verified again, and expiry, truncation,
padding and another results key are still seen.
"""

from __future__ import annotations

import os
import time
import warnings
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from blocks.filesystems import LocalFileSystem
from blocks.results import ResultStore
from blocks.results._signing import ResultsKeys
from blocks.results._store import HEAD_READ, CorruptRecordWarning


def _store(tmp_path: Path, keys: ResultsKeys | None = None) -> ResultStore:
    return ResultStore(LocalFileSystem(basepath=str(tmp_path)), "pickle", keys=keys)


def _warned_miss(store: ResultStore, key: str, match: str) -> None:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert store.read(key) is None
    messages = [str(w.message) for w in caught if issubclass(w.category, CorruptRecordWarning)]
    assert messages and match in messages[0], messages


def test_payload_altered_after_a_remembered_hit_is_a_miss(tmp_path: Path) -> None:
    store = _store(tmp_path)
    store.write("k", {"v": "original"})
    assert store.read("k").value == {"v": "original"}  # type: ignore[union-attr]
    path = tmp_path / "k"
    data = bytearray(path.read_bytes())
    at = data.rindex(b"original")
    data[at : at + 8] = b"ORIGINAL"  # same length: only the payload tag can tell
    path.write_bytes(bytes(data))
    _warned_miss(store, "k", "payload signature")


def test_header_altered_after_a_remembered_hit_is_a_miss(tmp_path: Path) -> None:
    store = _store(tmp_path)
    store.write("k", 1, task="extract")
    assert store.read("k") is not None
    path = tmp_path / "k"
    path.write_bytes(path.read_bytes().replace(b'"extract"', b'"EXTRACT"'))
    _warned_miss(store, "k", "signature")


def test_truncated_or_padded_after_a_remembered_hit_is_a_miss(tmp_path: Path) -> None:
    store = _store(tmp_path)
    store.write("k", list(range(100)))
    assert store.read("k") is not None
    whole = (tmp_path / "k").read_bytes()
    (tmp_path / "k").write_bytes(whole[:-1])
    _warned_miss(store, "k", "truncated")
    (tmp_path / "k").write_bytes(whole + b"\0")
    _warned_miss(store, "k", "padded")
    (tmp_path / "k").write_bytes(whole)
    assert store.read("k").value == list(range(100))  # type: ignore[union-attr]


def test_a_remembered_header_is_not_trusted_under_other_keys(tmp_path: Path) -> None:
    ours = _store(tmp_path)
    ours.write("k", "v")
    assert ours.read("k") is not None
    theirs = _store(tmp_path, keys=ResultsKeys.of([os.urandom(32)], "test"))
    _warned_miss(theirs, "k", "results key")
    assert ours.read("k") is not None


def test_a_remembered_header_still_expires(tmp_path: Path) -> None:
    store = _store(tmp_path)
    store.write("k", "v", expires=datetime.now(UTC) + timedelta(seconds=0.5))
    assert store.read("k") is not None
    time.sleep(0.6)
    assert store.read("k") is None


@pytest.mark.parametrize("size", [HEAD_READ - 200, HEAD_READ, HEAD_READ + 1, 3 * HEAD_READ])
def test_records_around_the_first_read_size_round_trip_and_tampering_is_seen(
    tmp_path: Path, size: int
) -> None:
    store = _store(tmp_path)
    value = os.urandom(size)
    store.write("k", value)
    for _ in range(2):
        assert store.read("k").value == value  # type: ignore[union-attr]
    data = bytearray((tmp_path / "k").read_bytes())
    data[-1] ^= 1
    (tmp_path / "k").write_bytes(bytes(data))
    _warned_miss(store, "k", "payload signature")


def test_keys_below_folders_and_flat_keys_both_hit(tmp_path: Path) -> None:
    store = _store(tmp_path)
    store.write("a/b/c", 1)
    store.write("flat", 2)
    assert store.read("a/b/c").value == 1  # type: ignore[union-attr]
    assert store.read("flat").value == 2  # type: ignore[union-attr]
    (tmp_path / "alias").symlink_to("flat")
    assert store.storage.read_path("alias") == store.storage.read_path("flat")


# -- records kept verified by their file's stamp (no open per hit) ----------------------------


def _settle() -> None:
    """Wait until a record just written has settled (`_stamps.SETTLE_NS`): its stamp is kept."""
    from blocks.filesystems._stamps import SETTLE_NS

    time.sleep(SETTLE_NS / 1e9 * 2)


def _kept_hit(store: ResultStore, key: str, value: object) -> None:
    assert store.read(key).value == value  # type: ignore[union-attr]
    assert key in store._kept, "a settled record of ours is kept"
    assert store.read(key).value == value  # type: ignore[union-attr]  # from the kept bytes


def test_a_kept_record_rewritten_in_place_same_size_and_mtime_reads_the_new_value(
    tmp_path: Path,
) -> None:
    store = _store(tmp_path)
    store.write("k", {"v": "aaaa"})
    other = _store(tmp_path / "other")
    other.write("k", {"v": "bbbb"})  # the same key and size: a valid record, other bytes
    _settle()
    _kept_hit(store, "k", {"v": "aaaa"})
    path, replacement = tmp_path / "k", (tmp_path / "other" / "k").read_bytes()
    assert len(replacement) == path.stat().st_size
    before = path.stat()
    with open(path, "r+b") as f:  # in place: the same inode, the same size
        f.write(replacement)
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))  # mtime put back; ctime moves
    assert path.stat().st_ino == before.st_ino and path.stat().st_mtime_ns == before.st_mtime_ns
    assert store.read("k").value == {"v": "bbbb"}  # type: ignore[union-attr]


def test_a_kept_record_altered_in_place_is_refused(tmp_path: Path) -> None:
    store = _store(tmp_path)
    store.write("k", {"v": "original"})
    _settle()
    _kept_hit(store, "k", {"v": "original"})
    path = tmp_path / "k"
    before = path.stat()
    data = bytearray(path.read_bytes())
    at = data.rindex(b"original")
    data[at : at + 8] = b"ORIGINAL"
    with open(path, "r+b") as f:
        f.write(bytes(data))
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
    _warned_miss(store, "k", "payload signature")


def test_a_record_changed_right_after_it_was_written_is_never_kept_stale(tmp_path: Path) -> None:
    # Within one tick of the coarse clock a change may keep the stamp: such a record is read
    # in full until it has settled.
    store = _store(tmp_path)
    store.write("k", {"v": "aaaa"})
    assert store.read("k").value == {"v": "aaaa"}  # type: ignore[union-attr]
    assert "k" not in store._kept
    path = tmp_path / "k"
    data = path.read_bytes().replace(b"aaaa", b"AAAA")
    with open(path, "r+b") as f:
        f.write(data)
    _warned_miss(store, "k", "payload signature")


def test_a_record_others_can_write_is_read_each_time(tmp_path: Path) -> None:
    store = _store(tmp_path)
    store.write("k", 1)
    os.chmod(tmp_path / "k", 0o666)
    _settle()
    assert store.read("k").value == 1  # type: ignore[union-attr]
    assert "k" not in store._kept


def test_a_kept_record_replaced_by_a_write_or_expired_or_under_other_keys(
    tmp_path: Path,
) -> None:
    store = _store(tmp_path)
    store.write("k", 1, expires=datetime.now(UTC) + timedelta(seconds=0.3))
    _settle()
    _kept_hit(store, "k", 1)
    time.sleep(0.35)
    assert store.read("k") is None  # a kept header still expires
    store.write("k", 2)
    assert store.read("k").value == 2  # type: ignore[union-attr]
    _settle()
    _kept_hit(store, "k", 2)
    theirs = _store(tmp_path, keys=ResultsKeys.of([os.urandom(32)], "test"))
    _warned_miss(theirs, "k", "results key")


def test_read_with_the_callers_keys_verifies_as_read_and_a_stores_own_keys_win(
    tmp_path: Path,
) -> None:
    # `read_with` (the runtime's hit path, results keys read once per hit) is `read` with the
    # keys given: a record signed under other keys is still refused, and a store built with
    # its own keys reads with those whatever the caller holds.
    ours = ResultsKeys.of([os.urandom(32)], "ours")
    theirs = ResultsKeys.of([os.urandom(32)], "theirs")
    store = _store(tmp_path, ours)
    store.write("k", {"v": 1})
    assert store.read_with("k", theirs).value == {"v": 1}  # type: ignore[union-attr]
    plain = _store(tmp_path)
    with warnings.catch_warnings(record=True):
        warnings.simplefilter("always")
        assert plain.read_with("k", theirs) is None  # signed under other keys: refused
    assert plain.read_with("k", ours).value == {"v": 1}  # type: ignore[union-attr]
