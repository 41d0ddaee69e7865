"""Parquet, npy and auto serializers: generated frames and arrays round-trip exactly, and what
cannot be written safely (object arrays, unknown kinds, oversized decodes) is refused.

``BLOCKS_SOAK=1`` runs ten times more generated examples.
"""

from __future__ import annotations

import contextlib
import io
import mmap
import os
import string
from collections.abc import Iterator
from typing import Any

import numpy as np
import pandas as pd
import polars as pl
import polars.testing
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import serializers.parquet as parquet_module
from serializers import (
    AutoSerializer,
    NumpySerializer,
    ParquetSerializer,
    SerializationError,
    resolve_serializer,
)
from serializers.context import codec_context
from serializers.parquet import KIND_KEY

EXAMPLES = 1000 if os.environ.get("BLOCKS_SOAK") == "1" else 100
PROPERTY = settings(
    max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)

# -- generated pandas frames ---------------------------------------------------------------------

# Column names: any printable unicode (no surrogates, which UTF-8 cannot hold), unique.
NAMES = st.text(
    alphabet=st.characters(blacklist_categories=["Cs"]), min_size=0, max_size=12
).filter(lambda name: not name.startswith("__index_level_"))


def _column(kind: str, rows: int, draw: Any) -> Any:
    nulls = draw(st.lists(st.booleans(), min_size=rows, max_size=rows))
    if kind == "int64":
        return pd.Series(
            draw(st.lists(st.integers(-(2**63), 2**63 - 1), min_size=rows, max_size=rows)),
            dtype="int64",
        )
    if kind == "uint8":
        return pd.Series(
            draw(st.lists(st.integers(0, 255), min_size=rows, max_size=rows)), dtype="uint8"
        )
    if kind == "float32":
        values = draw(st.lists(st.floats(width=32, allow_nan=True), min_size=rows, max_size=rows))
        return pd.Series(values, dtype="float32")
    if kind == "float64":
        values = draw(st.lists(st.floats(allow_nan=True), min_size=rows, max_size=rows))
        return pd.Series(values, dtype="float64")
    if kind == "bool":
        return pd.Series(draw(st.lists(st.booleans(), min_size=rows, max_size=rows)), dtype="bool")
    if kind == "Int64":
        values = draw(st.lists(st.integers(-(2**63), 2**63 - 1), min_size=rows, max_size=rows))
        return pd.array(
            [None if n else v for v, n in zip(values, nulls, strict=True)], dtype="Int64"
        )
    if kind == "boolean":
        values = draw(st.lists(st.booleans(), min_size=rows, max_size=rows))
        return pd.array(
            [None if n else v for v, n in zip(values, nulls, strict=True)], dtype="boolean"
        )
    if kind == "string":
        values = draw(st.lists(NAMES, min_size=rows, max_size=rows))
        return pd.array(
            [None if n else v for v, n in zip(values, nulls, strict=True)], dtype="string"
        )
    if kind == "category":
        values = draw(
            st.lists(st.sampled_from(["a", "b", "ü", "日本"]), min_size=rows, max_size=rows)
        )
        ordered = draw(st.booleans())
        return pd.Categorical(
            [None if n else v for v, n in zip(values, nulls, strict=True)],
            categories=["a", "b", "ü", "日本"],
            ordered=ordered,
        )
    if kind in ("datetime-tz", "datetime"):
        stamps = draw(st.lists(st.integers(0, 4_000_000_000_000_000), min_size=rows, max_size=rows))
        values = pd.to_datetime(
            [None if n else s for s, n in zip(stamps, nulls, strict=True)], unit="us"
        )
        zone = draw(st.sampled_from(["UTC", "Europe/Paris", "Asia/Kathmandu"]))
        return values.tz_localize("UTC").tz_convert(zone) if kind == "datetime-tz" else values
    raise AssertionError(kind)


COLUMN_KINDS = [
    "int64",
    "uint8",
    "float32",
    "float64",
    "bool",
    "Int64",
    "boolean",
    "string",
    "category",
    "datetime-tz",
    "datetime",
]


