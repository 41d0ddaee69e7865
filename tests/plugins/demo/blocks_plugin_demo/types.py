"""The plugin's block type, found through its ``blocks.types`` entry point."""

from __future__ import annotations

from pydantic import SecretStr

from blocks import Block


class DemoWebhook(Block):
    """A webhook URL and its token, from the demo plugin."""

    url: str
    token: SecretStr
