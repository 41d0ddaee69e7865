"""`ParquetSerializer`: pandas, polars and pyarrow tables as plain Parquet files (zstd).

The payload is an ordinary Parquet file: DuckDB, pandas, polars or Spark open it as it is
(``block results export``). What kind of object to rebuild is kept in the file's own key-value
metadata (``blocks.kind``), one of a closed set (`KINDS`): never a class or module name.
"""

from __future__ import annotations

import itertools
from typing import TYPE_CHECKING, Any, BinaryIO, Self, cast

from . import context
from ._files import CountingSink, Window, discard
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
# pandas' nullable dtypes, which it builds from Arrow with ``__from_arrow__`` (see `_to_pandas`).
_MASKED = frozenset(
    {f"{sign}Int{bits}" for sign in ("", "U") for bits in (8, 16, 32, 64)}
    | {"Float32", "Float64", "boolean"}
)
#: Payloads whose columns hold this many uncompressed bytes or more are decoded column by
#: column (`_read_table`); smaller ones all at once, on pyarrow's threads (faster, and their
#: peak memory is small anyway).
_BY_COLUMN_FROM = 16 * 1024 * 1024
#: A decoded column from this size on has Arrow's pool return the scratch memory it freed.
_RELEASE_FROM = 1024 * 1024
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
        instead of copying each one out of a file, one column at a time, and each column's
        compressed bytes are given back (`discard`) once it is decoded, so the payload, the
        Arrow table and the frame are never all resident at once."""
        pa, _ = _pyarrow()
        return self._read(pa.BufferReader(pa.py_buffer(buffer)), buffer)

    def _read(self, source: Any, buffer: memoryview | None = None) -> Any:
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
            table = _read_table(parquet, buffer, pa)
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


def _read_table(parquet: pq.ParquetFile, buffer: memoryview | None, pa: Any) -> pa.Table:
    """All of `parquet` as one table. From a payload in memory (`buffer`), one top-level
    column at a time (`_decode_columns`), so the peak is about the table plus one column's
    scratch memory, not the table plus the whole payload plus every column's scratch memory."""
    schema = parquet.schema_arrow
    names = schema.names
    metadata = parquet.metadata
    sizes = _uncompressed_sizes(metadata)
    if (
        buffer is None
        or len(names) < 2
        or len(set(names)) != len(names)
        or sum(sizes) < _BY_COLUMN_FROM  # small: pyarrow's threads, all columns at once
    ):
        return parquet.read(use_pandas_metadata=True)
    leaves: dict[str, list[int]] = {name: [] for name in names}
    for leaf, path in enumerate(parquet.reader.column_paths):
        # pyarrow selects a column by name or by any dotted path inside it: each name must
        # select its own leaves only (else read whole: bytes given back are never re-read).
        inner = (".".join(path[: depth + 1]) for depth in range(1, len(path)))
        if path[0] not in leaves or any(dotted in leaves for dotted in inner):
            return parquet.read(use_pandas_metadata=True)
        leaves[path[0]].append(leaf)
    # Largest first: a column's decoding scratch is about its size, and it is needed least
    # when little of the table is decoded yet.
    size_of = {name: sum(sizes[leaf] for leaf in leaves[name]) for name in names}
    order = sorted(names, key=lambda name: -size_of[name])
    ranges = _chunk_ranges(metadata, len(buffer))
    spans = {
        name: [span for leaf in leaves[name] for span in ranges[leaf]] if ranges else []
        for name in names
    }
    columns = _decode_columns(parquet, buffer, order, spans, pa)
    return pa.Table.from_arrays([columns.pop(name) for name in names], schema=schema)


def _decode_columns(
    parquet: pq.ParquetFile, buffer: memoryview, order: list[str], spans: dict[str, Any], pa: Any
) -> dict[str, Any]:
    """Decode the columns named in `order`, one after the other on this thread, each then
    giving back its compressed bytes (`discard`: `spans`, never read again) and the scratch
    memory its decoding freed (Arrow's default pool, mimalloc, keeps what a thread frees for
    that thread to reuse; pyarrow's own threads would keep it out of reach of
    ``release_unused``). Decoding two columns at once was as fast here (2 busy cores) and
    peaked up to 0.1x of the frame higher."""
    pool = pa.default_memory_pool()
    columns = {}
    for name in order:
        read = parquet.read(columns=[name], use_threads=False)
        if read.num_columns != 1 or read.schema.names != [name]:  # `_read_table` rules it out
            raise SerializationError(f"column {name[:80]!r} could not be read on its own")
        column = read.column(0)
        del read
        for start, end in spans[name]:
            discard(buffer, start, end)
        if column.nbytes >= _RELEASE_FROM:
            pool.release_unused()
        columns[name] = column
    return columns


