"""Settings read on hot paths (`settings.EnvStamp`) still see every change of the environment:
a variable set, changed or removed between two calls, and a replaced ``os.environ``.
"""

from __future__ import annotations

import base64
import os
import threading
from pathlib import Path

import pytest

from blocks import settings
from blocks.errors import ConfigurationError
from blocks.results import _persistence as persistence
from blocks.results import _signing as signing


def test_a_stamp_changes_exactly_when_a_watched_variable_does(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("BLOCKS_TEST_A", raising=False)
    stamp = settings.EnvStamp("BLOCKS_TEST_A", "BLOCKS_TEST_B")
    unset = stamp()
    assert stamp() == unset
    monkeypatch.setenv("BLOCKS_TEST_UNWATCHED", "x")
    assert stamp() == unset  # another variable: same stamp
    monkeypatch.setenv("BLOCKS_TEST_A", "one")
    one = stamp()
    assert one != unset
    os.environ["BLOCKS_TEST_A"] = "two"  # a plain assignment, not monkeypatch
    assert stamp() not in (unset, one)
    monkeypatch.setenv("BLOCKS_TEST_A", "one")
    assert stamp() == one
    monkeypatch.delenv("BLOCKS_TEST_A")
    assert stamp() == unset


def test_a_stamp_sees_a_replaced_environ(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BLOCKS_TEST_A", "real")
    stamp = settings.EnvStamp("BLOCKS_TEST_A")
    real = stamp()
    with monkeypatch.context() as patch:
        patch.setattr(os, "environ", {"BLOCKS_TEST_A": "fake"})
        assert stamp() == ("fake",)
        os.environ["BLOCKS_TEST_A"] = "changed"
        assert stamp() == ("changed",)
    assert stamp() == real


def test_stamps_from_many_threads_agree(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BLOCKS_TEST_A", "a")
    stamp = settings.EnvStamp("BLOCKS_TEST_A", "BLOCKS_TEST_B")
    expected = stamp()
    seen: list[tuple[object, ...]] = []

    def read() -> None:
        seen.extend(stamp() for _ in range(2000))

    threads = [threading.Thread(target=read) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    print(f"{len(seen)} stamps read by 8 threads")
    assert set(seen) == {expected}


def test_max_bytes_follows_the_variable_between_calls(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("BLOCKS_RESULTS_MAX_BYTES", raising=False)
    assert settings.results_max_bytes() == settings.DEFAULT_RESULTS_MAX_BYTES
    monkeypatch.setenv("BLOCKS_RESULTS_MAX_BYTES", "1000")
    assert settings.results_max_bytes() == 1000
    monkeypatch.setenv("BLOCKS_RESULTS_MAX_BYTES", "nonsense")
    for _ in range(2):  # a bad value raises every time, never remembered as good
        with pytest.raises(ConfigurationError, match="BLOCKS_RESULTS_MAX_BYTES"):
            settings.results_max_bytes()
    monkeypatch.setenv("BLOCKS_RESULTS_MAX_BYTES", "2000")
    assert settings.results_max_bytes() == 2000


def test_results_keys_follow_the_environment_between_calls(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    master = signing.results_keys()
    assert signing.results_keys() is master  # cached while nothing changed
    monkeypatch.setenv("BLOCKS_RESULTS_KEY", base64.urlsafe_b64encode(os.urandom(32)).decode())
    shared = signing.results_keys()
    assert shared.active.source == "env" and shared.active.key_id != master.active.key_id
    monkeypatch.setenv("BLOCKS_RESULTS_KEY", base64.urlsafe_b64encode(os.urandom(32)).decode())
    assert signing.results_keys().active.key_id != shared.active.key_id
    monkeypatch.delenv("BLOCKS_RESULTS_KEY")
    assert signing.results_keys().active.key_id == master.active.key_id


def test_resolved_stores_follow_the_environment_between_calls(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("BLOCKS_RESULTS_STORAGE", str(tmp_path / "one"))
    one = persistence.result_store(None, None)
    assert persistence.result_store(None, None) is one
    monkeypatch.setenv("BLOCKS_RESULTS_STORAGE", str(tmp_path / "two"))
    two = persistence.result_store(None, None)
    assert two.storage.describe() == f"file://{tmp_path / 'two'}"
    monkeypatch.setenv("BLOCKS_RESULTS_SERIALIZER", "json")
    assert persistence.result_store(None, None).serializer.to_spec()["type"] == "json"
    monkeypatch.delenv("BLOCKS_RESULTS_SERIALIZER")
    monkeypatch.setenv("BLOCKS_RESULTS_STORAGE", str(tmp_path / "one"))
    assert persistence.result_store(None, None) is one
