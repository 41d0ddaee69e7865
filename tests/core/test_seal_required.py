"""The seal cannot be switched off: every document must carry one, whatever the registry's
metadata says, and `block key rotate` never re-seals a document that does not verify.

Each attack edits the registry with raw SQL, as someone with write access to a shared registry
(SQLite file or PostgreSQL) could: delete the "documents are sealed" row (and the key record),
blank a seal, edit a field, replay an old token.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from pydantic import SecretStr
from stored_rows import row_columns, tamper

from blocks.core._block import Block
from blocks.core._encryption import KeyManager
from blocks.core._registry import (
    META_KEY_FINGERPRINT,
    META_KEY_ID,
    META_KEY_SOURCE,
    META_SEALED,
    Registry,
    block_documents,
    registry_meta,
)
from blocks.core._rotation import rotate_master_key
from blocks.errors import TamperedDocument
from blocks.system import Secret


class Endpoint(Block):
    """Where a password is sent: moving `url` elsewhere would leak it."""

    url: str
    password: SecretStr


def _delete_meta(*keys: str) -> None:
    with Registry.default().engine.begin() as conn:
        conn.execute(registry_meta.delete().where(registry_meta.c.key.in_(keys)))


def _fresh_process_state() -> None:
    """What a new process sees: nothing cached from before the tampering."""
    Registry.dispose_all()
    KeyManager._instances.clear()


def _every_row() -> tuple[list[dict[str, Any]], dict[str, str]]:
    registry = Registry.default()
    with registry.engine.connect() as conn:
        documents = [
            dict(row._mapping)
            for row in conn.execute(sa.select(block_documents).order_by(block_documents.c.id))
        ]
        meta = {key: value for key, value in conn.execute(sa.select(registry_meta))}
    return documents, meta


def _forge(version: int | None) -> None:
    """Send `endpoint/prod`'s password elsewhere: an edited field, the first version's token
    (replayed) and a blank seal; `version=0` also makes it look saved before seals."""
    Endpoint(url="https://api.example.com", password="first-password").save("prod")
    first = row_columns("endpoint", "prod")
    Endpoint(url="https://api.example.com", password="second-password").save("prod", overwrite=True)
    data = json.loads(row_columns("endpoint", "prod")["data"])
    data["url"] = "https://attacker.example"
    values: dict[str, Any] = {"data": json.dumps(data), "secrets": first["secrets"], "mac": ""}
    if version is not None:
        values["version"] = version
    tamper("endpoint", "prod", **values)


@pytest.mark.parametrize("version", [None, 0], ids=["kept-version", "version-0"])
@pytest.mark.parametrize("drop", ["flag", "flag+key-record"])
def test_deleting_the_sealed_flag_does_not_let_a_forgery_load(
    backend: str, version: int | None, drop: str
) -> None:
    Secret(value="unrelated").save("other")
    _forge(version)
    dropped = [META_SEALED]
    if drop == "flag+key-record":
        dropped += [META_KEY_ID, META_KEY_FINGERPRINT, META_KEY_SOURCE]
    _delete_meta(*dropped)
    _fresh_process_state()
    with pytest.raises(TamperedDocument, match=r"endpoint/prod .* has no seal"):
        Endpoint.load("prod")
    assert Secret.load("other").get() == "unrelated"  # the genuine document still loads
    print(f"\n[{backend}] rows deleted: {dropped}; version {version}: forgery refused")


@pytest.mark.parametrize("version", [None, 0], ids=["kept-version", "version-0"])
def test_rotation_refuses_to_reseal_a_forgery_and_writes_nothing(
    backend: str, version: int | None, monkeypatch: pytest.MonkeyPatch, blocks_home: Path
) -> None:
    # A writable key source (the key file), so a rotation that went ahead would change it too.
    monkeypatch.delenv("BLOCKS_MASTER_KEY")
    monkeypatch.setenv("BLOCKS_KEY_SOURCE", "file")
    KeyManager._instances.clear()
    for n in range(5):
        Secret(value=f"genuine-{n}").save(f"genuine-{n}")
    _forge(version)
    Secret(value="x").save("blanked")
    tamper("secret", "blanked", mac="")  # a second bad document: both must be named
    _delete_meta(META_SEALED)
    _fresh_process_state()
    key_file = blocks_home / "master.key"
    before, key_before = _every_row(), key_file.read_bytes()
    with pytest.raises(TamperedDocument) as refused:
        rotate_master_key()
    message = str(refused.value)
    assert "endpoint/prod" in message and "secret/blanked" in message
    assert "Nothing was changed" in message
    assert "second-password" not in message and "first-password" not in message
    assert _every_row() == before
    assert key_file.read_bytes() == key_before
    _fresh_process_state()
    for n in range(5):
        assert Secret.load(f"genuine-{n}").get() == f"genuine-{n}"
    with pytest.raises(TamperedDocument):
        Endpoint.load("prod")
    print(
        f"\n[{backend}] version {version}: rotation refused naming 2 documents; "
        f"{len(before[0])} rows, the registry metadata and the key file unchanged"
    )


def test_unsealed_documents_of_an_upgraded_registry_are_refused_not_trusted(
    backend: str,
) -> None:
    """A schema-1 registry's documents after its upgrade (version 0, no seal) look exactly like
    forgeries, so they are refused too; re-created documents load and rotate."""
    Secret(value="legacy").save("old")
    Endpoint(url="https://api.example.com", password="p").save("old")
    _delete_meta(META_SEALED)
    tamper("secret", "old", mac="", version=0)
    tamper("endpoint", "old", mac="", version=0)
    _fresh_process_state()
    with pytest.raises(TamperedDocument, match="Delete and re-create it"):
        Secret.load("old")
    with pytest.raises(TamperedDocument, match="Not rotating: 2 block"):
        rotate_master_key()
    Secret.delete("old")
    Endpoint.delete("old")
    Secret(value="legacy").save("old")
    Endpoint(url="https://api.example.com", password="p").save("old")
    report = rotate_master_key()
    assert report.verified == 2
    assert Secret.load("old").get() == "legacy"
    print(f"\n[{backend}] unsealed version-0 documents refused; re-created ones rotate ({report})")
