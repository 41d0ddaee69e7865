"""`Payload`: a record's verified payload as a read-only binary file, with its header.

Returned by `ResultStore.open_payload`; offsets count from the payload's first byte, so a
reader that seeks (pyarrow reads a Parquet footer first) sees a plain file.
"""

from __future__ import annotations

import io
import os
from typing import Any, BinaryIO

from blocks.results._record import RecordHeader


class Payload(io.RawIOBase):
    """The payload bytes of one record, verified against its signature before any is read.

    A context manager; closing it closes the storage stream beneath.

    Example:
        >>> with store.open_payload("etl/sales") as payload:
        ...     payload.header.serializer["type"], payload.size
        ('parquet', 5832)
    """

    def __init__(self, header: RecordHeader, stream: BinaryIO, start: int) -> None:
        super().__init__()
        self.header = header
        self._stream = stream
        self._start = start
        self._pos = 0

    @property
    def size(self) -> int:
        """Bytes in the payload (the header's ``payload_size``, which verified)."""
        return self.header.payload_size

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        base = {os.SEEK_SET: 0, os.SEEK_CUR: self._pos, os.SEEK_END: self.size}[whence]
        self._pos = max(0, base + offset)
        return self._pos

    def readinto(self, buffer: Any) -> int:
        out = memoryview(buffer).cast("B")
        want = max(0, min(len(out), self.size - self._pos))
        if not want:
            return 0
        self._stream.seek(self._start + self._pos)
        got = self._stream.readinto(out[:want]) or 0  # type: ignore[attr-defined]
        self._pos += got
        return int(got)

    def close(self) -> None:
        if not self.closed:
            self._stream.close()
        super().close()
