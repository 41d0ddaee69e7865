"""Prefect parity for blocks, filesystems and serializers (issue #10).

Each test is written against Prefect 3's documented behaviour (`prefect.blocks.core`,
`prefect.blocks.system`, `prefect.filesystems`, `prefect.serializers`); where we are
deliberately different the README's "Differences from Prefect" says so and the test pins
our behaviour.
"""

from __future__ import annotations

import asyncio
import re
import uuid
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Annotated, Generic, TypeVar

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import (
    BaseModel,
    Field,
    PlainSerializer,
    SecretBytes,
    SecretStr,
    ValidationError,
)
from pydantic_extra_types.semantic_version import SemanticVersion
from servers import BACKENDS, make_storage

import serializers.json
from blocks.core import _block as core
from blocks.core._block import Block, SecretDict
from blocks.errors import (
    BlockAlreadyExists,
    BlockNotFound,
    IncompatibleSchema,
    InvalidName,
    UnknownBlockType,
    UnsafePath,
)
from blocks.filesystems import (
    GCS,
    S3,
    AwsCredentials,
    LocalFileSystem,
    RemoteFileSystem,
    WritableFileSystem,
)
from blocks.system import Secret
from serializers import JSONSerializer, SerializationError, register_json_type, resolve_serializer
from serializers.json import StoredException

# -- errors: Prefect code catches ValueError -----------------------------------------------


def test_block_not_found_is_a_value_error() -> None:
    with pytest.raises(ValueError):
        Secret.load("missing")
    with pytest.raises(LookupError):  # what our own callers catch keeps working
        Secret.load("missing")
    assert issubclass(BlockNotFound, ValueError)


def test_block_already_exists_is_a_value_error() -> None:
    Secret(value="a").save("taken")
    with pytest.raises(ValueError, match="overwrite"):
        Secret(value="b").save("taken")
    assert issubclass(BlockAlreadyExists, ValueError)


# -- Secret: str, dict or list (Prefect 3's value type) ------------------------------------


def test_secret_holds_a_list_encrypted_and_masked(blocks_home: object) -> None:
    tokens = ["tok-aaaaaaaa", {"nested": "tok-bbbbbbbb"}, 3]
    Secret(value=tokens).save("tokens")
    loaded = Secret.load("tokens")
    assert loaded.get() == tokens
    assert "tok-" not in repr(loaded) and "tok-" not in loaded.model_dump_json()
    from blocks.core._registry import Registry

    row = Registry.default().get_document("secret", "tokens")
    assert row is not None and "tok-" not in repr(row.data)
    assert list(row.secrets) == ["value"]


# -- Block core -----------------------------------------------------------------------------


class AliasBlock(Block):
    """Prefect's test_block_with_alias: `schema` is a BaseModel attribute name."""

    type: str
    schema_: str = Field(alias="schema")
    real_name: str = Field(alias="an_alias")
    password_: SecretStr = Field(alias="password")
    threads: int = 4


def test_block_with_alias_saves_and_loads_back() -> None:
    # Aliases on purpose: pydantic's mypy plugin only knows the field names.
    block = AliasBlock(type="snowflake", schema="a_schema", an_alias="me", password="pw-alias")  # type: ignore[call-arg]
    block.save("aliased")
    loaded = AliasBlock.load("aliased")
    assert loaded.schema_ == "a_schema" and loaded.real_name == "me" and loaded.threads == 4
    assert loaded.password_.get_secret_value() == "pw-alias"
    # Documents and the registered schema are keyed by field name (like secret paths and
    # `block create --set`); both names are accepted when building a block.
    assert AliasBlock(type="t", schema_="s", real_name="r", password_="p").schema_ == "s"
    assert "schema_" in AliasBlock.get_block_schema()["properties"]
    assert Block.load("alias-block/aliased").model_dump() == loaded.model_dump()


class Versioned(Block):
    version: SemanticVersion
    released: dict[str, SemanticVersion] = Field(default_factory=dict)
    hostname: Annotated[str, PlainSerializer(lambda v: v.upper(), return_type=str)] = "db"
    token: SecretStr | None = None


