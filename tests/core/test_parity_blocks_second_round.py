"""Prefect 3 parity, second round, below the runtime: the JSON serializer's ``jsonlib`` and
``loads_kwargs``, and the Block internals Prefect users reach for (``load_from_ref``,
``adelete``, ``_block_document_id``).

Each test states one behaviour of Prefect 3 (read from its docs and source) and checks ours;
``jsonlib="orjson"`` is held to the strictest rule of all: every value reads back exactly as
with ``jsonlib="json"``.
"""

from __future__ import annotations

import asyncio
import decimal
import math
import os
import uuid
from datetime import UTC, datetime
from enum import Enum, IntEnum
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from blocks.errors import BlockNotFound, InvalidName, UnknownBlockType
from serializers import JSONSerializer, SerializationError, register_json_type
from serializers import resolve_serializer as serializer_from_spec

pytestmark = pytest.mark.timeout(120)

orjson = pytest.importorskip("orjson")


@register_json_type
class Color(Enum):
    RED = "red"
    BLUE = 2


@register_json_type
class Level(IntEnum):
    LOW = 1
    HIGH = 2


def same(a: Any, b: Any) -> bool:
    """Equal values of the very same types (NaN equals NaN, -0.0 is not 0.0, dict order)."""
    if type(a) is not type(b):
        return False
    if type(a) is float:
        return (math.isnan(a) and math.isnan(b)) or (
            a == b and math.copysign(1, a) == math.copysign(1, b)
        )
    if type(a) in (list, tuple):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    if type(a) is dict:
        return list(a) == list(b) and all(same(a[k], b[k]) for k in a)
    return bool(a == b)


_text = st.text(st.characters(exclude_categories=()), max_size=8)  # lone surrogates included
_huge = st.integers(min_value=-(2**200), max_value=2**200)
_edges = st.sampled_from(
    [2**63 - 1, 2**63, 2**64 - 1, 2**64, -(2**63), -(2**63) - 1, 10**18, 10**19, 0]
)
_leaves = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    _huge,
    _edges,
    st.floats(allow_nan=True, allow_infinity=True),
    _text,
    st.uuids(),
    st.sampled_from(list(Color) + list(Level)),
    st.datetimes(timezones=st.just(UTC)),
    st.decimals(allow_nan=False),
    st.binary(max_size=8),
)
_hashables = st.one_of(st.integers(), _huge, _text, st.uuids(), st.sampled_from(list(Level)))
_values = st.recursive(
    _leaves,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.tuples(inner, inner),
        st.dictionaries(_text | st.sampled_from(["__blocks__", "v", "cls"]), inner, max_size=4),
        st.dictionaries(_hashables, inner, max_size=3),
        st.frozensets(_hashables, max_size=3),
        st.sets(_hashables, max_size=3),
    ),
    max_leaves=20,
)


@settings(
    max_examples=int(os.environ.get("BLOCKS_STRESS_EXAMPLES", "600")),
    suppress_health_check=[HealthCheck.too_slow],
    deadline=None,
)
@given(_values)
def test_orjson_reads_back_every_value_exactly_as_the_json_library(value: Any) -> None:
    plain, fast = JSONSerializer(), JSONSerializer(jsonlib="orjson")
    reference = plain.loads(plain.dumps(value))
    assert same(reference, value)
    for written in (fast.dumps(value), plain.dumps(value)):
        for reader in (fast, plain):
            assert same(reader.loads(written), reference), (value, written)