@st.composite
def pandas_frames(draw: Any) -> pd.DataFrame:
    rows = draw(st.integers(0, 12))
    names = draw(st.lists(NAMES, min_size=0, max_size=6, unique=True))
    data = {name: _column(draw(st.sampled_from(COLUMN_KINDS)), rows, draw) for name in names}
    # Values only: a Series would be aligned on the frame's index (NaN where labels differ).
    data = {name: c.array if isinstance(c, pd.Series) else c for name, c in data.items()}
    index_kind = draw(st.sampled_from(["range", "shifted-range", "int", "str", "datetime"]))
    if index_kind == "range":
        index: pd.Index = pd.RangeIndex(rows)
    elif index_kind == "shifted-range":
        index = pd.RangeIndex(10, 10 + 3 * rows, 3, name=draw(st.sampled_from([None, "i"])))
    elif index_kind == "int":
        index = pd.Index(
            draw(st.lists(st.integers(-1000, 1000), min_size=rows, max_size=rows)),
            dtype="int64",
            name="k",
        )
    elif index_kind == "str":
        index = pd.Index(
            draw(st.lists(st.text(string.ascii_letters, max_size=4), min_size=rows, max_size=rows)),
            dtype="str",
            name="label",
        )
    else:
        # Parquet keeps the stamps, not a DatetimeIndex's `freq` (documented in the README).
        stamps = pd.date_range("2024-03-31", periods=rows, freq="h", tz="Europe/Paris", name="at")
        index = pd.DatetimeIndex(stamps, freq=None)
    return pd.DataFrame(data, index=index)


@PROPERTY
@given(frame=pandas_frames())
def test_generated_pandas_frames_round_trip_with_index_dtypes_and_column_order(
    frame: pd.DataFrame,
) -> None:
    back = ParquetSerializer().loads(ParquetSerializer().dumps(frame))
    assert isinstance(back, pd.DataFrame)
    assert list(back.columns) == list(frame.columns)
    pd.testing.assert_frame_equal(back, frame, check_column_type=False)
    assert back.dtypes.tolist() == frame.dtypes.tolist()


@contextlib.contextmanager
def _by_column() -> Iterator[None]:
    """Payloads of any size decoded column by column (normally from 16 MiB of columns on)."""
    saved = parquet_module._BY_COLUMN_FROM
    parquet_module._BY_COLUMN_FROM = 0
    try:
        yield
    finally:
        parquet_module._BY_COLUMN_FROM = saved


def _private_copy(data: bytes) -> memoryview:
    """`data` in private anonymous memory, as a result store hands a verified payload over."""
    memory = mmap.mmap(-1, len(data), flags=mmap.MAP_PRIVATE)
    memory[:] = data
    return memoryview(memory)


@PROPERTY
@given(frame=pandas_frames())
def test_generated_pandas_frames_read_column_by_column_from_private_memory(
    frame: pd.DataFrame,
) -> None:
    # `load_buffer` decodes one column at a time and gives back each one's compressed pages:
    # the frame is the same as from a whole read, nullable columns included.
    with _by_column():
        back = ParquetSerializer().load_buffer(_private_copy(ParquetSerializer().dumps(frame)))
    pd.testing.assert_frame_equal(back, frame, check_column_type=False)
    assert back.dtypes.tolist() == frame.dtypes.tolist()


