"""The results key: where it comes from, and what it does (sign records, seal secrets).

Every result record is signed under a *results key*, so whoever can write to the storage but
does not hold the key cannot forge a record (a forged or foreign record is a miss):

- the payload: up to `SMALL_PAYLOAD` bytes with HMAC-SHA256 (``hmac-sha256:TAG``); larger
  ones with AES-256-GMAC (GCM's authenticator, no plaintext) under a one-record key,
  ``HMAC-SHA256(gmac key, nonce)`` for a random 128-bit nonce kept in the header
  (``aes256-gmac:NONCE:TAG``). GMAC runs at memory speed with AES-NI (~11 GB/s here, faster
  than xxh3); HMAC-SHA256 runs at 1.7 GB/s and keyed BLAKE2b/BLAKE3 at 0.9-1.3 GB/s, which
  would double the time to persist 256 MB, while setting up AES costs more than HMAC-ing a
  few KB (the cached-hit path). The writer picks after seeing the size; the header names it;
- the prefix and header (which hold the payload's tag) with HMAC-SHA256.

The key comes from the first of:

1. ``BLOCKS_RESULTS_KEY``: url-safe base64 keys, comma-separated, the first one signing (the
   format of `block key generate`). For workers that share result storage but not the registry.
2. A saved ``Secret`` block named ``results-key`` holding such a key (teams that share the
   registry but not the master key), looked up only in a registry that already exists.
3. The registry's master key(s): ``HKDF-SHA256(master key, info="blocks results key v1")``,
   one results key per master key (the first signs; the others still verify after a rotation).

A results key that this home had to *create* (no source had a key: a fresh ``BLOCKS_HOME``)
is *unadopted* until it signs its first record, recorded in ``$BLOCKS_HOME/results-key.new``
so every process of the home knows. An unadopted key never writes into, nor misses on, a
storage that holds records signed by another key: that is a worker sharing the team's storage
without the team's key, and it gets `ResultsKeyMissing` (naming ``BLOCKS_RESULTS_KEY``)
instead of overwriting the team's records one cache miss at a time. A brand-new user on an
empty storage writes, and the key is adopted.

From each results key, HKDF derives four subkeys: one for the header tag, one for payload
tags, one for AES-256-GCM sealing of secret values inside payloads, and one that keys every
digest a record's storage key or header holds (`ResultsKey.digest`, `keyed_components`): an
unkeyed digest of a parameter is a guessing oracle for whoever can list or read the storage
(a PIN falls in 10,000 tries). A secret's digest is not stored at all, only `SECRET_COMPONENT`.
The key id in a record header is a hash of the results key (public; reveals nothing usable).

Example:
    >>> keys = results_keys()
    >>> keys.active.key_id in keys.by_id
    True
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import os
import threading
from collections.abc import Callable
from contextvars import ContextVar
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from blocks import settings
from blocks.errors import BlocksError, ConfigurationError

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

#: The payload MACs, as record headers name them.
HMAC_ALGORITHM = "hmac-sha256"
GMAC_ALGORITHM = "aes256-gmac"
NONCE_BYTES = 16
#: Payloads up to this size are tagged with HMAC-SHA256, larger ones with AES-GMAC.
SMALL_PAYLOAD = 32 * 1024
#: The name a `Secret` block holding the results key is saved under.
SECRET_BLOCK_NAME = "results-key"
_SECRET_SLUG = "secret"  # `blocks.system.Secret`'s type slug
#: What a record header holds for a cache key component that covers a secret: a component
#: value ``"secret:<digest>"`` (from the runtime) is stored as this marker alone.
SECRET_COMPONENT = "secret"
_SECRET_PREFIX = SECRET_COMPONENT + ":"
_NONCE = 12


def derive_results_key(master_key: bytes) -> bytes:
    """The results key for one master key (stable: records signed today verify tomorrow)."""
    return _hkdf(master_key, b"blocks results key v1")


def _hkdf(key: bytes, info: bytes) -> bytes:
    """HKDF-SHA256 (RFC 5869) of 32 bytes without salt: one extract and one expand block.

    The standard library's HMAC computes exactly what `cryptography`'s ``HKDF`` does (a test
    holds them equal for every info used here), without importing `cryptography` (~13 ms)
    at the start of every ``block results`` command, which derives four keys and never
    encrypts."""
    prk = hmac.digest(bytes(32), key, "sha256")  # no salt: HashLen zero bytes (RFC 5869 2.2)
    return hmac.digest(prk, info + b"\x01", "sha256")  # T(1) is all 32 bytes


class ResultsKey:
    """One results key: signs headers and payloads, seals and opens secret values."""

    def __init__(self, key: bytes, source: str) -> None:
        self.source = source
        self.key_id = hashlib.sha256(b"blocks-results-key-id:" + key).hexdigest()[:16]
        # Keyed HMAC states, copied per use (keying HMAC through OpenSSL 3 costs ~10 us).
        self._header_mac = hmac.new(_hkdf(key, b"blocks results header tag"), None, "sha256")
        self._payload_mac = hmac.new(_hkdf(key, b"blocks results payload tag"), None, "sha256")
        self._gmac_keys = hmac.new(_hkdf(key, b"blocks results gmac keys"), None, "sha256")
        self._sealing_key = _hkdf(key, b"blocks results secret sealing")
        self._digest_mac = hmac.new(_hkdf(key, b"blocks results key digests"), None, "sha256")
        self._aesgcm: AESGCM | None = None  # built on the first seal or unseal (most have none)

    def __repr__(self) -> str:  # never the key itself
        return f"ResultsKey(id={self.key_id!r}, source={self.source!r})"

    def header_tag(self, data: bytes) -> bytes:
        mac = self._header_mac.copy()
        mac.update(data)
        return mac.digest()

    def digest(self, name: str, value: str) -> str:
        """32 hex digits of HMAC-SHA256(digest subkey, name, value): equal inputs give equal
        digests under one results key; without the key, a guess cannot be checked."""
        mac = self._digest_mac.copy()
        mac.update(b"%d:%s\x00%s" % (len(name), name.encode(), value.encode()))
        return mac.hexdigest()[:32]

    def keyed_components(self, components: dict[str, str]) -> dict[str, str]:
        """`components` as a record header stores them: each digest keyed (`digest`), a
        secret's (``"secret:..."``) replaced by `SECRET_COMPONENT`; a note (a name ending in
        ``:note``, e.g. "identified by its bytecode") is prose, not a digest, and kept."""
        return {
            name: value
            if name.endswith(":note")
            else SECRET_COMPONENT
            if value.startswith(_SECRET_PREFIX)
            else self.digest("component " + name, value)
            for name, value in components.items()
        }

    def payload_hasher(self, checksum: str | None = None) -> PayloadTag:
        """A MAC over payload bytes (``update`` / ``checksum``): for writing (None: the
        algorithm is picked by size), or to verify a header's `checksum` (its algorithm and
        nonce)."""
        return PayloadTag(self, checksum)

    def _payload_hmac(self) -> Any:
        return self._payload_mac.copy()

    def _gmac(self, nonce: bytes) -> Any:
        from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

        derive = self._gmac_keys.copy()
        derive.update(nonce)
        # A key per record: the fixed IV is never reused under one key.
        return Cipher(algorithms.AES(derive.digest()), modes.GCM(bytes(12))).encryptor()

    def _cipher(self) -> AESGCM:
        if self._aesgcm is None:
            from cryptography.hazmat.primitives.ciphers.aead import AESGCM

            self._aesgcm = AESGCM(self._sealing_key)
        return self._aesgcm

    def seal(self, plaintext: bytes) -> bytes:
        nonce = os.urandom(_NONCE)
        return nonce + self._cipher().encrypt(nonce, plaintext, b"blocks result secret")

    def unseal(self, sealed: bytes) -> bytes:
        from cryptography.exceptions import InvalidTag

        try:
            return self._cipher().decrypt(sealed[:_NONCE], sealed[_NONCE:], b"blocks result secret")
        except InvalidTag:
            raise ValueError("a sealed secret does not open with the results key") from None


class PayloadTag:
    """The payload's MAC, computed as bytes stream past (see the module docs)."""

    __slots__ = ("_gmac", "_hmac", "_nonce", "_owner", "_small")

    def __init__(self, owner: ResultsKey, checksum: str | None) -> None:
        self._owner = owner
        self._hmac: Any = None
        self._gmac: Any = None
        self._small: bytearray | None = None
        self._nonce = b""
        if checksum is None:
            self._small = bytearray()
        elif checksum.startswith(HMAC_ALGORITHM + ":"):
            self._hmac = owner._payload_hmac()
        elif checksum.startswith(GMAC_ALGORITHM + ":"):
            self._nonce = bytes.fromhex(checksum.split(":")[1])
            self._gmac = owner._gmac(self._nonce)
        else:
            raise ValueError(f"unknown payload tag {checksum.split(':')[0]!r}")

    def update(self, data: Any) -> None:
        if self._hmac is not None:
            self._hmac.update(data)
        elif self._gmac is not None:
            self._gmac.authenticate_additional_data(data)
        else:
            assert self._small is not None
            if len(self._small) + memoryview(data).nbytes <= SMALL_PAYLOAD:
                self._small += data
                return
            # Past the small size: switch to GMAC, starting with what was held back.
            self._nonce = os.urandom(NONCE_BYTES)
            self._gmac = self._owner._gmac(self._nonce)
            self._gmac.authenticate_additional_data(bytes(self._small))
            self._small = None
            self._gmac.authenticate_additional_data(data)

    def checksum(self) -> str:
        """The header's ``checksum`` value; call once, at the end."""
        if self._gmac is not None:
            self._gmac.finalize()
            return f"{GMAC_ALGORITHM}:{self._nonce.hex()}:{self._gmac.tag.hex()}"
        if self._hmac is None:
            self._hmac = self._owner._payload_hmac()
            self._hmac.update(self._small)
        return f"{HMAC_ALGORITHM}:{self._hmac.hexdigest()}"