def test_orjson_edge_values_round_trip_and_count_the_fast_path() -> None:
    plain, fast = JSONSerializer(), JSONSerializer(jsonlib="orjson")
    values: list[Any] = [
        float("nan"),
        [1.0, float("inf"), -float("inf")],
        {"x": -0.0, "n": None},
        2**64,
        [2**63, -(2**63) - 1],
        "\udc80 lone",
        {"k\ud800": 1},
        uuid.UUID(int=7),
        [Color.RED, Level.HIGH],
        (1, (2, 3)),
        {1, 2},
        {1: "int key"},
        {"__blocks__": "not a tag"},
        datetime(2024, 1, 2, tzinfo=UTC),
        [[[[[]]]]],
        {"deep": [{"a": [1.5, "x", None, True]}] * 3},
        "12345678901234567890 in a string",
        10**18,
    ]
    fast_written = 0
    for value in values:
        data = fast.dumps(value)
        fast_written += data == orjson.dumps(value) if _orjson_can(value) else 0
        assert same(fast.loads(data), plain.loads(plain.dumps(value))), value
        assert same(plain.loads(data), plain.loads(plain.dumps(value))), value
    # NaN is never written as null, and a huge int never read as a float.
    assert fast.loads(fast.dumps([float("nan")]))[0] != fast.loads(fast.dumps([None]))[0]
    assert (
        fast.loads(fast.dumps(2**64)) == 2**64 and type(fast.loads(b"18446744073709551616")) is int
    )
    print(f"{len(values)} edge values, {fast_written} written by orjson itself")
    assert fast_written >= 4


def _orjson_can(value: Any) -> bool:
    try:
        orjson.dumps(value)
    except TypeError:
        return False
    return True


def test_jsonlib_is_in_the_spec_and_a_record_reads_back_without_orjson() -> None:
    fast = JSONSerializer(jsonlib="orjson")
    assert fast.to_spec() == {"type": "json", "jsonlib": "orjson"}
    assert JSONSerializer().to_spec() == {"type": "json"}  # specs of old records unchanged
    assert serializer_from_spec(fast.to_spec()) == fast
    assert fast != JSONSerializer() and repr(fast) == "JSONSerializer(jsonlib='orjson')"
    with pytest.raises(SerializationError, match="'json' or 'orjson'"):
        JSONSerializer(jsonlib="pickle")
    with pytest.raises(SerializationError, match="'json' or 'orjson'"):
        serializer_from_spec({"type": "json", "jsonlib": "os"})


def test_loads_kwargs_take_parse_hooks_by_name_from_a_closed_set() -> None:
    exact = JSONSerializer(loads_kwargs={"parse_float": decimal.Decimal})
    assert exact.loads_kwargs == {"parse_float": "decimal"}
    assert exact.loads(b'{"price": 0.1}') == {"price": decimal.Decimal("0.1")}
    spec = exact.to_spec()
    assert spec == {"type": "json", "loads_kwargs": {"parse_float": "decimal"}}
    assert serializer_from_spec(spec).loads(b"[1.10]") == [decimal.Decimal("1.10")]
    as_float = JSONSerializer(loads_kwargs={"parse_int": "float", "strict": False})
    assert as_float.loads(b"[3]") == [3.0] and type(as_float.loads(b"[3]")[0]) is float
    assert as_float.loads(b'"tab\there"') == "tab\there"  # strict=False: control characters
    with pytest.raises(SerializationError, match="not valid JSON"):
        JSONSerializer().loads(b'"tab\there"')
    # orjson cannot honour the hooks: the standard decoder reads, with them.
    both = JSONSerializer(jsonlib="orjson", loads_kwargs={"parse_float": "decimal"})
    assert both.loads(both.dumps([0.5])) == [decimal.Decimal("0.5")]


@pytest.mark.parametrize(
    "loads_kwargs",
    [
        {"cls": object},
        {"object_hook": dict},
        {"object_pairs_hook": dict},
        {"parse_constant": float},
        {"parse_float": eval},
        {"parse_float": "os.system"},
        {"parse_int": "builtins:eval"},
        {"strict": "yes"},
    ],
)
def test_loads_kwargs_that_would_let_stored_data_choose_code_are_refused(
    loads_kwargs: dict[str, Any],
) -> None:
    with pytest.raises(SerializationError):
        JSONSerializer(loads_kwargs=loads_kwargs)
    # The same options arriving in a record's stored spec are refused too.
    spec = {
        "type": "json",
        "loads_kwargs": {
            k: v if isinstance(v, str | bool) else "x" for k, v in loads_kwargs.items()
        },
    }
    with pytest.raises(SerializationError):
        serializer_from_spec(spec)


