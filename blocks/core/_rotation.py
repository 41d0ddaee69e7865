"""Master key set-up and rotation: re-encrypt every secret under a new key, losing none.

Rotation runs under the registry's rotation lock (one rotation at a time, released by the OS if
the process dies) and orders its steps so that an interruption at any point loses nothing:

0. check every document under the current keys: one that does not verify (a blanked seal,
   an edited field, a replayed token) stops the rotation, named, before anything is written;
   rotating would otherwise re-seal a forgery as genuine;
1. store ``[old..., new]`` in the key source: every old key still opens, `new` is not used yet;
2. in ONE registry transaction holding the key lock exclusively, re-seal every document under
   `new` (its old seal verified first) and record `new` as the registry's active key. Saves
   wait for it; one that sealed under `old` before finds `new` recorded and re-seals itself;
3. store ``[new, old...]``;
4. prove that every document's seal and every token opens under `new` alone, then store
   ``[new]``: the old keys are retired (a failed proof keeps them and raises).

Rows sealed outside the block documents (deployments and their waiting runs) are re-sealed in
step 2's transaction by the hooks their layer registers (`register_resealer`). Core imports no
upper layer: a layer that seals rows records its hook module in ``registry_meta`` (a
``resealer:<module>`` row) when it makes its tables, and rotation imports every module so
recorded, so a rotation from any process re-seals them even if it never used that layer.

With ``BLOCKS_MASTER_KEY`` the keys cannot be written back: set it to ``NEW,OLD`` first;
rotation then re-encrypts everything under NEW and tells you OLD may be dropped.

Example:
    >>> report = rotate_master_key()
    >>> report.reencrypted
    12
"""

from __future__ import annotations

import contextlib
import importlib
from collections.abc import Callable
from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from blocks.core._documents import secret_aad
from blocks.core._encryption import EnvKeySource, KeyManager, Keyset, host_name, key_fingerprint
from blocks.core._registry import DocumentRow, KeyRecord, Registry
from blocks.core._registry_tables import registry_meta
from blocks.errors import DecryptionFailed, KeyManagementError, TamperedDocument

#: ``progress(done, total)``, called as documents are re-encrypted.
Progress = Callable[[int, int], None]

#: ``hook(conn, keys)`` re-seals a layer's own rows under ``keys.seal`` (the new key) inside the
#: rotation's transaction, checking each old seal with ``keys.verify`` (which still holds the old
#: keys), and returns how many rows it re-sealed. If it raises, the rotation changes nothing.
Resealer = Callable[[Connection, Keyset], int]

_RESEALERS: dict[str, Resealer] = {}
#: ``registry_meta`` keys naming the module whose import registers a hook.
RESEALER_META_PREFIX = "resealer:"


def register_resealer(module: str, hook: Resealer) -> None:
    """Register `hook` under its module's name (called at that module's import)."""
    _RESEALERS[module] = hook


def _load_resealers(registry: Registry) -> list[Resealer]:
    """Import every hook module this registry recorded; `KeyManagementError` before anything
    is written when one cannot be loaded (rotating without it would strand its rows)."""
    with registry.read() as conn:
        try:
            keys = conn.execute(
                sa.select(registry_meta.c.key).where(
                    registry_meta.c.key.startswith(RESEALER_META_PREFIX)
                )
            ).scalars()
            modules = sorted(key[len(RESEALER_META_PREFIX) :] for key in keys)
        except sa.exc.OperationalError:
            modules = []  # no registry_meta table yet: nothing sealed outside documents
    hooks = []
    for module in modules:
        if module not in _RESEALERS and module.startswith("blocks."):
            with contextlib.suppress(ImportError):
                importlib.import_module(module)
        hook = _RESEALERS.get(module)
        if hook is None:
            raise KeyManagementError(
                f"Not rotating: this registry holds rows sealed by {module}, which this "
                "installation of blocks cannot load, so they would be refused after the "
                "rotation. Nothing was changed. Rotate with the blocks version that made them."
            )
        hooks.append(hook)
    return hooks


@dataclass(frozen=True)
class RotationReport:
    """What a rotation did; key ids only, never key material."""

    old_key_ids: list[str]
    new_key_id: str
    reencrypted: int
    source: str
    retired: bool
    verified: int = 0
    """Tokens proven to open under the new key after the rotation."""
    resealed: int = 0
    """Rows sealed outside the documents (deployments, waiting runs) re-sealed by the hooks."""

    def counted(self) -> str:
        """What was re-encrypted, for a person: ``"3 block(s)"``, plus the deployment and run
        rows re-sealed when there were any."""
        blocks = f"{self.reencrypted} block(s)"
        if not self.resealed:
            return blocks
        return f"{blocks} and {self.resealed} deployment/run row(s)"


@dataclass(frozen=True)
class KeyInit:
    """What `init_master_key` found or made."""

    key_id: str
    source: str
    created: bool


def init_master_key(registry: Registry | None = None) -> KeyInit:
    """Make sure the registry has a recorded master key (adopting or creating it, once).

    `KeyMismatch` when this process's key source holds a different key than the recorded one.
    """
    registry = registry or Registry.default()
    manager = KeyManager.for_registry(registry.url)
    manager.forget()
    before = registry.key_record()
    keyset = manager.sealing_keyset(registry)
    return KeyInit(keyset.active_id, keyset.source, created=before is None)


