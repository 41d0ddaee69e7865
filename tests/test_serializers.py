"""One round-trip suite run against every serializer, then what is specific to each.

Mirrors `serializers/`: the suite (examples, hypothesis properties, real files, streaming
memory) is parametrized over every serializer, so a new one gets every test for free.
"""

from __future__ import annotations

import dataclasses
import gc
import io
import json
import math
import os
import subprocess
import sys
import threading
import tracemalloc
import uuid
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta, timezone
from decimal import Decimal
from enum import Enum, IntEnum, StrEnum
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import BaseModel, ConfigDict, field_validator

import serializers
from serializers import (
    CompressedSerializer,
    JSONSerializer,
    PickleSerializer,
    SerializationError,
    Serializer,
    register_json_type,
    resolve_serializer,
)

TAG = "__blocks__"


# -- types the suite stores (module level, so the stdlib pickle can find them too) ----------


class Color(Enum):
    RED = "red"
    GREEN = "green"


class Level(IntEnum):
    LOW = 1
    HIGH = 2


class Mode(StrEnum):
    FAST = "fast"
    SAFE = "safe"


@dataclass(frozen=True)
class Point:
    x: int
    y: int


@dataclass
class Box:
    label: str
    points: list[Point]
    corner: tuple[int, int] = (0, 0)
    area: float = field(default=0.0, init=False)


class Address(BaseModel):
    city: str
    zip: str | None = None


class Person(BaseModel):
    name: str
    born: date
    address: Address
    color: Color = Color.RED
    home: Path | None = None


class Loose(BaseModel):
    model_config = ConfigDict(extra="allow")
    a: int


class Shouty(BaseModel):
    """A validator that is not idempotent: re-validating on decode would change the value."""

    word: str

    @field_validator("word")
    @classmethod
    def _exclaim(cls, v: str) -> str:
        return v + "!"


class Unlisted(Enum):
    X = 1


TYPES = [Color, Level, Mode, Point, Box, Address, Person, Loose, Shouty]


def json_serializer() -> JSONSerializer:
    return JSONSerializer(types=TYPES)


SERIALIZERS: dict[str, Serializer] = {
    "json": json_serializer(),
    "pickle": PickleSerializer(),
    "pickle-stdlib": PickleSerializer(picklelib="pickle"),
    "compressed-json-zlib": CompressedSerializer(json_serializer(), "zlib"),
    "compressed-json-lzma": CompressedSerializer(json_serializer(), "lzma", level=1),
    "compressed-json-bz2": CompressedSerializer(json_serializer(), "bz2"),
    "compressed-pickle": CompressedSerializer("pickle", level=1),
}
every_serializer = pytest.mark.parametrize(
    "serializer", list(SERIALIZERS.values()), ids=list(SERIALIZERS)
)


def assert_same(got: Any, want: Any, path: str = "value") -> None:
    """Equal *and* of the same types all the way down (1 == 1.0 == True is not enough)."""
    assert type(got) is type(want), f"{path}: {type(got)} is not {type(want)}"
    if isinstance(want, float):
        assert repr(got) == repr(want), f"{path}: {got!r} != {want!r}"  # nan, -0.0
    elif isinstance(want, complex):
        assert repr(got) == repr(want), path
    elif isinstance(want, Decimal):
        assert str(got) == str(want), path
    elif isinstance(want, dict):
        assert len(got) == len(want), path
        for (gk, gv), (wk, wv) in zip(got.items(), want.items(), strict=True):
            assert_same(gk, wk, f"{path}.key")
            assert_same(gv, wv, f"{path}[{wk!r}]")
    elif isinstance(want, list | tuple):
        assert len(got) == len(want), path
        for i, (g, w) in enumerate(zip(got, want, strict=True)):
            assert_same(g, w, f"{path}[{i}]")
    elif isinstance(want, set | frozenset):
        assert {(type(x), x) for x in got} == {(type(x), x) for x in want}, path
    elif isinstance(want, datetime | time):
        # Wall clock, zone and fold: stricter than ==, which compares instants.
        assert got.replace(tzinfo=None) == want.replace(tzinfo=None), path
        assert got.tzinfo == want.tzinfo, f"{path}: {got.tzinfo!r} != {want.tzinfo!r}"
        assert got.fold == want.fold, path
    elif isinstance(want, BaseModel):
        assert_same(got.__dict__, want.__dict__, path)
        assert got.model_fields_set == want.model_fields_set, path
        # Compared field by field: == on the dicts fails for nan, which never equals itself.
        assert_same(got.__pydantic_extra__, want.__pydantic_extra__, f"{path}.<extra>")
    elif dataclasses.is_dataclass(want):
        for f in dataclasses.fields(want):
            assert_same(getattr(got, f.name), getattr(want, f.name), f"{path}.{f.name}")
    else:
        assert got == want, f"{path}: {got!r} != {want!r}"


