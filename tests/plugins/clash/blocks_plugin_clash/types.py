"""Defines ``demo-webhook`` too: the demo plugin already does."""

from __future__ import annotations

from blocks import Block


class OtherWebhook(Block):
    """Another package's webhook under the same slug."""

    _block_type_slug = "demo-webhook"

    url: str
