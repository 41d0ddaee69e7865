"""Warm loads reuse what a keyset already verified and opened (`blocks.core._block._open`):
every change to a document is still seen and checked on the next load.

Each test first loads a block several times (so its verified bytes are kept), then changes the
registry the way the promise must survive: raw SQL tampering, another process's save, a key
rotation in another process, a caller mutating what it loaded, many threads at once. SQLite and
PostgreSQL alike.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretBytes, SecretStr
from stored_rows import row_columns, tamper

from blocks.core import _block
from blocks.core._block import Block
from blocks.core._encryption import KeyManager
from blocks.core._registry import Registry
from blocks.errors import TamperedDocument
from blocks.system import Secret

TESTS = Path(__file__).parents[1]
WARM = 3


class WarmLogin(Block):
    user: str
    endpoint: str = "https://api.example.com"
    password: SecretStr


def verified(keyset: Any) -> int:
    """How many documents' verified bytes `keyset` keeps (its entries keyed by those bytes;
    the blocks built from them are kept beside, keyed by type and name)."""
    return sum(isinstance(key, bytes) for key in keyset.opened)


def kept() -> int:
    """How many verified documents the current keyset keeps."""
    keyset = KeyManager.for_registry(Registry.default().url).cached_keyset()
    return 0 if keyset is None else verified(keyset)


def in_another_process(code: str, tmp_path: Path) -> None:
    """Run `code` in a fresh Python on the same registry and key (and these tests' helpers)."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(TESTS), env.get("PYTHONPATH", "")])
    subprocess.run([sys.executable, "-c", code], env=env, check=True, timeout=120)


def test_a_document_changed_after_warm_loads_is_checked_again(backend: str) -> None:
    WarmLogin(user="etl", password="pw").save("prod")
    Secret(value="other").save("other")
    for _ in range(WARM):
        assert WarmLogin.load("prod").password.get_secret_value() == "pw"
    assert kept() == 1
    original = row_columns("warm-login", "prod")
    attacks = {
        "endpoint changed": {"data": original["data"].replace("api.example.com", "evil.test")},
        "token swapped in": {"secrets": row_columns("secret", "other")["secrets"]},
        "seal dropped": {"mac": ""},
        "version bumped": {"version": original["version"] + 1},
    }
    refused = 0
    for what, values in attacks.items():
        tamper("warm-login", "prod", **values)
        with pytest.raises(TamperedDocument):
            WarmLogin.load("prod")
        refused += 1
        tamper("warm-login", "prod", **{k: original[k] for k in values})  # restored: loads again
        assert WarmLogin.load("prod").password.get_secret_value() == "pw", what
    print(f"\n[{backend}] {WARM} warm loads, then {len(attacks)} tamperings: refused {refused}")
    assert refused == len(attacks)


def test_another_process_save_is_seen_on_the_next_load(backend: str, tmp_path: Path) -> None:
    Secret(value="before").save("api")
    for _ in range(WARM):
        assert Secret.load("api").get() == "before"
    in_another_process(
        "from blocks.system import Secret; Secret(value='after').save('api', overwrite=True)",
        tmp_path,
    )
    assert Secret.load("api").get() == "after"
    assert Secret.load("api").get() == "after"


def test_a_rotation_in_another_process_is_seen_after_warm_loads(
    backend: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("BLOCKS_MASTER_KEY")
    monkeypatch.setenv("BLOCKS_KEY_SOURCE", "file")
    KeyManager._instances.clear()
    Secret(value="kept-across-rotation").save("api")
    for _ in range(WARM):
        assert Secret.load("api").get() == "kept-across-rotation"
    before = KeyManager.for_registry(Registry.default().url).cached_keyset()
    assert before is not None and verified(before) == 1
    in_another_process(
        "from blocks.core._rotation import rotate_master_key; rotate_master_key()", tmp_path
    )
    assert Secret.load("api").get() == "kept-across-rotation"
    after = KeyManager.for_registry(Registry.default().url).cached_keyset()
    assert after is not None and after is not before
    assert after.ids != before.ids  # the new key was read from the file, the old one retired


@pytest.mark.parametrize("value", [{"user": "etl", "password": "pw"}, ["token-a", "token-b"]])
def test_a_json_secret_mutated_by_its_loader_does_not_change_the_next_load(
    value: Any,
) -> None:
    Secret(value=value).save("login")
    for _ in range(WARM):
        loaded = Secret.load("login").get()
        assert loaded == value
        if isinstance(loaded, dict):
            loaded["password"] = "changed-in-memory"
        else:
            loaded.append("token-c")
    assert Secret.load("login").get() == value


class WarmKeys(Block):
    password: SecretStr
    blob: SecretBytes


def test_each_load_gets_its_own_secret_objects(backend: str) -> None:
    """A caller that mutates a loaded `SecretStr`/`SecretBytes` in place (pydantic keeps the
    value in a plain attribute) changes only its own copy, never a later load's."""
    WarmKeys(password="s3cr3t", blob=b"b10b").save("api")
    loads = [WarmKeys.load("api") for _ in range(WARM)]
    assert kept() == 1  # the warm path is the one under test
    first, second = loads[0], loads[1]
    assert first.password is not second.password and first.blob is not second.blob
    mutated = 0
    for loaded in loads:
        loaded.password._secret_value = "changed-in-place"
        loaded.blob._secret_value = b"changed-in-place"
        mutated += 2
        again = WarmKeys.load("api")
        assert again.password.get_secret_value() == "s3cr3t"
        assert again.blob.get_secret_value() == b"b10b"
    print(
        f"\n[{backend}] {mutated} secrets mutated in place after warm loads: no later load saw it"
    )


def test_kept_documents_are_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_block, "_OPENED_MAX", 8)
    for i in range(30):
        Secret(value=f"v{i}").save(f"s{i}")
        assert Secret.load(f"s{i}").get() == f"v{i}"
        assert kept() <= 8
    assert all(Secret.load(f"s{i}").get() == f"v{i}" for i in range(30))


def test_threads_loading_while_another_saves_see_only_saved_values(backend: str) -> None:
    values = [f"value-{i}" for i in range(4)]
    Secret(value=values[0]).save("hot")
    loads_per_thread = 300
    seen: list[str] = []
    errors: list[BaseException] = []
    stop = threading.Event()

    def loader() -> None:
        try:
            for _ in range(loads_per_thread):
                seen.append(Secret.load("hot").get())
        except BaseException as exc:  # reported below
            errors.append(exc)

    def saver() -> None:
        i = 0
        try:
            while not stop.is_set():
                i += 1
                Secret(value=values[i % len(values)]).save("hot", overwrite=True)
        except BaseException as exc:
            errors.append(exc)

    writer = threading.Thread(target=saver)
    readers = [threading.Thread(target=loader) for _ in range(4)]
    writer.start()
    for thread in readers:
        thread.start()
    for thread in readers:
        thread.join()
    stop.set()
    writer.join()
    print(
        f"\n[{backend}] 4 threads x {loads_per_thread} loads while saving: "
        f"loads {len(seen)}, distinct values {len(set(seen))}, errors {len(errors)}"
    )
    assert errors == []
    assert len(seen) == 4 * loads_per_thread
    assert set(seen) <= set(values)


def test_a_tampered_json_column_is_refused_after_warm_loads() -> None:
    Secret(value="pw").save("api")
    for _ in range(WARM):
        Secret.load("api")
    secrets = json.loads(row_columns("secret", "api")["secrets"])
    secrets["extra"] = secrets["value"]
    tamper("secret", "api", secrets=json.dumps(secrets, separators=(",", ":")))
    with pytest.raises(TamperedDocument):
        Secret.load("api")


def test_a_large_document_is_verified_in_full_on_every_load() -> None:
    from blocks.system import JSON

    big = {"rows": ["x" * 100] * 100, "token": SecretStr("inside-a-big-one")}
    JSON(value=big).save("big")
    for _ in range(WARM):
        assert JSON.load("big").value["token"].get_secret_value() == "inside-a-big-one"
    assert kept() == 0, "a document past the size bound is not kept"
    data = row_columns("json", "big")["data"]
    tamper("json", "big", data=data.replace('"x', '"y', 1))
    with pytest.raises(TamperedDocument):
        JSON.load("big")


def test_a_kept_block_is_built_anew_on_every_warm_load() -> None:
    WarmLogin(user="etl", password="pw").save("prod")
    first, second = (WarmLogin.load("prod") for _ in range(2))
    keyset = KeyManager.for_registry(Registry.default().url).cached_keyset()
    assert keyset is not None and ("warm-login", "prod") in keyset.opened
    assert first is not second and first.password is not second.password
    assert first.__pydantic_private__ is not second.__pydantic_private__
    first.user = "changed"  # a caller's change stays in its own block
    third = WarmLogin.load("prod")
    assert (third.user, third.password.get_secret_value()) == ("etl", "pw")
    assert third.block_document_name == "prod" and "pw" not in repr(third)


def test_a_block_holding_a_mutable_value_is_not_kept_built() -> None:
    from blocks.system import JSON

    JSON(value={"rows": [1]}).save("cfg")
    loaded = JSON.load("cfg")
    loaded.value["rows"].append(2)
    assert JSON.load("cfg").value == {"rows": [1]}
    keyset = KeyManager.for_registry(Registry.default().url).cached_keyset()
    assert keyset is None or ("json", "cfg") not in keyset.opened


# -- loads that skip the SELECT while the registry is unchanged (`Registry.documents_stamp`) --


def selects(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every document SELECT a load makes from now on, by name."""
    made: list[str] = []
    original = Registry.load_columns

    def counted(self: Registry, type_slug: str, name: str) -> Any:
        made.append(name)
        return original(self, type_slug, name)

    monkeypatch.setattr(Registry, "load_columns", counted)
    return made


def test_warm_loads_of_an_unchanged_sqlite_registry_skip_the_select(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    Secret(value="pw").save("api")
    made = selects(monkeypatch)
    for _ in range(WARM + 2):
        assert Secret.load("api").get() == "pw"
    assert made == ["api", "api"], "the first load reads, the second stamps, the rest skip"
    Secret(value="pw2").save("api", overwrite=True)  # this connection's own commit
    assert Secret.load("api").get() == "pw2"
    Secret(value="other").save("other")  # any commit, even of another document
    assert Secret.load("api").get() == "pw2"
    assert made[2:] == ["api", "api"]


def test_a_raw_edit_by_another_process_is_refused_after_select_free_loads(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another process edits the row with plain sqlite3 (no code of ours): the next load
    reads the row again and refuses it."""
    WarmLogin(user="etl", password="pw").save("prod")
    made = selects(monkeypatch)
    for _ in range(WARM + 2):
        WarmLogin.load("prod")
    assert len(made) == 2
    database = Registry.default().url.removeprefix("sqlite:///")
    in_another_process(
        "import sqlite3\n"
        f"c = sqlite3.connect({database!r})\n"
        "c.execute(\"update block_documents set data = replace(data, 'api.example.com',"
        " 'evil.test') where type_slug = 'warm-login' and name = 'prod'\")\n"
        "c.commit()\n",
        tmp_path,
    )
    with pytest.raises(TamperedDocument):
        WarmLogin.load("prod")
    assert len(made) == 3


def test_another_process_delete_is_seen_after_select_free_loads(
    backend: str, tmp_path: Path
) -> None:
    from blocks.errors import BlockNotFound

    Secret(value="pw").save("api")
    for _ in range(WARM + 2):
        assert Secret.load("api").get() == "pw"
    in_another_process("from blocks.core._block import Block; Block.delete('secret/api')", tmp_path)
    with pytest.raises(BlockNotFound):
        Secret.load("api")


def test_every_save_of_another_process_is_seen_by_the_next_load(
    backend: str, tmp_path: Path
) -> None:
    """Two real processes in lock step: the child saves value i, says so, and waits; the
    parent's next load must return value i, never an earlier one (no stale secret)."""
    rounds = 60
    Secret(value="v-0").save("hot")
    for _ in range(WARM):
        assert Secret.load("hot").get() == "v-0"
    code = (
        "import sys\n"
        "from blocks.system import Secret\n"
        f"for i in range(1, {rounds + 1}):\n"
        "    Secret(value=f'v-{i}').save('hot', overwrite=True)\n"
        "    print(i, flush=True)\n"
        "    sys.stdin.readline()\n"
    )
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(TESTS), env.get("PYTHONPATH", "")])
    child = subprocess.Popen(
        [sys.executable, "-c", code],
        env=env,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert child.stdin is not None and child.stdout is not None
    stale = 0
    try:
        for i in range(1, rounds + 1):
            assert child.stdout.readline().strip() == str(i)
            for _ in range(3):  # the first read, the stamping read, a select-free read
                stale += Secret.load("hot").get() != f"v-{i}"
            child.stdin.write("\n")
            child.stdin.flush()
    finally:
        child.stdin.close()
        assert child.wait(timeout=120) == 0
    print(f"\n[{backend}] {rounds} saves by another process, {3 * rounds} loads: stale {stale}")
    assert stale == 0
