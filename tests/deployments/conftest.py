"""Fixtures for the deployment tests: the run store on SQLite and on a real PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from blocks.core._encryption import KeyManager
from blocks.deployments._store import RunStore


@pytest.fixture(params=["sqlite", "postgres"])
def backend(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """Each test that asks for it runs on SQLite, then on a throwaway PostgreSQL database
    (as tests/core/conftest.py's fixture of the same name)."""
    if request.param == "postgres":
        monkeypatch.setenv("BLOCKS_REGISTRY_URL", request.getfixturevalue("postgres_db_url"))
    KeyManager._instances.clear()
    yield str(request.param)


@pytest.fixture
def store(backend: str) -> RunStore:
    return RunStore.default()
