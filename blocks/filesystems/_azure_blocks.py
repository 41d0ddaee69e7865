"""Streaming atomic writes to Azure Blob Storage: stage blocks as bytes arrive, commit once.

A large write becomes block-blob blocks (Put Block), a bounded number in flight at once, made
visible by one Put Block List at the end. Until that commit nothing is visible: a writer killed
mid-upload leaves only uncommitted blocks, which no reader or listing sees and Azure deletes
on its own (after a week). A write smaller than one block is one Put Blob.

The first block is kept in memory and staged last, so a writer may seek back into it and
rewrite bytes there (the result store fills in a record's header once the payload is written):
no spool file, no second pass over the payload.

Example:
    >>> writer = BlockWriter(lambda: blob_client, fs.loop, put_small=put, fail=fail)
    >>> writer.write(payload)
    >>> writer.commit()
"""

from __future__ import annotations

import asyncio
import io
import uuid
from collections.abc import Callable, Coroutine
from concurrent.futures import FIRST_COMPLETED, Future, wait
from typing import Any, NoReturn

#: Bytes per staged block (Azure allows up to 4000 MiB a block and 50,000 blocks a blob).
BLOCK_SIZE = 8 * 1024 * 1024
#: Blocks uploading at once; memory held is about (this + 2) blocks. 16 x 8 MiB was the fastest
#: of 4-16 x 4-8 MiB against raw adlfs on Azurite (tests/benchmarks/bench_azure.py).
MAX_IN_FLIGHT = 16

#: What adlfs writes on every blob it uploads (its directory markers say "true").
_METADATA = {"is_directory": "false"}


