"""The Block model: slugs, schemas, save/load/delete/list, references, schema evolution, secrets.

Every test runs against the embedded SQLite registry and a real PostgreSQL 15.
"""

from __future__ import annotations

import sqlite3
from datetime import datetime
from pathlib import Path
from typing import Any, ClassVar

import pydantic
import pytest
from pydantic import Field, SecretBytes, SecretStr

from blocks.core._block import Block, SecretDict, block_class_for, kebab_case
from blocks.core._registry import SCHEMA_VERSION, Registry
from blocks.errors import (
    BlockAlreadyExists,
    BlockInUse,
    BlockNotFound,
    IncompatibleSchema,
    InvalidName,
    UnknownBlockType,
)
from blocks.system import JSON, DateTime, Secret, String


@pytest.fixture(params=["sqlite", "postgres"], autouse=True)
def registry_backend(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Run each test on SQLite and on a fresh PostgreSQL database."""
    if request.param == "postgres":
        url = request.getfixturevalue("postgres_db_url")
        monkeypatch.setenv("BLOCKS_REGISTRY_URL", url)
    return str(request.param)


class Credentials(Block):
    """Login for a warehouse."""

    user: str
    password: SecretStr
    token: SecretStr | None = None


class Warehouse(Block):
    host: str
    port: int = 5432
    credentials: Credentials
    options: dict[str, Any] = Field(default_factory=dict)


class Vault(Block):
    api: SecretDict
    blob: SecretBytes


def test_type_slug_is_kebab_case_of_class_name() -> None:
    assert kebab_case("AwsCredentials") == "aws-credentials"
    assert kebab_case("S3") == "s3"
    assert kebab_case("GCS") == "gcs"
    assert kebab_case("LocalFileSystem") == "local-file-system"
    assert kebab_case("HTTPServerConfig") == "http-server-config"
    assert Warehouse.get_block_type_slug() == "warehouse"
    assert JSON.get_block_type_slug() == "json"
    assert DateTime.get_block_type_slug() == "date-time"


def test_explicit_slug_overrides_class_name() -> None:
    class Custom(Block):
        _block_type_slug = "my-custom"
        x: int = 1

    assert Custom.get_block_type_slug() == "my-custom"
    Custom(x=3).save("one")
    assert Block.load("my-custom/one").x == 3  # type: ignore[attr-defined]


def test_schema_lists_secrets_and_references_and_has_stable_checksum() -> None:
    schema = Warehouse.get_block_schema()
    assert schema["block_schema_references"] == {"credentials": ["credentials"]}
    assert Credentials.get_block_schema()["secret_fields"] == ["password", "token"]
    assert Vault.secret_fields() == ["api", "blob"]
    assert Warehouse.get_schema_checksum().startswith("sha256:")
    assert Warehouse.get_schema_checksum() == Warehouse.get_schema_checksum()
    assert Warehouse.get_schema_checksum() != Credentials.get_schema_checksum()


def test_save_load_round_trip_of_every_system_block() -> None:
    when = datetime(2026, 1, 2, 3, 4, 5)
    Secret(value="s3cr3t").save("my-api-key")
    Secret(value={"user": "etl", "password": "pw"}).save("db-login")
    JSON(value={"a": [1, 2, {"b": None}]}).save("cfg")
    String(value="hello").save("greeting")
    DateTime(value=when).save("start")
    assert Secret.load("my-api-key").get() == "s3cr3t"
    assert Secret.load("db-login").get() == {"user": "etl", "password": "pw"}
    assert JSON.load("cfg").get() == {"a": [1, 2, {"b": None}]}
    assert String.load("greeting").get() == "hello"
    assert DateTime.load("start").get() == when


def test_generic_load_by_type_slug_and_name() -> None:
    Secret(value="x").save("k")
    loaded = Block.load("secret/k")
    assert isinstance(loaded, Secret)
    assert loaded.get() == "x"
    assert Secret.load("secret/k").get() == "x"
    with pytest.raises(InvalidName, match="names a json block"):
        Secret.load("json/k")


def test_saving_an_existing_name_needs_overwrite() -> None:
    Secret(value="one").save("k")
    with pytest.raises(BlockAlreadyExists, match="overwrite=True"):
        Secret(value="two").save("k")
    assert Secret.load("k").get() == "one"
    Secret(value="two").save("k", overwrite=True)
    assert Secret.load("k").get() == "two"


@pytest.mark.parametrize("bad", ["My-Key", "a_b", "-a", "a-", "", "a b", "a/b", "ä", "a--b"])
def test_invalid_names_are_refused(bad: str) -> None:
    with pytest.raises(InvalidName, match="lowercase letters, digits and dashes"):
        Secret(value="x").save(bad)


def test_missing_name_error_lists_existing_names() -> None:
    Secret(value="x").save("alpha")
    Secret(value="y").save("beta")
    with pytest.raises(BlockNotFound) as info:
        Secret.load("gamma")
    assert "alpha, beta" in str(info.value)
    with pytest.raises(BlockNotFound, match="none yet"):
        String.load("anything")


def test_unknown_type_slug_is_a_clear_error() -> None:
    with pytest.raises(UnknownBlockType, match="no-such-type"):
        Block.load("no-such-type/x")


def test_list_and_delete() -> None:
    for name in ("b", "a", "c"):
        String(value=name).save(name)
    assert String.list() == ["a", "b", "c"]
    String.delete("b")
    assert String.list() == ["a", "c"]
    assert "string/a" in Block.list()
    with pytest.raises(BlockNotFound):
        String.delete("b")


def test_saved_child_is_linked_not_copied() -> None:
    creds = Credentials(user="etl", password="pw1")
    creds.save("prod")
    Warehouse(host="db", credentials=Credentials.load("prod")).save("main")
    Credentials(user="etl2", password="pw2").save("prod", overwrite=True)
    loaded = Warehouse.load("main")
    assert loaded.credentials.user == "etl2"
    assert loaded.credentials.password.get_secret_value() == "pw2"
    assert loaded.credentials.block_document_name == "prod"


def test_referenced_child_cannot_be_deleted() -> None:
    creds = Credentials(user="etl", password="pw")
    creds.save("prod")
    Warehouse(host="db", credentials=creds).save("main")
    with pytest.raises(BlockInUse, match="warehouse/main"):
        Credentials.delete("prod")
    assert Warehouse.load("main").credentials.user == "etl"
    Warehouse.delete("main")
    Credentials.delete("prod")


def test_unsaved_child_is_embedded_with_its_secrets_encrypted() -> None:
    Warehouse(host="db", credentials=Credentials(user="u", password="inner-pw")).save("w")
    loaded = Warehouse.load("w")
    assert loaded.credentials.password.get_secret_value() == "inner-pw"
    assert loaded.credentials.block_document_name is None
    row = Registry.default().get_document("warehouse", "w")
    assert row is not None
    assert "credentials.password" in row.secrets
    assert "inner-pw" not in str(row.data) + str(row.secrets)


def test_secret_dict_and_bytes_round_trip() -> None:
    Vault(api={"key": "k1", "nested": {"n": 1}}, blob=b"\x00\xffbinary").save("v")
    loaded = Vault.load("v")
    assert loaded.api.get_secret_value() == {"key": "k1", "nested": {"n": 1}}
    assert loaded.blob.get_secret_value() == b"\x00\xffbinary"


def test_secrets_never_show_in_repr_str_or_json_dump() -> None:
    blocks = [
        Secret(value="plain-secret-1"),
        Secret(value={"password": "plain-secret-2"}),
        Vault(api={"k": "plain-secret-3"}, blob=b"plain-secret-4"),
        Credentials(user="u", password="plain-secret-5"),
    ]
    for block in blocks:
        for text in (
            repr(block),
            str(block),
            block.model_dump_json(),
            str(dict(block.masked_items())),
        ):
            assert "plain-secret" not in text


def test_compatible_schema_change_loads_old_documents() -> None:
    class Evolving(Block):
        _block_type_slug = "evolving"
        a: int

    Evolving(a=1).save("doc")

    class EvolvingV2(Block):  # same slug, a new field with a default
        _block_type_slug = "evolving"
        a: int
        b: str = "default-b"

    loaded = EvolvingV2.load("doc")
    assert (loaded.a, loaded.b) == (1, "default-b")


def test_incompatible_schema_change_names_the_field() -> None:
    class Shape(Block):
        _block_type_slug = "shape"
        sides: int

    Shape(sides=3).save("tri")

    class ShapeV2(Block):
        _block_type_slug = "shape"
        sides: int
        colour: str  # required, no default

    with pytest.raises(IncompatibleSchema, match="'colour'"):
        ShapeV2.load("tri")


def test_register_type_and_schema_without_saving() -> None:
    Warehouse.register_type_and_schema()
    registry = Registry.default()
    row = registry.get_type("warehouse")
    assert row is not None and row.module == __name__
    assert registry.list_documents("warehouse") == []
    schemas = registry.list_schemas("warehouse")
    assert schemas[0].checksum == Warehouse.get_schema_checksum()


def test_builtin_types_resolve_without_import() -> None:
    assert block_class_for("secret") is Secret


def test_wrong_master_key_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    import base64
    import os

    from blocks.errors import DecryptionFailed

    Secret(value="s").save("k")
    monkeypatch.setenv("BLOCKS_MASTER_KEY", base64.urlsafe_b64encode(os.urandom(32)).decode())
    with pytest.raises(DecryptionFailed) as info:
        Secret.load("k")
    message = str(info.value)
    assert "secret/k" in message and "key" in message


def test_registry_records_schema_version(registry_backend: str, blocks_home: Path) -> None:
    Registry.default()
    if registry_backend == "sqlite":
        with sqlite3.connect(blocks_home / "registry.db") as conn:
            assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
            rows = conn.execute("select key, value from registry_meta").fetchall()
        assert ("schema_version", str(SCHEMA_VERSION)) in rows


class Tokens(Block):
    tokens: dict[str, SecretStr]
    history: list[SecretStr] = Field(default_factory=list)
    when: datetime | None = None


def test_secrets_inside_containers_are_encrypted_not_lost() -> None:
    when = datetime(2026, 5, 4, 3, 2, 1)
    Tokens(tokens={"a.b": "tok-1", "c~d": "tok-2"}, history=["old-1", "old-2"], when=when).save("t")
    loaded = Tokens.load("t")
    assert {k: v.get_secret_value() for k, v in loaded.tokens.items()} == {
        "a.b": "tok-1",
        "c~d": "tok-2",
    }
    assert [v.get_secret_value() for v in loaded.history] == ["old-1", "old-2"]
    assert loaded.when == when
    row = Registry.default().get_document("tokens", "t")
    assert row is not None
    assert len(row.secrets) == 4
    assert "tok-1" not in str(row.data) and "old-1" not in str(row.data)


def test_validation_errors_never_repeat_the_input() -> None:
    from pydantic import ValidationError

    with pytest.raises(ValidationError) as info:
        Secret(value=987654321)
    assert "987654321" not in str(info.value)
    with pytest.raises(ValidationError) as info:
        Credentials(user="u", password="pw", token=["tok-98765"])
    assert "tok-98765" not in str(info.value)


class Counted(Block):
    """A block with a validator of its own: always loaded through model_validate."""

    label: str
    runs: int = 0

    @pydantic.model_validator(mode="after")
    def _count(self) -> Counted:
        Counted.validations += 1
        return self

    validations: ClassVar[int] = 0


class Plain(Block):
    """Only fields whose stored values validate unchanged: loaded without re-validation."""

    name_: str = Field(alias="name_")
    port: int
    ratio: float
    enabled: bool
    token: SecretStr
    raw: SecretBytes | None
    extra: Any
    note: str | None = None


def test_loads_built_without_revalidation_equal_validated_blocks() -> None:
    from blocks.core import _block as core

    plain = Plain(
        name_="db",
        port=5432,
        ratio=0.5,
        enabled=True,
        token=SecretStr("t"),
        raw=SecretBytes(b"r"),
        extra={"a": [1, 2]},
        note=None,
    )
    plain.save("plain")
    Secret(value="s").save("s")
    String(value="x").save("x")
    JSON(value={"k": [1, "two"]}).save("j")
    Secret(value={"user": "u"}).save("d")
    DateTime(value=datetime(2026, 1, 2, 3, 4, 5)).save("t")
    assert core._construct_plan(Secret) and core._construct_plan(Plain)
    assert core._construct_plan(DateTime) is None and core._construct_plan(Counted) is None
    cases: list[tuple[type[Block], str]] = [
        (Plain, "plain"),
        (Secret, "s"),
        (String, "x"),
        (JSON, "j"),
        (Secret, "d"),
        (DateTime, "t"),
    ]
    for cls, name in cases:
        loaded = cls.load(name)
        fields = {f: getattr(loaded, f) for f in cls.model_fields}
        validated = cls.model_validate(fields)
        assert loaded.__dict__ == validated.__dict__ and type(loaded) is cls, name
        assert [type(getattr(loaded, f)) for f in cls.model_fields] == [
            type(getattr(validated, f)) for f in cls.model_fields
        ]
        assert loaded.model_fields_set == validated.model_fields_set
        assert loaded.block_document_name == name and not loaded._is_anonymous
        assert repr(loaded) == repr(validated)
    assert Plain.load("plain").token.get_secret_value() == "t"
    assert type(Secret.load("d").value) is type(Secret(value={"user": "u"}).value)
    Counted(label="c").save("c")
    before = Counted.validations
    assert Counted.load("c").label == "c" and Counted.validations == before + 1


def test_a_stored_value_of_another_type_still_gets_validation_and_its_error() -> None:
    class Port(Block):
        _block_type_slug = "port-for-test"
        value: str

    Port(value="not-a-number").save("p")

    class PortNow(Block):
        _block_type_slug = "port-for-test"
        value: int

    with pytest.raises(IncompatibleSchema, match="value"):
        PortNow.load("p")
