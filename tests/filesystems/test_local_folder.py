"""`LocalFolder`, the plain (non-Block) local storage behind `LocalFileSystem`: the result store
works on it as on the block; batch deletes share a folder's descriptor and still never follow a
symlink; the one-regex fast path of `validate_key` agrees with the full rule.
"""

from __future__ import annotations

import os
from datetime import UTC, datetime, timedelta
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from blocks.errors import UnsafePath
from blocks.filesystems import LocalFileSystem, LocalFolder, validate_key
from blocks.results import ResultStore, resolve_storage

GONE = datetime.now(UTC) - timedelta(hours=1)


def test_a_local_path_resolves_to_a_plain_folder_only_when_asked(tmp_path: Path) -> None:
    plain = resolve_storage(str(tmp_path), plain_local=True)
    assert isinstance(plain, LocalFolder) and plain.describe() == f"file://{tmp_path}"
    assert isinstance(resolve_storage(f"file://{tmp_path}", plain_local=True), LocalFolder)
    assert isinstance(resolve_storage(str(tmp_path)), LocalFileSystem)
    assert not isinstance(resolve_storage("memory://x", plain_local=True), LocalFolder)


def test_a_store_on_a_folder_reads_what_a_store_on_the_block_wrote(tmp_path: Path) -> None:
    block = ResultStore(LocalFileSystem(basepath=str(tmp_path), fsync=False), "pickle")
    folder = ResultStore(LocalFolder(str(tmp_path)), "pickle")
    for i in range(5):
        block.write(f"a/k{i}", {"i": i}, expires=GONE if i < 2 else None, task="t")
    folder.write("b/big", b"x" * 200_000, task="t")
    assert folder.read("a/k3").value == {"i": 3}  # type: ignore[union-attr]
    assert block.read("b/big").value == b"x" * 200_000  # type: ignore[union-attr]
    assert list(folder.records()) == list(block.records())
    assert folder.exists("a/k4") and not folder.exists("a/k0")  # expired
    assert sorted(folder.prune(temp_grace=None)) == ["a/k0", "a/k1"]
    assert [k for k, _ in block.records()] == ["a/k2", "a/k3", "a/k4", "b/big"]


def test_delete_keys_refuses_a_symlinked_folder_and_deletes_the_rest(tmp_path: Path) -> None:
    base, outside = tmp_path / "base", tmp_path / "outside"
    outside.mkdir()
    (outside / "victim").write_bytes(b"keep me")
    (base / "real").mkdir(parents=True)
    for name in ("a", "b"):
        (base / "real" / name).write_bytes(b"x")
    (base / "top").write_bytes(b"x")
    (base / "sub").symlink_to(outside)
    (base / "real" / "link").symlink_to(outside / "victim")
    folder = LocalFolder(str(base))
    keys = ["real/a", "real/b", "real/link", "real/absent", "sub/victim", "gone/x", "top"]
    done = list(folder.delete_keys(keys))
    print(done)
    assert [k for k, _ in done] == keys
    refused = {k for k, problem in done if problem is not None}
    assert refused == {"sub/victim"} and isinstance(dict(done)["sub/victim"], UnsafePath)
    assert (outside / "victim").read_bytes() == b"keep me"  # the link went, not its target
    assert sorted(os.listdir(base)) == ["real", "sub"] and os.listdir(base / "real") == []


def test_delete_keys_of_a_subclass_that_deletes_its_own_way_goes_through_it(
    tmp_path: Path,
) -> None:
    seen: list[str] = []

    class Counting(LocalFileSystem):
        _block_type_slug = "counting-file-system-for-tests"

        def delete(self, path: str | os.PathLike[str]) -> None:  # type: ignore[override]
            seen.append(str(path))
            super().delete(path)

    fs = Counting(basepath=str(tmp_path))
    fs.write_path("a/b", b"1")
    assert list(fs.delete_keys(["a/b"])) == [("a/b", None)] and seen == ["a/b"]


class _Text(str):
    """A str subclass: `validate_key` takes its full path (no fast path) for these."""


@settings(max_examples=2000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    key=st.lists(
        st.sampled_from(["a", "B9", "-x", "_", ".", "..", "", ".blocks-tmp-x", "C:", "s3:", "é"])
        | st.text(min_size=1, max_size=4),
        min_size=1,
        max_size=4,
    ).map("/".join)
)
def test_validate_key_fast_path_agrees_with_the_full_rule(key: str) -> None:
    try:
        full: str | None = validate_key(_Text(key))
    except UnsafePath:
        full = None
    try:
        fast: str | None = validate_key(key)
    except UnsafePath:
        fast = None
    assert fast == full
