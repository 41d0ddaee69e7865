"""Fixtures for the deployment tests: the run store on SQLite and on a real PostgreSQL
(``backend``, from tests/conftest.py)."""

from __future__ import annotations

import pytest

from blocks.deployments._store import RunStore


@pytest.fixture
def store(backend: str) -> RunStore:
    return RunStore.default()