def round_trip(serializer: Serializer, value: Any) -> Any:
    return serializer.loads(serializer.dumps(value))


# -- the suite: every serializer -------------------------------------------------------------

EXAMPLES: dict[str, Any] = {
    "none": None,
    "bool": True,
    "int": -(2**70),
    "float": 1.5,
    "nan": math.nan,
    "inf": -math.inf,
    "negative-zero": -0.0,
    "str": "héllo 한국어 \x00 \n",
    "lone-surrogate": "a\ud800b",
    "empty-containers": [[], {}, (), set(), frozenset(), ""],
    "nested-json": {"source": "database", "records": [1, 2, 3], "meta": {"ok": None}},
    "tuple": (1, (2, [3, (4,)]), "x"),
    "non-str-keys": {1: "int", None: "none", (1, 2): "tuple", 2.5: "float", False: "bool"},
    "tag-key-as-data": {TAG: "datetime", "v": "2020-01-01"},
    "tag-key-nested": [{TAG: {TAG: 1}}, {"x": {TAG: "tuple", "v": []}}],
    "datetime-naive": datetime(2024, 1, 2, 3, 4, 5, 678901),
    "datetime-utc": datetime(2024, 1, 2, 3, 4, 5, tzinfo=UTC),
    "datetime-offset": datetime(2024, 1, 2, tzinfo=timezone(timedelta(hours=-3, minutes=-30))),
    "datetime-zoneinfo-fold": datetime(
        2024, 10, 27, 2, 30, tzinfo=ZoneInfo("Europe/Berlin"), fold=1
    ),
    "date": date(1999, 12, 31),
    "time": time(23, 59, 59, 1),
    "time-aware": time(12, 0, tzinfo=timezone(timedelta(hours=5))),
    "timedelta": timedelta(days=-3, seconds=5, microseconds=7),
    "uuid": uuid.UUID("12345678-1234-5678-1234-567812345678"),
    "decimal": [Decimal("1.10"), Decimal("-0"), Decimal("1E+3"), Decimal("NaN")],
    "bytes": b"\x00\xff binary",
    "bytearray": bytearray(b"\x01\x02"),
    "set": {1, "a", (2, 3)},
    "frozenset": frozenset({frozenset({1}), 2}),
    "complex": 1.5 - 2j,
    "paths": [Path("/tmp/x y"), PurePosixPath("a/b"), PureWindowsPath("C:\\x")],
    "enums": [Color.GREEN, Level.HIGH, Mode.SAFE, {Level.LOW: Mode.FAST}],
    "dataclasses": Box("b", [Point(1, 2), Point(3, 4)], corner=(5, 6)),
    "dataclass-key": {Point(0, 0): "origin"},
    "pydantic": Person(
        name="Ada", born=date(1815, 12, 10), address=Address(city="London"), home=Path("/h")
    ),
    "pydantic-extra": Loose(a=1, b=[1, (2,)], c={TAG: 1}),
    "mixed": {"when": [datetime(2020, 1, 1), date(2020, 1, 1)], "ids": {uuid.UUID(int=1)}},
}


@every_serializer
@pytest.mark.parametrize("value", list(EXAMPLES.values()), ids=list(EXAMPLES))
def test_round_trip_keeps_value_and_types(serializer: Serializer, value: Any) -> None:
    data = serializer.dumps(value)
    assert isinstance(data, bytes)
    assert_same(serializer.loads(data), value)


