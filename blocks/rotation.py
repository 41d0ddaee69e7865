"""Master key rotation: re-encrypt every secret in a registry under a new key, losing none.

The order of steps makes an interruption harmless at any point:

1. store ``[old..., new]``: every old key still decrypts, nothing is encrypted with `new` yet;
2. re-encrypt every secret under `new` in ONE registry transaction (all or nothing);
3. store ``[new, old...]``: `new` becomes active; secrets saved meanwhile under `old` still open;
4. sweep again (one transaction) for anything still under an old key, then store ``[new]``.

With ``BLOCKS_MASTER_KEY`` the keys cannot be written back: set it to ``NEW,OLD`` first;
rotation then re-encrypts everything under NEW and tells you OLD may be dropped.

Example:
    >>> report = rotate_master_key()
    >>> report.reencrypted
    12
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from blocks.documents import secret_aad
from blocks.encryption import EnvKeySource, KeyManager, Keyset, generate_key, token_parts
from blocks.registry import DocumentRow, Registry

#: ``progress(done, total)``, called as documents are re-encrypted.
Progress = Callable[[int, int], None]


@dataclass(frozen=True)
class RotationReport:
    """What a rotation did; key ids only, never key material."""

    old_key_ids: list[str]
    new_key_id: str
    reencrypted: int
    source: str
    retired: bool


def _reencrypt_under(
    keys: Keyset, registry: Registry, *, only_stale: bool, progress: Progress | None = None
) -> int:
    def rewrite(document: DocumentRow) -> dict[str, str] | None:
        if only_stale and all(keys.uses_active_key(t) for t in document.secrets.values()):
            return None
        fresh = {}
        for path, token in document.secrets.items():
            aad = secret_aad(document.type_slug, document.name, path)
            plain = keys.decrypt(token, aad=aad, what=f"field '{path}' of {document.slug}")
            fresh[path] = keys.encrypt(plain, aad=aad)
        return fresh

    return registry.rewrite_secrets(rewrite, progress)


def rotate_master_key(
    registry: Registry | None = None, progress: Progress | None = None
) -> RotationReport:
    """Re-encrypt every secret under a new master key (see the module doc for the steps).

    `progress(done, total)` is called as documents are re-encrypted (the CLI draws a bar)."""
    registry = registry or Registry.default()
    manager = KeyManager.for_registry(registry.url)
    manager.forget()
    current = manager.keyset()
    source = manager.source_of_current()

    if isinstance(source, EnvKeySource):
        # The environment is read-only: the user put the new key first.
        count = _reencrypt_under(current, registry, only_stale=False, progress=progress)
        return RotationReport(
            old_key_ids=current.ids[1:],
            new_key_id=current.active_id,
            reencrypted=count,
            source=source.describe(),
            retired=False,
        )

    old = list(current.keys)
    new = generate_key()
    manager.store([*old, new])  # 1
    staged = Keyset([new, *old], source.describe())
    count = _reencrypt_under(staged, registry, only_stale=False, progress=progress)  # 2
    manager.store([new, *old])  # 3
    _reencrypt_under(staged, registry, only_stale=True)  # 4
    still_old = [
        token
        for document in registry.list_documents()
        for token in document.secrets.values()
        if token_parts(token, what="a secret")[1] != staged.active_id
    ]
    retired = not still_old
    if retired:
        manager.store([new])
    return RotationReport(
        old_key_ids=current.ids,
        new_key_id=staged.active_id,
        reencrypted=count,
        source=source.describe(),
        retired=retired,
    )
