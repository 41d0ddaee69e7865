"""`NumpySerializer`: numpy arrays in numpy's own ``.npy`` format, never pickled."""

from __future__ import annotations

import io
import math
import sys
from typing import Any, BinaryIO, Self

from . import context
from .base import Serializer, check_spec_keys
from .errors import SerializationError

#: The most header bytes a reader parses (numpy's own default ceiling).
MAX_HEADER_SIZE = 10_000


#: Bytes handed to the file per write when streaming an array's memory.
_CHUNK = 16 * 1024 * 1024


def _write_contiguous(array: Any, file: BinaryIO, npy: Any) -> bool:
    """Write a C- or Fortran-contiguous array as .npy straight from its memory (no copy);
    False, with nothing written, for any other array.

    ``numpy.lib.format.write_array`` copies each 16 MiB chunk twice (``nditer`` buffer, then
    ``tobytes``) unless the file is a real OS file; our sink hashes as it writes, so it is not.
    """
    if array.flags.c_contiguous:
        flat = array.reshape(-1)
    elif array.flags.f_contiguous:
        flat = array.T.reshape(-1)  # .npy stores a Fortran array as its transpose's C order
    else:
        return False
    header = npy.header_data_from_array_1_0(array)
    prefix = io.BytesIO()
    try:
        try:
            npy.write_array_header_1_0(prefix, header)
        except ValueError:  # a header over 64 KiB needs format 2.0
            prefix = io.BytesIO()
            npy.write_array_header_2_0(prefix, header)
    except UnicodeEncodeError:  # field names beyond latin-1 need format 3.0: numpy's path
        return False
    file.write(prefix.getvalue())
    data = memoryview(flat.view("u1")) if flat.size else memoryview(b"")
    for start in range(0, data.nbytes, _CHUNK):
        file.write(data[start : start + _CHUNK])
    return True


def _numpy() -> Any:
    try:
        import numpy
    except ImportError:
        raise SerializationError("the npy serializer needs numpy: pip install numpy") from None
    return numpy


def is_array(obj: Any) -> bool:
    """Whether `obj` is a numpy array, without importing numpy to find out."""
    numpy = sys.modules.get("numpy")
    return numpy is not None and isinstance(obj, numpy.ndarray)


class NumpySerializer(Serializer):
    """A numpy array as a ``.npy`` file (``numpy.lib.format``, ``allow_pickle=False``).

    Every numeric, boolean, string, datetime and structured dtype round-trips, in C or
    Fortran order, 0-d included; object arrays (which ``.npy`` can only pickle) are refused
    with a `SerializationError`. The payload opens with ``numpy.load`` as it is.

    Bounded: inside a `codec_context` with ``max_bytes``, `load` reads the header first and
    refuses an array whose shape and dtype need more bytes, before allocating it.

    Example:
        >>> import numpy as np
        >>> s = NumpySerializer()
        >>> s.loads(s.dumps(np.arange(3))).tolist()
        [0, 1, 2]
    """

    type = "npy"

    def dumps(self, obj: Any) -> bytes:
        buffer = io.BytesIO()
        self.dump(obj, buffer)
        return buffer.getvalue()

    def dump(self, obj: Any, file: BinaryIO) -> None:
        np = _numpy()
        if not isinstance(obj, np.ndarray):
            raise SerializationError(
                f"the npy serializer writes numpy arrays, not a "
                f"{type(obj).__module__}.{type(obj).__qualname__}: use 'parquet' for tables, "
                "'json' or 'pickle' for other values, or 'auto' to choose per value"
            )
        if obj.dtype.hasobject:
            raise SerializationError(
                f"cannot write an array of dtype {obj.dtype} as .npy without pickling its "
                "Python objects: convert it to a numeric or string dtype, or use 'pickle'"
            )
        from numpy.lib import format as npy

        try:
            if not _write_contiguous(obj, file, npy):
                # Not contiguous (a strided view): numpy copies it out in 16 MiB chunks.
                npy.write_array(file, obj, allow_pickle=False)
        except (OSError, SerializationError):
            raise
        except Exception as exc:
            raise SerializationError(f"cannot write this array as .npy: {exc}") from exc

    def loads(self, data: bytes) -> Any:
        return self.load(io.BytesIO(data))

    def load(self, file: BinaryIO) -> Any:
        _numpy()
        from numpy.lib import format as npy

        active = context.current()
        limit = active.max_bytes if active is not None else None
        start = file.tell()
        try:
            version = npy.read_magic(file)
            if version == (1, 0):
                shape, _, dtype = npy.read_array_header_1_0(file, max_header_size=MAX_HEADER_SIZE)
            else:
                shape, _, dtype = npy.read_array_header_2_0(file, max_header_size=MAX_HEADER_SIZE)
            if dtype.hasobject:
                raise SerializationError(
                    f"the .npy payload holds dtype {dtype}, which only pickle can read: refused"
                )
            size = math.prod(int(n) for n in shape) * dtype.itemsize
            if limit is not None and size > limit:
                raise SerializationError(
                    f"the .npy payload announces an array of {size} bytes, over its limit of "
                    f"{limit}: not read"
                )
            file.seek(start)
            return npy.read_array(file, allow_pickle=False, max_header_size=MAX_HEADER_SIZE)
        except (OSError, SerializationError):
            raise
        except Exception as exc:  # ValueError for bad headers or short data, ...
            raise SerializationError(f"payload is not a readable .npy array: {exc}") from exc

    def versions(self) -> dict[str, str]:
        return {}

    def to_spec(self) -> dict[str, Any]:
        return {"type": self.type}

    @classmethod
    def from_spec(cls, spec: dict[str, Any]) -> Self:
        """Rebuild from `to_spec()` output (the ``type`` key is already checked)."""
        check_spec_keys(spec, {"type"})
        return cls()
