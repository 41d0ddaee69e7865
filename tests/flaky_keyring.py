"""A real keyring backend (keyrings.alt's file-based PlaintextKeyring) that fails at random.

Used by the secrets tests through ``PYTHON_KEYRING_BACKEND=flaky_keyring.FlakyKeyring``: a
keyring that is sometimes locked or busy must never make blocks think there is no key.
``FLAKY_KEYRING_RATE`` (default 0.3) is the share of calls that raise.
"""

from __future__ import annotations

import os
import random

from keyrings.alt.file import PlaintextKeyring


class FlakyKeyring(PlaintextKeyring):  # type: ignore[misc]
    """PlaintextKeyring whose reads and writes raise now and then, as a busy keyring does."""

    priority = 1

    def _maybe_fail(self) -> None:
        if random.random() < float(os.environ.get("FLAKY_KEYRING_RATE", "0.3")):
            raise OSError("keyring busy (injected)")

    def get_password(self, service: str, username: str) -> str | None:
        self._maybe_fail()
        return super().get_password(service, username)  # type: ignore[no-any-return]

    def set_password(self, service: str, username: str, password: str) -> None:
        self._maybe_fail()
        super().set_password(service, username, password)