class BlockWriter(io.BufferedIOBase):
    """A binary writer that uploads to one blob in staged blocks and commits them at once.

    `client()` gives an async ``azure.storage.blob.aio.BlobClient`` driven on `loop` (adlfs's
    I/O loop, running in its own thread), asked for only when a block is staged: a write of
    one block never builds one (a client per write was a fifth of a 1 KB record's cost, measured
    by tests/benchmarks/bench_azure.py); `put_small(data, create_only)` writes a blob in one
    request (False: created only if absent, and a blob was there);
    `fail(exc)` raises the storage's error for a failed request. Seek anywhere in the first
    block (or to the end); writes before the end must stay inside the first block.
    """

    def __init__(
        self,
        client: Callable[[], Any],
        loop: asyncio.AbstractEventLoop,
        *,
        put_small: Callable[[bytes, bool], bool],
        fail: Callable[[BaseException], NoReturn],
        options: dict[str, Any] | None = None,
        block_size: int = BLOCK_SIZE,
        max_in_flight: int = MAX_IN_FLIGHT,
    ) -> None:
        super().__init__()
        self._make_client = client
        self._client: Any = None
        self._loop = loop
        self._put_small = put_small
        self._fail = fail
        self._options = options or {}
        self._block_size = block_size
        self._max_in_flight = max(1, max_in_flight)
        # Block ids unique to this upload: two writers of one blob never share a block.
        self._prefix = uuid.uuid4().hex[:16]
        self._head = bytearray()  # the first block: staged last (it may still change)
        self._tail = bytearray()  # the block being filled
        self._staged: list[str] = []  # ids of the blocks after the head, in order
        self._ready = False  # every block staged, the head included: only the commit is left
        self._pending: set[Future[Any]] = set()
        self._end = 0
        self._pos = 0

    # -- the file interface -------------------------------------------------------------------
    def writable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: self._end}[whence]
        target = base + offset
        if target != self._end and not 0 <= target <= len(self._head):
            raise io.UnsupportedOperation(
                "an Azure block upload can seek only within its first block or to its end"
            )
        self._pos = target
        return target

    def write(self, data: Any) -> int:
        view = memoryview(data).cast("B")
        size = view.nbytes
        if self._pos < self._end:  # rewriting bytes of the first block, still in memory
            if self._pos + size > len(self._head):
                raise io.UnsupportedOperation(
                    "an Azure block upload can rewrite only bytes of its first block"
                )
            self._head[self._pos : self._pos + size] = view
            self._pos += size
            return size
        done = 0
        if len(self._head) < self._block_size:
            done = min(size, self._block_size - len(self._head))
            self._head += view[:done]
        while done < size:
            if not self._tail and size - done >= self._block_size:
                # A whole block straight from the caller's buffer: one copy, not two.
                self._stage(bytes(view[done : done + self._block_size]))
                done += self._block_size
                continue
            take = min(size - done, self._block_size - len(self._tail))
            self._tail += view[done : done + take]
            done += take
            if len(self._tail) == self._block_size:
                self._stage(bytes(self._tail))
                self._tail.clear()
        self._end += size
        self._pos = self._end
        return size

    # -- publishing -----------------------------------------------------------------------------
    @property
    def resend_bytes(self) -> int:
        """What a refused create-only `commit` would upload again: the whole blob if it goes
        in one Put Blob; nothing if it goes as a block list (the blocks stay staged)."""
        return len(self._head) if not self._staged and not self._tail else 0

    def commit(self, create_only: bool = False) -> bool:
        """Make the blob visible with everything written: one Put Blob, or the last blocks
        staged and one Put Block List. `create_only`: only if no blob has the name (``If-None-
        Match: *``); False if one has (nothing changed; the blocks stay staged, so committing
        again without it publishes them over that blob)."""
        if not self._staged and not self._tail:
            return self._put_small(bytes(self._head), create_only)
        if not self._ready:
            if self._tail:
                self._stage(bytes(self._tail))
                self._tail.clear()
            head = self._block_id(0)
            self._start(self._blob().stage_block(head, bytes(self._head), **self._options))
            self._drain(0)
            self._ready = True
        from azure.core.exceptions import ResourceExistsError, ResourceModifiedError
        from azure.storage.blob import BlobBlock, BlockState

        ids = (self._block_id(0), *self._staged)
        blocks = [BlobBlock(i, BlockState.UNCOMMITTED) for i in ids]
        condition = {"if_none_match": "*"} if create_only else {}
        try:
            self._run(
                self._blob().commit_block_list(
                    blocks, metadata=_METADATA, **condition, **self._options
                )
            ).result()
        except (ResourceExistsError, ResourceModifiedError) as exc:
            if not create_only:
                self._fail(exc)
            return False
        except Exception as exc:
            self._fail(exc)
        return True

    def discard(self) -> None:
        """Give up: stop the uploads in flight and commit nothing (the staged blocks stay
        uncommitted, invisible, until Azure deletes them)."""
        for future in self._pending:
            future.cancel()
        self._pending.clear()

    def close(self) -> None:
        if not self.closed:
            self.discard()
            self._head = bytearray()
            self._tail = bytearray()
        super().close()

    # -- uploads in flight -----------------------------------------------------------------------
    def _block_id(self, index: int) -> str:
        return f"{self._prefix}{index:08d}"  # one length for every block, as Azure requires

    def _stage(self, block: bytes) -> None:
        self._drain(self._max_in_flight - 1)
        block_id = self._block_id(len(self._staged) + 1)
        self._staged.append(block_id)
        self._start(self._blob().stage_block(block_id, block, **self._options))

    def _blob(self) -> Any:
        if self._client is None:
            self._client = self._make_client()
        return self._client

    def _run(self, work: Coroutine[Any, Any, Any]) -> Future[Any]:
        return asyncio.run_coroutine_threadsafe(work, self._loop)

    def _start(self, work: Coroutine[Any, Any, Any]) -> None:
        self._pending.add(self._run(work))

    def _drain(self, room: int) -> None:
        """Wait until at most `room` uploads are in flight; the first failure is raised."""
        while len(self._pending) > room:
            done, self._pending = wait(self._pending, return_when=FIRST_COMPLETED)
            for future in done:
                try:
                    future.result()
                except Exception as exc:
                    self.discard()
                    self._fail(exc)


__all__ = ["BLOCK_SIZE", "MAX_IN_FLIGHT", "BlockWriter"]
