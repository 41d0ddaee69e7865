"""The key a full backup (``block export --with-secrets --encrypt-to REF``) seals values under.

The user gives a passphrase (or a key from `block key generate`, which is one) through a secret
reference — ``env:NAME``, ``file:PATH`` or ``aws-sm:NAME`` — never on the command line in
clear. A 256-bit key is derived from it with scrypt (n=2^15, r=8, p=1; a random salt per
backup), and each secret value is sealed with AES-256-GCM, bound to its block and field, so a
value cannot be moved to another block in the file. The file's header holds the salt, the
scrypt parameters and a *check* token: a wrong passphrase is refused before anything is read
or written.

Example:
    >>> key = BackupKey.create("correct horse battery staple")
    >>> token = key.seal(b"shunter2", aad=b"secret/db#value")
    >>> BackupKey.from_header(key.header(), "correct horse battery staple", "x").open(
    ...     token, aad=b"secret/db#value", what="x")
    b'shunter2'
"""

from __future__ import annotations

import base64
import binascii
import os
from typing import Any

from blocks.errors import ConfigurationError, DecryptionFailed, SecretReferenceError

CIPHER = "aes-256-gcm"
KDF = "scrypt"
SCRYPT_N, SCRYPT_R, SCRYPT_P = 2**15, 8, 1
MIN_PASSPHRASE = 16
"""Characters a backup passphrase needs at least (a `block key generate` key has 44)."""
_CHECK = b"blocks backup v1"
_CHECK_AAD = b"blocks-backup-check"
_AAD_PREFIX = b"blocks-backup:"


def read_passphrase(reference: str) -> str:
    """The passphrase a reference (``env:NAME``, ``file:PATH``, ``aws-sm:NAME``) points at."""
    from blocks.core._references import SCHEMES, SecretRef

    if reference.partition(":")[0] not in SCHEMES:
        # Not repeated: it may be the passphrase itself, typed where its place goes.
        raise SecretReferenceError(
            "The backup key is given by where it is kept, never in clear on the command line: "
            "env:NAME (an environment variable), file:PATH (a 0600 file) or aws-sm:NAME."
        )
    passphrase = SecretRef(reference).get_secret_value()
    if len(passphrase) < MIN_PASSPHRASE:
        raise ConfigurationError(
            f"The backup key from {reference} is shorter than {MIN_PASSPHRASE} characters: use a "
            "long passphrase, or a key from `block key generate`."
        )
    return passphrase


class BackupKey:
    """A key derived from a passphrase; seals and opens the secret values of one backup."""

    def __init__(self, passphrase: str, salt: bytes, n: int, r: int, p: int) -> None:
        from cryptography.hazmat.primitives.ciphers.aead import AESGCM
        from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

        self._salt, self._params = salt, (n, r, p)
        key = Scrypt(salt=salt, length=32, n=n, r=r, p=p).derive(passphrase.encode())
        self._cipher = AESGCM(key)

    @classmethod
    def create(cls, passphrase: str) -> BackupKey:
        """A key for a new backup (a fresh salt)."""
        return cls(passphrase, os.urandom(16), SCRYPT_N, SCRYPT_R, SCRYPT_P)

    @classmethod
    def from_header(cls, header: Any, passphrase: str, where: str) -> BackupKey:
        """The key a backup's header describes; `DecryptionFailed` if `passphrase` is not the
        one it was written with. `where` names the header in errors."""
        try:
            if header["cipher"] != CIPHER or header["kdf"] != KDF:
                raise ValueError("cipher")
            n, r, p = int(header["n"]), int(header["r"]), int(header["p"])
            salt = _unb64(header["salt"])
            check = header["check"]
        except (KeyError, TypeError, ValueError):
            raise DecryptionFailed(
                f"{where}: the backup header is not one `block export --with-secrets` writes "
                f"({CIPHER} under a {KDF} key). Export the backup again."
            ) from None
        # Bounds, so a crafted header cannot make the derivation take minutes or gigabytes.
        if n & (n - 1) or not (2**14 <= n <= 2**20 and 1 <= r <= 16 and 1 <= p <= 4):
            raise DecryptionFailed(f"{where}: the backup header's scrypt settings are too large.")
        key = cls(passphrase, salt, n, r, p)
        try:
            opened = key._open(check, _CHECK_AAD)
        except DecryptionFailed:
            opened = b""
        if opened != _CHECK:
            raise DecryptionFailed(
                f"{where}: the backup key does not open this backup (a wrong passphrase or key "
                "file). Nothing was written. Give the key the backup was exported with."
            )
        return key

    def header(self) -> dict[str, Any]:
        """What the backup file records to derive this key again (no secret in it)."""
        n, r, p = self._params
        return {
            "cipher": CIPHER,
            "kdf": KDF,
            "n": n,
            "r": r,
            "p": p,
            "salt": _b64(self._salt),
            "check": self._seal(_CHECK, _CHECK_AAD),
        }

    def seal(self, plaintext: bytes, *, aad: bytes) -> str:
        """A secret's plaintext sealed, bound to `aad` (its block and field)."""
        return self._seal(plaintext, _AAD_PREFIX + aad)

    def open(self, token: str, *, aad: bytes, what: str) -> bytes:
        """The plaintext `seal` sealed; `DecryptionFailed` naming `what` if it does not open."""
        try:
            return self._open(token, _AAD_PREFIX + aad)
        except DecryptionFailed:
            raise DecryptionFailed(
                f"{what}: the sealed value does not open under the backup key (it was altered, "
                "or moved from another block or field). Nothing was written."
            ) from None

    def _seal(self, plaintext: bytes, aad: bytes) -> str:
        nonce = os.urandom(12)
        return _b64(nonce + self._cipher.encrypt(nonce, plaintext, aad))

    def _open(self, token: Any, aad: bytes) -> bytes:
        from cryptography.exceptions import InvalidTag

        try:
            raw = _unb64(token)
            if len(raw) < 28:
                raise ValueError("short")
            return bytes(self._cipher.decrypt(raw[:12], raw[12:], aad))
        except (InvalidTag, ValueError, TypeError):
            raise DecryptionFailed("the sealed value does not open") from None


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode()


def _unb64(text: Any) -> bytes:
    if not isinstance(text, str):
        raise ValueError("not text")
    try:
        return base64.urlsafe_b64decode(text.encode("ascii"))
    except (binascii.Error, UnicodeError):
        raise ValueError("not base64") from None
