"""Secrets at rest: key sources (env, a real keyring backend, key file), tampering, rotation."""

from __future__ import annotations

import base64
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from blocks.core import _encryption as encryption
from blocks.core._encryption import (
    KeyManager,
    Keyset,
    format_keys,
    generate_key,
    key_id,
    parse_keys,
)
from blocks.core._registry import Registry
from blocks.core._rotation import rotate_master_key
from blocks.errors import ConfigurationError, DecryptionFailed
from blocks.system import Secret


def fresh_managers() -> None:
    """Forget cached keysets, as a new process would."""
    KeyManager._instances.clear()


@pytest.fixture
def file_keys(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("BLOCKS_MASTER_KEY")
    monkeypatch.setenv("BLOCKS_KEY_SOURCE", "file")
    fresh_managers()


@pytest.fixture
def keyring_keys(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[Path]:
    """keyrings.alt's file-based PlaintextKeyring: a real backend, kept under tmp_path."""
    import keyring
    from keyrings.alt.file import PlaintextKeyring

    monkeypatch.delenv("BLOCKS_MASTER_KEY")
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    previous = keyring.get_keyring()
    backend = PlaintextKeyring()
    keyring.set_keyring(backend)
    fresh_managers()
    yield Path(backend.file_path)
    keyring.set_keyring(previous)
    fresh_managers()


def test_tokens_name_their_key_and_round_trip() -> None:
    keys = Keyset([generate_key()], "test")
    token = keys.encrypt(b"hello", aad=b"where")
    assert token.startswith(f"bk1:{keys.active_id}:")
    assert keys.decrypt(token, aad=b"where") == b"hello"
    assert b"hello" not in token.encode()


def test_tampered_or_moved_ciphertext_is_refused() -> None:
    keys = Keyset([generate_key()], "test")
    token = keys.encrypt(b"hello", aad=b"secret/a#value")
    with pytest.raises(DecryptionFailed, match="altered or moved"):
        keys.decrypt(token, aad=b"secret/b#value")
    body = bytearray(base64.urlsafe_b64decode(token.split(":", 2)[2]))
    body[-1] ^= 1
    forged = token.rsplit(":", 1)[0] + ":" + base64.urlsafe_b64encode(bytes(body)).decode()
    with pytest.raises(DecryptionFailed):
        keys.decrypt(forged, aad=b"secret/a#value")


def test_unknown_key_id_error_names_block_and_key() -> None:
    old = Keyset([generate_key()], "old")
    new = Keyset([generate_key()], "BLOCKS_MASTER_KEY")
    token = old.encrypt(b"x", aad=b"a")
    with pytest.raises(DecryptionFailed) as info:
        new.decrypt(token, aad=b"a", what="field 'value' of secret/k")
    assert old.active_id in str(info.value) and "secret/k" in str(info.value)


def test_bad_master_key_setting_is_a_clear_error_without_the_key() -> None:
    with pytest.raises(ConfigurationError, match="not 32 bytes") as info:
        parse_keys("tooshort-secretish", origin="BLOCKS_MASTER_KEY")
    assert "tooshort" not in str(info.value)


def test_env_key_is_used(monkeypatch: pytest.MonkeyPatch) -> None:
    key = generate_key()
    monkeypatch.setenv("BLOCKS_MASTER_KEY", format_keys([key]))
    fresh_managers()
    Secret(value="v").save("k")
    row = Registry.default().get_document("secret", "k")
    assert row is not None and row.secrets["value"].split(":")[1] == key_id(key)


def test_key_file_is_created_private_and_reused(file_keys: None, blocks_home: Path) -> None:
    Secret(value="v").save("k")
    key_file = blocks_home / "master.key"
    assert key_file.stat().st_mode & 0o777 == 0o600
    first = key_file.read_text()
    fresh_managers()
    assert Secret.load("k").get() == "v"
    assert key_file.read_text() == first


def test_real_keyring_backend_holds_the_key(keyring_keys: Path, blocks_home: Path) -> None:
    Secret(value="kept-in-keyring").save("k")
    assert keyring_keys.exists(), "the keyring backend wrote its file"
    assert not (blocks_home / "master.key").exists()
    fresh_managers()
    assert Secret.load("k").get() == "kept-in-keyring"
    manager = KeyManager.for_registry(Registry.default().url)
    assert "keyring" in manager.keyset().source


def test_rotation_reencrypts_everything_with_a_key_file(file_keys: None) -> None:
    for i in range(5):
        Secret(value=f"value-{i}").save(f"s{i}")
    before = Registry.default().get_document("secret", "s0")
    report = rotate_master_key()
    assert report.reencrypted == 5 and report.retired
    fresh_managers()
    assert [Secret.load(f"s{i}").get() for i in range(5)] == [f"value-{i}" for i in range(5)]
    after = Registry.default().get_document("secret", "s0")
    assert before is not None and after is not None
    assert before.secrets["value"] != after.secrets["value"]
    assert after.secrets["value"].split(":")[1] == report.new_key_id
    assert report.new_key_id not in report.old_key_ids


def test_rotation_with_the_keyring(keyring_keys: Path) -> None:
    Secret(value={"a": "b"}).save("d")
    report = rotate_master_key()
    fresh_managers()
    assert Secret.load("d").get() == {"a": "b"}
    assert KeyManager.for_registry(Registry.default().url).keyset().active_id == report.new_key_id


def test_rotation_with_env_keys_uses_the_first(monkeypatch: pytest.MonkeyPatch) -> None:
    old = generate_key()
    monkeypatch.setenv("BLOCKS_MASTER_KEY", format_keys([old]))
    fresh_managers()
    Secret(value="v").save("k")
    new = generate_key()
    monkeypatch.setenv("BLOCKS_MASTER_KEY", format_keys([new, old]))
    fresh_managers()
    report = rotate_master_key()
    assert report.new_key_id == key_id(new) and report.reencrypted == 1
    monkeypatch.setenv("BLOCKS_MASTER_KEY", format_keys([new]))
    fresh_managers()
    assert Secret.load("k").get() == "v"


@pytest.mark.parametrize("fail_at_store", [1, 2, 3])
def test_interrupted_rotation_loses_nothing(
    file_keys: None, monkeypatch: pytest.MonkeyPatch, fail_at_store: int
) -> None:
    for i in range(3):
        Secret(value=f"v{i}").save(f"s{i}")
    calls = {"n": 0}
    real_store = KeyManager.store

    def failing_store(self: KeyManager, keys: list[bytes]) -> Keyset:
        calls["n"] += 1
        if calls["n"] == fail_at_store:
            raise KeyboardInterrupt("interrupted")
        return real_store(self, keys)

    monkeypatch.setattr(KeyManager, "store", failing_store)
    with pytest.raises(KeyboardInterrupt):
        rotate_master_key()
    monkeypatch.setattr(KeyManager, "store", real_store)
    fresh_managers()
    assert [Secret.load(f"s{i}").get() for i in range(3)] == ["v0", "v1", "v2"]
    rotate_master_key()  # and a later rotation completes
    fresh_managers()
    assert [Secret.load(f"s{i}").get() for i in range(3)] == ["v0", "v1", "v2"]


def test_rotation_killed_mid_flight_loses_nothing(file_keys: None, blocks_home: Path) -> None:
    for i in range(50):
        Secret(value=f"v{i}").save(f"s{i}")
    script = (
        "from blocks.core._rotation import rotate_master_key\n"
        "from blocks.core._encryption import KeyManager\n"
        "print('ready', flush=True)\n"
        "while True:\n"
        "    KeyManager._instances.clear()\n"
        "    rotate_master_key()\n"
    )
    env = {**os.environ, "BLOCKS_KEY_SOURCE": "file"}
    for delay in (0.05, 0.2, 0.45):
        proc = subprocess.Popen(
            [sys.executable, "-c", script], env=env, stdout=subprocess.PIPE, text=True
        )
        assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
        time.sleep(delay)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        fresh_managers()
        Registry.dispose_all()
        assert [Secret.load(f"s{i}").get() for i in range(50)] == [f"v{i}" for i in range(50)]


def test_master_key_is_not_in_the_registry(file_keys: None, blocks_home: Path) -> None:
    Secret(value="v").save("k")
    Registry.dispose_all()
    key_text = (blocks_home / "master.key").read_text().strip()
    raw = (blocks_home / "registry.db").read_bytes()
    assert key_text.encode() not in raw
    assert base64.urlsafe_b64decode(key_text) not in raw


def test_key_ids_do_not_reveal_the_key() -> None:
    key = generate_key()
    assert key_id(key) not in base64.urlsafe_b64encode(key).decode()
    assert len(key_id(key)) == 16
    assert encryption.KEY_BYTES == 32


def test_a_long_lived_process_follows_a_rotation_done_elsewhere(file_keys: None) -> None:
    Secret(value="before").save("a")
    assert Secret.load("a").get() == "before"  # this process now holds the old keyset
    rotate = (
        "from blocks.core._rotation import rotate_master_key; print(rotate_master_key().retired)"
    )
    done = subprocess.run(
        [sys.executable, "-c", rotate], env=os.environ.copy(), capture_output=True, text=True
    )
    assert done.stdout.strip() == "True", done.stderr
    assert Secret.load("a").get() == "before"  # re-encrypted elsewhere: the key is re-read
    Secret(value="after").save("b")  # must use the new key, not the retired one
    fresh_managers()
    assert (Secret.load("a").get(), Secret.load("b").get()) == ("before", "after")
