"""System blocks: `Secret`, `JSON`, `String` and `DateTime`.

Example:
    >>> Secret(value="s3cr3t").save("my-api-key")
    >>> Secret.load("my-api-key").get()
    's3cr3t'
    >>> Secret(value={"user": "etl", "password": "pw"}).save("db-login")
    >>> Secret.load("db-login").get()["user"]
    'etl'
    >>> Secret(value=["token-a", "token-b"]).save("rotating-tokens")
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import pydantic
from pydantic import SecretStr

from blocks.core._block import Block, SecretDict
from blocks.core._masking import note as note_secret
from blocks.core._references import SecretRef

SecretList = pydantic.Secret[list[Any]]
"""A list whose whole value is secret: masked in repr, encrypted at rest."""


class Secret(Block):
    """A secret string, dict or list, encrypted at rest; `.get()` returns the plain value.

    The value may be a `SecretRef` (``Secret(value=SecretRef("env:API_KEY"))``): `.get()` then
    reads it from where it points (see "Secrets by reference" in the README).
    """

    value: SecretStr | SecretDict | SecretList

    def get(self) -> Any:
        """The plain secret value (a str, a dict or a list); masked in run logs from now on."""
        value = self.value.get_secret_value()
        note_secret(value)
        return value


class JSON(Block):
    """Any JSON-compatible value."""

    _block_type_slug = "json"

    value: Any

    def get(self) -> Any:
        return self.value


class String(Block):
    """A plain (not secret) string."""

    value: str

    def get(self) -> str:
        return self.value


class DateTime(Block):
    """A date and time."""

    value: datetime

    def get(self) -> datetime:
        return self.value


__all__ = ["JSON", "DateTime", "Secret", "SecretRef", "String"]