def test_column_by_column_read_gives_back_the_payload_and_keeps_every_kind(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(parquet_module, "_BY_COLUMN_FROM", 0)  # every size, column by column
    rows = 200_000
    frame = pd.DataFrame(
        {
            "id": np.arange(rows),
            "n": pd.array([None if i % 3 else i for i in range(rows)], dtype="Int64"),
            "b": pd.array([None if i % 5 else i % 2 == 0 for i in range(rows)], dtype="boolean"),
            "f": pd.array([None if i % 7 else i / 2 for i in range(rows)], dtype="Float64"),
            "s": [f"row-{i}" for i in range(rows)],
        },
        index=pd.RangeIndex(5, 5 + 2 * rows, 2, name="k"),
    )
    data = ParquetSerializer(level=-7).dumps(frame)
    buffer = _private_copy(data)
    back = ParquetSerializer().load_buffer(buffer)
    pd.testing.assert_frame_equal(back, frame)
    given_back = sum(
        1
        for page in range(0, len(data), mmap.PAGESIZE)
        if not any(buffer[page : page + mmap.PAGESIZE])
    )
    # The column chunks' whole pages read as zeros now; the footer is kept.
    assert given_back * mmap.PAGESIZE > len(data) // 2
    assert bytes(buffer[-4:]) == b"PAR1"
    # Memory that is not a whole private mapping is read the same and left alone.
    plain = memoryview(bytearray(data))
    pd.testing.assert_frame_equal(ParquetSerializer().load_buffer(plain), frame)
    assert bytes(plain) == data
    # Arrow tables with nested columns and a name that is a dotted path inside another
    # column (pyarrow would select both by it): read whole, same values.
    table = pa.table(
        {
            "a": pa.array([{"b": 1, "c": "x"}, None] * 50_000),
            "a.b": pa.array([[1, 2], []] * 50_000, pa.list_(pa.int64())),
            "m": pa.array([[("k", 1)], None] * 50_000, pa.map_(pa.string(), pa.int64())),
        }
    )
    assert (
        ParquetSerializer()
        .load_buffer(_private_copy(ParquetSerializer().dumps(table)))
        .equals(table)
    )
    nested = table.drop_columns(["a.b"])
    assert (
        ParquetSerializer()
        .load_buffer(_private_copy(ParquetSerializer().dumps(nested)))
        .equals(nested)
    )
    print(f"{given_back} of {-(-len(data) // mmap.PAGESIZE)} payload pages given back")


@PROPERTY
@given(frame=pandas_frames(), name=st.sampled_from([None, "price", "ünïcode"]))
def test_generated_pandas_series_round_trip_with_name_and_index(
    frame: pd.DataFrame, name: str | None
) -> None:
    if frame.shape[1] == 0:
        return
    series = frame.iloc[:, 0].rename(name)
    back = ParquetSerializer().loads(ParquetSerializer().dumps(series))
    pd.testing.assert_series_equal(back, series)


def test_empty_zero_row_and_zero_column_frames_round_trip() -> None:
    cases = {
        "empty": pd.DataFrame(),
        "0 rows": pd.DataFrame(
            {"a": pd.Series([], dtype="Int64"), "é": pd.Series([], dtype="str")}
        ),
        "0 columns, 5 rows": pd.DataFrame(index=pd.RangeIndex(5)),
        "0 columns, labelled rows": pd.DataFrame(index=pd.Index(["x", "y"], name="k")),
    }
    for label, frame in cases.items():
        back = ParquetSerializer().loads(ParquetSerializer().dumps(frame))
        pd.testing.assert_frame_equal(back, frame, check_column_type=False)
        print(f"{label}: shape {back.shape} round-trips")


# -- polars and arrow ------------------------------------------------------------------------------


# polars hands names to Arrow as C strings: a NUL in a name is refused (tested below).
POLARS_NAMES = NAMES.filter(lambda name: "\0" not in name)


@st.composite
def polars_frames(draw: Any) -> pl.DataFrame:
    rows = draw(st.integers(0, 12))
    names = draw(st.lists(POLARS_NAMES, max_size=5, unique=True))
    columns: dict[str, pl.Series] = {}
    for name in names:
        kind = draw(st.sampled_from(["i64", "f64", "str", "bool", "datetime-tz", "cat", "u8"]))
        nulls = draw(st.lists(st.booleans(), min_size=rows, max_size=rows))

        def masked(values: list[Any], nulls: list[bool] = nulls) -> list[Any]:
            return [None if n else v for v, n in zip(values, nulls, strict=True)]

        if kind == "i64":
            series = pl.Series(
                name,
                masked(
                    draw(st.lists(st.integers(-(2**63), 2**63 - 1), min_size=rows, max_size=rows))
                ),
                dtype=pl.Int64,
            )
        elif kind == "u8":
            series = pl.Series(
                name,
                masked(draw(st.lists(st.integers(0, 255), min_size=rows, max_size=rows))),
                dtype=pl.UInt8,
            )
        elif kind == "f64":
            series = pl.Series(
                name,
                masked(draw(st.lists(st.floats(allow_nan=False), min_size=rows, max_size=rows))),
                dtype=pl.Float64,
            )
        elif kind == "str":
            series = pl.Series(
                name, masked(draw(st.lists(NAMES, min_size=rows, max_size=rows))), dtype=pl.String
            )
        elif kind == "bool":
            series = pl.Series(
                name,
                masked(draw(st.lists(st.booleans(), min_size=rows, max_size=rows))),
                dtype=pl.Boolean,
            )
        elif kind == "cat":
            series = pl.Series(
                name,
                masked(draw(st.lists(st.sampled_from(["a", "ß"]), min_size=rows, max_size=rows))),
                dtype=pl.Categorical,
            )
        else:
            stamps = draw(
                st.lists(st.integers(0, 4_000_000_000_000_000), min_size=rows, max_size=rows)
            )
            series = pl.Series(name, masked(stamps), dtype=pl.Int64).cast(
                pl.Datetime("us", "Asia/Tokyo")
            )
        columns[name] = series
    return pl.DataFrame(list(columns.values())) if columns else pl.DataFrame()


@PROPERTY
@given(frame=polars_frames(), lazy=st.booleans())
def test_generated_polars_frames_come_back_as_polars(frame: pl.DataFrame, lazy: bool) -> None:
    value = frame.lazy() if lazy else frame
    back = ParquetSerializer().loads(ParquetSerializer().dumps(value))
    assert isinstance(back, pl.DataFrame)  # a LazyFrame is collected: its result is a frame
    polars.testing.assert_frame_equal(back, frame, categorical_as_str=True)
    # From private memory, column by column (`load_buffer`), the same frame.
    with _by_column():
        back = ParquetSerializer().load_buffer(_private_copy(ParquetSerializer().dumps(frame)))
    polars.testing.assert_frame_equal(back, frame, categorical_as_str=True)


def test_polars_column_name_with_nul_is_a_clear_error_not_a_panic() -> None:
    with pytest.raises(SerializationError, match="NUL"):
        ParquetSerializer().dumps(pl.DataFrame({"a\0b": [1]}))


def test_second_resolution_timestamps_keep_their_unit() -> None:
    # Parquet stores them as milliseconds; the unit is recorded and restored.
    seconds = np.array([0, 86_400], dtype="datetime64[s]")
    frame = pd.DataFrame({"naive": seconds, "utc": pd.Series(seconds).dt.tz_localize("UTC")})
    back = ParquetSerializer().loads(ParquetSerializer().dumps(frame))
    pd.testing.assert_frame_equal(back, frame)
    print(back.dtypes.tolist())


def test_arrow_table_and_record_batch_come_back_as_themselves() -> None:
    table = pa.table(
        {
            "i": pa.array([1, None, 3], pa.int32()),
            "s": pa.array(["x", "ÿ", None]),
            "d": pa.array(["a", "b", "a"]).dictionary_encode(),
            "l": pa.array([[1], [], None], pa.list_(pa.int64())),
        }
    )
    s = ParquetSerializer()
    assert s.loads(s.dumps(table)).equals(table)
    batch = table.to_batches()[0]
    back = s.loads(s.dumps(batch))
    assert isinstance(back, pa.RecordBatch) and back.equals(batch)
    empty = table.schema.empty_table().to_batches()
    zero = pa.RecordBatch.from_pylist([], schema=table.schema) if not empty else empty[0]
    assert s.loads(s.dumps(zero)).num_rows == 0


def test_payload_is_a_plain_parquet_file_other_readers_open() -> None:
    frame = pd.DataFrame({"a": [1, 2], "b": ["x", "y"]}, index=pd.Index([7, 8], name="k"))
    data = ParquetSerializer(level=9).dumps(frame)
    pd.testing.assert_frame_equal(pd.read_parquet(io.BytesIO(data)), frame)
    polars_back = pl.read_parquet(io.BytesIO(data))
    assert polars_back["a"].to_list() == [1, 2]
    metadata = pq.read_metadata(io.BytesIO(data))
    assert metadata.row_group(0).column(0).compression == "ZSTD"
    assert metadata.schema.to_arrow_schema().metadata[KIND_KEY] == b"pandas-frame"


def test_zstd_level_is_configurable_and_checked() -> None:
    frame = pd.DataFrame({"a": np.arange(100_000) % 97, "b": ["text"] * 100_000})
    fast, small = ParquetSerializer(level=1).dumps(frame), ParquetSerializer(level=19).dumps(frame)
    print(f"level 1: {len(fast)} bytes, level 19: {len(small)} bytes")
    assert resolve_serializer({"type": "parquet", "level": 19}) == ParquetSerializer(level=19)
    for bad in (23, -8, "3", 3.0, True):
        with pytest.raises(SerializationError, match="zstd level"):
            ParquetSerializer(level=bad)  # type: ignore[arg-type]


def test_unknown_kind_in_the_file_is_refused_not_imported() -> None:
    table = pa.table({"a": [1]}).replace_schema_metadata({KIND_KEY: b"os.system"})
    buffer = io.BytesIO()
    pq.write_table(table, buffer)
    with pytest.raises(SerializationError, match="not one of pandas-frame"):
        ParquetSerializer().loads(buffer.getvalue())


def test_a_non_table_is_refused_with_the_alternatives() -> None:
    for value in ({"a": 1}, np.zeros(3), [1, 2]):
        with pytest.raises(SerializationError, match="use 'npy' for arrays"):
            ParquetSerializer().dumps(value)


def test_parquet_decoding_is_bounded_by_the_declared_size() -> None:
    # 8 MB of one repeated int64 compresses to almost nothing: a small payload, a large decode.
    frame = pd.DataFrame({"a": np.zeros(1_000_000, dtype="int64")})
    s = ParquetSerializer()
    with codec_context() as written:
        data = s.dumps(frame)
    assert written.decoded_size is not None and written.decoded_size >= 8_000_000
    print(f"payload {len(data)} bytes, declared decoded size {written.decoded_size} bytes")
    with codec_context(max_bytes=written.decoded_size):
        assert len(s.loads(data)) == 1_000_000
    with (
        codec_context(max_bytes=len(data) * 10),
        pytest.raises(SerializationError, match="announces"),
    ):
        s.loads(data)


def test_garbage_is_a_serialization_error() -> None:
    for garbage in (b"", b"PAR1", b"PAR1" + b"\0" * 100 + b"PAR1", os.urandom(4096)):
        with pytest.raises(SerializationError, match="not a readable Parquet"):
            ParquetSerializer().loads(garbage)


# -- npy -------------------------------------------------------------------------------------------

NUMERIC_DTYPES: list[Any] = [
    np.bool_,
    np.int8,
    np.int16,
    np.int32,
    np.int64,
    np.uint8,
    np.uint16,
    np.uint32,
    np.uint64,
    np.float16,
    np.float32,
    np.float64,
    np.longdouble,
    np.complex64,
    np.complex128,
    np.clongdouble,
    np.dtype("datetime64[ns]"),
    np.dtype("timedelta64[s]"),
    np.dtype(">i4"),  # big-endian
    np.dtype("<U5"),
    np.dtype([("x", "<f8"), ("n", "<i2")]),
]


@PROPERTY
@given(
    array=st.sampled_from(NUMERIC_DTYPES).flatmap(
        lambda dtype: hnp.arrays(
            dtype, hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=5)
        )
    ),
    fortran=st.booleans(),
)
def test_every_numeric_dtype_round_trips_in_c_and_fortran_order(
    array: np.ndarray, fortran: bool
) -> None:
    if fortran:
        array = np.asfortranarray(array)
    back = NumpySerializer().loads(NumpySerializer().dumps(array))
    assert back.dtype == array.dtype and back.shape == array.shape
    assert back.tobytes() == array.tobytes()  # bit for bit, NaN payloads and -0.0 included
    if array.ndim > 1 and fortran:
        assert back.flags.f_contiguous