@every_serializer
def test_dump_and_load_stream_through_a_real_file(serializer: Serializer, tmp_path: Path) -> None:
    value = EXAMPLES["mixed"] | {"rows": list(range(50_000)), "blob": os.urandom(300_000)}
    path = tmp_path / "payload.bin"
    with path.open("wb") as f:
        serializer.dump(value, f)
    with path.open("rb") as f:
        assert_same(serializer.load(f), value)
    # dump/dumps and load/loads are interchangeable.
    assert_same(serializer.loads(path.read_bytes()), value)
    with path.open("wb") as f:
        f.write(serializer.dumps(value))
    with path.open("rb") as f:
        assert_same(serializer.load(f), value)


@every_serializer
def test_load_starts_where_the_file_is_positioned(serializer: Serializer, tmp_path: Path) -> None:
    """The result store writes its header first, then the payload."""
    path = tmp_path / "record"
    with path.open("wb") as f:
        f.write(b'{"header": true}\n')
        serializer.dump({"x": (1, 2)}, f)
    with path.open("rb") as f:
        assert json.loads(f.readline()) == {"header": True}
        assert_same(serializer.load(f), {"x": (1, 2)})


@every_serializer
def test_spec_is_json_and_rebuilds_the_same_kind_of_serializer(serializer: Serializer) -> None:
    spec = serializer.to_spec()
    assert json.loads(json.dumps(spec)) == spec
    rebuilt = resolve_serializer(spec)
    assert type(rebuilt) is type(serializer)
    assert rebuilt.to_spec() == spec
    assert rebuilt.type == spec["type"]
    assert rebuilt.loads(serializer.dumps([1, "a", None])) == [1, "a", None]


