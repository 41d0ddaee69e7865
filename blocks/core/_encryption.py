"""Encryption of secret fields at rest, document seals, and where the master key lives.

Secrets are sealed with AES-256-GCM (authenticated: a wrong key or a tampered byte is an error,
never garbage). Each token names the id of the key that sealed it, so several keys can coexist
while `block key rotate` re-encrypts everything under a new one. Every document also carries a
*seal*: an HMAC-SHA256 (key derived from the master key) over its type, name, id, version and
every stored column, so no field can be swapped, replayed, injected or dropped unseen.

A *keyset* is an ordered list of 32-byte keys; it is written as comma-separated url-safe
base64. It comes from the first key source that has one:

=========  ==============================================  =========
source     where                                            writable
=========  ==============================================  =========
env        ``BLOCKS_MASTER_KEY``                            no
keyring    the OS keyring (``keyring``), if a backend works  yes
file       ``$BLOCKS_HOME/master.key``, mode 0600           yes
=========  ==============================================  =========

The registry records the id and fingerprint of its active key: that, not the order of the
keys in a source, says which key seals. A source that does not hold the recorded key is refused
(`KeyMismatch`), so two processes never seal under two keys. Only the first save into an empty
registry, ``block key init`` and ``block key rotate`` create keys, each under a registry lock.

Example:
    >>> keys = Keyset([generate_key()], "test")
    >>> token = keys.encrypt(b"s3cr3t", aad=b"secret/my-key#value")
    >>> keys.decrypt(token, aad=b"secret/my-key#value")
    b's3cr3t'
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import errno
import fcntl
import hashlib
import hmac
import os
import socket
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Collection, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from blocks import settings
from blocks.errors import (
    ConfigurationError,
    DecryptionFailed,
    KeyManagementError,
    KeyMismatch,
    TamperedDocument,
)

if TYPE_CHECKING:
    from blocks.core._registry import KeyRecord, Registry

TOKEN_PREFIX = "bk1"
SEAL_PREFIX = "bm1"
KEY_BYTES = 32
NONCE_BYTES = 12
KEYRING_SERVICE = "blocks"
KEYRING_ATTEMPTS = 6
"""A keyring read that fails is retried this many times (backing off) before giving up."""
SOURCE_ATTEMPTS = 10
"""Reads of the key sources when they lack a key the registry or a token names (~3 s)."""


def generate_key() -> bytes:
    """A fresh random 256-bit key."""
    return os.urandom(KEY_BYTES)


def key_id(key: bytes) -> str:
    """A short public id of a key (a hash prefix; reveals nothing usable about the key)."""
    return hashlib.sha256(b"blocks-key-id:" + key).hexdigest()[:16]


def key_fingerprint(key: bytes) -> str:
    """The full public fingerprint of a key, recorded in the registry beside its id."""
    return hashlib.sha256(b"blocks-key-fingerprint:" + key).hexdigest()


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
    """Keys able to decrypt, the first of which encrypts and seals."""

    def __init__(self, keys: Sequence[bytes], source: str) -> None:
        from cryptography.hazmat.primitives.ciphers.aead import AESGCM

        if not keys:
            raise KeyManagementError("A keyset needs at least one key.")
        self.keys = tuple(dict.fromkeys(keys))  # a key listed twice is one key
        self.source = source
        self._ciphers = {key_id(k): AESGCM(k) for k in self.keys}
        # A separate key for seals: one key never serves two algorithms.
        self._mac_keys = {
            key_id(k): hmac.new(k, b"blocks document seal key", hashlib.sha256).digest()
            for k in self.keys
        }
        # Keyed once: a copy of a keyed HMAC skips the key schedule (~40% of a seal check).
        # OpenSSL's HMAC object itself where `hmac` wraps one: its copy() is one C call, where
        # the wrapper's builds a Python object around it.
        self._mac_bases = {kid: _keyed_hmac(mac_key) for kid, mac_key in self._mac_keys.items()}
        self._by_id = {key_id(k): k for k in self.keys}
        self.active_id = key_id(self.keys[0])
        # Documents verified and opened with these keys, kept (and trusted) by
        # `blocks.core._block` for exactly these keys, so it lives here: by the bytes their
        # seal covers (`_open`: the seal, then per secret (path, the type to build it again or
        # None, its kept value or plaintext)), and by (type slug, name) the blocks built from
        # such bytes (`_keep`). `clear()` forgets both.
        self.opened: dict[bytes | tuple[str, str], tuple[Any, ...]] = {}

    def _mac(self, kid: str, message: bytes) -> bytes:
        mac = self._mac_bases[kid].copy()
        mac.update(message)
        digest: bytes = mac.digest()
        return digest

    @property
    def ids(self) -> list[str]:
        return list(self._ciphers)

    def fingerprint(self, kid: str) -> str | None:
        """The fingerprint of the key with id `kid`, if this keyset has it."""
        key = self._by_id.get(kid)
        return None if key is None else key_fingerprint(key)

    def with_active(self, kid: str) -> Keyset:
        """The same keys with `kid` first (the registry, not the source, says which seals)."""
        if kid == self.active_id:
            return self
        key = self._by_id[kid]
        return Keyset([key, *(k for k in self.keys if k != key)], self.source)

    def encrypt(self, plaintext: bytes, *, aad: bytes) -> str:
        """Seal `plaintext` under the active key, bound to `aad` (where it is stored)."""
        nonce = os.urandom(NONCE_BYTES)
        sealed = self._ciphers[self.active_id].encrypt(nonce, plaintext, aad)
        body = base64.urlsafe_b64encode(nonce + sealed).decode()
        return f"{TOKEN_PREFIX}:{self.active_id}:{body}"

    def decrypt(self, token: str, *, aad: bytes, what: str = "a secret") -> bytes:
        """Open a token made by `encrypt`; `DecryptionFailed` names `what` and the key id.

        Every malformed token (wrong type, prefix, base64, length) is `DecryptionFailed` too.
        """
        parts = token.split(":", 2) if type(token) is str else []
        if len(parts) != 3 or parts[0] != TOKEN_PREFIX:
            _, kid, body = token_parts(token, what=what)  # raises (or takes a str subclass)
        else:
            _, kid, body = parts
        cipher = self._ciphers.get(kid)
        if cipher is None:
            raise DecryptionFailed(
                f"Cannot decrypt {what}: it was encrypted with key {kid}, which is not in the "
                f"master key from {self.source} (keys: {', '.join(self.ids)}). Set "
                "BLOCKS_MASTER_KEY to the key that saved it, or re-create the secret."
            )
        try:
            raw = _b64decode(body.encode("ascii"))
            if len(raw) < NONCE_BYTES + 16:
                raise ValueError("short token")
            return cipher.decrypt(raw[:NONCE_BYTES], raw[NONCE_BYTES:], aad)
        except Exception as exc:
            # Imported here, on failure only: an import statement costs ~5% of a first load.
            from cryptography.exceptions import InvalidTag

            if not isinstance(exc, InvalidTag | ValueError | TypeError | UnicodeError):
                raise
            raise DecryptionFailed(
                f"Cannot decrypt {what} with key {kid}: the stored data was altered or moved "
                "from another block. Re-create the secret."
            ) from None

    def uses_active_key(self, token: str) -> bool:
        return token_parts(token, what="a secret")[1] == self.active_id

    def seal(self, message: bytes) -> str:
        """A seal (keyed MAC) over a document's canonical bytes, naming the key."""
        digest = self._mac(self.active_id, message)
        return f"{SEAL_PREFIX}:{self.active_id}:{base64.urlsafe_b64encode(digest).decode()}"

    def seal_key_id(self, seal: str) -> str:
        parts = seal.split(":", 2) if isinstance(seal, str) else []
        return parts[1] if len(parts) == 3 and parts[0] == SEAL_PREFIX else ""

    def has_key(self, kid: str) -> bool:
        return kid in self._by_id

    def verifies(self, message: bytes, seal: str) -> bool:
        """Whether `seal` is a valid seal of `message` by one of these keys: `verify` without
        its errors (False for a malformed seal or an unknown key as for a wrong one)."""
        parts = seal.split(":", 2) if type(seal) is str else ()
        if len(parts) != 3 or parts[0] != SEAL_PREFIX:
            return False
        base = self._mac_bases.get(parts[1])
        if base is None:
            return False
        mac = base.copy()
        mac.update(message)
        return hmac.compare_digest(_b64encode(mac.digest()), parts[2].encode())

    def verify(self, message: bytes, seal: str, *, what: str) -> None:
        """Check a document's seal; `TamperedDocument` when it does not match."""
        parts = seal.split(":", 2) if isinstance(seal, str) else []
        if len(parts) != 3 or parts[0] != SEAL_PREFIX:
            raise TamperedDocument(
                f"{what} has no valid seal: it was altered in the registry. Re-create it."
            )
        mac_key = self._mac_keys.get(parts[1])
        if mac_key is None:
            raise DecryptionFailed(
                f"Cannot verify {what}: it was sealed with key {parts[1]}, which is not in the "
                f"master key from {self.source} (keys: {', '.join(self.ids)}). Set "
                "BLOCKS_MASTER_KEY to the key that saved it."
            )
        expected = _b64encode(self._mac(parts[1], message))
        if not hmac.compare_digest(expected, parts[2].encode()):
            raise TamperedDocument(
                f"{what} was altered in the registry (a value changed, swapped, replayed, "
                "added or removed outside blocks): refusing to load it. Re-create it."
            )