def test_zero_d_and_non_contiguous_arrays_round_trip() -> None:
    s = NumpySerializer()
    zero_d = np.array(3.5)
    assert s.loads(s.dumps(zero_d)).shape == ()
    strided = np.arange(100).reshape(10, 10)[::3, ::2]
    assert np.array_equal(s.loads(s.dumps(strided)), strided)


def test_object_arrays_are_refused_both_ways() -> None:
    for value in (np.array([{"a": 1}], dtype=object), np.zeros(2, dtype=[("o", object)])):
        with pytest.raises(SerializationError, match="without pickling"):
            NumpySerializer().dumps(value)
    # An .npy file with an object dtype (written by numpy with pickling) is not read.
    pickled = io.BytesIO()
    np.save(pickled, np.array([object()], dtype=object), allow_pickle=True)
    with pytest.raises(SerializationError, match="only pickle can read"):
        NumpySerializer().loads(pickled.getvalue())


def test_npy_decoding_is_bounded_by_the_declared_size() -> None:
    data = NumpySerializer().dumps(np.zeros(1000))
    # A header that claims 10^12 elements is refused before numpy allocates.
    forged = data.replace(b"(1000,)", b"(1000000000000,)".ljust(7))
    with codec_context(max_bytes=len(data)), pytest.raises(SerializationError):
        NumpySerializer().loads(forged)
    with codec_context(max_bytes=len(data)):
        assert NumpySerializer().loads(data).shape == (1000,)
    with codec_context(max_bytes=4000), pytest.raises(SerializationError, match="over its limit"):
        NumpySerializer().loads(data)