def test_block_field_of_a_custom_pydantic_type_saves() -> None:
    block = Versioned(
        version=SemanticVersion(1, 2, 3),
        released={"stable": SemanticVersion(1, 0, 0)},
        token=SecretStr("tok-custom"),
    )
    block.save("versioned")
    loaded = Versioned.load("versioned")
    assert loaded.version == SemanticVersion(1, 2, 3) and str(loaded.version) == "1.2.3"
    assert loaded.released == {"stable": SemanticVersion(1, 0, 0)}
    assert loaded.hostname == "DB"  # the field's own JSON serializer was used
    assert loaded.token is not None and loaded.token.get_secret_value() == "tok-custom"
    loaded.version = SemanticVersion(2, 0, 0)
    loaded.save("versioned", overwrite=True)
    assert Versioned.load("versioned").version == SemanticVersion(2, 0, 0)


class Evolving(Block):
    _block_type_slug = "evolving"
    host: str
    port: int = 5432
    password: SecretStr | None = None


def test_load_with_validate_false_loads_partially_with_a_warning(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    Evolving(host="db", password=SecretStr("pw-partial")).save("old")
    monkeypatch.setitem(core._BLOCK_CLASSES, "evolving", Evolving)  # restored after the test

    # The class changes: a new required field, and `port` becomes a constrained str.
    class Evolving2(Block):
        _block_type_slug = "evolving"
        host: str
        port: Annotated[str, Field(pattern="^[a-z]+$")]
        password: SecretStr | None = None
        database: str

    with pytest.raises(IncompatibleSchema, match="database"):
        Evolving2.load("old")
    with pytest.warns(UserWarning, match=r"Could not fully load evolving/old.*'database'"):
        partial = Evolving2.load("old", validate=False)
    assert type(partial) is Evolving2
    assert partial.host == "db" and partial.database is None  # missing -> None
    assert partial.port == 5432  # invalid: the stored value is kept, as Prefect does
    assert partial.password is not None
    assert partial.password.get_secret_value() == "pw-partial"
    assert "pw-partial" not in repr(partial)
    assert partial.block_document_name == "old"
    partial.database = "etl"
    partial.port = "pg"
    partial.save(overwrite=True)  # no name: saved again under the one it was loaded by
    assert Evolving2.load("old").database == "etl"


def test_validate_false_never_puts_a_plain_secret_in_a_secret_field(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(core, "_BLOCK_CLASSES", dict(core._BLOCK_CLASSES))  # restored after

    class Holder(Block):
        _block_type_slug = "holder"
        password: SecretStr

    Holder(password=SecretStr("pw-holder")).save("h")

    class Holder2(Block):
        _block_type_slug = "holder"
        password: SecretBytes | None = None
        count: Annotated[int, Field(gt=0)] = 1
        extra: int

    with pytest.warns(UserWarning, match="extra"):
        partial = Holder2.load("h", validate=False)
    assert "pw-holder" not in repr(partial)
    assert isinstance(partial.password, SecretBytes)  # validated on its own: str -> bytes
    assert partial.count == 1  # absent with a default: the default

    class Holder3(Block):
        _block_type_slug = "holder"
        password: SecretDict  # the stored str cannot be one: None, never the plain text

    with pytest.warns(UserWarning, match="password"):
        partial3 = Holder3.load("h", validate=False)
    assert partial3.password is None


class BaseThing(Block):
    base: int = 0


class AThing(BaseThing):
    a: int = 1


class BThing(BaseThing):
    b: int = 2


class ThingHolder(BaseModel):
    thing: BaseThing


def test_dump_names_the_block_type_and_base_parsing_builds_the_subclass() -> None:
    dumped = AThing(a=5).model_dump()
    assert dumped["block_type_slug"] == "a-thing"
    assert "block_type_slug" not in AThing().model_dump(exclude={"block_type_slug"})
    assert "block_type_slug" not in AThing().model_dump(include={"a"})
    parsed = BaseThing.model_validate(dumped)
    assert type(parsed) is AThing and parsed.a == 5 and parsed.base == 0
    assert type(BaseThing.model_validate_json(BThing(b=3).model_dump_json())) is BThing
    assert type(BaseThing.model_validate(BaseThing().model_dump())) is BaseThing
    assert type(Block.model_validate(BThing().model_dump())) is BThing
    assert type(ThingHolder(thing=AThing().model_dump()).thing) is AThing
    assert type(ThingHolder(thing=BThing()).thing) is BThing
    built = BaseThing(block_type_slug="b-thing", b=7)  # type: ignore[call-arg]  # a subclass's field
    assert type(built) is BThing and built.b == 7
    with pytest.raises(ValidationError, match="does not name an imported"):
        AThing.model_validate(BThing().model_dump())  # a sibling is not an AThing
    with pytest.raises(ValidationError, match="does not name an imported"):
        BaseThing.model_validate({"block_type_slug": "os-system"})  # never imported by name


def test_base_class_loads_any_subclass_by_type_slash_name() -> None:
    AThing(a=9).save("one")
    BThing(b=8).save("two")
    assert type(BaseThing.load("a-thing/one")) is AThing
    assert BaseThing.load("b-thing/two").b == 8  # type: ignore[attr-defined]
    with pytest.raises(InvalidName, match="loads base-thing blocks"):
        BaseThing.load("secret/one")
    with pytest.raises(InvalidName, match="loads a-thing blocks"):
        AThing.load("b-thing/two")  # a sibling, not a subclass
    with pytest.raises(UnknownBlockType):
        BaseThing.load("no-such-thing/one")


class Shelf(Block):
    storage: WritableFileSystem
    spare: LocalFileSystem | RemoteFileSystem | None = None


def test_a_field_typed_with_a_base_class_keeps_the_inline_subclass(tmp_path: Path) -> None:
    Shelf(
        storage=RemoteFileSystem(basepath="memory://shelf", settings={"key": "k-inline-123"}),
        spare=RemoteFileSystem(basepath="memory://spare"),
    ).save("shelf")
    loaded = Shelf.load("shelf")
    assert type(loaded.storage) is RemoteFileSystem
    assert loaded.storage.settings.get_secret_value() == {"key": "k-inline-123"}
    assert type(loaded.spare) is RemoteFileSystem
    assert type(Shelf.model_validate(loaded.model_dump()).storage) is RemoteFileSystem
    from blocks.core._registry import Registry

    row = Registry.default().get_document("shelf", "shelf")
    assert row is not None and row.data["storage"]["block_type_slug"] == "remote-file-system"
    # A field that can hold only one block type needs no type name in the document.
    S3(bucket_path="b/p", credentials=AwsCredentials(region_name="eu-west-1")).save("s3-inline")
    row = Registry.default().get_document("s3", "s3-inline")
    assert row is not None and "block_type_slug" not in row.data["credentials"]
    assert S3.load("s3-inline").credentials == AwsCredentials(region_name="eu-west-1")


class Rack(Block):
    stores: list[WritableFileSystem]


def test_a_list_of_base_typed_blocks_keeps_each_subclass_and_its_secrets(
    tmp_path: Path,
) -> None:
    Rack(
        stores=[
            LocalFileSystem(basepath=tmp_path, fsync=False),
            RemoteFileSystem(basepath="memory://rack", settings={"token": "tok-in-list-1"}),
        ]
    ).save("rack")
    from blocks.core._registry import Registry

    row = Registry.default().get_document("rack", "rack")
    assert row is not None and "tok-in-list-1" not in repr(row.data)
    loaded = Rack.load("rack")
    local, remote = loaded.stores
    assert type(local) is LocalFileSystem and local.fsync is False
    assert type(remote) is RemoteFileSystem
    assert remote.settings.get_secret_value() == {"token": "tok-in-list-1"}
    assert "tok-in-list-1" not in repr(loaded)


def test_anonymous_save_generates_a_name_and_stays_out_of_lists() -> None:
    block = AThing(a=3)
    first = block.save(is_anonymous=True)
    name = block.block_document_name
    assert name is not None and name.startswith("anonymous-") and block._is_anonymous
    loaded = AThing.load(name)
    assert loaded == block and loaded._is_anonymous
    assert block.save(is_anonymous=True) != first  # each anonymous save is a new document
    AThing(a=4).save("named")
    assert AThing.list() == ["named"]
    assert Block.list() == ["a-thing/named"]
    with pytest.raises(ValueError, match="takes no name"):
        AThing().save("x", is_anonymous=True)
    with pytest.raises(ValueError, match="never saved"):
        AThing().save()


def test_asave_and_aload_are_the_sync_calls_for_async_code() -> None:
    async def main() -> tuple[str, Secret, Secret]:
        document_id = await Secret(value="s-async").asave("async-key")
        by_slug = await Block.aload("secret/async-key")
        assert isinstance(by_slug, Secret)
        return document_id, await Secret.aload("async-key"), by_slug

    document_id, loaded, by_slug = asyncio.run(main())
    assert loaded.get() == by_slug.get() == "s-async"
    assert loaded._block_document_id == document_id
    with pytest.raises(BlockNotFound):
        asyncio.run(Secret.aload("nope"))


# -- filesystems: one suite over local, memory, file://, S3 (LocalStack), GCS (emulator) ---------


@pytest.fixture(params=BACKENDS)
def storage(request: pytest.FixtureRequest, tmp_path: Path) -> WritableFileSystem:
    made: WritableFileSystem = make_storage(request.param, request, tmp_path)
    return made


def test_write_path_returns_where_it_wrote_and_read_path_takes_it_back(
    storage: WritableFileSystem,
) -> None:
    where = storage.write_path("a/b.bin", b"payload")
    if isinstance(storage, LocalFileSystem):
        assert where == str(storage.root() / "a" / "b.bin")
    else:
        assert where.endswith("/a/b.bin") and "://" in where
    assert storage.read_path(where) == b"payload"
    assert storage.exists(where) and storage.size(where) == 7
    assert storage.ls() == ["a/b.bin"]
    storage.delete(where)
    assert storage.ls() == []


OUTSIDE_URLS = [
    "memory://elsewhere/x",
    "s3://another-bucket/k",
    "gs://another-bucket/k",
    "gcs://another-bucket/k",
    "file:///etc/passwd",
    "s3:/b/k",
    "memory:",
    "https://example.com/x",
]


@pytest.mark.parametrize("url", OUTSIDE_URLS)
def test_a_url_outside_the_base_path_is_refused_not_stored_elsewhere(
    storage: WritableFileSystem, url: str
) -> None:
    with pytest.raises(UnsafePath, match="Refused key"):
        storage.write_path(url, b"x")
    for operation in (storage.read_path, storage.exists, storage.delete, storage.ls):
        with pytest.raises(UnsafePath):
            operation(url)
    assert storage.ls() == []


def test_a_url_inside_the_base_path_resolves_to_its_key(storage: WritableFileSystem) -> None:
    where = storage.write_path("k", b"1")
    base = where[: -len("/k")]
    assert storage.read_path(f"{base}/k") == b"1"
    storage.write_path(f"{base}//sub/./n", b"2")
    assert storage.ls() == ["k", "sub/n"]
    assert storage.ls(f"{base}/sub") == ["sub/n"]
    with pytest.raises(UnsafePath, match=r"'\.\.'"):
        storage.write_path(f"{base}/../escape", b"x")
    with pytest.raises(UnsafePath, match="empty"):
        storage.write_path(base, b"x")
    assert storage.ls() == ["k", "sub/n"]


def test_prefect_cases_for_url_shaped_keys(tmp_path: Path) -> None:
    remote = RemoteFileSystem(basepath=f"memory://foo-{uuid.uuid4().hex[:8]}")
    with pytest.raises(UnsafePath, match="outside the base path"):
        remote.write_path("memory://bar/x", b"1")
    assert remote.write_path(f"{remote.basepath}/x", b"1") == f"{remote.basepath}/x"
    assert remote.ls() == ["x"]
    local = LocalFileSystem(basepath=tmp_path / "base")
    with pytest.raises(UnsafePath):
        local.write_path("s3://b/k", b"1")
    assert not (tmp_path / "base" / "s3:").exists()
    with pytest.raises(UnsafePath):
        local.write_path(str(tmp_path / "elsewhere"), b"1")  # absolute, outside
    s3 = S3(bucket_path="bucket/base")
    assert s3._full("s3://bucket/base/k") == s3._full("s3a://bucket/base/k") == "bucket/base/k"
    with pytest.raises(UnsafePath):
        s3._full("s3://bucket/based/k")  # a sibling folder that shares the prefix
    gcs = GCS(bucket_path="gs://bucket/base")
    assert gcs._full("gcs://bucket/base/k") == "bucket/base/k"


def test_a_url_with_credentials_never_comes_back_from_write_path(tmp_path: Path) -> None:
    fs = RemoteFileSystem(basepath=f"file://user:pw-in-url@{tmp_path}/creds")
    assert fs._base_url() == f"file://{tmp_path}/creds"
    assert "pw-in-url" not in fs.describe()


def test_pathlib_keys_and_basepath_are_accepted_and_checked(
    storage: WritableFileSystem, tmp_path: Path
) -> None:
    storage.write_path(PurePosixPath("p") / "q.bin", b"1")
    assert storage.read_path("p/q.bin") == b"1"
    assert storage.read_path(PureWindowsPath("p\\q.bin")) == b"1"
    assert storage.ls(Path("p")) == ["p/q.bin"]
    for bad in (Path("../escape"), PurePosixPath("/etc/passwd"), PureWindowsPath("C:/x")):
        with pytest.raises(UnsafePath, match="Refused key"):
            storage.write_path(bad, b"x")
    with pytest.raises(UnsafePath, match="str or pathlib"):
        storage.read_path(b"p/q.bin")  # type: ignore[arg-type]
    local = LocalFileSystem(basepath=tmp_path / "as-path")
    assert local.basepath == str(tmp_path / "as-path")
    local.write_path(tmp_path / "as-path" / "abs.bin", b"2")  # absolute inside: its key
    assert local.ls() == ["abs.bin"]


def _tree(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def test_put_directory_then_get_directory_round_trips_a_tree(
    storage: WritableFileSystem, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    source = tmp_path / "src"
    files = {
        "flow.py": b"print('hi')",
        "pkg/__init__.py": b"",
        "pkg/deep/data.bin": bytes(range(256)) * 1000,
        "build/out.o": b"ignored by folder",
        "notes.log": b"ignored by pattern",
        "keep.log": b"re-included",
    }
    for name, content in files.items():
        (source / name).parent.mkdir(parents=True, exist_ok=True)
        (source / name).write_bytes(content)
    ignore = tmp_path / ".prefectignore"
    ignore.write_text("build/\n*.log\n!keep.log\n")
    copied = storage.put_directory(source, "deploy/v1", ignore_file=ignore)
    kept = {k: v for k, v in files.items() if not k.startswith("build/") and k != "notes.log"}
    print(f"put_directory on {type(storage).__name__}: {copied} files")
    assert copied == len(kept)
    assert storage.ls("deploy") == sorted(f"deploy/v1/{k}" for k in kept)

    target = tmp_path / "out"
    assert storage.get_directory("deploy/v1", target) == len(kept)
    assert _tree(target) == kept
    assert storage.get_directory(storage.write_path("one.txt", b"1"), target / "single") == 1
    assert _tree(target / "single") == {"one.txt": b"1"}

    # Prefect's defaults: the current directory in, the whole base path out.
    monkeypatch.chdir(source / "pkg")
    assert storage.put_directory() == 2
    monkeypatch.chdir(tmp_path / "out")
    assert storage.get_directory() == len(kept) + 3
    assert (tmp_path / "out" / "deep" / "data.bin").read_bytes() == files["pkg/deep/data.bin"]
    with pytest.raises(UnsafePath):
        storage.put_directory(source, "../escape")
    with pytest.raises(UnsafePath):
        storage.get_directory("memory://elsewhere", target)


# -- serializers -----------------------------------------------------------------------------


class AppError(Exception):
    """A user exception type, allow-listed in some tests."""


class CodeError(Exception):
    def __init__(self, code: int, where: str) -> None:  # does not take its own args back
        super().__init__(f"failed with code {code} in {where}")


def test_json_round_trips_builtin_exceptions() -> None:
    s = JSONSerializer()
    values = [
        ValueError("bad value", 3),
        KeyError("k"),
        FileNotFoundError(2, "No such file", "/x"),
        UnicodeDecodeError("utf-8", b"\xff", 0, 1, "invalid start byte"),
        RuntimeError(),
    ]
    for value in values:
        back = s.loads(s.dumps({"error": value}))["error"]
        assert type(back) is type(value) and back.args == value.args
    assert isinstance(s.loads(s.dumps(FileNotFoundError(2, "x"))), FileNotFoundError)


def test_json_rebuilds_other_exceptions_only_when_allow_listed() -> None:
    writer = JSONSerializer(types=[AppError])
    data = writer.dumps([AppError("boom", {"at": 1})])
    assert type(writer.loads(data)[0]) is AppError
    stored = JSONSerializer().loads(data)[0]  # not allow-listed here: no import, a stand-in
    assert type(stored) is StoredException
    assert stored.type_name == f"{AppError.__module__}:AppError"
    assert stored.args == ("boom", {"at": 1})
    assert "AppError: " in str(stored)
    import pickle

    assert pickle.loads(pickle.dumps(stored)).type_name == stored.type_name
    # A class named by the data is never imported, even a real, importable one.
    forged = b'{"__blocks__":"exception","cls":"os:system","v":["echo pwned"]}'
    assert type(JSONSerializer().loads(forged)) is StoredException
    forged = b'{"__blocks__":"exception","cls":"builtins:__import__","v":["os"]}'
    assert type(JSONSerializer().loads(forged)) is StoredException


def test_json_exception_edge_cases_never_lose_the_failure(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(serializers.json, "_GLOBAL_TYPES", {})  # restored after the test
    s = JSONSerializer(types=[CodeError])
    back = s.loads(s.dumps(CodeError(7, "etl")))
    assert type(back) is StoredException and back.args == ("failed with code 7 in etl",)
    weird = ValueError(object(), "text")  # an argument JSON cannot hold: kept as its repr
    back = s.loads(s.dumps(weird))
    assert type(back) is ValueError and back.args[1] == "text"
    assert back.args[0].startswith("<object object at")
    register_json_type(AppError)  # exceptions can be registered globally too
    assert type(JSONSerializer().loads(JSONSerializer().dumps(AppError("g")))) is AppError
    with pytest.raises(SerializationError, match="only Enum"):
        JSONSerializer(types=[int])


def test_json_dumps_kwargs_are_json_dumps_options() -> None:
    s = JSONSerializer(dumps_kwargs={"indent": 2, "sort_keys": True})
    text = s.dumps({"b": 1, "a": {"c": [1, 2]}}).decode()
    assert text.startswith('{\n  "a"') and s.loads(text.encode()) == {"b": 1, "a": {"c": [1, 2]}}
    spec = s.to_spec()
    assert spec == {"type": "json", "dumps_kwargs": {"indent": 2, "sort_keys": True}}
    assert resolve_serializer(spec) == s != JSONSerializer()
    assert JSONSerializer().to_spec() == {"type": "json"}  # default spec unchanged
    ascii_only = JSONSerializer(dumps_kwargs={"ensure_ascii": True, "separators": [",", ":"]})
    assert ascii_only.dumps("é") == b'"\\u00e9"'
    for bad in ({"default": str}, {"cls": object}, {"object_hook": dict}):
        with pytest.raises(SerializationError, match="dumps_kwargs may set"):
            JSONSerializer(dumps_kwargs=bad)
    with pytest.raises(SerializationError, match="dumps_kwargs"):
        resolve_serializer({"type": "json", "dumps_kwargs": {"default": "os.system"}})


T = TypeVar("T")


class Box(BaseModel, Generic[T]):
    item: T
    tags: list[T] = []


class Item(BaseModel):
    name: str


def test_an_allow_listed_generic_model_covers_its_parametrisations() -> None:
    s = JSONSerializer(types=[Box, Item])
    for value in (Box[int](item=1, tags=[2]), Box[Item](item=Item(name="x")), Box(item="raw")):
        back = s.loads(s.dumps(value))
        assert back == value and isinstance(back, Box)
    assert type(s.loads(s.dumps(Box[Item](item=Item(name="y")))).item) is Item
    with pytest.raises(SerializationError, match="may not write"):
        JSONSerializer(types=[Item]).dumps(Box[int](item=1))  # the generic itself is not allowed
    with pytest.raises(SerializationError, match="may not write"):
        JSONSerializer(types=[Box]).dumps(Box[Item](item=Item(name="z")))  # nor its argument


# -- URL-shaped keys as a property: resolved inside the base path, or refused ------------------

URL_PARTS = st.sampled_from(
    [
        "s3://",
        "s3a://",
        "gs://",
        "gcs://",
        "memory://",
        "file://",
        "bucket",
        "base",
        "prop",
        "/",
        "//",
        "..",
        ".",
        "x",
        ":",
        "@",
        "u:p@",
        "based",
        "?",
        "#",
        "%2e",
    ]
)


@settings(max_examples=400, deadline=None)
@given(url=st.lists(URL_PARTS, max_size=10).map("".join))
def test_property_url_keys_resolve_inside_the_base_path_or_are_refused(url: str) -> None:
    for block in (
        RemoteFileSystem(basepath="memory://prop/base"),
        S3(bucket_path="bucket/base"),
        GCS(bucket_path="bucket/base"),
    ):
        root = block._root()
        try:
            full = block._full(url)
        except UnsafePath as exc:
            assert "Refused key" in str(exc)
            continue
        assert full.startswith(root + "/") and ".." not in full.split("/")
        first = full[len(root) + 1 :].split("/")[0]
        assert "://" not in full and not re.fullmatch(r"[A-Za-z][A-Za-z0-9+.-]*:", first)
        # The key it resolved to names the same object.
        assert block._full(full[len(root) + 1 :]) == full
