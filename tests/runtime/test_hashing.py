"""Deterministic input hashing: equal across processes (any PYTHONHASHSEED), different when a
value differs, secrets never in clear, libraries imported only for their own values."""

from __future__ import annotations

import dataclasses
import datetime as dt
import decimal
import enum
import math
import os
import pickle
import subprocess
import sys
import threading
import uuid
from pathlib import Path, PurePosixPath
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import BaseModel, SecretStr

from blocks.runtime.keys._hashing import Unhashable, _encode, digest, register_hasher

ROOT = Path(__file__).resolve().parents[2]


class Colour(enum.Enum):
    RED = "red"
    BLUE = "blue"


@dataclasses.dataclass
class Point:
    x: float
    tags: frozenset[str]


class Model(BaseModel):
    name: str
    weights: dict[str, float]


scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(allow_nan=True),
    st.sampled_from([0.0, -0.0, math.nan, math.inf]),
    st.text(max_size=20),
    st.binary(max_size=20),
    st.decimals(allow_nan=False),
    st.uuids(),
    st.datetimes(timezones=st.sampled_from([dt.UTC, dt.timezone(dt.timedelta(hours=2))])),
    st.dates(),
    st.timedeltas(),
    st.sampled_from(list(Colour)),
    st.builds(PurePosixPath, st.text(alphabet="abc/", max_size=8)),
)
hashable = st.one_of(st.integers(), st.text(max_size=5), st.tuples(st.integers()))
values = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.lists(inner, max_size=4).map(tuple),
        st.dictionaries(st.text(max_size=5), inner, max_size=4),
        st.frozensets(hashable, max_size=5),
        st.sets(hashable, max_size=5),
        st.builds(Point, st.floats(allow_nan=False), st.frozensets(st.text(max_size=3))),
        st.builds(
            Model,
            name=st.text(max_size=5),
            weights=st.dictionaries(st.text(max_size=3), st.floats()),
        ),
    ),
    max_leaves=12,
)

CHILD = """
import pickle, sys
sys.path.insert(0, sys.argv[1])
import test_hashing  # the classes the values are made of
from blocks.hashing import digest
for value in pickle.load(sys.stdin.buffer):
    print(digest(value))
"""


def digests_in_a_new_process(batch: list[Any], seed: str) -> list[str]:
    env = {**os.environ, "PYTHONHASHSEED": seed}
    out = subprocess.run(
        [sys.executable, "-c", CHILD, str(Path(__file__).parent)],
        input=pickle.dumps(batch),
        capture_output=True,
        check=True,
        env=env,
        timeout=120,
    ).stdout
    return out.decode().split()


@settings(max_examples=2, deadline=None)
@given(st.lists(values, min_size=20, max_size=40))
def test_digests_are_equal_across_processes_with_different_hash_seeds(batch: list[Any]) -> None:
    here = [digest(value) for value in batch]
    for seed in ("1", "4242"):
        assert digests_in_a_new_process(batch, seed) == here
    print(f"{len(batch)} values, 3 processes, seeds 1 and 4242: equal")


def test_library_values_are_equal_across_processes() -> None:
    np = pytest.importorskip("numpy")
    pd = pytest.importorskip("pandas")
    pa = pytest.importorskip("pyarrow")
    pl = pytest.importorskip("polars")
    batch = [
        np.arange(12, dtype="int32").reshape(3, 4),
        np.array([1.5, math.nan, -0.0]),
        np.array(["a", {"b"}], dtype=object),
        pd.DataFrame({"a": [1, 2], "b": ["x", "y"], "c": pd.to_datetime(["2024-01-01"] * 2)}),
        pd.Series([1.0, 2.0], name="s", index=["p", "q"]),
        pa.table({"a": [1, 2, None], "b": ["x", None, "z"]}),
        pl.DataFrame({"a": [1, 2], "b": ["u", "v"]}),
        {"frame": pd.DataFrame({"x": [{1, 2}, "s"]})},
        np.arange(3_000_000, dtype="float64"),  # 24 MB: hashed apart, on several threads
        b"y" * 100_000,  # past the inline limit
    ]
    here = [digest(value) for value in batch]
    assert digests_in_a_new_process(batch, "7") == here


@given(scalars, scalars)
def test_scalars_collide_only_when_equal_and_of_one_type(a: Any, b: Any) -> None:
    def same(x: Any, y: Any) -> bool:
        if type(x) is not type(y):
            return False
        if isinstance(x, float):
            return x.hex() == y.hex() or (math.isnan(x) and math.isnan(y))
        if isinstance(x, dt.datetime):
            return bool(x.isoformat() == y.isoformat() and x.tzinfo == y.tzinfo)
        if isinstance(x, decimal.Decimal):
            return str(x) == str(y)
        return bool(x == y)

    assert (digest(a) == digest(b)) is same(a, b)


@given(values)
def test_wrapping_or_changing_a_value_changes_its_digest(value: Any) -> None:
    assert digest(value) == digest(value)
    assert digest(value) != digest([value])
    assert digest([value]) != digest((value,))
    assert digest({"k": value}) != digest({"k": [value]})
    assert digest({"k": value}) != digest({"j": value})


