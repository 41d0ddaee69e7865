"""Payload bytes in motion: sign while writing, verify before decoding, copy nothing big.

Internal helpers of `ResultStore`; every function works on plain binary file objects. The
payload tag (keyed BLAKE3) is computed in the same pass as the write or the read; for large
buffers the hashing of one chunk runs on a helper thread while the next chunk is written or
read (BLAKE3 and file I/O both release the GIL), so signing costs little wall time.
"""

from __future__ import annotations

import hmac
import io
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from typing import IO, TYPE_CHECKING, Any, BinaryIO

from blocks.errors import CorruptRecord
from blocks.results.record import RecordHeader, checksum_string
from serializers.errors import SerializationError

if TYPE_CHECKING:
    from serializers.base import Serializer

#: Chunk used to hash and copy payloads: big enough to run at memory speed, small to hold.
CHUNK_SIZE = 1024 * 1024
#: Writes and reads at least this big hash on a helper thread, overlapped with the I/O.
OVERLAP_MIN = 8 * 1024 * 1024
_OVERLAP_CHUNK = 4 * 1024 * 1024
#: Payloads up to this size are staged in memory when the storage cannot seek; larger spill
#: to a temporary file.
SPOOL_MAX_SIZE = 16 * 1024 * 1024

_hash_pool: ThreadPoolExecutor | None = None
_pool_lock = threading.Lock()


def _pool() -> ThreadPoolExecutor:
    global _hash_pool
    if _hash_pool is None:
        with _pool_lock:
            if _hash_pool is None:
                _hash_pool = ThreadPoolExecutor(2, thread_name_prefix="blocks-hash")
    return _hash_pool


class HashingWriter:
    """Passes writes through while hashing and counting them; never copies the data."""

    __slots__ = ("hasher", "raw", "size")

    def __init__(self, raw: IO[bytes], hasher: Any) -> None:
        self.raw = raw
        self.hasher = hasher
        self.size = 0

    def write(self, data: Any) -> int:
        view = memoryview(data).cast("B")
        n = view.nbytes
        if n < OVERLAP_MIN:
            self.hasher.update(view)
            self.raw.write(view)
        else:
            # Hash chunk i on the helper thread while chunk i is written; updates stay in order.
            pending: Future[Any] | None = None
            try:
                for start in range(0, n, _OVERLAP_CHUNK):
                    chunk = view[start : start + _OVERLAP_CHUNK]
                    if pending is not None:
                        pending.result()
                    pending = _pool().submit(self.hasher.update, chunk)
                    self.raw.write(chunk)
            finally:
                if pending is not None:
                    pending.result()
        self.size += n
        return n


def can_seek(out: BinaryIO) -> bool:
    try:
        return bool(out.seekable()) and out.tell() >= 0
    except (OSError, ValueError, AttributeError):
        return False


def is_stable(stream: BinaryIO) -> bool:
    """Whether re-reading `stream` gives the same bytes: an OS file (an atomic rename
    replaces the name, not the open file) or an in-memory buffer."""
    if isinstance(stream, io.BytesIO):
        return True
    try:
        stream.fileno()
    except (OSError, ValueError, AttributeError):
        return False
    return True


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
    """Hash (and optionally copy) the rest of `stream`, reading at most one byte past `expected`.

    Two buffers alternate: one is hashed on the helper thread while the next is read.
    """
    overlap = expected >= OVERLAP_MIN
    size_of = _OVERLAP_CHUNK if overlap else CHUNK_SIZE
    buffers = [bytearray(min(size_of, expected + 1)) for _ in range(2 if overlap else 1)]
    views = [memoryview(b) for b in buffers]
    size = 0
    turn = 0
    pending: Future[Any] | None = None
    readinto = getattr(stream, "readinto", None)
    try:
        while size <= expected:
            view = views[turn]
            want = min(len(view), expected + 1 - size)
            if readinto is not None:
                got = readinto(view[:want])
            else:
                chunk = stream.read(want)
                got = len(chunk)
                view[:got] = chunk
            if not got:
                break
            if copy_to is not None:
                copy_to.write(view[:got])
            if overlap:
                if pending is not None:
                    pending.result()
                pending = _pool().submit(hasher.update, view[:got])
                turn = 1 - turn
            else:
                hasher.update(view[:got])
            size += got
    finally:
        if pending is not None:
            pending.result()
    return size, checksum_string(hasher)


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


def deserialize(serializer: Serializer, stream: BinaryIO, header: RecordHeader) -> Any:
    try:
        return serializer.load(stream)
    except SerializationError as exc:
        raise CorruptRecord(
            f"result record {header.key!r} passed its signature check but cannot be "
            f"deserialized: {exc}"
        ) from None