def tags_equal(a: bytes, b: bytes) -> bool:
    return hmac.compare_digest(a, b)


@dataclass(frozen=True)
class ResultsKeys:
    """The signing key and every key that may verify (after a master key rotation);
    `unadopted`: the key is new to this home and has signed nothing yet (module docs)."""

    active: ResultsKey
    by_id: dict[str, ResultsKey]
    unadopted: bool = False

    def header_verifies(self, signed: bytes, tag: bytes) -> bool:
        """Whether `tag` is the header tag of `signed` under one of these keys."""
        if len(self.by_id) == 1:  # the usual case: no generator per record
            (only,) = self.by_id.values()
            return hmac.compare_digest(only.header_tag(signed), tag)
        return any(hmac.compare_digest(k.header_tag(signed), tag) for k in self.by_id.values())

    @classmethod
    def of(cls, keys: list[bytes], source: str, *, unadopted: bool = False) -> ResultsKeys:
        made = [ResultsKey(k, source) for k in keys]
        return cls(made[0], {k.key_id: k for k in made}, unadopted)


#: In ``$BLOCKS_HOME``: the id of the results key this home created and that has not signed
#: a record yet.
UNADOPTED_FILE = "results-key.new"


def adopt(keys: ResultsKeys) -> None:
    """`keys` signed a record: no longer new (every process of the home sees it)."""
    marker = settings.blocks_home() / UNADOPTED_FILE
    with contextlib.suppress(OSError):
        if marker.read_text().strip() == keys.active.key_id:
            marker.unlink()
    forget()


