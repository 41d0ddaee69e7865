"""`Payload`: a record's verified payload as a read-only binary file, with its header.

Returned by `ResultStore.open_payload`; offsets count from the payload's first byte, so a
reader that seeks (pyarrow reads a Parquet footer first) sees a plain file.
"""

from __future__ import annotations

from typing import BinaryIO

from blocks.results._record import RecordHeader
from serializers._files import Window


class Payload(Window):
    """The payload bytes of one record, verified against its signature before any is read.

    A context manager; closing it closes the storage stream beneath.

    Example:
        >>> with store.open_payload("etl/sales") as payload:
        ...     payload.header.serializer["type"], payload.size
        ('parquet', 5832)
    """

    def __init__(self, header: RecordHeader, stream: BinaryIO, start: int) -> None:
        # The size is the header's ``payload_size``, which verified.
        super().__init__(stream, start, header.payload_size)
        self.header = header

    def close(self) -> None:
        if not self.closed:
            self._file.close()
        super().close()