def _keyed_hmac(key: bytes) -> Any:
    """An HMAC-SHA256 keyed with `key`, to `copy()`, `update()` and `digest()`."""
    keyed = hmac.new(key, digestmod=hashlib.sha256)
    inner = getattr(keyed, "_hmac", None)  # CPython's OpenSSL HMAC, when it backs `hmac`
    return keyed if inner is None else inner


# base64.urlsafe_b64encode/decode, as the two C calls they make (their Python wrappers were
# ~10% of a load). Decoding, like b64decode's default, discards characters outside the alphabet.
_TO_URLSAFE = bytes.maketrans(b"+/", b"-_")
_FROM_URLSAFE = bytes.maketrans(b"-_", b"+/")


def _b64encode(data: bytes) -> bytes:
    return binascii.b2a_base64(data, newline=False).translate(_TO_URLSAFE)


def _b64decode(data: bytes) -> bytes:
    return binascii.a2b_base64(data.translate(_FROM_URLSAFE))


def token_parts(token: object, *, what: str) -> tuple[str, str, str]:
    """Split a token into (prefix, key id, body), or raise `DecryptionFailed`."""
    parts = token.split(":", 2) if isinstance(token, str) else []
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
        """The stored keyset text, or None when there is certainly none."""

    def write(self, text: str) -> None:
        raise KeyManagementError(f"The {self.name} key source is read-only.")

    def create(self, text: str) -> str:
        """Store `text` unless a keyset is already there; return what is stored.

        Callers hold the registry's key lock; file keys are also created exclusively (another
        registry may share the file).
        """
        existing = self.read()
        if existing:
            return existing
        self.write(text)
        return text

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
    """The OS keyring through `keyring`; one entry per registry.

    A read that raises is retried with backoff and then reported: it is never taken as "no
    key" (a keyring briefly locked or busy must not make a process create a second key).
    """

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
            # SecretService's priority asks D-Bus for the daemon: it raises (RuntimeError)
            # while the daemon is down, which must read as "not available", not escape a save.
            priority = float(getattr(backend, "priority", 0))
        except Exception:
            return False
        return not isinstance(backend, fail.Keyring) and priority > 0

    def _retry(self, action: Callable[[], str | None], what: str) -> str | None:
        delay = 0.05
        for attempt in range(KEYRING_ATTEMPTS):
            try:
                return action()
            except Exception as exc:
                if attempt == KEYRING_ATTEMPTS - 1:
                    raise KeyManagementError(
                        f"The OS keyring could not be {what} after {KEYRING_ATTEMPTS} attempts "
                        f"({type(exc).__name__}). Unlock it, or choose another source with "
                        "BLOCKS_KEY_SOURCE."
                    ) from None
                time.sleep(delay)
                delay *= 2
        raise AssertionError("unreachable")

    def read(self) -> str | None:
        import keyring

        return self._retry(lambda: keyring.get_password(KEYRING_SERVICE, self.username), "read")

    def write(self, text: str) -> None:
        import keyring

        def store() -> str:
            keyring.set_password(KEYRING_SERVICE, self.username, text)
            # Read back: some backends accept a write they then lose.
            if keyring.get_password(KEYRING_SERVICE, self.username) != text:
                raise OSError("the keyring did not keep the key")
            return text

        self._retry(store, "written")

    def describe(self) -> str:
        return f"the OS keyring ({KEYRING_SERVICE}/{self.username})"