def _unadopted(key_id: str, *, created: bool) -> bool:
    marker = settings.blocks_home() / UNADOPTED_FILE
    if created:
        with contextlib.suppress(OSError):  # unwritable: this process still knows
            marker.write_text(key_id + "\n")
        return True
    try:
        return marker.read_text().strip() == key_id
    except OSError:
        return False


_cache: dict[tuple[object, ...], ResultsKeys] = {}
_lock = threading.Lock()


#: Where the results of the run asking for a key go, as a callable giving the storage: when
#: no source has a key and one must be made, that storage is checked first
#: (`blocks.results._foreign.refuse_new_key`). Set by the runtime around a cache key.
new_key_storage: ContextVar[Callable[[], Any] | None] = ContextVar(
    "blocks_new_key_storage", default=None
)


def results_keys(storage: Any = None) -> ResultsKeys:
    """The results keys under the current settings (cached per process and settings).

    `storage`: where the caller's records go (else `new_key_storage`'s); if a key must be
    made (a fresh home, no source has one), a storage holding signed records refuses first.
    """
    ident = settings.results_keys_stamp()
    found = _cache.get(ident)
    if found is None:
        with _lock:
            found = _cache.get(ident)
            if found is None:
                found = _find(storage)
                if len(_cache) > 32:
                    _cache.clear()
                _cache[ident] = found
    return found


