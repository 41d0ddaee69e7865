"""A record rewritten in place while it is read: what is decoded must be what was verified.

The attacker can rewrite the record's file in place (same inode: a shared mount with lax
modes) but does not hold the results key. A second process flips the payload, with
``os.pwrite``, between the genuine signed pickle and a malicious pickle of the same length that
creates a marker folder when unpickled; meanwhile this process reads the record again and
again. Every read must be the genuine value or a miss, and the marker must never appear.
``BLOCKS_SOAK=1`` reads 20,000 times instead of 2,000.
"""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
import textwrap
import warnings
from pathlib import Path
from typing import Any

import pytest

from blocks.filesystems import LocalFileSystem
from blocks.results import CorruptRecordWarning, ResultStore
from blocks.results import _streams as streams
from blocks.results._record import PREFIX_SIZE, header_length

READS = 20_000 if os.environ.get("BLOCKS_SOAK") == "1" else 2_000


class _Evil:
    """Unpickling it calls ``os.mkdir(marker)``: the proof that a forged pickle ran."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, tuple[str]]:
        return os.mkdir, (self.marker,)


def _evil_pickle(marker: str, length: int) -> bytes:
    """A pickle of exactly `length` bytes that runs ``os.mkdir(marker)`` when loaded."""
    pad = length - 200
    for _ in range(50):  # the opcodes around the padding change width with its size
        evil = pickle.dumps((_Evil(marker), b"x" * pad), protocol=5)
        if len(evil) == length:
            return evil
        pad += length - len(evil)
    raise AssertionError(f"no pickle of exactly {length} bytes")


_FLIPPER = textwrap.dedent(
    """
    import os, sys
    path, offset, good, evil, stop = sys.argv[1:]
    good, evil = open(good, "rb").read(), open(evil, "rb").read()
    offset = int(offset)
    fd = os.open(path, os.O_WRONLY)
    flips = 0
    open(stop + ".ready", "w").close()
    while not os.path.exists(stop):
        os.pwrite(fd, evil, offset)
        os.pwrite(fd, good, offset)
        flips += 1
    print(flips)
    """
)


@pytest.mark.parametrize("copy", ["memory", "temp file"])
def test_a_payload_swapped_in_place_during_reads_is_never_decoded(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, copy: str
) -> None:
    if copy == "temp file":  # the payload is past the in-memory bound: a private temp file
        monkeypatch.setattr(streams, "SPOOL_MAX_SIZE", 64 * 1024)
    store = ResultStore(LocalFileSystem(basepath=str(tmp_path / "results")), "pickle")
    value = ("genuine", b"v" * 200_000)  # past the one-read head: the streamed path
    store.write("k", value)
    path = tmp_path / "results" / "k"
    # The attacker is another user of a shared group: the record is group-writable (a file
    # only our user can write is decoded from the file itself, see the test below).
    path.chmod(0o660)
    raw = path.read_bytes()
    offset = PREFIX_SIZE + header_length(raw, key="k")
    good = raw[offset:]
    marker = tmp_path / "PWNED"
    (tmp_path / "good").write_bytes(good)
    (tmp_path / "evil").write_bytes(_evil_pickle(str(marker), len(good)))
    stop = tmp_path / "stop"

    files = [str(tmp_path / "good"), str(tmp_path / "evil"), str(stop)]
    flipper = subprocess.Popen(
        [sys.executable, "-c", _FLIPPER, str(path), str(offset), *files],
        stdout=subprocess.PIPE,
        text=True,
    )
    reads = misses = wrong = 0
    try:
        while not (tmp_path / "stop.ready").exists():
            assert flipper.poll() is None, "the flipping process died"
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", CorruptRecordWarning)
            for _ in range(READS):
                hit = store.read("k")
                reads += 1
                if hit is None:
                    misses += 1
                elif hit.value != value:
                    wrong += 1
                if marker.exists():
                    break
    finally:
        stop.touch()
        out, _ = flipper.communicate(timeout=60)
    print(
        f"in-place swap ({copy} copy): {reads} reads, {misses} misses, {wrong} wrong, "
        f"{int(out or 0)} flips by the other process, marker present: {marker.exists()}"
    )
    assert not marker.exists(), f"a forged pickle ran after {reads} reads"
    assert wrong == 0
    assert misses > 0, "the flipper never landed between reads: the race was not exercised"
    # The file itself is left as the genuine record: the next read is a hit.
    path.write_bytes(raw)
    hit = store.read("k")
    assert hit is not None and hit.value == value


def test_a_large_record_only_we_can_write_is_decoded_without_a_copy(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Past the in-memory bound, a record whose file and folders only our user can write is
    verified, then decoded from the same descriptor; any group or other write bit on the file
    or a folder down to it brings the private copy back."""
    import tempfile

    monkeypatch.setattr(streams, "SPOOL_MAX_SIZE", 64 * 1024)
    copies: list[int] = []
    made = tempfile.TemporaryFile

    def counted(*args: Any, **kwargs: Any) -> Any:
        copies.append(1)
        return made(*args, **kwargs)

    monkeypatch.setattr(tempfile, "TemporaryFile", counted)
    base = tmp_path / "results"
    base.mkdir(mode=0o700)
    store = ResultStore(LocalFileSystem(basepath=str(base)), "pickle")
    value = ("genuine", b"v" * 200_000)
    store.write("team/k", value)
    path, folder = base / "team" / "k", base / "team"
    folder.chmod(0o700)
    path.chmod(0o600)
    seen = []
    for label, target, mode in (
        ("private", None, 0),
        ("file group-writable", path, 0o620),
        ("file other-writable", path, 0o602),
        ("folder group-writable", folder, 0o770),
        ("base other-writable", base, 0o703),
    ):
        if target is not None:
            target.chmod(mode)
        before = len(copies)
        hit = store.read("team/k")
        assert hit is not None and hit.value == value
        seen.append(f"{label}: {len(copies) - before} copy")
        assert len(copies) - before == (0 if target is None else 1), label
        if target is not None:
            target.chmod(0o600 if target == path else 0o700)
    # open_payload hands over the verified file itself, or the private copy.
    for mode, expected in ((0o600, 0), (0o620, 1)):
        path.chmod(mode)
        before = len(copies)
        with store.open_payload("team/k") as payload:
            assert pickle.loads(payload.read()) == value
        assert len(copies) - before == expected, oct(mode)
    path.chmod(0o600)
    # A changed byte still fails the signature check before anything is decoded.
    raw = bytearray(path.read_bytes())
    raw[-1] ^= 1
    path.write_bytes(bytes(raw))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", CorruptRecordWarning)
        assert store.read("team/k") is None
    print("large record reads: " + "; ".join(seen) + "; a flipped byte: a miss")