def test_payload_is_a_plain_npy_file() -> None:
    array = np.arange(12, dtype=np.float32).reshape(3, 4)
    assert np.array_equal(np.load(io.BytesIO(NumpySerializer().dumps(array))), array)


# -- auto ------------------------------------------------------------------------------------------


def test_auto_chooses_per_value() -> None:
    auto = AutoSerializer()
    chosen = {
        "pandas": auto.for_value(pd.DataFrame({"a": [1]})).type,
        "series": auto.for_value(pd.Series([1])).type,
        "polars": auto.for_value(pl.DataFrame({"a": [1]})).type,
        "arrow": auto.for_value(pa.table({"a": [1]})).type,
        "array": auto.for_value(np.zeros(2)).type,
        "dict": auto.for_value({"a": [1, 2.5, None]}).type,
        "tuple": auto.for_value((1, "x")).type,
    }
    print(chosen)
    assert chosen == {
        "pandas": "parquet",
        "series": "parquet",
        "polars": "parquet",
        "arrow": "parquet",
        "array": "npy",
        "dict": "json",
        "tuple": "json",
    }


def test_auto_pickles_only_when_allowed() -> None:
    class Opaque:
        pass

    for value in (Opaque(), lambda: 1, np.array([object()]), np.int64(3)):
        with pytest.raises(SerializationError, match="fallback='pickle'"):
            AutoSerializer().for_value(value)
        assert AutoSerializer(fallback="pickle").for_value(value).type == "pickle"
    spec = AutoSerializer(fallback="pickle").to_spec()
    assert resolve_serializer(spec) == AutoSerializer(fallback="pickle")
    assert resolve_serializer("auto") == AutoSerializer()


def test_auto_standalone_bytes_name_their_format() -> None:
    auto = AutoSerializer(fallback="pickle")
    for value in (pd.DataFrame({"a": [1]}), np.arange(3), {"k": 1}, {1, 2}):
        data = auto.dumps(value)
        back = auto.loads(data)
        print(data.split(b"\n", 1)[0])
        if isinstance(value, pd.DataFrame):
            pd.testing.assert_frame_equal(back, value)
        elif isinstance(value, np.ndarray):
            assert np.array_equal(back, value)
        else:
            assert back == value
    with pytest.raises(SerializationError, match="does not unpickle"):
        AutoSerializer().loads(auto.dumps(object()))
