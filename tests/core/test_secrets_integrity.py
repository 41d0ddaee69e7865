"""Whole-document authentication, secrets nested anywhere, malformed data, cycles, and a
registry that never names code to run. Each tamper test edits the registry with raw SQL, as
someone with write access to a shared registry could."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from pydantic import Field, SecretBytes, SecretStr
from stored_rows import row_columns, tamper

from blocks.core._block import Block
from blocks.core._documents import secret_value
from blocks.core._encryption import Keyset, generate_key
from blocks.core._registry import Registry
from blocks.errors import DecryptionFailed, InvalidBlockData, TamperedDocument
from blocks.system import JSON, Secret


class Login(Block):
    """A user and password, with an optional token."""

    user: str
    endpoint: str = "https://api.example.com"
    password: SecretStr
    token: SecretStr | None = None


class Node(Block):
    label: str
    next: Node | None = None


class Bag(Block):
    anything: Any = None
    mapping: dict[str, Any] = Field(default_factory=dict)


def test_a_token_swapped_from_another_block_is_refused(backend: str) -> None:
    Secret(value="alice-secret").save("alice")
    Secret(value="mallory-secret").save("mallory")
    tamper("secret", "alice", secrets=row_columns("secret", "mallory")["secrets"])
    with pytest.raises(TamperedDocument, match="secret/alice"):
        Secret.load("alice")
    print(f"\n[{backend}] swap: refused")


def test_a_token_replayed_from_an_earlier_version_is_refused(backend: str) -> None:
    Secret(value="old-password").save("db")
    old = row_columns("secret", "db")
    Secret(value="new-password").save("db", overwrite=True)
    assert row_columns("secret", "db")["version"] == old["version"] + 1
    tamper("secret", "db", secrets=old["secrets"])  # the old token alone
    with pytest.raises(TamperedDocument):
        Secret.load("db")
    tamper("secret", "db", secrets=old["secrets"], mac=old["mac"])  # token and its old seal
    with pytest.raises(TamperedDocument):
        Secret.load("db")


def test_a_token_replayed_from_a_deleted_block_is_refused(backend: str) -> None:
    Secret(value="deleted-secret").save("gone")
    old = row_columns("secret", "gone")
    Secret.delete("gone")
    Secret(value="fresh-secret").save("gone")
    tamper("secret", "gone", secrets=old["secrets"], mac=old["mac"], version=old["version"])
    with pytest.raises(TamperedDocument):
        Secret.load("gone")


def test_plaintext_injected_in_place_of_a_token_is_refused(backend: str) -> None:
    Login(user="etl", password="real").save("prod")
    columns = row_columns("login", "prod")
    data = json.loads(columns["data"])
    data["password"] = "attacker-chosen"
    tamper("login", "prod", data=json.dumps(data), secrets="{}")
    with pytest.raises(TamperedDocument):
        Login.load("prod")


def test_a_dropped_token_is_refused(backend: str) -> None:
    Login(user="etl", password="pw", token="tok").save("prod")
    secrets = json.loads(row_columns("login", "prod")["secrets"])
    del secrets["token"]
    tamper("login", "prod", secrets=json.dumps(secrets))
    with pytest.raises(TamperedDocument):
        Login.load("prod")


def test_a_changed_plain_field_or_missing_seal_is_refused(backend: str) -> None:
    Login(user="etl", password="pw").save("prod")
    columns = row_columns("login", "prod")
    data = json.loads(columns["data"])
    data["endpoint"] = "https://attacker.example"  # would send the password elsewhere
    tamper("login", "prod", data=json.dumps(data))
    with pytest.raises(TamperedDocument):
        Login.load("prod")
    tamper("login", "prod", data=columns["data"], mac="")
    with pytest.raises(TamperedDocument, match="no seal"):
        Login.load("prod")
    tamper("login", "prod", mac=columns["mac"])
    assert Login.load("prod").password.get_secret_value() == "pw"  # restored: loads again


def test_tampered_documents_are_never_revealed_by_the_cli(backend: str) -> None:
    from blocks.cli._text_fields import inspect_block

    Login(user="etl", password="pw").save("prod")
    tamper("login", "prod", data=json.dumps({"user": "x", "endpoint": "y"}))
    with pytest.raises(TamperedDocument):
        inspect_block("login/prod", reveal_secrets=True)


@pytest.mark.parametrize(
    "token",
    [
        123,
        None,
        ["bk1"],
        "",
        "bk1:",
        "bk2:abc:def",
        "bk1:{kid}:!!!not base64!!!",
        "bk1:{kid}:" + base64.urlsafe_b64encode(b"short").decode(),
        "bk1:{kid}:" + base64.urlsafe_b64encode(bytes(range(40))).decode(),
        "bk1:{kid}:\u00e9\u00e9",
        "bk1:0000000000000000:" + base64.urlsafe_b64encode(bytes(range(40))).decode(),
    ],
)
def test_every_malformed_token_is_decryption_failed(token: Any) -> None:
    keys = Keyset([generate_key()], "test")
    if isinstance(token, str):
        token = token.replace("{kid}", keys.active_id)
    with pytest.raises(DecryptionFailed):
        keys.decrypt(token, aad=b"x")


@pytest.mark.parametrize("plaintext", [b"", b"j{not json", b"s\xff\xfe", b"x?"])
def test_a_decrypted_value_we_did_not_write_is_decryption_failed(plaintext: bytes) -> None:
    with pytest.raises(DecryptionFailed):
        secret_value(plaintext)


@pytest.mark.parametrize("column", ["data", "secrets", "refs"])
def test_a_column_that_is_not_json_is_tampered_not_a_crash(column: str) -> None:
    Login(user="etl", password="pw").save("prod")
    tamper("login", "prod", **{column: "{not json"})
    with pytest.raises(TamperedDocument):
        Login.load("prod")
    tamper("login", "prod", **{column: "[1, 2]"})
    with pytest.raises(TamperedDocument):
        Login.load("prod")


def test_secrets_nested_in_any_and_json_stay_secret(backend: str) -> None:
    JSON(value={"api": SecretStr("nested-str"), "keys": [SecretBytes(b"nested-bytes"), 3]}).save(
        "cfg"
    )
    Bag(anything=[SecretStr("in-any")], mapping={"pw": SecretStr("in-dict")}).save("bag")
    for slug, name in (("json", "cfg"), ("bag", "bag")):
        columns = row_columns(slug, name)
        stored = columns["data"] + columns["secrets"]
        for plain in ("nested-str", "nested-bytes", "in-any", "in-dict"):
            assert plain not in stored
    loaded = JSON.load("cfg")
    assert isinstance(loaded.value["api"], SecretStr)
    assert loaded.value["api"].get_secret_value() == "nested-str"
    assert loaded.value["keys"][0].get_secret_value() == b"nested-bytes"
    assert "nested-str" not in repr(loaded)
    loaded.save("cfg", overwrite=True)  # a loaded block saved again stays sealed
    assert "nested-str" not in row_columns("json", "cfg")["data"]
    assert JSON.load("cfg").value["api"].get_secret_value() == "nested-str"
    bag = Bag.load("bag")
    assert bag.anything[0].get_secret_value() == "in-any"
    assert bag.mapping["pw"].get_secret_value() == "in-dict"


def test_a_secret_where_it_cannot_be_sealed_is_refused_naming_the_field() -> None:
    with pytest.raises(InvalidBlockData, match="'anything") as info:
        Bag(anything={SecretStr("in-a-set")}).save("b")
    assert "in-a-set" not in str(info.value)
    assert Registry.default().get_document("bag", "b") is None


def test_reference_cycles_are_refused_at_save(backend: str) -> None:
    Node(label="b").save("b")
    Node(label="a", next=Node.load("b")).save("a")
    b = Node.load("b")
    b.next = Node.load("a")
    with pytest.raises(InvalidBlockData, match="cycle"):
        b.save("b", overwrite=True)
    a = Node.load("a")
    a.next = Node.load("a")
    with pytest.raises(InvalidBlockData, match="cycle"):
        a.save("a", overwrite=True)
    assert Node.load("a").next.label == "b"  # type: ignore[union-attr]
    Node.delete("a")
    Node.delete("b")


def test_block_create_never_runs_a_file_named_by_the_registry(
    tmp_path: Path, blocks_home: Path
) -> None:
    marker = tmp_path / "pwned"
    evil = tmp_path / "evil_blocks.py"
    evil.write_text(f"open({str(marker)!r}, 'w').write('ran')\n")
    Registry.default().register_type(
        slug="evil",
        name="Evil",
        description="",
        module=str(evil),
        checksum="sha256:evil",
        version="1",
        fields={"properties": {}},
    )
    done = subprocess.run(
        [sys.executable, "-m", "blocks.cli", "create", "evil", "x", "--set", "a=b"],
        env=os.environ.copy(),
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    if "No module named blocks.cli.__main__" in done.stderr:
        done = subprocess.run(
            [str(Path(sys.executable).parent / "block"), "create", "evil", "x", "--set", "a=b"],
            env=os.environ.copy(),
            capture_output=True,
            text=True,
            cwd=tmp_path,
        )
    assert done.returncode != 0
    assert not marker.exists(), "the registry chose code that ran"
    assert "never run" in done.stderr and "block register -f" in done.stderr


def test_validation_errors_never_carry_the_secret_input() -> None:
    from pydantic import ValidationError

    with pytest.raises(ValidationError) as info:
        Login(user="u", password=918273645)
    forms = [str(info.value), info.value.json(), repr(info.value.errors())]
    login = Login(user="u", password="ok")
    with pytest.raises(ValidationError) as assigned:
        login.password = ["s3cr3t-in-a-list"]  # type: ignore[assignment]
    forms += [str(assigned.value), assigned.value.json(), repr(assigned.value.errors())]
    with pytest.raises(ValidationError) as validated:
        Login.model_validate_json('{"user": "u", "password": 918273645}')
    forms += [validated.value.json(), repr(validated.value.errors())]
    for form in forms:
        assert "918273645" not in form and "s3cr3t-in-a-list" not in form
    assert info.value.errors()[0]["loc"] == ("password",)


def test_a_discriminated_union_tag_is_not_echoed_by_parameter_errors() -> None:
    from typing import Annotated, Literal

    from pydantic import BaseModel

    from blocks.errors import ParameterTypeError
    from blocks.runtime._parameters import ParameterValidator

    class Basic(BaseModel):
        kind: Literal["basic"]

    class Token(BaseModel):
        kind: Literal["token"]

    hint = Annotated[Basic | Token, Field(discriminator="kind")]
    with pytest.raises(ParameterTypeError) as info:
        ParameterValidator("f", {"auth": hint})({"auth": {"kind": "tag-s3cr3t-value"}})
    assert "tag-s3cr3t-value" not in str(info.value)
    assert "'auth'" in str(info.value)


def test_url_userinfo_is_masked_in_repr_describe_and_storage_errors() -> None:
    from blocks.errors import StorageError
    from blocks.filesystems import S3, RemoteFileSystem

    s3 = S3(
        bucket_path="bucket/x",
        endpoint_url="http://AKIAUSERKEY:SUPERSECRETPW@127.0.0.1:9",
        client_config={"connect_timeout": 1, "retries": {"max_attempts": 0}},
    )
    remote = RemoteFileSystem(basepath="http://webuser:FTPSECRETPW@127.0.0.1:9/base")
    shown = [
        repr(s3),
        s3.describe(),
        str(dict(s3.masked_items())),
        repr(remote),
        remote.describe(),
        str(dict(remote.masked_items())),
    ]
    with pytest.raises(StorageError) as info:
        s3.write_path("k", b"v")
    shown.append(str(info.value))
    with pytest.raises(StorageError) as info_remote:
        remote.read_path("k")
    shown.append(str(info_remote.value))
    for text in shown:
        assert "SUPERSECRETPW" not in text and "FTPSECRETPW" not in text, text
        assert "AKIAUSERKEY" not in text, text
    print("\n" + "\n".join(shown[-2:]))