@given(st.dictionaries(st.text(max_size=5), st.integers(), min_size=2), st.randoms())
def test_dicts_and_sets_are_order_free(mapping: dict[str, int], rng: Any) -> None:
    items = list(mapping.items())
    rng.shuffle(items)
    assert digest(dict(items)) == digest(mapping)
    keys = list(mapping)
    assert digest(set(keys)) == digest(set(reversed(keys)))
    assert digest(set(keys)) != digest(frozenset(keys))


def test_values_that_compare_equal_but_differ_get_different_digests() -> None:
    assert digest(0.0) != digest(-0.0)
    assert digest(math.nan) == digest(float("-nan"))
    assert digest(1) != digest(1.0) != digest(True)
    assert digest((1, 2)) != digest([1, 2])
    assert digest(b"x") != digest("x") != digest(bytearray(b"x"))
    noon_utc = dt.datetime(2024, 1, 1, 12, tzinfo=dt.UTC)
    assert digest(noon_utc) != digest(noon_utc.astimezone(dt.timezone(dt.timedelta(hours=1))))
    assert digest(decimal.Decimal("1.0")) != digest(decimal.Decimal("1.00"))
    assert digest(uuid.UUID(int=1)) != digest(uuid.UUID(int=2))
    assert digest(Path("a/b")) == digest(PurePosixPath("a/b"))
    assert digest(Colour.RED) != digest("red")


def test_secrets_count_by_digest_never_in_clear() -> None:
    from blocks.system import Secret

    class Creds(BaseModel):
        user: str
        password: SecretStr

    out: list[bytes] = []
    _encode(Creds(user="ann", password=SecretStr("hunter2-plaintext")), out, {})
    assert b"hunter2" not in b"".join(out)
    assert digest(Creds(user="a", password=SecretStr("p1"))) != digest(
        Creds(user="a", password=SecretStr("p2"))
    )
    block = Secret(value="s3cr3t-value")
    out = []
    _encode(block, out, {})
    assert b"s3cr3t" not in b"".join(out)
    assert digest(block) == digest(Secret(value="s3cr3t-value"))
    assert digest(block) != digest(Secret(value="other"))


def test_numpy_arrays_by_dtype_shape_and_bytes() -> None:
    np = pytest.importorskip("numpy")
    a = np.arange(6, dtype="int64")
    assert digest(a) == digest(a.copy())
    assert digest(a) != digest(a.reshape(2, 3))
    assert digest(a) != digest(a.astype("int32"))
    assert digest(np.asfortranarray(a.reshape(2, 3))) == digest(a.reshape(2, 3))
    b = a.copy()
    b[3] = 99
    assert digest(a) != digest(b)


def test_dataframes_and_tables_by_content() -> None:
    pd = pytest.importorskip("pandas")
    pa = pytest.importorskip("pyarrow")
    pl = pytest.importorskip("polars")
    df = pd.DataFrame({"a": [1, 2, 3], "b": ["x", "y", "z"]})
    assert digest(df) == digest(df.copy())
    assert digest(df) != digest(df.assign(b=["x", "y", "Z"]))
    assert digest(df) != digest(df.rename(columns={"a": "A"}))
    assert digest(df) != digest(df.set_index(pd.Index([5, 6, 7])))
    table = pa.table({"a": [1, 2, 3]})
    assert digest(table) == digest(pa.table({"a": [1, 2, 3]}))
    assert digest(table) != digest(pa.table({"a": [1, 2, 4]}))
    assert digest(table) != digest(pa.table({"a": pa.array([1, 2, 3], pa.int32())}))
    frame = pl.DataFrame({"a": [1, 2]})
    assert digest(frame) == digest(pl.DataFrame({"a": [1, 2]}))
    assert digest(frame) != digest(pl.DataFrame({"a": [1, 3]}))


def test_heavy_libraries_are_imported_only_for_their_own_values() -> None:
    code = (
        "import sys, datetime, decimal\n"
        "from blocks.hashing import digest\n"
        "digest([{'a': {1, 2}}, datetime.datetime.now(), decimal.Decimal(1), object()])\n"
        "print(sorted(m for m in ('numpy', 'pandas', 'polars', 'pyarrow', 'pydantic')"
        " if m in sys.modules))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    ).stdout
    assert out.strip() == "[]"


def test_values_without_a_deterministic_digest_are_refused() -> None:
    for value in (threading.Lock(), (i for i in range(3)), open(os.devnull)):  # noqa: SIM115
        with pytest.raises(Unhashable, match="no deterministic digest"):
            digest({"nested": [value]})


def test_register_hasher_teaches_a_type() -> None:
    class Connection:
        def __init__(self, dsn: str) -> None:
            self.dsn = dsn
            self.lock = threading.Lock()

    with pytest.raises(Unhashable):
        digest(Connection("db://a"))
    register_hasher(Connection, lambda conn: conn.dsn)
    assert digest(Connection("db://a")) == digest(Connection("db://a"))
    assert digest(Connection("db://a")) != digest(Connection("db://b"))
    assert digest(Connection("db://a")) != digest("db://a")


def test_self_referencing_structures_hash() -> None:
    a: list[Any] = [1]
    a.append(a)
    b: list[Any] = [1]
    b.append(b)
    assert digest(a) == digest(b)
    assert digest(a) != digest([1, [1]])
