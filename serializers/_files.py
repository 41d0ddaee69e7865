"""File-object adapters shared by the data serializers (Parquet, npy): internal.

Our store hands a serializer a write-only sink (it hashes and counts what passes) and, on
reading, a file positioned at the payload, which runs to the end of the file. Libraries that
seek (pyarrow's Parquet reader reads the footer first) need offsets counted from the payload's
first byte: `Window` gives them that view without copying the payload.
"""

from __future__ import annotations

import contextlib
import io
import mmap
import os
from typing import Any, BinaryIO


class CountingSink(io.RawIOBase):
    """A write-only file that passes writes to `file` and answers ``tell()`` itself.

    The store's sink cannot seek or tell; pyarrow asks ``tell()`` to record column offsets.
    """

    def __init__(self, file: BinaryIO) -> None:
        super().__init__()
        self._file = file
        self.size = 0

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        view = memoryview(data).cast("B")
        self._file.write(view)
        self.size += view.nbytes
        return view.nbytes

    def tell(self) -> int:
        return self.size

    def close(self) -> None:
        # The sink belongs to the caller: pyarrow closing its wrapper must not close it.
        super().close()


class Window(io.RawIOBase):
    """A read-only, seekable view of `size` bytes of `file` from offset `start` (by default,
    from its current position to its end)."""

    def __init__(self, file: BinaryIO, start: int | None = None, size: int | None = None) -> None:
        super().__init__()
        self._file = file
        self._start = file.tell() if start is None else start
        if size is None:
            size = file.seek(0, os.SEEK_END) - self._start
            file.seek(self._start)
        self._size = size
        self._pos = 0

    @property
    def size(self) -> int:
        return self._size

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        base = {os.SEEK_SET: 0, os.SEEK_CUR: self._pos, os.SEEK_END: self._size}[whence]
        self._pos = max(0, base + offset)
        return self._pos

    def readinto(self, buffer: Any) -> int:
        out = memoryview(buffer).cast("B")
        want = max(0, min(len(out), self._size - self._pos))
        if not want:
            return 0
        self._file.seek(self._start + self._pos)
        got = self._file.readinto(out[:want])  # type: ignore[attr-defined]
        got = got or 0
        self._pos += got
        return int(got)

    def read(self, size: int = -1) -> bytes:
        if size is None or size < 0:
            size = self._size - self._pos
        size = max(0, min(size, self._size - self._pos))
        self._file.seek(self._start + self._pos)
        data = self._file.read(size)
        self._pos += len(data)
        return data

    def close(self) -> None:
        # The file belongs to the caller.
        super().close()


def discard(buffer: memoryview, start: int, end: int) -> int:
    """Give the whole memory pages inside ``buffer[start:end]`` back to the system; return
    how many bytes were given back.

    For a payload decoded in parts (`Serializer.load_buffer`): once a part is decoded its
    bytes are never read again, so its pages need not stay resident beside the decoded
    value. The caller never reads a discarded range again: what its pages hold afterwards (zeros,
    in the private anonymous mapping a result store reads a verified payload into) is never
    decoded. Only a buffer that spans a whole `mmap.mmap` is released; any other is left
    alone (0).
    """
    owner = buffer.obj
    if (
        not isinstance(owner, mmap.mmap)
        or buffer.nbytes != len(owner)
        or not hasattr(owner, "madvise")
        or not hasattr(mmap, "MADV_DONTNEED")
    ):
        return 0
    page = mmap.PAGESIZE
    first = -(-max(0, start) // page) * page
    last = min(end, len(owner)) // page * page
    if last <= first:
        return 0
    with contextlib.suppress(OSError, ValueError):
        owner.madvise(mmap.MADV_DONTNEED, first, last - first)
        return last - first
    return 0
