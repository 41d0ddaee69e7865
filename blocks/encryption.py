"""Encryption of secret fields at rest, and where the master key lives.

Secrets are sealed with AES-256-GCM (authenticated: a wrong key or a tampered byte is an error,
never garbage). Each token names the id of the key that sealed it, so several keys can coexist
while `block key rotate` re-encrypts everything under a new one.

A *keyset* is an ordered list of 32-byte keys, the first one active; it is written as
comma-separated url-safe base64. It comes from the first key source that has one:

=========  ==============================================  =========
source     where                                            writable
=========  ==============================================  =========
env        ``BLOCKS_MASTER_KEY``                            no
keyring    the OS keyring (``keyring``), if a backend works  yes
file       ``$BLOCKS_HOME/master.key``, mode 0600           yes
=========  ==============================================  =========

When none has a key, one is created in the first writable source that works.

Example:
    >>> keys = KeyManager.for_registry("sqlite:///registry.db").keyset()
    >>> token = keys.encrypt(b"s3cr3t", aad=b"secret/my-key#value")
    >>> keys.decrypt(token, aad=b"secret/my-key#value")
    b's3cr3t'
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
import tempfile
import threading
from abc import ABC, abstractmethod
from collections.abc import Sequence
from pathlib import Path
from typing import ClassVar

from blocks import settings
from blocks.errors import ConfigurationError, DecryptionFailed, KeyManagementError

TOKEN_PREFIX = "bk1"
KEY_BYTES = 32
NONCE_BYTES = 12
KEYRING_SERVICE = "blocks"


def generate_key() -> bytes:
    """A fresh random 256-bit key."""
    return os.urandom(KEY_BYTES)


def key_id(key: bytes) -> str:
    """A short public id of a key (a hash prefix; reveals nothing usable about the key)."""
    return hashlib.sha256(b"blocks-key-id:" + key).hexdigest()[:16]


def format_keys(keys: Sequence[bytes]) -> str:
    """Write keys as comma-separated url-safe base64, the active key first."""
    return ",".join(base64.urlsafe_b64encode(key).decode() for key in keys)


def parse_keys(text: str, *, origin: str) -> tuple[bytes, ...]:
    """Read keys written by `format_keys`; the message never repeats the key material."""
    keys: list[bytes] = []
    for position, part in enumerate(p.strip() for p in text.split(",")):
        if not part:
            continue
        try:
            key = base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))
        except (binascii.Error, ValueError):
            key = b""
        if len(key) != KEY_BYTES:
            raise ConfigurationError(
                f"Master key #{position + 1} from {origin} is not {KEY_BYTES} bytes of url-safe "
                "base64. Generate one with `block key generate`."
            )
        keys.append(key)
    if not keys:
        raise ConfigurationError(f"The master key from {origin} is empty.")
    return tuple(keys)


class Keyset:
    """Keys able to decrypt, the first of which encrypts."""

    def __init__(self, keys: Sequence[bytes], source: str) -> None:
        from cryptography.hazmat.primitives.ciphers.aead import AESGCM

        if not keys:
            raise KeyManagementError("A keyset needs at least one key.")
        self.keys = tuple(keys)
        self.source = source
        self._ciphers = {key_id(k): AESGCM(k) for k in self.keys}
        self.active_id = key_id(self.keys[0])

    @property
    def ids(self) -> list[str]:
        return list(self._ciphers)

    def encrypt(self, plaintext: bytes, *, aad: bytes) -> str:
        """Seal `plaintext` under the active key, bound to `aad` (where it is stored)."""
        nonce = os.urandom(NONCE_BYTES)
        sealed = self._ciphers[self.active_id].encrypt(nonce, plaintext, aad)
        body = base64.urlsafe_b64encode(nonce + sealed).decode()
        return f"{TOKEN_PREFIX}:{self.active_id}:{body}"

    def decrypt(self, token: str, *, aad: bytes, what: str = "a secret") -> bytes:
        """Open a token made by `encrypt`; `DecryptionFailed` names `what` and the key id."""
        from cryptography.exceptions import InvalidTag

        _, kid, body = token_parts(token, what=what)
        cipher = self._ciphers.get(kid)
        if cipher is None:
            raise DecryptionFailed(
                f"Cannot decrypt {what}: it was encrypted with key {kid}, which is not in the "
                f"master key from {self.source} (keys: {', '.join(self.ids)}). Set "
                "BLOCKS_MASTER_KEY to the key that saved it, or re-create the secret."
            )
        raw = base64.urlsafe_b64decode(body)
        try:
            return cipher.decrypt(raw[:NONCE_BYTES], raw[NONCE_BYTES:], aad)
        except InvalidTag:
            raise DecryptionFailed(
                f"Cannot decrypt {what} with key {kid}: the stored data was altered or moved "
                "from another block. Re-create the secret."
            ) from None

    def uses_active_key(self, token: str) -> bool:
        return token_parts(token, what="a secret")[1] == self.active_id


def token_parts(token: str, *, what: str) -> tuple[str, str, str]:
    """Split a token into (prefix, key id, body), or raise `DecryptionFailed`."""
    parts = token.split(":", 2)
    if len(parts) != 3 or parts[0] != TOKEN_PREFIX:
        raise DecryptionFailed(f"Cannot decrypt {what}: the stored value is not a blocks token.")
    return parts[0], parts[1], parts[2]


# -- key sources ---------------------------------------------------------------------------


class KeySource(ABC):
    """A place a keyset may live. Sources are asked in order; the first with a key wins."""

    name: ClassVar[str]
    writable: ClassVar[bool] = True

    @abstractmethod
    def available(self) -> bool:
        """Whether this source can serve on this machine right now."""

    @abstractmethod
    def read(self) -> str | None:
        """The stored keyset text, or None."""

    def write(self, text: str) -> None:
        raise KeyManagementError(f"The {self.name} key source is read-only.")

    def describe(self) -> str:
        return self.name


class EnvKeySource(KeySource):
    """``BLOCKS_MASTER_KEY``: for CI, containers and teams sharing a PostgreSQL registry."""

    name = "env"
    writable = False

    def available(self) -> bool:
        return settings.master_keys() is not None

    def read(self) -> str | None:
        return settings.master_keys()

    def describe(self) -> str:
        return "BLOCKS_MASTER_KEY"


class KeyringKeySource(KeySource):
    """The OS keyring through `keyring`; one entry per registry."""

    name = "keyring"

    def __init__(self, username: str) -> None:
        self.username = username

    def available(self) -> bool:
        try:
            import keyring
            from keyring.backends import fail
        except Exception:
            return False
        try:
            backend = keyring.get_keyring()
        except Exception:
            return False
        return not isinstance(backend, fail.Keyring) and float(getattr(backend, "priority", 0)) > 0

    def read(self) -> str | None:
        import keyring

        try:
            return keyring.get_password(KEYRING_SERVICE, self.username)
        except Exception as exc:
            raise KeyManagementError(f"The OS keyring could not be read: {exc}") from None

    def write(self, text: str) -> None:
        import keyring

        try:
            keyring.set_password(KEYRING_SERVICE, self.username, text)
        except Exception as exc:
            raise KeyManagementError(f"The OS keyring could not be written: {exc}") from None

    def describe(self) -> str:
        return f"the OS keyring ({KEYRING_SERVICE}/{self.username})"


class FileKeySource(KeySource):
    """``$BLOCKS_HOME/master.key``, created with mode 0600, replaced atomically."""

    name = "file"

    def __init__(self, path: Path) -> None:
        self.path = path

    def available(self) -> bool:
        return True

    def read(self) -> str | None:
        try:
            return self.path.read_text().strip() or None
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise KeyManagementError(f"Cannot read the key file {self.path}: {exc}") from None

    def write(self, text: str) -> None:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=".master.key.")
            try:
                os.fchmod(fd, 0o600)
                with os.fdopen(fd, "w") as handle:
                    handle.write(text + "\n")
                    handle.flush()
                    os.fsync(handle.fileno())
                os.replace(tmp, self.path)
            except BaseException:
                Path(tmp).unlink(missing_ok=True)
                raise
        except OSError as exc:
            raise KeyManagementError(f"Cannot write the key file {self.path}: {exc}") from None

    def describe(self) -> str:
        return str(self.path)


class KeyManager:
    """Finds, creates and rotates the keyset that protects one registry's secrets."""

    _instances: ClassVar[dict[tuple[str, str, str, str], KeyManager]] = {}
    _lock = threading.Lock()

    def __init__(self, registry_url: str) -> None:
        self.registry_url = registry_url
        username = "master-key:" + hashlib.sha256(registry_url.encode()).hexdigest()[:16]
        every: dict[str, KeySource] = {
            "env": EnvKeySource(),
            "keyring": KeyringKeySource(username),
            "file": FileKeySource(settings.blocks_home() / "master.key"),
        }
        choice = settings.key_source()
        if choice == "auto":
            self.sources = list(every.values())
        elif choice in every:
            self.sources = [every[choice]]
        else:
            raise ConfigurationError(
                f"BLOCKS_KEY_SOURCE={choice!r} is not one of auto, env, keyring, file."
            )
        self._keyset: Keyset | None = None
        self._env_value = settings.master_keys()

    @classmethod
    def for_registry(cls, registry_url: str) -> KeyManager:
        """The manager for a registry, shared in this process while settings stay the same."""
        ident = (
            registry_url,
            settings.master_keys() or "",
            settings.key_source(),
            str(settings.blocks_home()),
        )
        manager = cls._instances.get(ident)
        if manager is None:
            with cls._lock:
                manager = cls._instances.setdefault(ident, cls(registry_url))
        return manager

    def keyset(self, *, create: bool = True) -> Keyset:
        """The current keyset, created (and stored) on first use when no source has one."""
        if self._keyset is not None:
            return self._keyset
        with self._lock:
            if self._keyset is None:
                self._keyset = self._find() or (self._create() if create else None)
            if self._keyset is None:
                raise KeyManagementError(
                    "No master key found. Set BLOCKS_MASTER_KEY, or save a secret to create one."
                )
            return self._keyset

    def _find(self) -> Keyset | None:
        for source in self.sources:
            if source.name != "file" and not source.available():
                continue
            text = source.read()
            if text:
                return Keyset(parse_keys(text, origin=source.describe()), source.describe())
        return None

    def _create(self) -> Keyset:
        source = self.writable_source()
        key = generate_key()
        source.write(format_keys([key]))
        return Keyset([key], source.describe())

    def writable_source(self) -> KeySource:
        """Where a new or rotated keyset is stored."""
        for source in self.sources:
            if source.writable and source.available():
                return source
        raise KeyManagementError(
            "No writable key source: BLOCKS_KEY_SOURCE=env needs BLOCKS_MASTER_KEY to be set."
        )

    def source_of_current(self) -> KeySource:
        """The source the current keyset was read from."""
        current = self.keyset()
        for source in self.sources:
            if source.describe() == current.source:
                return source
        raise KeyManagementError("The key source changed while running; retry.")

    def store(self, keys: Sequence[bytes]) -> Keyset:
        """Persist `keys` (active first) in the current source and use them from now on."""
        source = self.source_of_current()
        source.write(format_keys(keys))
        self._keyset = Keyset(keys, source.describe())
        return self._keyset

    def forget(self) -> None:
        """Drop the cached keyset so the next use reads the sources again."""
        self._keyset = None
