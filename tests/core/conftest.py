"""Fixtures shared by the registry tests in this folder."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from blocks.core._encryption import KeyManager


@pytest.fixture(params=["sqlite", "postgres"])
def backend(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """Each test that asks for it runs on SQLite, then on a throwaway PostgreSQL database."""
    if request.param == "postgres":
        monkeypatch.setenv("BLOCKS_REGISTRY_URL", request.getfixturevalue("postgres_db_url"))
    KeyManager._instances.clear()
    yield str(request.param)