def _check_seal(document: DocumentRow, keys: Keyset) -> None:
    """`TamperedDocument` unless `document` has a seal that verifies under `keys` (required
    always: never decided by a row of the registry, which a tamperer could delete)."""
    if not document.seal:
        raise TamperedDocument(document.missing_seal())
    keys.verify(
        document.message, document.seal, what=f"{document.slug} (version {document.version})"
    )


def _check(document: DocumentRow, keys: Keyset) -> None:
    """`TamperedDocument` / `DecryptionFailed` unless `document`'s seal verifies under `keys`
    and every token opens."""
    _check_seal(document, keys)
    for path, token in document.secrets.items():
        aad = secret_aad(document.type_slug, document.name, path)
        keys.decrypt(token, aad=aad, what=f"field '{path}' of {document.slug}")


def refuse_unverified(registry: Registry, keys: Keyset) -> int:
    """Check every document before a rotation touches anything; return how many were checked.

    `TamperedDocument` naming every document that does not verify (a rotation would re-seal
    it, turning a forgery into a sealed document), and nothing is written."""
    problems: list[tuple[str, str]] = []
    documents = registry.list_documents()
    for document in documents:
        try:
            _check(document, keys)
        except (TamperedDocument, DecryptionFailed) as exc:
            problems.append((document.slug, str(exc)))
    if problems:
        shown = "; ".join(f"{slug}: {why}" for slug, why in problems[:_NAMED])
        more = f" (and {len(problems) - _NAMED} more)" if len(problems) > _NAMED else ""
        names = ", ".join(slug for slug, _ in problems[:_NAMED])
        raise TamperedDocument(
            f"Not rotating: {len(problems)} block(s) do not verify under this registry's key, and "
            f"rotation would re-seal them as genuine: {names}{more}. Nothing was changed. "
            f"Details: {shown}"
        )
    return len(documents)


# A refused rotation names this many documents (and counts the rest).
_NAMED = 20


def _reseal(document: DocumentRow, keys: Keyset) -> dict[str, str]:
    """The document's tokens re-encrypted under `keys`' active key, after checking its seal."""
    _check_seal(document, keys)
    fresh = {}
    for path, token in document.secrets.items():
        aad = secret_aad(document.type_slug, document.name, path)
        plain = keys.decrypt(token, aad=aad, what=f"field '{path}' of {document.slug}")
        fresh[path] = keys.encrypt(plain, aad=aad)
    return fresh


def prove_all_open(registry: Registry, keys: Keyset) -> int:
    """Open every document's seal and every token with `keys`; return the tokens opened."""
    opened = 0
    for document in registry.list_documents():
        _check(document, keys)
        opened += len(document.secrets)
    return opened


def rotate_master_key(
    registry: Registry | None = None, progress: Progress | None = None
) -> RotationReport:
    """Re-encrypt every secret under a new master key (see the module doc for the steps).

    `progress(done, total)` is called as documents are re-encrypted (the CLI draws a bar).
    A document that does not verify stops the rotation before anything is written
    (`TamperedDocument` naming each)."""
    registry = registry or Registry.default()
    manager = KeyManager.for_registry(registry.url)
    with registry.rotation_lock():
        manager.forget()
        init_master_key(registry)
        record = registry.key_record()
        assert record is not None
        current = manager.sealing_keyset(registry)  # KeyMismatch if we lack the recorded key
        refuse_unverified(registry, current)  # 0
        hooks = _load_resealers(registry)
        resealed: list[int] = []
        source = manager.source_of_current()
        where = record.source
        if isinstance(source, EnvKeySource):
            # The environment is read-only: the user put the new key first.
            new_keys = manager.keyset()
            writable = False
        else:
            from blocks.core._encryption import generate_key

            new = generate_key()
            manager.store([*current.keys, new])  # 1
            new_keys = Keyset([new, *current.keys], source.describe())
            where = f"{source.describe()} on {host_name()}"
            writable = True
        new_id = new_keys.active_id
        count = registry.reseal_all(  # 2
            lambda document: _reseal(document, new_keys),
            new_keys.seal,
            KeyRecord(new_id, key_fingerprint(new_keys.keys[0]), where),
            progress,
            also=lambda conn: resealed.extend(hook(conn, new_keys) for hook in hooks),
        )
        old_ids = [kid for kid in new_keys.ids if kid != new_id]
        if writable:
            manager.store(new_keys.keys)  # 3
        try:
            verified = prove_all_open(registry, Keyset([new_keys.keys[0]], new_keys.source))  # 4
        except KeyManagementError:
            raise
        except Exception as exc:
            raise KeyManagementError(
                f"Rotation re-sealed every block under key {new_id}, but proving it failed "
                f"({type(exc).__name__}: {exc}); the old keys are kept. Run `block key rotate` "
                "again."
            ) from None
        if writable:
            manager.store([new_keys.keys[0]])
        manager.forget()
    return RotationReport(
        old_key_ids=old_ids,
        new_key_id=new_id,
        reencrypted=count,
        source=source.describe(),
        retired=writable,
        verified=verified,
        resealed=sum(resealed),
    )