def known_results_keys() -> ResultsKeys | None:
    """The results keys `results_keys` resolved under the current settings, or None if it
    has not yet (this never looks for or makes a key)."""
    return _cache.get(settings.results_keys_stamp())


def forget() -> None:
    """Drop cached keys (after saving a ``results-key`` block or rotating the master key)."""
    with _lock:
        _cache.clear()


def _find(storage: Any = None) -> ResultsKeys:
    from blocks.core._encryption import KeyManager, parse_keys
    from blocks.errors import KeyManagementError

    raw = settings.results_key()
    if raw:
        return ResultsKeys.of(list(parse_keys(raw, origin="BLOCKS_RESULTS_KEY")), "env")
    from_block = _from_secret_block()
    if from_block is not None:
        return ResultsKeys.of(list(parse_keys(from_block, origin="secret/results-key")), "block")
    manager = KeyManager.for_registry(settings.registry_url())
    created = False
    try:
        master = manager.master_keys()
    except KeyManagementError:
        # No key in any source (a fresh home): the registry decides, as for its first block
        # save - it makes the master key once under its key lock (racing processes all end up
        # with one key), or says which key it records and where that key is missing.
        from blocks.core._registry import Registry

        _check_before_making_a_key(storage)

        registry = Registry.default()
        created = registry.key_record() is None
        master = manager.sealing_keyset(registry).keys
    keys = [derive_results_key(k) for k in master]
    key_id = ResultsKey(keys[0], "").key_id
    return ResultsKeys.of(keys, "master key", unadopted=_unadopted(key_id, created=created))


def _check_before_making_a_key(storage: Any) -> None:
    """Refuse (`ResultsKeyMissing`) before a registry or key is made here if the storage the
    caller writes to holds another key's records (`blocks.results._foreign`)."""
    if storage is None:
        resolve = new_key_storage.get()
        if resolve is None:
            return
        storage = resolve()
    url = settings.registry_url()
    if not url.startswith("sqlite:///") or os.path.exists(url[len("sqlite:///") :]):
        from blocks.core._registry import Registry

        if Registry.default().key_record() is not None:
            return  # the registry records a key: it says where that key is missing
    from blocks.results._foreign import refuse_new_key

    refuse_new_key(storage)


def _from_secret_block() -> str | None:
    url = settings.registry_url()
    if url.startswith("sqlite:///") and not os.path.exists(url[len("sqlite:///") :]):
        return None  # no registry here (a storage-only worker): never create one for this
    import sqlite3

    from blocks.core._registry import Registry

    # A read of the registry's SQL only (sqlite3 on a SQLite file): most registries hold no
    # such block, and `Secret.load` would import the Block machinery (pydantic) to say so.
    # A problem here is left to `Secret.load` below, which words it.
    with contextlib.suppress(BlocksError, OSError, sqlite3.Error):
        if Registry.default().get_document(_SECRET_SLUG, SECRET_BLOCK_NAME) is None:
            return None
    from blocks.errors import BlockNotFound
    from blocks.system import Secret

    try:
        block = Secret.load(SECRET_BLOCK_NAME)
    except BlockNotFound:
        return None
    except BlocksError:
        raise
    value = block.get()
    if not isinstance(value, str):
        raise ConfigurationError(
            f"The secret block {SECRET_BLOCK_NAME!r} must hold a string key (from "
            "`block key generate`), not a dict."
        )
    return value
