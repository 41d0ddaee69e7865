"""Local writes and reads never leave the base folder, even when a subfolder is swapped for a
symlink to an outside folder between a check and the operation (a real second process swaps
it in a loop). ``BLOCKS_SOAK=1`` runs the race for 30 s instead of a few seconds.

Also the symlink rules a single process sees: a symlink inside the base is followed only when
its target (read by us, never by the kernel) stays inside the base.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import symlink_swapper

from blocks.errors import UnsafePath
from blocks.filesystems import LocalFileSystem
from blocks.results import CorruptRecordWarning, ResultStore

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="needs symlinks and dir fds")

SOAK = os.environ.get("BLOCKS_SOAK") == "1"


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def test_symlink_swap_race_never_writes_or_reads_outside_the_base(tmp_path: Path) -> None:
    seconds = 30.0 if SOAK else 3.0
    base, outside = tmp_path / "base", tmp_path / "outside"
    (base / "sub").mkdir(parents=True)
    outside.mkdir()
    names = [f"k{i}" for i in range(8)]
    for name in names:
        (outside / name).write_bytes(b"OUTSIDE")
    before = _snapshot(outside)
    fs = LocalFileSystem(basepath=str(base), fsync=False)
    store = ResultStore(fs, "pickle")
    until = time.time() + seconds
    swap = [sys.executable, symlink_swapper.__file__, str(base), str(outside), str(until)]
    swapper = subprocess.Popen(
        [*swap, "--restore"],  # put "sub" back when a writer re-created it first
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    writes = reads = refused = read_escapes = rounds = 0
    try:
        while time.time() < until:
            rounds += 1
            for name in names:
                key = f"sub/{name}"
                # A refusal (UnsafePath) or a vanished folder is the race showing; only an
                # outside file read or touched would be an escape.
                with contextlib.suppress(UnsafePath, OSError):
                    fs.write_path(key, b"inside")
                    writes += 1
                with contextlib.suppress(UnsafePath, OSError):
                    if fs.read_path(key) == b"OUTSIDE":
                        read_escapes += 1
                    reads += 1
                with contextlib.suppress(UnsafePath, OSError):
                    store.write(f"sub/r-{name}", name)
                    writes += 1
                try:
                    hit = store.read(f"sub/r-{name}")
                    reads += 1
                except UnsafePath:
                    refused += 1
                    continue
                if hit is not None and hit.value != name:
                    read_escapes += 1
    finally:
        out, err = swapper.communicate(timeout=60)
    assert swapper.returncode == 0, err
    after = _snapshot(outside)
    changed = sorted(n for n in before if after.get(n) != before[n])
    created = sorted(set(after) - set(before))
    print(
        f"{seconds:.0f} s race: {out.strip()} symlink swaps, {rounds} rounds, {writes} writes, "
        f"{reads} reads ({refused} store reads refused); outside the base: {len(changed)} "
        f"changed, {len(created)} created, {read_escapes} reads of outside data"
    )
    assert int(out.strip()) > 0, "the swapper never swapped: the race did not run"
    assert changed == [] and created == [] and read_escapes == 0


def test_symlinked_folder_inside_the_base_is_followed_for_reads_and_writes(
    tmp_path: Path,
) -> None:
    fs = LocalFileSystem(basepath=str(tmp_path))
    fs.write_path("real/a.bin", b"1")
    (tmp_path / "alias").symlink_to("real", target_is_directory=True)
    (tmp_path / "absolute").symlink_to(tmp_path / "real", target_is_directory=True)
    (tmp_path / "real" / "up").symlink_to("../real/a.bin")
    assert fs.read_path("alias/a.bin") == b"1"
    assert fs.read_path("absolute/a.bin") == b"1"
    assert fs.read_path("real/up") == b"1"
    fs.write_path("alias/b.bin", b"2")
    assert (tmp_path / "real" / "b.bin").read_bytes() == b"2"
    assert fs.exists("alias/b.bin") and fs.size("alias/b.bin") == 1


def test_write_through_a_symlinked_file_inside_the_base_writes_its_target(
    tmp_path: Path,
) -> None:
    fs = LocalFileSystem(basepath=str(tmp_path))
    fs.write_path("real/a.bin", b"1")
    (tmp_path / "alias").symlink_to(tmp_path / "real" / "a.bin")
    fs.write_path("alias", b"2")
    assert (tmp_path / "alias").is_symlink()
    assert fs.read_path("real/a.bin") == b"2"


def test_symlinks_that_climb_out_or_loop_are_refused(tmp_path: Path) -> None:
    base = tmp_path / "base"
    base.mkdir()
    (tmp_path / "secret").write_bytes(b"outside")
    (base / "up").symlink_to("../secret")
    (base / "loop").symlink_to("loop")
    fs = LocalFileSystem(basepath=str(base))
    with pytest.raises(UnsafePath, match="outside the base path"):
        fs.read_path("up")
    with pytest.raises(UnsafePath, match="outside the base path"):
        fs.write_path("up", b"pwned")
    with pytest.raises(UnsafePath, match="symlinks"):
        fs.read_path("loop")
    assert (tmp_path / "secret").read_bytes() == b"outside"


def test_fifo_or_folder_under_a_key_reads_as_absent_without_blocking(tmp_path: Path) -> None:
    fs = LocalFileSystem(basepath=str(tmp_path))
    os.mkfifo(tmp_path / "pipe")
    (tmp_path / "folder").mkdir()
    for key in ("pipe", "folder"):
        with pytest.raises(FileNotFoundError):
            fs.read_path(key)
        assert not fs.exists(key)
    assert ResultStore(fs, "pickle").read("pipe") is None


def test_open_head_of_a_fifo_folder_or_empty_file(tmp_path: Path) -> None:
    """`open_head` skips the fstat only for a short, non-empty read (issue 12): a FIFO with
    no writer, one with a writer that wrote nothing yet, and a folder are absent; an empty
    file is an empty head; a FIFO that holds bytes is read as a record's bytes and
    refused by the record checks (a miss), never a hang and never a value."""
    fs = LocalFileSystem(basepath=str(tmp_path))
    store = ResultStore(fs, "pickle")
    os.mkfifo(tmp_path / "pipe")
    (tmp_path / "folder").mkdir()
    (tmp_path / "empty").write_bytes(b"")
    for key in ("pipe", "folder"):
        with pytest.raises(FileNotFoundError):
            fs.open_head(key, 4096)
    assert fs.open_head("empty", 4096) == (b"", None)
    writer = os.open(tmp_path / "pipe", os.O_RDWR | os.O_NONBLOCK)  # a writer, nothing written
    try:
        with pytest.raises(FileNotFoundError):
            fs.open_head("pipe", 4096)
        os.write(writer, b"BLKR" + bytes(40))
        with pytest.warns(CorruptRecordWarning):
            assert store.read("pipe") is None
    finally:
        os.close(writer)
    store.write("real", {"a": 1})
    head, stream = fs.open_head("real", 64 * 1024)
    assert stream is None and head.startswith(b"BLK")
    hit = store.read("real")
    assert hit is not None and hit.value == {"a": 1}
