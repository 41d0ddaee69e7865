"""Shared fixtures: every test gets its own BLOCKS_HOME, registry and master key.

Real-server fixtures (LocalStack S3, the GCS emulator, PostgreSQL) live in `servers.py`.
"""

from __future__ import annotations

import base64
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from blocks.core._registry import Registry

# The server fixtures are a plugin module (tests/ is on sys.path as the rootdir of this conftest),
# so each fixture is registered under its own name rather than star-imported into this namespace.
pytest_plugins = ["servers"]


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
    # The masker is process-wide: one test's secrets must not mask words in the next one's logs.
    from blocks.core import _masking

    _masking.forget_all()


@pytest.fixture
def ambient_s3(
    s3_endpoint: Any, s3_bucket: Any, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> str:
    """Ambient AWS settings for the test server (the fixtures: BLOCKS_TEST_S3_ENDPOINT works),
    as `S3(bucket_path=...)` with no credentials finds them; returns a bucket path for
    examples. No ~/.aws file or other AWS_* variable leaks in."""
    for name in list(os.environ):
        if name.startswith("AWS_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-credentials"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-config"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.setenv("AWS_ENDPOINT_URL", s3_endpoint.endpoint_url)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", s3_endpoint.key)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", s3_endpoint.secret)
    monkeypatch.setenv("AWS_DEFAULT_REGION", s3_endpoint.region)
    bucket_path = f"{s3_bucket}/results"
    monkeypatch.setenv("EXAMPLE_S3_BUCKET_PATH", bucket_path)
    return bucket_path


@pytest.fixture(params=["sqlite", "postgres"])
def backend(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """Each test that asks for it runs on SQLite, then on a throwaway PostgreSQL database."""
    from blocks.core._encryption import KeyManager

    if request.param == "postgres":
        monkeypatch.setenv("BLOCKS_REGISTRY_URL", request.getfixturevalue("postgres_db_url"))
    KeyManager._instances.clear()
    yield str(request.param)
