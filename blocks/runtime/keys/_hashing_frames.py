"""Digests of numpy arrays, pandas / polars frames and pyarrow tables, by content.

Part of `blocks.hashing`, in its own module because these encoders import their library: each
is chosen only for a value of that library's type, so the library is already imported.

- numpy: dtype, shape and the raw bytes (object arrays element by element);
- pandas: column labels, index, then each column's bytes (numeric) or pandas' fixed-key row
  hash (strings, categoricals, extension types); mixed-object columns element by element;
- polars and pyarrow: the schema and the Arrow IPC stream of the data, hashed as written.

Example:
    >>> digest(np.arange(3)) == digest(np.array([0, 1, 2]))
    True
"""

from __future__ import annotations

import sys
from typing import Any

from blake3 import blake3

from blocks.runtime.keys._hashing import Encoder, _buffer, _encode, _reduce

__all__ = ["encoder_for"]


def encoder_for(top: str, kind: type) -> Encoder | None:
    """The encoder for `kind` from library `top`, or None to use the generic rules."""
    if top == "numpy":
        numpy = sys.modules["numpy"]
        if issubclass(kind, numpy.ndarray):
            return _numpy_array
        if issubclass(kind, numpy.generic):
            return _numpy_scalar
        return None
    return {"pandas": _pandas, "polars": _polars, "pyarrow": _pyarrow}.get(top)


def _numpy_array(value: Any, out: list[bytes], active: dict[int, int]) -> None:
    import numpy as np

    out.append(b"na" + repr(value.dtype.descr).encode() + repr(value.shape).encode())
    if value.dtype.hasobject:
        _encode(value.tolist(), out, active)
        return
    _buffer(b"", np.ascontiguousarray(value).reshape(-1).view(np.uint8), out)


def _numpy_scalar(value: Any, out: list[bytes], active: dict[int, int]) -> None:
    if value.dtype.hasobject:
        _encode(value.item(), out, active)
        return
    out.append(b"ns" + repr(value.dtype.descr).encode())
    _buffer(b"", value.tobytes(), out)


def _pandas_values(values: Any, out: list[bytes], active: dict[int, int]) -> None:
    """The values of a Series or Index: raw bytes when numeric, else pandas' stable row hash."""
    import numpy as np
    import pandas as pd

    dtype = values.dtype
    out.append(b"pv" + str(dtype).encode() + b"%d;" % len(values))
    if isinstance(dtype, np.dtype) and dtype.kind in "biufcmM":
        _buffer(b"", np.ascontiguousarray(values.to_numpy()).view(np.uint8), out)
    elif (
        isinstance(dtype, np.dtype)
        and dtype.hasobject
        and pd.api.types.infer_dtype(values, skipna=False) != "string"
    ):
        # Mixed objects: pandas would hash their str(), which for sets and most objects
        # depends on the process; our own rules instead (slower, but right).
        _encode(values.tolist(), out, active)
    else:
        # hash_pandas_object uses a fixed key: deterministic across processes.
        rows = pd.util.hash_pandas_object(values, index=False, categorize=True)
        _buffer(b"", np.ascontiguousarray(rows.to_numpy()).view(np.uint8), out)


def _pandas_index(index: Any, out: list[bytes], active: dict[int, int]) -> None:
    import pandas as pd

    _encode(list(index.names), out, active)
    if isinstance(index, pd.RangeIndex):
        out.append(b"pr%d,%d,%d;" % (index.start, index.stop, index.step))
    else:
        _pandas_values(index, out, active)


def _pandas(value: Any, out: list[bytes], active: dict[int, int]) -> None:
    import pandas as pd

    if isinstance(value, pd.DataFrame):
        out.append(b"pdf")
        _encode(list(value.columns), out, active)
        _pandas_index(value.index, out, active)
        for position in range(value.shape[1]):
            _pandas_values(value.iloc[:, position], out, active)
    elif isinstance(value, pd.Series):
        out.append(b"pds")
        _encode(value.name, out, active)
        _pandas_index(value.index, out, active)
        _pandas_values(value, out, active)
    elif isinstance(value, pd.Index):
        out.append(b"pdi")
        _pandas_index(value, out, active)
    else:
        _reduce(value, out, active)


class _HashSink:
    """A write-only file that hashes what an Arrow IPC writer gives it."""

    def __init__(self) -> None:
        self.hasher = blake3()
        self.closed = False

    def write(self, data: Any) -> int:
        view = memoryview(data)
        self.hasher.update(view)
        return view.nbytes

    def flush(self) -> None:
        pass

    def close(self) -> None:
        self.closed = True


def _arrow_table(table: Any, out: list[bytes]) -> None:
    import pyarrow as pa

    sink = _HashSink()
    with pa.ipc.new_stream(pa.PythonFile(sink, mode="w"), table.schema) as writer:
        writer.write(table)
    out.append(b"at" + table.schema.to_string().encode() + b"|" + sink.hasher.digest())


def _pyarrow(value: Any, out: list[bytes], active: dict[int, int]) -> None:
    import pyarrow as pa

    if isinstance(value, pa.Table | pa.RecordBatch):
        _arrow_table(value, out)
    elif isinstance(value, pa.Array | pa.ChunkedArray):
        out.append(b"aa")
        _arrow_table(pa.Table.from_arrays([value], names=["_"]), out)
    else:
        _reduce(value, out, active)


def _polars(value: Any, out: list[bytes], active: dict[int, int]) -> None:
    import polars as pl

    if isinstance(value, pl.DataFrame):
        out.append(b"ldf")
        _arrow_table(value.to_arrow(), out)
    elif isinstance(value, pl.Series):
        out.append(b"lds")
        _encode(value.name, out, active)
        _pyarrow(value.to_arrow(), out, active)
    else:
        _reduce(value, out, active)
