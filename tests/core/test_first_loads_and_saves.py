"""The one-pass first read (`blocks.core._block._first_load`) and the one-statement repeated
save (`Registry._save_known`) keep every check of the paths they shortcut.

A first read of bytes no keyset verified before checks the seal on the bytes read before it
parses, decrypts or builds anything; any changed byte, and a row edited by another process,
is refused by the full load. A repeated save rewrites the row only while it is the version this
process wrote, with no references, under the active key; a save or a rotation by another
process in between makes it save in full (no update lost, never sealed under a retired key).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr
from stored_rows import row_columns, tamper

from blocks.core import _block
from blocks.core._block import Block
from blocks.core._encryption import KeyManager, Keyset
from blocks.core._registry import Registry
from blocks.core._sqlite_reads import SqliteReads
from blocks.errors import BlocksError, TamperedDocument
from blocks.system import Secret

TESTS = Path(__file__).parents[1]


class FirstLogin(Block):
    user: str
    port: int = 5432
    password: SecretStr


def keyset() -> Keyset:
    found = KeyManager.for_registry(Registry.default().url).cached_keyset()
    assert found is not None
    return found


def forget() -> None:
    """Forget every verified document: the next load is a first read of its bytes."""
    keyset().opened.clear()


def in_another_process(code: str) -> None:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(TESTS), env.get("PYTHONPATH", "")])
    subprocess.run([sys.executable, "-c", code], env=env, check=True, timeout=120)


def first_loads(monkeypatch: pytest.MonkeyPatch) -> list[bool]:
    """Per first read from now on: whether the one-pass path built the block."""
    made: list[bool] = []
    original = _block._first_load

    def counted(*args: Any) -> Any:
        block = original(*args)
        made.append(block is not None)
        return block

    monkeypatch.setattr(_block, "_first_load", counted)
    return made


def decrypts(monkeypatch: pytest.MonkeyPatch) -> list[bytes]:
    """The aad of every secret decrypted from now on."""
    made: list[bytes] = []
    original = Keyset.decrypt

    def counted(self: Keyset, token: str, *, aad: bytes, what: str = "a secret") -> bytes:
        made.append(aad)
        return original(self, token, aad=aad, what=what)

    monkeypatch.setattr(Keyset, "decrypt", counted)
    return made


# -- the first read ------------------------------------------------------------------------


def test_a_first_read_builds_what_the_full_load_builds(
    backend: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    FirstLogin(user="etl", password="pw").save("prod")
    Secret(value="s3cr3t").save("api")
    made = first_loads(monkeypatch)
    forget()
    fast = FirstLogin.load("prod")
    secret = Secret.load("api")
    assert made == [True, True]
    fast_memo = dict(keyset().opened)
    forget()
    monkeypatch.setattr(_block, "_first_load", lambda *args: None)
    full = FirstLogin.load("prod")
    assert Secret.load("api").get() == secret.get() == "s3cr3t"
    assert fast == full and fast.__pydantic_private__ == full.__pydantic_private__
    assert fast.__pydantic_fields_set__ == full.__pydantic_fields_set__
    assert type(fast.password) is SecretStr and fast.password.get_secret_value() == "pw"
    assert fast_memo == dict(keyset().opened)  # the same entries `_open` and `_keep` make
    assert "pw" not in repr(fast)
    # The next load finds what the first read kept: no second decrypt.
    seen = decrypts(monkeypatch)
    assert FirstLogin.load("prod").password.get_secret_value() == "pw"
    assert seen == []


def test_a_first_read_refuses_every_changed_byte_before_decrypting(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Each character of each column the seal covers changed in turn (SQLite: every one)."""
    FirstLogin(user="etl", password="pw").save("prod")
    original = row_columns("first-login", "prod")
    made = first_loads(monkeypatch)
    seen = decrypts(monkeypatch)
    refused = 0
    for column in ("schema_checksum", "data", "secrets", "refs", "mac"):
        text = original[column]
        for position in range(len(text)):
            changed = chr(ord(text[position]) ^ 1)
            tamper(
                "first-login", "prod", **{column: text[:position] + changed + text[position:][1:]}
            )
            forget()
            with pytest.raises(BlocksError):
                FirstLogin.load("prod")
            refused += 1
    tamper(
        "first-login",
        "prod",
        **{c: original[c] for c in ("schema_checksum", "data", "secrets", "refs", "mac")},
    )
    for version in (original["version"] - 1, original["version"] + 1):
        tamper("first-login", "prod", version=version)
        forget()
        with pytest.raises(TamperedDocument):
            FirstLogin.load("prod")
        refused += 1
    assert not any(made), "the one-pass path built a block from changed bytes"
    assert seen == [], "a secret was decrypted before its seal was checked"
    tamper("first-login", "prod", version=original["version"])
    forget()
    assert FirstLogin.load("prod").password.get_secret_value() == "pw"
    assert made[-1] is True
    print(f"\n{refused} changed bytes, {refused} refused")


def test_a_first_read_refuses_a_tampered_row_on_postgres_too(backend: str) -> None:
    FirstLogin(user="etl", password="pw").save("prod")
    Secret(value="other").save("other")
    original = row_columns("first-login", "prod")
    for values in (
        {"data": original["data"].replace("etl", "etm")},
        {"secrets": row_columns("secret", "other")["secrets"]},
        {"mac": ""},
    ):
        tamper("first-login", "prod", **values)
        forget()
        with pytest.raises(TamperedDocument):
            FirstLogin.load("prod")
        tamper("first-login", "prod", **{k: original[k] for k in values})
    forget()
    assert FirstLogin.load("prod").user == "etl"


