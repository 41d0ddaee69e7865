"""Shared fixtures: every test gets its own BLOCKS_HOME, registry and master key.

Real-server fixtures (LocalStack S3, the GCS emulator, PostgreSQL) live in `servers.py`.
"""

from __future__ import annotations

import base64
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

if (Path(__file__).parent / "servers.py").exists():  # until the server fixtures land
    from servers import *  # noqa: F403

from blocks.registry import Registry


@pytest.fixture(autouse=True)
def blocks_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A private BLOCKS_HOME with a SQLite registry and an env master key, per test."""
    home = tmp_path / "blocks-home"
    monkeypatch.setenv("BLOCKS_HOME", str(home))
    monkeypatch.delenv("BLOCKS_REGISTRY_URL", raising=False)
    monkeypatch.delenv("BLOCKS_RESULTS_STORAGE", raising=False)
    monkeypatch.setenv("BLOCKS_MASTER_KEY", base64.urlsafe_b64encode(os.urandom(32)).decode())
    monkeypatch.delenv("BLOCKS_KEY_SOURCE", raising=False)
    yield home
    Registry.dispose_all()
