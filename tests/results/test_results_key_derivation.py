"""The results key is derived with HKDF-SHA256 on the standard library (no `cryptography`
import when a ``block results`` command starts): it must derive exactly what `cryptography`'s
HKDF derives, or records signed before would stop verifying."""

from __future__ import annotations

import os


def test_the_results_key_derivation_equals_cryptography_hkdf() -> None:
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.kdf.hkdf import HKDF

    from blocks.results import _signing

    infos = [
        b"blocks results key v1",
        b"blocks results header tag",
        b"blocks results payload tag",
        b"blocks results gmac keys",
        b"blocks results secret sealing",
        b"",
    ]
    for _ in range(50):
        key = os.urandom(32)
        for info in infos:
            expected = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=info).derive(key)
            assert _signing._hkdf(key, info) == expected
