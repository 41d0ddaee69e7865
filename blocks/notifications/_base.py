"""`NotificationBlock`: the base of every notification block, with the retries within
``BLOCKS_NOTIFY_TIMEOUT`` that all of them share."""

from __future__ import annotations

import time
from abc import abstractmethod

from blocks import settings
from blocks.core._block import Block
from blocks.errors import NotificationError

NOTIFICATIONS_EXTRA = "pip install 'blocks[notifications]'"


class NotificationBlock(Block):
    """Base of the notification blocks: ``notify(body, subject=None)`` sends one message."""

    _block_is_abstract = True

    def notify(self, body: str, subject: str | None = None) -> None:
        """Send `body` (with `subject` as its title), retried while ``BLOCKS_NOTIFY_TIMEOUT``
        allows; `NotificationError` when it could not be delivered."""
        deadline = time.monotonic() + settings.notify_timeout()
        retries = settings.notify_retries()
        for attempt in range(retries + 1):
            try:
                self._send(body, subject, timeout=max(deadline - time.monotonic(), 0.05))
                return
            except NotificationError as exc:
                delay = 0.5 * 2**attempt
                if attempt == retries or not _retryable(exc):
                    raise
                if time.monotonic() + delay >= deadline:
                    raise NotificationError(
                        f"{exc} Gave up after {attempt + 1} attempt(s): no time left within "
                        f"BLOCKS_NOTIFY_TIMEOUT ({settings.notify_timeout():g} s)."
                    ) from None
                time.sleep(delay)

    async def anotify(self, body: str, subject: str | None = None) -> None:
        """`notify` for async code (runs in a worker thread; the loop is never blocked)."""
        import asyncio

        await asyncio.to_thread(self.notify, body, subject)

    @abstractmethod
    def _send(self, body: str, subject: str | None, *, timeout: float) -> None:
        """One attempt within `timeout` seconds; `NotificationError` if it failed."""

    def _label(self) -> str:
        return self.get_block_type_slug()


def _retryable(exc: NotificationError) -> bool:
    status = getattr(exc, "status_code", None)
    return status is None or status == 429 or status >= 500