TEMP_PREFIX = ".master.key."


class FileKeySource(KeySource):
    """``$BLOCKS_HOME/master.key``, created exclusively with mode 0600, replaced atomically.

    A replacement is written to ``.master.key.<random>`` (fsync, rename). The writer holds an
    `flock` on that temp file; a temp file nobody holds a lock on belongs to a process that died
    (SIGKILL) and is removed by the next process that reads or writes the key file.
    """

    name = "file"

    def __init__(self, path: Path) -> None:
        self.path = path

    def available(self) -> bool:
        return True

    def read(self) -> str | None:
        self.sweep()
        try:
            return self.path.read_text().strip() or None
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise KeyManagementError(f"Cannot read the key file {self.path}: {exc}") from None

    def sweep(self) -> int:
        """Remove temp key files left by killed writers; return how many."""
        removed = 0
        try:
            names = [n for n in os.listdir(self.path.parent) if n.startswith(TEMP_PREFIX)]
        except OSError:
            return 0
        for name in names:
            stray = self.path.parent / name
            try:
                fd = os.open(stray, os.O_RDONLY)
            except OSError:
                continue
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                os.close(fd)
                continue  # a live writer holds it
            try:
                # Still the same file (not renamed into place meanwhile)?
                if os.path.samestat(os.fstat(fd), os.stat(stray)):
                    stray.unlink()
                    removed += 1
            except OSError:
                pass
            finally:
                os.close(fd)
        return removed

    def _write_temp(self, text: str) -> tuple[int, Path]:
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        while True:
            tmp = self.path.parent / f"{TEMP_PREFIX}{os.urandom(6).hex()}"
            try:
                fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
                break
            except FileExistsError:
                continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            if not os.path.samestat(os.fstat(fd), os.stat(tmp)):
                raise FileNotFoundError(tmp)
        except FileNotFoundError:
            # A sweeper took it between our create and our lock: start again with a new name.
            os.close(fd)
            return self._write_temp(text)
        try:
            os.write(fd, (text + "\n").encode())
            os.fsync(fd)
        except BaseException:
            os.close(fd)
            tmp.unlink(missing_ok=True)
            raise
        return fd, tmp

    def _fsync_dir(self) -> None:
        with contextlib.suppress(OSError):
            dir_fd = os.open(self.path.parent, os.O_RDONLY)
            try:
                os.fsync(dir_fd)
            finally:
                os.close(dir_fd)

    def write(self, text: str) -> None:
        try:
            fd, tmp = self._write_temp(text)
            try:
                os.replace(tmp, self.path)
            finally:
                os.close(fd)
                tmp.unlink(missing_ok=True)
            self._fsync_dir()
        except OSError as exc:
            raise KeyManagementError(f"Cannot write the key file {self.path}: {exc}") from None

    def create(self, text: str) -> str:
        """Link a complete, fsynced file into place only if none exists: exactly one wins."""
        try:
            fd, tmp = self._write_temp(text)
            try:
                os.link(tmp, self.path)
            except FileExistsError:
                pass
            finally:
                os.close(fd)
                tmp.unlink(missing_ok=True)
            self._fsync_dir()
        except OSError as exc:
            if exc.errno != errno.EEXIST:
                raise KeyManagementError(f"Cannot write the key file {self.path}: {exc}") from None
        stored = self.read()
        if not stored:
            raise KeyManagementError(f"The key file {self.path} is empty: remove it.")
        return stored

    def describe(self) -> str:
        return str(self.path)