def test_a_first_read_refuses_a_row_edited_by_another_process(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Another process edits the row with plain sqlite3 (no code of ours)."""
    FirstLogin(user="etl", password="pw").save("prod")
    FirstLogin.load("prod")
    made = first_loads(monkeypatch)
    database = Registry.default().url.removeprefix("sqlite:///")
    in_another_process(
        "import sqlite3\n"
        f"c = sqlite3.connect({database!r})\n"
        "c.execute(\"update block_documents set data = replace(data, 'etl', 'etm')"
        " where type_slug = 'first-login' and name = 'prod'\")\n"
        "c.commit()\n"
    )
    with pytest.raises(TamperedDocument):
        FirstLogin.load("prod")
    assert made == [False]


def test_a_first_read_of_another_process_save_is_its_value(
    backend: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    Secret(value="before").save("api")
    assert Secret.load("api").get() == "before"
    made = first_loads(monkeypatch)
    in_another_process(
        "from blocks.system import Secret; Secret(value='after').save('api', overwrite=True)"
    )
    assert Secret.load("api").get() == "after"
    assert made == [True]


# -- the repeated save ---------------------------------------------------------------------


def one_statement_saves(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Rows changed by each one-statement save from now on (1: saved; 0: saved in full)."""
    made: list[int] = []
    original = SqliteReads.write_one

    def counted(self: SqliteReads, sql: str, params: tuple[Any, ...]) -> int:
        changed = original(self, sql, params)
        made.append(changed)
        return changed

    monkeypatch.setattr(SqliteReads, "write_one", counted)
    return made


def full_load(cls: type[Block], name: str) -> Any:
    forget()
    return cls.load(name)


def test_a_repeated_save_is_one_statement_and_loads_verified(
    backend: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    made = one_statement_saves(monkeypatch)
    block = FirstLogin(user="etl", password="pw")
    document_id = block.save("prod")
    for i in range(3):
        block.user = f"etl-{i}"
        assert block.save("prod", overwrite=True) == document_id
        loaded = full_load(FirstLogin, "prod")
        assert (loaded.user, loaded.password.get_secret_value()) == (f"etl-{i}", "pw")
    assert row_columns("first-login", "prod")["version"] == 4
    assert made == ([1, 1, 1] if backend == "sqlite" else [])


def test_a_save_by_another_process_in_between_is_not_lost(monkeypatch: pytest.MonkeyPatch) -> None:
    made = one_statement_saves(monkeypatch)
    Secret(value="v1").save("api")
    Secret(value="v2").save("api", overwrite=True)
    in_another_process(
        "from blocks.system import Secret; Secret(value='other').save('api', overwrite=True)"
    )
    assert row_columns("secret", "api")["version"] == 3
    Secret(value="v4").save("api", overwrite=True)  # no row at version 2: saved in full
    assert row_columns("secret", "api")["version"] == 4
    Secret(value="v5").save("api", overwrite=True)
    assert row_columns("secret", "api")["version"] == 5
    assert made == [1, 0, 1]
    assert full_load(Secret, "api").get() == "v5"


def test_a_rotation_by_another_process_in_between_seals_under_the_new_key(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("BLOCKS_MASTER_KEY")
    monkeypatch.setenv("BLOCKS_KEY_SOURCE", "file")
    KeyManager._instances.clear()
    made = one_statement_saves(monkeypatch)
    Secret(value="v1").save("api")
    Secret(value="v2").save("api", overwrite=True)
    before = keyset().active_id
    in_another_process("from blocks.core._rotation import rotate_master_key; rotate_master_key()")
    # The key check in the UPDATE refuses the old key (0 rows; the full save then finds the
    # new key recorded: StaleKey), and the save sealed again under the new key goes through.
    Secret(value="v3").save("api", overwrite=True)
    stored = row_columns("secret", "api")
    assert before not in stored["secrets"] and before not in stored["mac"]
    assert keyset().active_id in stored["mac"]
    assert made == [1, 0, 1]
    assert full_load(Secret, "api").get() == "v3"


def test_a_row_edited_or_deleted_by_another_process_is_saved_in_full(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    made = one_statement_saves(monkeypatch)
    block = Secret(value="v1")
    first_id = block.save("api")
    block.save("api", overwrite=True)
    version = row_columns("secret", "api")["version"]
    database = Registry.default().url.removeprefix("sqlite:///")
    in_another_process(  # references appear, the version left as it was
        "import sqlite3\n"
        f"c = sqlite3.connect({database!r})\n"
        'c.execute("update block_documents set refs = \'{\\"x\\": \\"y\\"}\''
        " where type_slug = 'secret' and name = 'api'\")\n"
        "c.commit()\n"
    )
    block.save("api", overwrite=True)
    assert row_columns("secret", "api")["refs"] == "{}"
    assert row_columns("secret", "api")["version"] == version + 1
    in_another_process("from blocks.core._block import Block; Block.delete('secret/api')")
    assert block.save("api", overwrite=True) != first_id  # a new document
    assert made == [1, 0, 0]
    assert full_load(Secret, "api").get() == "v1"


def test_a_repeated_save_without_overwrite_is_refused() -> None:
    from blocks.errors import BlockAlreadyExists

    Secret(value="v1").save("api")
    Secret(value="v2").save("api", overwrite=True)
    with pytest.raises(BlockAlreadyExists):
        Secret(value="v3").save("api")
    assert full_load(Secret, "api").get() == "v2"