@pytest.mark.parametrize("option", ["cls", "default", "object_hook"])
def test_dumps_kwargs_that_choose_code_are_refused(option: str) -> None:
    with pytest.raises(SerializationError, match="may set"):
        JSONSerializer(dumps_kwargs={option: dict})


def test_without_orjson_asking_for_it_says_what_to_install_and_records_still_read(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from serializers import _fastjson

    written = JSONSerializer(jsonlib="orjson").dumps({"n": [1, 2.5, None]})
    monkeypatch.setattr(_fastjson, "_orjson", False)  # as on a machine without orjson
    with pytest.raises(SerializationError, match="pip install orjson"):
        JSONSerializer(jsonlib="orjson")
    reader = serializer_from_spec({"type": "json", "jsonlib": "orjson"})
    assert reader.loads(written) == {"n": [1, 2.5, None]}


# -- Block internals Prefect users reach for ------------------------------------------------------


def test_load_from_ref_takes_every_reference_prefect_takes() -> None:
    from blocks import Block
    from blocks.system import JSON, Secret

    document_id = Secret(value="s3cr3t").save("api-key")
    refs: list[Any] = [
        document_id,
        uuid.UUID(document_id),
        str(uuid.UUID(document_id)),  # the dashed spelling Prefect's API gives
        {"block_document_id": document_id},
        {"block_document_id": uuid.UUID(document_id)},
        {"block_document_slug": "secret/api-key"},
        {"block_document_slug": "api-key"},
        {"block_type_slug": "secret", "block_document_name": "api-key"},
        {"block_document_name": "api-key"},
    ]
    for ref in refs:
        loaded = Secret.load_from_ref(ref)
        assert loaded.get() == "s3cr3t" and loaded._block_document_id == document_id, ref
    assert Block.load_from_ref(document_id).get() == "s3cr3t"  # type: ignore[attr-defined]
    print(f"{len(refs)} reference forms loaded document {document_id}")
    with pytest.raises(UnknownBlockType, match="not a JSON"):
        JSON.load_from_ref(document_id)


@pytest.mark.parametrize(
    "ref",
    [
        {},
        {"block_document_id": None},
        {"name": "api-key"},
        {"block_document_name": 3},
        42,
        None,
    ],
)
def test_a_reference_of_no_known_form_is_refused_with_the_forms_to_use(ref: Any) -> None:
    from blocks.system import Secret

    with pytest.raises(InvalidName, match="Invalid reference format") as info:
        Secret.load_from_ref(ref)
    assert isinstance(info.value, ValueError)  # as Prefect's ValueError


@pytest.mark.parametrize("ref", ["0" * 32, "not-an-id", {"block_document_id": uuid.UUID(int=5)}])
def test_a_reference_to_no_document_is_block_not_found(ref: Any) -> None:
    from blocks.system import Secret

    Secret(value="x").save("present")
    with pytest.raises(BlockNotFound, match="No block document has the id"):
        Secret.load_from_ref(ref)


def test_document_and_type_ids_are_set_after_a_save_and_a_load() -> None:
    from blocks.system import Secret

    block = Secret(value="s3cr3t")
    assert block._block_document_id is None and block._block_type_id is None
    document_id = block.save("api-key")
    assert block._block_document_id == document_id and block._block_type_id == "secret"
    for loaded in (
        Secret.load("api-key"),
        Secret.load("api-key"),
        Secret.load_from_ref(document_id),
    ):
        assert loaded._block_document_id == document_id and loaded._block_type_id == "secret"
    again = block.save(overwrite=True)
    assert again == document_id  # saving over the same name keeps the document


def test_async_twins_load_from_ref_and_delete() -> None:
    from blocks.system import Secret

    document_id = Secret(value="s3cr3t").save("api-key")

    async def main() -> None:
        loaded = await Secret.aload_from_ref({"block_document_id": document_id})
        assert loaded.get() == "s3cr3t"
        await Secret.adelete("api-key")

    asyncio.run(main())
    with pytest.raises(BlockNotFound):
        Secret.load("api-key")
    assert "api-key" not in Secret.list()
