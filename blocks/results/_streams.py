"""Payload bytes in motion: sign while writing, verify before decoding, copy nothing big.

Internal helpers of `ResultStore`; every function works on plain binary file objects. The
payload tag (AES-GMAC, at memory speed) is computed in the same pass as the write or the read.
"""

from __future__ import annotations

import contextlib
import hmac
import io
import os
from typing import IO, TYPE_CHECKING, Any, BinaryIO

from blocks.errors import CorruptRecord
from blocks.results._record import RecordHeader, checksum_string
from serializers.errors import SerializationError

if TYPE_CHECKING:
    from serializers.base import Serializer

#: Chunk used to hash and copy payloads: big enough to run at memory speed, small to hold.
CHUNK_SIZE = 1024 * 1024
#: Payloads up to this size are copied into memory as they are verified (and decoded from
#: there); larger ones into a private unlinked temporary file.
SPOOL_MAX_SIZE = 16 * 1024 * 1024
#: Payloads read into memory from this size on ask the kernel for huge pages.
_HUGE_PAGES_FROM = 4 * 1024 * 1024
#: Payloads from this size on are allocated on disk before they are written (`reserve`).
_RESERVE_FROM = 4 * 1024 * 1024


class HashingWriter:
    """Passes writes through while hashing and counting them; never copies the data."""

    __slots__ = ("hasher", "raw", "size")

    def __init__(self, raw: IO[bytes], hasher: Any) -> None:
        self.raw = raw
        self.hasher = hasher
        self.size = 0

    def write(self, data: Any) -> int:
        view = memoryview(data).cast("B")
        self.hasher.update(view)
        self.raw.write(view)
        self.size += view.nbytes
        return view.nbytes

    def reserve(self, nbytes: int) -> None:
        """A serializer's word that exactly `nbytes` more bytes follow: a local file allocates
        them at once (as ``numpy.save`` does), which about halves the kernel's cost of writing
        a large payload. Only a real file is asked; a failure changes nothing."""
        if nbytes < _RESERVE_FROM or not isinstance(self.raw, io.BufferedWriter | io.FileIO):
            return
        allocate = getattr(os, "posix_fallocate", None)
        if allocate is None:
            return
        with contextlib.suppress(OSError, ValueError):  # a filesystem without it: as before
            allocate(self.raw.fileno(), self.raw.tell(), nbytes)


def can_seek(out: BinaryIO) -> bool:
    try:
        return bool(out.seekable()) and out.tell() >= 0
    except (OSError, ValueError, AttributeError):
        return False


def read_exactly(stream: BinaryIO, size: int, key: str) -> bytes:
    data = stream.read(size)
    if len(data) < size:
        raise CorruptRecord(
            f"result record {key!r} is truncated (read {len(data)} of {size} header bytes)"
        )
    return data


def hash_stream(
    stream: BinaryIO, expected: int, hasher: Any, copy_to: IO[bytes] | None = None
) -> tuple[int, str]:
    """Hash (and optionally copy) the rest of `stream`, reading at most one byte past `expected`."""
    buffer = bytearray(min(CHUNK_SIZE, expected + 1))
    view = memoryview(buffer)
    size = 0
    readinto = getattr(stream, "readinto", None)
    while size <= expected:
        want = min(len(buffer), expected + 1 - size)
        if readinto is not None:
            got = readinto(view[:want])
        else:
            chunk = stream.read(want)
            got = len(chunk)
            view[:got] = chunk
        if not got:
            break
        hasher.update(view[:got])
        if copy_to is not None:
            copy_to.write(view[:got])
        size += got
    return size, checksum_string(hasher)


def read_into_memory(
    stream: BinaryIO, expected: int, hasher: Any
) -> tuple[memoryview, tuple[int, str]]:
    """Read the rest of `stream` into fresh private memory of `expected` bytes, hashing each
    chunk where it lands (one pass); reads one byte past `expected` to see padding.

    Anonymous private pages (``MAP_PRIVATE``): untouched until written, never shared with
    another process, not even a forked child.
    """
    import mmap

    memory: Any = bytearray()
    if expected:
        memory = mmap.mmap(-1, expected, flags=mmap.MAP_PRIVATE)
        if expected >= _HUGE_PAGES_FROM and hasattr(mmap, "MADV_HUGEPAGE"):
            # As numpy does for large arrays: 2 MiB pages fault in ~5x faster than 4 KiB ones.
            memory.madvise(mmap.MADV_HUGEPAGE)
    view = memoryview(memory)
    size = 0
    readinto = getattr(stream, "readinto", None)
    while size < expected:
        chunk = view[size : size + CHUNK_SIZE]
        if readinto is not None:
            got = readinto(chunk) or 0
        else:
            data = stream.read(len(chunk))
            got = len(data)
            chunk[:got] = data
        if not got:
            break
        hasher.update(chunk[:got])
        size += got
    if size == expected and stream.read(1):
        size += 1  # padded: `verify` says so
    return view, (size, checksum_string(hasher))


def verify(measured: tuple[int, str], header: RecordHeader) -> None:
    size, checksum = measured
    if size != header.payload_size:
        raise CorruptRecord(
            f"result record {header.key!r} is truncated or padded: payload has "
            f"{'more than ' if size > header.payload_size else ''}{size} bytes, "
            f"header announces {header.payload_size}"
        )
    if not hmac.compare_digest(checksum, header.checksum):
        raise CorruptRecord(
            f"result record {header.key!r} has a bad payload signature (checksum mismatch): "
            "the payload was altered or swapped after it was signed"
        )


def deserialize(serializer: Serializer, stream: BinaryIO | memoryview, header: RecordHeader) -> Any:
    try:
        if isinstance(stream, memoryview):
            return serializer.load_buffer(stream)
        return serializer.load(stream)
    except SerializationError as exc:
        raise CorruptRecord(
            f"result record {header.key!r} passed its signature check but cannot be "
            f"deserialized: {exc}"
        ) from None