@every_serializer
def test_corrupt_bytes_raise_serialization_error(serializer: Serializer) -> None:
    data = serializer.dumps({"rows": list(range(1000))})
    for bad in (b"", data[: len(data) // 2], b"\xff\xfe garbage" + data):
        with pytest.raises(SerializationError):
            serializer.loads(bad)
        with pytest.raises(SerializationError):
            serializer.load(io.BytesIO(bad))


json_like = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(),
    lambda children: (
        st.lists(children, max_size=5)
        | st.dictionaries(st.text() | st.just(TAG) | st.just("v"), children, max_size=5)
    ),
    max_leaves=30,
)


@every_serializer
@given(value=json_like)
@settings(max_examples=60, deadline=None)
def test_any_json_like_data_round_trips(serializer: Serializer, value: Any) -> None:
    assert_same(round_trip(serializer, value), value)


fixed_offsets = st.builds(
    timezone, st.timedeltas(min_value=timedelta(hours=-23), max_value=timedelta(hours=23))
)
hashable_leaves = (
    st.integers()
    | st.text(max_size=5)
    | st.uuids()
    | st.dates()
    | st.sampled_from(Level)
    | st.sampled_from(Mode)
    | st.tuples(st.integers(), st.text(max_size=3))
    | st.builds(Point, st.integers(), st.integers())
)
rich_leaves = (
    hashable_leaves
    | st.none()
    | st.booleans()
    | st.floats()
    | st.binary(max_size=20)
    | st.datetimes(timezones=st.none() | st.timezones() | fixed_offsets)
    | st.times(timezones=st.none() | fixed_offsets)
    | st.timedeltas()
    | st.decimals(allow_nan=False)
    | st.complex_numbers(allow_nan=False)
    | st.sampled_from(Color)
    | st.text(max_size=10).map(PurePosixPath)
    | st.frozensets(hashable_leaves, max_size=3)
    | st.builds(Address, city=st.text(max_size=5), zip=st.none() | st.text(max_size=5))
)
rich = st.recursive(
    rich_leaves,
    lambda children: (
        st.lists(children, max_size=4)
        | st.tuples(children, children)
        | st.sets(hashable_leaves, max_size=4)
        | st.dictionaries(hashable_leaves | st.just(TAG), children, max_size=4)
        | st.builds(Loose, a=st.integers(), extra=children)
    ),
    max_leaves=20,
)


@every_serializer
@given(value=rich)
@settings(max_examples=60, deadline=None)
def test_any_rich_value_round_trips(serializer: Serializer, value: Any) -> None:
    assert_same(round_trip(serializer, value), value)


def _peak_bytes(fn: Any) -> tuple[Any, int]:
    gc.collect()
    tracemalloc.start()
    try:
        result = fn()
        return result, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


STREAMING = {
    "pickle": PickleSerializer(),
    "pickle-stdlib": PickleSerializer(picklelib="pickle"),
    "compressed-pickle": CompressedSerializer("pickle", level=1),
    "compressed-pickle-lzma": CompressedSerializer("pickle", "lzma", level=0),
}


@pytest.mark.parametrize("serializer", list(STREAMING.values()), ids=list(STREAMING))
def test_streaming_a_large_payload_never_holds_it_twice(
    serializer: Serializer, tmp_path: Path
) -> None:
    """What the result store relies on: peak memory stays under 1.5x the payload."""
    size = 32 * 2**20
    payload = b"blocks" * (size // 6)
    path = tmp_path / "big"
    with path.open("wb") as f:
        _, peak = _peak_bytes(lambda: serializer.dump({"data": payload}, f))
    assert peak < 0.25 * size, f"dump allocated {peak / 2**20:.1f} MiB"
    with path.open("rb") as f:
        loaded, peak = _peak_bytes(lambda: serializer.load(f))
    assert loaded["data"] == payload
    assert peak < 1.5 * size, f"load allocated {peak / 2**20:.1f} MiB"


# -- JSON ------------------------------------------------------------------------------------


def test_plain_json_is_written_as_plain_compact_utf8_json() -> None:
    s = JSONSerializer()
    value = {"source": "데이터", "records": [1, 2.5, None, True]}
    assert s.dumps(value) == '{"source":"데이터","records":[1,2.5,null,true]}'.encode()
    assert json.loads(s.dumps(value)) == value


def test_rich_values_are_tagged_objects_other_json_readers_can_parse() -> None:
    s = JSONSerializer(types=[Color])
    data = json.loads(s.dumps({"at": date(2024, 5, 1), "c": Color.RED, "t": (1,)}))
    assert data == {
        "at": {TAG: "date", "v": "2024-05-01"},
        "c": {TAG: "enum", "cls": f"{__name__}:Color", "v": "red"},
        "t": {TAG: "tuple", "v": [1]},
    }


def test_user_dict_using_the_tag_key_is_escaped_not_decoded() -> None:
    s = JSONSerializer()
    crafted = {TAG: "enum", "cls": "os:system", "v": "ls"}
    assert json.loads(s.dumps(crafted))[TAG] == "dict"
    assert_same(round_trip(s, crafted), crafted)


def test_zoneinfo_datetimes_keep_their_zone_and_fold() -> None:
    s = JSONSerializer()
    first = datetime(2024, 10, 27, 2, 30, tzinfo=ZoneInfo("Europe/Berlin"))
    second = first.replace(fold=1)  # the same wall time, an hour later
    got_first, got_second = round_trip(s, [first, second])
    assert got_second.tzinfo is ZoneInfo("Europe/Berlin")
    assert got_second.fold == 1
    assert got_second.utcoffset() == timedelta(hours=1)
    assert got_first.utcoffset() == timedelta(hours=2)


def test_models_and_dataclasses_are_restored_without_rerunning_init_or_validators() -> None:
    s = JSONSerializer(types=[Shouty, Box, Point])
    shouty = Shouty(word="hi")
    assert shouty.word == "hi!"
    assert round_trip(s, shouty).word == "hi!"  # not "hi!!"
    box = Box("b", [Point(1, 2)])
    box.area = 9.5  # init=False field
    got = round_trip(s, box)
    assert (got.area, got.points, got.corner) == (9.5, [Point(1, 2)], (0, 0))


def test_model_fields_set_and_extras_survive() -> None:
    s = JSONSerializer(types=[Address, Loose])
    got = round_trip(s, Address(city="x"))
    assert got.model_fields_set == {"city"}
    loose = round_trip(s, Loose(a=1, note=("t",)))
    assert loose.__pydantic_extra__ == {"note": ("t",)}


def test_dataclass_record_missing_a_defaulted_field_uses_the_default() -> None:
    s = JSONSerializer(types=[Box])
    record = {TAG: "dataclass", "cls": f"{__name__}:Box", "v": {"label": "old", "points": []}}
    got = s.loads(json.dumps(record).encode())
    assert (got.label, got.corner, got.area) == ("old", (0, 0), 0.0)


def test_values_json_cannot_hold_fail_naming_the_type_and_pickle() -> None:
    s = JSONSerializer()
    for value, name in [
        (object(), "builtins.object"),
        (lambda: 1, "function"),
        (threading.Lock(), "lock"),
    ]:
        with pytest.raises(SerializationError, match="PickleSerializer") as err:
            s.dumps({"nested": [value]})
        assert name in str(err.value)


def test_writing_a_class_that_is_not_allowed_fails_and_says_how_to_allow_it() -> None:
    with pytest.raises(SerializationError, match=r"register_json_type\(Unlisted\)"):
        JSONSerializer().dumps([Unlisted.X])
    with pytest.raises(SerializationError, match=r"types=\[Point\]"):
        JSONSerializer().dumps(Point(1, 2))


def test_reference_cycles_fail_cleanly() -> None:
    cycle: list[Any] = []
    cycle.append(cycle)
    cycle.append(cycle)
    with pytest.raises(SerializationError, match="contains itself"):
        JSONSerializer().dumps({"a": cycle})


def test_shared_substructures_are_written_in_full() -> None:
    shared = [1, (2,)]
    assert_same(round_trip(JSONSerializer(), [shared, shared]), [[1, (2,)], [1, (2,)]])


def test_register_json_type_allows_a_class_for_every_json_serializer(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(serializers.json, "_GLOBAL_TYPES", {})

    @register_json_type
    @dataclass
    class Local:
        n: int

    assert_same(round_trip(JSONSerializer(), Local(3)), Local(3))
    with pytest.raises(SerializationError, match="Enum, pydantic model and dataclass"):
        register_json_type(int)


def test_types_argument_accepts_only_enums_models_and_dataclasses() -> None:
    with pytest.raises(SerializationError, match="not <class 'int'>"):
        JSONSerializer(types=[int])


# -- security: stored data chooses nothing that runs -----------------------------------------

SENTINEL = "blocks_sentinel_never_imported"


@pytest.fixture
def importable_sentinel(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A real module on sys.path that leaves a marker file if it is ever imported."""
    marker = tmp_path / "imported"
    (tmp_path / f"{SENTINEL}.py").write_text(
        f"import pathlib\npathlib.Path({str(marker)!r}).touch()\n"
        "import enum\nclass Evil(enum.Enum):\n    X = 1\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    assert SENTINEL not in sys.modules
    return marker


@pytest.mark.parametrize("tag", ["enum", "model", "dataclass"])
@pytest.mark.parametrize("cls", [f"{SENTINEL}:Evil", "os:system", "subprocess:Popen"])
def test_decoding_never_imports_or_calls_a_class_named_by_the_data(
    importable_sentinel: Path, tag: str, cls: str
) -> None:
    record = json.dumps({"payload": {TAG: tag, "cls": cls, "v": "echo pwned"}}).encode()
    for serializer in (JSONSerializer(types=TYPES), CompressedSerializer(JSONSerializer())):
        data = record if isinstance(serializer, JSONSerializer) else _zlib(record)
        with pytest.raises(SerializationError, match="never imports") as err:
            serializer.loads(data)
        assert cls in str(err.value)
    assert SENTINEL not in sys.modules
    assert not importable_sentinel.exists()


def _zlib(data: bytes) -> bytes:
    import zlib

    return zlib.compress(data)


def test_an_imported_but_unlisted_class_is_refused_with_a_way_to_allow_it() -> None:
    record = json.dumps({TAG: "enum", "cls": f"{__name__}:Unlisted", "v": 1}).encode()
    with pytest.raises(SerializationError, match=r"register_json_type\(Unlisted\)"):
        JSONSerializer(types=TYPES).loads(record)
    assert JSONSerializer(types=[Unlisted]).loads(record) is Unlisted.X


def test_an_allowed_class_cannot_be_decoded_as_another_kind() -> None:
    record = {TAG: "dataclass", "cls": f"{__name__}:Color", "v": {}}
    with pytest.raises(SerializationError, match="is not"):
        JSONSerializer(types=[Color]).loads(json.dumps(record).encode())


def test_a_dataclass_record_can_set_only_declared_fields() -> None:
    record = {TAG: "dataclass", "cls": f"{__name__}:Point", "v": {"x": 1, "y": 2, "__class__": 0}}
    with pytest.raises(SerializationError, match="no field"):
        JSONSerializer(types=[Point]).loads(json.dumps(record).encode())


@pytest.mark.parametrize(
    "record",
    [
        {TAG: "no-such-tag", "v": 1},
        {TAG: 5, "v": 1},
        {TAG: "datetime", "v": 5},
        {TAG: "datetime", "v": "yesterday"},
        {TAG: "datetime", "v": "2024-01-01T00:00:00", "tz": "../../etc/passwd"},
        {TAG: "bytes", "v": "not base64!"},
        {TAG: "timedelta", "v": [1]},
        {TAG: "set", "v": [[1]]},
        {TAG: "dict", "v": [[1, 2, 3]]},
        {TAG: "enum", "v": 1},
        {TAG: "enum", "cls": f"{__name__}:Color", "v": "purple"},
        {TAG: "model", "cls": f"{__name__}:Address", "v": ["not", "a", "dict"]},
    ],
    ids=lambda r: f"{r[TAG]}-{r.get('v')}",
)
def test_malformed_records_raise_serialization_error(record: dict[str, Any]) -> None:
    with pytest.raises(SerializationError):
        JSONSerializer(types=TYPES).loads(json.dumps(record).encode())


def test_invalid_json_and_utf8_raise_serialization_error() -> None:
    for bad in (b"{", b"\xff\xfe", b"[1, 2"):
        with pytest.raises(SerializationError, match="not valid JSON"):
            JSONSerializer().loads(bad)


def test_import_is_cheap_and_loads_no_pickle_library() -> None:
    lazy = ("cloudpickle", "pickle", "lzma", "bz2", "dataclasses", "decimal", "uuid")
    code = f"import serializers, sys; print(sorted(m for m in {lazy!r} if m in sys.modules))"
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    assert out.strip() == "[]"


# -- pickle ----------------------------------------------------------------------------------


def test_cloudpickle_handles_lambdas_and_local_classes() -> None:
    class Local:
        def __init__(self, n: int) -> None:
            self.n = n

    s = PickleSerializer()
    assert s.loads(s.dumps(lambda x: x * 2))(21) == 42
    assert s.loads(s.dumps(Local(5))).n == 5


def test_stdlib_pickle_refuses_a_lambda_and_points_to_cloudpickle() -> None:
    with pytest.raises(SerializationError, match="cloudpickle"):
        PickleSerializer(picklelib="pickle").dumps(lambda: 1)


@pytest.mark.parametrize("picklelib", ["cloudpickle", "pickle"])
def test_an_unpicklable_value_is_named(picklelib: str, tmp_path: Path) -> None:
    s = PickleSerializer(picklelib=picklelib)
    with pytest.raises(
        SerializationError, match=r"cannot pickle a value of type builtins\.dict.*lock"
    ):
        s.dumps({"lock": threading.Lock()})
    with (tmp_path / "f").open("wb") as f, pytest.raises(SerializationError, match="lock"):
        s.dump([threading.Lock()], f)


def test_unknown_picklelib_is_refused() -> None:
    with pytest.raises(SerializationError, match="cloudpickle, pickle"):
        PickleSerializer(picklelib="dill")


# -- compressed ------------------------------------------------------------------------------


@pytest.mark.parametrize("lib", ["zlib", "lzma", "bz2"])
def test_compression_shrinks_repetitive_payloads(lib: str) -> None:
    value = {"rows": [{"name": "same", "n": 1}] * 5000}
    plain = JSONSerializer().dumps(value)
    compressed = CompressedSerializer("json", lib).dumps(value)
    assert len(compressed) < len(plain) / 20


@pytest.mark.parametrize("lib", ["zlib", "lzma", "bz2"])
def test_truncated_compressed_payload_is_an_error_not_a_partial_value(lib: str) -> None:
    s = CompressedSerializer("json", lib)
    data = s.dumps(list(range(10_000)))
    with pytest.raises(SerializationError, match=r"truncated|corrupt|not valid"):
        s.loads(data[:-8])


def test_highly_compressible_data_streams_back_in_bounded_chunks(tmp_path: Path) -> None:
    s = CompressedSerializer("pickle", "zlib", level=9)
    value = bytes(50 * 2**20)  # zeros: ~1000x ratio, so output must be capped per read
    path = tmp_path / "zeros"
    with path.open("wb") as f:
        s.dump(value, f)
    assert path.stat().st_size < 2**20
    with path.open("rb") as f:
        assert s.load(f) == value


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"compressionlib": "zstd"}, "zlib, lzma, bz2"),
        ({"level": 10}, "from -1 to 9"),
        ({"compressionlib": "bz2", "level": 0}, "from 1 to 9"),
        ({"level": True}, "integer"),
        ({"serializer": CompressedSerializer()}, "compressing twice"),
        ({"serializer": "yaml"}, "unknown serializer type"),
    ],
)
def test_invalid_compression_options_are_refused(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(SerializationError, match=message):
        CompressedSerializer(**kwargs)


# -- resolve_serializer ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("shorthand", "expected"),
    [
        ("json", JSONSerializer()),
        ("pickle", PickleSerializer()),
        ("compressed/json", CompressedSerializer(JSONSerializer())),
        ("compressed/pickle", CompressedSerializer(PickleSerializer())),
    ],
)
def test_shorthands_resolve(shorthand: str, expected: Serializer) -> None:
    resolved = resolve_serializer(shorthand)
    assert resolved == expected
    assert resolved.type == shorthand


def test_none_means_the_default_and_instances_pass_through() -> None:
    assert resolve_serializer(None) == PickleSerializer()
    assert resolve_serializer(None, default="json") == JSONSerializer()
    mine = JSONSerializer(types=[Color])
    assert resolve_serializer(mine) is mine


def test_specs_resolve_with_their_options() -> None:
    spec = {
        "type": "compressed/pickle",
        "serializer": {"type": "pickle", "picklelib": "pickle"},
        "compressionlib": "lzma",
        "level": 3,
    }
    s = resolve_serializer(spec)
    assert isinstance(s, CompressedSerializer)
    assert (s.compressionlib, s.level, s.serializer) == ("lzma", 3, PickleSerializer("pickle"))
    assert s.to_spec() == spec
    assert resolve_serializer({"type": "compressed/json"}) == CompressedSerializer("json")


@pytest.mark.parametrize(
    "spec",
    [
        "yaml",
        "compressed",
        "compressed/",
        "compressed/yaml",
        "compressed/compressed/json",
        "json/extra",
        f"{SENTINEL}:Evil",
        {"type": "os:system"},
        {"type": None},
        {},
        {"type": "pickle", "picklelib": SENTINEL},
        {"type": "json", "decoder": f"{SENTINEL}:decode"},
        {"type": "compressed/json", "serializer": {"type": "pickle"}},
        42,
    ],
    ids=repr,
)
def test_unknown_or_unsafe_specs_are_refused_without_importing(spec: Any) -> None:
    with pytest.raises(SerializationError) as err:
        resolve_serializer(spec)
    message = str(err.value)
    assert any(
        word in message
        for word in ("json, pickle, compressed/json", "allowed", "choose", "wraps", "compressing")
    )
    assert SENTINEL not in sys.modules


def test_unknown_type_lists_the_valid_ones() -> None:
    with pytest.raises(
        SerializationError, match="choose one of json, pickle, compressed/json, compressed/pickle"
    ):
        resolve_serializer("yaml")


def test_equality_hash_and_repr() -> None:
    assert PickleSerializer() == PickleSerializer("cloudpickle") != PickleSerializer("pickle")
    assert len({JSONSerializer(), JSONSerializer(), PickleSerializer()}) == 2
    assert JSONSerializer(types=[Color]) != JSONSerializer()
    assert CompressedSerializer("json", level=1) != CompressedSerializer("json", level=2)
    assert repr(PickleSerializer()) == "PickleSerializer(picklelib='cloudpickle')"
    assert repr(JSONSerializer(types=[Color])) == "JSONSerializer(types=[Color])"
    assert repr(CompressedSerializer("json", "bz2")) == (
        "CompressedSerializer(JSONSerializer(), compressionlib='bz2', level=None)"
    )
    assert JSONSerializer() != "json"


def test_public_api_is_exported() -> None:
    assert set(serializers.__all__) == {
        "AutoSerializer",
        "NumpySerializer",
        "ParquetSerializer",
        "Serializer",
        "JSONSerializer",
        "PickleSerializer",
        "CompressedSerializer",
        "resolve_serializer",
        "register_json_type",
        "SerializationError",
    }
    assert issubclass(SerializationError, ValueError)