def _uncompressed_sizes(metadata: pq.FileMetaData) -> list[int]:
    """Each leaf column's uncompressed bytes over all row groups, from the footer."""
    sizes = [0] * metadata.num_columns
    for group in range(metadata.num_row_groups):
        row_group = metadata.row_group(group)
        for leaf in range(row_group.num_columns):
            sizes[leaf] += int(row_group.column(leaf).total_uncompressed_size)
    return sizes


def _chunk_ranges(metadata: pq.FileMetaData, size: int) -> list[list[tuple[int, int]]] | None:
    """Byte ranges of each leaf column's chunks (one per row group), or None unless they all
    lie between the magic bytes and the footer without overlapping (then nothing is given
    back early: a range is released only when it is certainly that column's)."""
    ranges: list[list[tuple[int, int]]] = [[] for _ in range(metadata.num_columns)]
    footer = size - 8 - int(metadata.serialized_size)
    spans = []
    for group in range(metadata.num_row_groups):
        row_group = metadata.row_group(group)
        for leaf in range(row_group.num_columns):
            chunk = row_group.column(leaf)
            start = (
                chunk.dictionary_page_offset
                if chunk.has_dictionary_page and chunk.dictionary_page_offset
                else chunk.data_page_offset
            )
            end = int(start) + int(chunk.total_compressed_size)
            if start < 4 or end > footer:
                return None
            ranges[leaf].append((int(start), end))
            spans.append((int(start), end))
    spans.sort()
    if any(later[0] < earlier[1] for earlier, later in itertools.pairwise(spans)):
        return None
    return ranges


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
    (pyarrow's ``self_destruct``; `table` is unusable after), so the two never coexist whole.

    Nullable columns (``Int64``, ``boolean``...) are converted here, one at a time: through
    pyarrow, pandas first combines the column's one chunk into a new Arrow array and then
    copies that again (three copies alive at once); here pandas gets the chunk itself (two).
    """
    import pyarrow as pa

    large = table.nbytes >= _RELEASE_FROM
    table, masked = _take_masked(table)
    frame = table.to_pandas(self_destruct=True, split_blocks=True)
    del table
    if masked:
        import pandas as pd

        while masked:
            position, label, dtype, column = masked.pop(0)
            values = dtype.__from_arrow__(column.chunk(0))
            del column
            series = pd.Series(values, index=frame.index, name=label, copy=False)
            frame.insert(position, label, series, allow_duplicates=True)
    if large:  # the converted columns' Arrow memory (a small hit skips the pool's sweep)
        pa.default_memory_pool().release_unused()
    return frame


def _take_masked(table: pa.Table) -> tuple[pa.Table, list[tuple[int, str, Any, Any]]]:
    """`table` without its nullable pandas columns, and those columns (frame position, label,
    pandas dtype, one-chunk Arrow column), in position order; nothing is taken unless the
    frame's column labels are plain strings (one level) and every taken column is one chunk."""
    import json

    raw = (table.schema.metadata or {}).get(b"pandas")
    if raw is None:
        return table, []
    try:
        meta = json.loads(raw)
        levels = meta.get("column_indexes") or []
        if len(levels) != 1 or levels[0].get("pandas_type") != "unicode":
            return table, []
        index_fields = {d for d in meta.get("index_columns", []) if isinstance(d, str)}
        wanted = {
            c["field_name"]: c
            for c in meta.get("columns", [])
            if c.get("numpy_type") in _MASKED and isinstance(c.get("name"), str)
        }
    except (ValueError, TypeError, AttributeError, KeyError):
        return table, []  # pyarrow's own conversion says what is wrong, if anything
    if not wanted:
        return table, []
    import pandas as pd

    names = table.schema.names
    taken: list[tuple[int, str, Any, Any]] = []
    taken_fields: set[str] = set()
    position = 0
    for name in names:
        if name in index_fields:
            continue
        spec = wanted.get(name)
        if spec is not None and names.count(name) == 1:
            column = table.column(name)
            if column.num_chunks == 1:
                dtype = pd.api.types.pandas_dtype(spec["numpy_type"])
                taken.append((position, spec["name"], dtype, column))
                taken_fields.add(name)
        position += 1
    if taken:
        table = table.select([i for i, name in enumerate(names) if name not in taken_fields])
    return table, taken
