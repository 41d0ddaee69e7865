"""`ParquetSerializer`: pandas, polars and pyarrow tables as plain Parquet files (zstd).

The payload is an ordinary Parquet file: DuckDB, pandas, polars or Spark open it as it is
(``block results export``). What kind of object to rebuild is kept in the file's own key-value
metadata (``blocks.kind``), one of a closed set (`KINDS`): never a class or module name.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, BinaryIO, Self, cast

from . import context
from ._files import CountingSink, Window
from .base import Serializer, check_spec_keys
from .errors import SerializationError

if TYPE_CHECKING:
    import pyarrow as pa
    import pyarrow.parquet as pq

#: What a Parquet record rebuilds, by the name written in its metadata; nothing else is read.
KINDS = (
    "pandas-frame",
    "pandas-series",
    "polars-frame",
    "arrow-table",
    "arrow-batch",
)
KIND_KEY = b"blocks.kind"
_UNNAMED_KEY = b"blocks.series-unnamed"
# A 0-row frame's categorical columns: Parquet keeps categories only with the data, so they
# are kept here (JSON: column position -> categories and order) and set again on reading.
_EMPTY_CATEGORIES_KEY = b"blocks.empty-categories"
# Parquet has no second-resolution timestamps (it stores milliseconds): the positions of
# ``timestamp[s]`` columns are kept here and cast back on reading.
_SECONDS_KEY = b"blocks.seconds"
# zstd's levels (negative ones are its fast modes).
LEVELS = range(-7, 23)
DEFAULT_LEVEL = 1
#: Rows per row group: pyarrow's default, so readers parallelise across groups as usual.
ROW_GROUP_SIZE = 1024 * 1024
# Bytes a fixed-width Parquet value decodes to, at most (INT96 becomes an 8-byte timestamp).
_WIDTHS = {"BOOLEAN": 1, "INT32": 4, "INT64": 8, "INT96": 12, "FLOAT": 4, "DOUBLE": 8}


def kind_of(obj: Any) -> str | None:
    """The kind of table `obj` is (see `KINDS`), or None; imports no library to find out."""
    module = type(obj).__module__.partition(".")[0]
    if module == "pandas":
        import pandas as pd

        if isinstance(obj, pd.DataFrame):
            return "pandas-frame"
        if isinstance(obj, pd.Series):
            return "pandas-series"
    elif module == "polars":
        import polars as pl

        if isinstance(obj, pl.DataFrame | pl.LazyFrame):
            return "polars-frame"
    elif module == "pyarrow":
        import pyarrow as pa

        if isinstance(obj, pa.Table):
            return "arrow-table"
        if isinstance(obj, pa.RecordBatch):
            return "arrow-batch"
    return None


def _pyarrow() -> tuple[Any, Any]:
    try:
        import pyarrow
        import pyarrow.parquet
    except ImportError:
        raise SerializationError(
            "the parquet serializer needs pyarrow: pip install 'blocks[dataframes]'"
        ) from None
    return pyarrow, pyarrow.parquet


class ParquetSerializer(Serializer):
    """Tables as Parquet: pandas DataFrame/Series, polars DataFrame/LazyFrame, pyarrow
    Table/RecordBatch, zstd-compressed (`level` -7..22, default 1: pyarrow's own).

    A pandas frame comes back as pandas with its index and dtypes (categoricals, tz-aware
    datetimes, nullable integers: pyarrow's pandas metadata), a polars frame as a polars
    DataFrame (a LazyFrame is collected first), an arrow table as an arrow table. `dump`
    streams row groups into the file; nothing else is held beside the table.

    Bounded: `dump` reports the decoded size (the larger of the table's in-memory size and
    what the file's metadata announces) in ``context.decoded_size``; inside a `codec_context`
    with ``max_bytes``, `load` refuses a file whose metadata announces more before reading a
    column, and a table that decodes to more after reading.

    Example:
        >>> import pandas as pd
        >>> s = ParquetSerializer()
        >>> s.loads(s.dumps(pd.DataFrame({"a": [1, 2]}))).a.tolist()
        [1, 2]
    """

    type = "parquet"
    loads_in_place = True

    def __init__(self, level: int = DEFAULT_LEVEL) -> None:
        if type(level) is not int or level not in LEVELS:
            raise SerializationError(
                f"parquet zstd level must be an integer from {LEVELS.start} to "
                f"{LEVELS.stop - 1}, not {level!r}"
            )
        self.level = level

    # -- writing ----------------------------------------------------------------------------

    def dumps(self, obj: Any) -> bytes:
        import io

        buffer = io.BytesIO()
        self.dump(obj, buffer)
        return buffer.getvalue()

    def dump(self, obj: Any, file: BinaryIO) -> None:
        kind = kind_of(obj)
        if kind is None:
            raise SerializationError(
                f"the parquet serializer writes pandas DataFrames/Series, polars "
                f"DataFrames/LazyFrames and pyarrow Tables/RecordBatches, not a "
                f"{type(obj).__module__}.{type(obj).__qualname__}: use 'npy' for arrays, "
                "'json' or 'pickle' for other values, or 'auto' to choose per value"
            )
        pa, pq = _pyarrow()
        table = _to_arrow(obj, kind, pa)
        sink = CountingSink(file)
        try:
            writer = pq.ParquetWriter(
                sink, table.schema, compression="zstd", compression_level=self.level
            )
            try:
                writer.write_table(table, row_group_size=ROW_GROUP_SIZE)
            finally:
                writer.close()
        except SerializationError:
            raise
        except Exception as exc:  # pyarrow.ArrowException subclasses, ValueError, TypeError
            if isinstance(exc, OSError) and not isinstance(exc, pa.ArrowException):
                raise  # the storage failed: the store reports it as a StorageError
            raise SerializationError(f"cannot write this {kind} as Parquet: {exc}") from exc
        active = context.current()
        if active is not None:
            metadata = getattr(getattr(writer, "writer", None), "metadata", None)
            announced = decoded_estimate(metadata) if metadata is not None else 0
            active.decoded_size = max(int(table.nbytes), announced, sink.size)

    # -- reading ----------------------------------------------------------------------------

    def loads(self, data: bytes) -> Any:
        import io

        return self.load(io.BytesIO(data))

    def load(self, file: BinaryIO) -> Any:
        pa, _ = _pyarrow()
        return self._read(pa.PythonFile(Window(file), mode="r"))

    def load_buffer(self, buffer: memoryview) -> Any:
        """Read from the verified payload in memory: pyarrow slices column chunks out of it
        instead of copying each one out of a file."""
        pa, _ = _pyarrow()
        return self._read(pa.BufferReader(pa.py_buffer(buffer)))

    def _read(self, source: Any) -> Any:
        pa, pq = _pyarrow()
        active = context.current()
        limit = active.max_bytes if active is not None else None
        try:
            parquet = pq.ParquetFile(source)
            metadata = parquet.metadata
            kind, unnamed = _kind(parquet.schema_arrow.metadata)
            if limit is not None:
                announced = decoded_estimate(metadata)
                if announced > limit:
                    raise SerializationError(
                        f"the Parquet payload announces {announced} decoded bytes, over its "
                        f"limit of {limit} (the size its record declares, or "
                        "BLOCKS_RESULTS_MAX_BYTES): not read"
                    )
            table = parquet.read(use_pandas_metadata=True)
        except SerializationError:
            raise
        except Exception as exc:
            # The store hands over a verified local copy (file or memory): an OSError here is
            # pyarrow's word for a malformed file (a thrift footer it cannot parse, ...).
            raise SerializationError(f"payload is not a readable Parquet file: {exc}") from exc
        if limit is not None and table.nbytes > limit + limit // 4 + (1 << 20):
            # Encodings that repeat values (dictionaries, runs) decode past what the metadata
            # announces; a table far past the declared size is refused before conversion.
            raise SerializationError(
                f"the Parquet payload decoded to {table.nbytes} bytes, over its limit of {limit}"
            )
        metadata = table.schema.metadata or {}
        # The table as read is let go here (rebound): converting to pandas frees each column
        # as it goes only when no other table holds it (see `_to_pandas`).
        table = _without_own_metadata(table, metadata, pa)
        return _from_arrow(table, kind, unnamed, metadata.get(_EMPTY_CATEGORIES_KEY), pa)

    # -- spec ---------------------------------------------------------------------------------

    def versions(self) -> dict[str, str]:
        # Parquet is a stable format: recorded for diagnosis, never a reason to refuse.
        # Asked before each write, which imports pyarrow anyway.
        try:
            import pyarrow
        except ImportError:
            return {}
        return {"pyarrow": str(pyarrow.__version__)}

    def to_spec(self) -> dict[str, Any]:
        return {"type": self.type, "level": self.level}

    @classmethod
    def from_spec(cls, spec: dict[str, Any]) -> Self:
        """Rebuild from `to_spec()` output (the ``type`` key is already checked)."""
        check_spec_keys(spec, {"type", "level"})
        return cls(level=spec.get("level", DEFAULT_LEVEL))


def decoded_estimate(metadata: pq.FileMetaData) -> int:
    """Bytes the columns of a Parquet file decode to at least, from its footer alone.

    Fixed-width values count their width (and a validity bit); variable-width ones their
    uncompressed bytes plus an 8-byte offset each.
    """
    total = 0
    for group in range(metadata.num_row_groups):
        row_group = metadata.row_group(group)
        for column in range(row_group.num_columns):
            chunk = row_group.column(column)
            values = int(chunk.num_values)
            physical = str(chunk.physical_type)
            if physical == "FIXED_LEN_BYTE_ARRAY":
                width = int(metadata.schema.column(column).length or 0)
            else:
                width = _WIDTHS.get(physical, 0)
            if width:
                total += values * width + values // 8 + 1
            else:
                total += int(chunk.total_uncompressed_size) + 8 * values
    return total


def _kind(metadata: dict[bytes, bytes] | None) -> tuple[str, bool]:
    raw = (metadata or {}).get(KIND_KEY)
    kind = raw.decode("ascii", "replace") if raw is not None else "arrow-table"
    if kind not in KINDS:
        raise SerializationError(
            f"Parquet payload names kind {kind[:40]!r}, which is not one of {', '.join(KINDS)}"
        )
    return kind, (metadata or {}).get(_UNNAMED_KEY) == b"1"


def _to_arrow(obj: Any, kind: str, pa: Any) -> pa.Table:
    extra: dict[bytes, bytes] = {KIND_KEY: kind.encode()}
    try:
        if kind == "pandas-series":
            if obj.name is None:
                extra[_UNNAMED_KEY] = b"1"
            table = pa.Table.from_pandas(obj.to_frame(name=0 if obj.name is None else obj.name))
        elif kind == "pandas-frame":
            # A frame without columns keeps its rows only in its index: store the index as a
            # column then (a RangeIndex kept as metadata alone would come back with 0 rows).
            table = pa.Table.from_pandas(obj, preserve_index=True if obj.shape[1] == 0 else None)
        elif kind == "polars-frame":
            import polars as pl

            frame = obj.collect() if isinstance(obj, pl.LazyFrame) else obj
            if any("\0" in name for name in frame.columns):
                # polars hands names to Arrow as C strings: it would panic, not raise.
                raise SerializationError(
                    "a polars column name contains NUL, which Arrow's C interface cannot "
                    "carry: rename the column"
                )
            table = frame.to_arrow()
        elif kind == "arrow-batch":
            table = pa.Table.from_batches([obj])
        else:
            table = obj
    except SerializationError:
        raise
    except Exception as exc:
        raise SerializationError(f"cannot convert this {kind} to an Arrow table: {exc}") from exc
    if kind.startswith("pandas") and len(obj) == 0:
        categories = _empty_categories(obj.to_frame() if kind == "pandas-series" else obj)
        if categories:
            extra[_EMPTY_CATEGORIES_KEY] = categories
    seconds = [
        i
        for i, field in enumerate(table.schema)
        if pa.types.is_timestamp(field.type) and field.type.unit == "s"
    ]
    if seconds:
        extra[_SECONDS_KEY] = ",".join(map(str, seconds)).encode()
    merged = {**(table.schema.metadata or {}), **extra}
    return cast("pa.Table", table.replace_schema_metadata(merged))


def _empty_categories(frame: Any) -> bytes | None:
    """JSON of a 0-row frame's categorical columns (position -> categories, ordered), if their
    categories are plain JSON values."""
    import json

    import pandas as pd

    found: dict[str, Any] = {}
    for position, dtype in enumerate(frame.dtypes):
        if isinstance(dtype, pd.CategoricalDtype):
            values = dtype.categories.tolist()
            if all(type(v) in (str, int, float, bool) for v in values):
                found[str(position)] = {"categories": values, "ordered": bool(dtype.ordered)}
    return json.dumps(found).encode() if found else None


def _set_empty_categories(frame: Any, raw: bytes | None) -> Any:
    if raw is None or len(frame):
        return frame
    import json

    import pandas as pd

    try:
        found = json.loads(raw)
        for position, spec in found.items():
            dtype = pd.CategoricalDtype(pd.Index(spec["categories"]), bool(spec["ordered"]))
            column = frame.columns[int(position)]
            frame[column] = frame[column].astype(dtype)
    except (ValueError, TypeError, KeyError, IndexError, AttributeError) as exc:
        raise SerializationError(f"Parquet payload has unreadable categories: {exc}") from None
    return frame


def _seconds_again(table: pa.Table, metadata: dict[bytes, bytes], pa: Any) -> pa.Table:
    raw = metadata.get(_SECONDS_KEY)
    if not raw:
        return table
    try:
        for position in map(int, raw.split(b",")):
            field = table.schema.field(position)
            if pa.types.is_timestamp(field.type) and field.type.unit == "ms":
                kind = pa.timestamp("s", field.type.tz)
                column = table.column(position).cast(kind)
                table = table.set_column(position, field.with_type(kind), column)
    except (ValueError, IndexError, pa.ArrowException) as exc:
        raise SerializationError(f"Parquet payload has unreadable timestamp units: {exc}") from None
    return table


def _without_own_metadata(table: pa.Table, metadata: dict[bytes, bytes], pa: Any) -> pa.Table:
    """`table` without our metadata keys, its second-resolution timestamps restored."""
    own = {KIND_KEY, _UNNAMED_KEY, _EMPTY_CATEGORIES_KEY, _SECONDS_KEY}
    kept = {k: v for k, v in metadata.items() if k not in own}
    return _seconds_again(table.replace_schema_metadata(kept or None), metadata, pa)


def _from_arrow(
    table: pa.Table, kind: str, unnamed: bool, categories: bytes | None, pa: Any
) -> Any:
    try:
        if kind == "pandas-frame":
            return _set_empty_categories(_to_pandas(table), categories)
        if kind == "pandas-series":
            frame = _set_empty_categories(_to_pandas(table), categories)
            series = frame.iloc[:, 0]
            return series.rename(None) if unnamed else series
        if kind == "polars-frame":
            import polars as pl

            return pl.from_arrow(table)
        if kind == "arrow-batch":
            combined = table.combine_chunks()
            batches = combined.to_batches()
            if len(batches) == 1:
                return batches[0]
            return pa.RecordBatch.from_pydict(
                {name: combined.column(name).combine_chunks() for name in combined.column_names},
                schema=combined.schema,
            )
        return table
    except ImportError as exc:
        raise SerializationError(
            f"this Parquet record holds a {kind}, and reading it back needs {exc.name}: "
            f"pip install {exc.name}"
        ) from None


def _to_pandas(table: pa.Table) -> Any:
    """`table` as a pandas frame, each column's Arrow memory freed as soon as it is converted
    (pyarrow's ``self_destruct``; `table` is unusable after), so the two never coexist whole."""
    return table.to_pandas(self_destruct=True, split_blocks=True)