def host_name() -> str:
    try:
        return socket.gethostname()
    except OSError:
        return "this machine"


class KeyManager:
    """Finds, creates and rotates the keyset that protects one registry's secrets.

    `keyset()` only reads (loads never create a key). `sealing_keyset(registry)` is what a save
    uses: the registry's recorded active key, created under the registry's key lock on the
    very first save, and refused (`KeyMismatch`) when this process's source does not hold it.
    """

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
        self._sealing: Keyset | None = None
        self._env_value = settings.master_keys()
        self._ident: tuple[str, str, str, str] | None = None

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
                manager._ident = ident
        return manager

    def is_shared(self) -> bool:
        """Whether `for_registry` still hands out this manager (its cache was not cleared)."""
        return self._ident is not None and self._instances.get(self._ident) is self

    def cached_keyset(self) -> Keyset | None:
        """The keyset last read, without reading any source (None if none was read yet)."""
        return self._keyset

    def keyset(self) -> Keyset:
        """The keyset in the first source that has one; never creates a key."""
        if self._keyset is not None:
            return self._keyset
        with self._lock:
            if self._keyset is None:
                self._keyset = self._find()
            if self._keyset is None:
                raise KeyManagementError(
                    f"No master key found (looked in {self.looked_in()}). Set "
                    "BLOCKS_MASTER_KEY or BLOCKS_KEY_SOURCE to where this registry's key is; "
                    "a new registry gets one with `block key init` or its first save."
                )
            return self._keyset

    def keyset_holding(self, kids: Collection[str]) -> Keyset:
        """The keyset, read again (backing off) until it holds every key id in `kids`.

        A source caught mid-write (a keyring backend rewriting its file, a rotation elsewhere)
        may briefly show no key or an older keyset: that is retried, never taken as final.
        Gives up after ~3 s: returns the keyset lacking a key (decrypt then names it), or
        raises the last error when no source has a key at all.
        """
        keyset = self._keyset
        if keyset is not None and all(keyset.has_key(kid) for kid in kids):
            return keyset
        delay = 0.02
        for attempt in range(SOURCE_ATTEMPTS):
            self.forget()
            try:
                keyset = self.keyset()
            except (KeyManagementError, ConfigurationError):
                if attempt == SOURCE_ATTEMPTS - 1:
                    raise
            else:
                if all(keyset.has_key(kid) for kid in kids) or attempt == SOURCE_ATTEMPTS - 1:
                    return keyset
            time.sleep(delay)
            delay = min(delay * 2, 0.5)
        raise AssertionError("unreachable")

    def looked_in(self) -> str:
        return ", ".join(source.describe() for source in self.sources)

    def _find(self) -> Keyset | None:
        found = self._read()
        return None if found is None else Keyset(*found)

    def _read(self) -> tuple[tuple[bytes, ...], str] | None:
        """The keys in the first source that has some, and where they came from."""
        for source in self.sources:
            if source.name != "file" and not source.available():
                continue
            text = source.read()
            if text:
                return parse_keys(text, origin=source.describe()), source.describe()
        return None

    def master_keys(self) -> tuple[bytes, ...]:
        """The keys `keyset()` holds, read without building its AES ciphers (importing
        `cryptography`, ~13 ms) when no keyset was read yet: the results key of a ``block
        results`` command is derived from the bytes alone. `KeyManagementError` if none."""
        if self._keyset is not None:
            return self._keyset.keys
        found = self._read()
        if found is None:
            return self.keyset().keys  # raises, saying where it looked
        return tuple(dict.fromkeys(found[0]))  # a key listed twice is one key, as in Keyset

    def sealing_keyset(self, registry: Registry) -> Keyset:
        """The keyset a save seals with: the registry's active key first.

        The first save into a registry with no recorded key creates (or adopts) one under the
        registry's key lock, so racing processes all end up with the same key.
        """
        cached = self._sealing
        if cached is not None:
            return cached
        delay = 0.02
        for attempt in range(SOURCE_ATTEMPTS):
            # The record is read again each time: a rotation elsewhere may have moved both the
            # record and the source on since we last looked (the old key is then retired).
            record = registry.key_record()
            if record is None:
                record = registry.record_key_once(self._create_or_adopt)
            self.forget()
            try:
                found = self.keyset()
            except (KeyManagementError, ConfigurationError):
                found = None
            if attempt == SOURCE_ATTEMPTS - 1 or (
                found is not None and found.has_key(record.active_key_id)
            ):
                keyset = self._checked(record, found)
                self._sealing = keyset
                return keyset
            time.sleep(delay)
            delay = min(delay * 2, 0.5)
        raise AssertionError("unreachable")

    def recorded_keyset(self, record: KeyRecord) -> Keyset:
        """The keyset from the sources, if it holds the registry's recorded key; else
        `KeyMismatch` saying which key the registry records and where to put it."""
        return self._checked(record, None)

    def _checked(self, record: KeyRecord, keyset: Keyset | None) -> Keyset:
        """`keyset` if it holds the recorded key, else `KeyMismatch`."""
        try:
            if keyset is None:
                keyset = self.keyset()
        except KeyMismatch:
            raise
        except KeyManagementError:
            raise KeyMismatch(
                f"This registry records master key {record.active_key_id} (fingerprint "
                f"{record.fingerprint[:16]}, created in {record.source}), but no key source "
                f"here provides it: looked in {self.looked_in()}. Make that key available "
                "here (export BLOCKS_MASTER_KEY with it, or set BLOCKS_KEY_SOURCE to the "
                "keyring or key file that has it); a new key would fork the registry, so "
                "none is created."
            ) from None
        if keyset.fingerprint(record.active_key_id) != record.fingerprint:
            raise KeyMismatch(
                f"The master key from {keyset.source} (key {keyset.active_id}) is not this "
                f"registry's key {record.active_key_id} (created in {record.source}): sealing "
                "with it would fork the registry's secrets. Make "
                f"{keyset.source} hold key {record.active_key_id} (or set BLOCKS_MASTER_KEY / "
                "BLOCKS_KEY_SOURCE to the source that has it), then retry."
            )
        return keyset.with_active(record.active_key_id)

    def _create_or_adopt(self) -> KeyRecord:
        """Under the registry's key lock: the key a source already has, or a new one."""
        from blocks.core._registry import KeyRecord

        self.forget()
        keyset = self._find()
        if keyset is None:
            source = self.writable_source()
            stored = source.create(format_keys([generate_key()]))
            keyset = Keyset(parse_keys(stored, origin=source.describe()), source.describe())
        return KeyRecord(
            keyset.active_id, key_fingerprint(keyset.keys[0]), f"{keyset.source} on {host_name()}"
        )

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
        """Persist `keys` in the current source and use them from now on."""
        source = self.source_of_current()
        source.write(format_keys(keys))
        self._keyset = Keyset(keys, source.describe())
        self._sealing = None
        return self._keyset

    def forget(self) -> None:
        """Drop the cached keysets so the next use reads the sources (and registry) again."""
        self._keyset = None
        self._sealing = None
