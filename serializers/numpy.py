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


#: Bytes handed to the file per write when streaming an array's memory: small enough that the
#: store's sink hashes a piece and the kernel copies it while it is still in the CPU's cache
#: (16 MiB pieces were read from memory twice, and took more CPU per GB written).
_CHUNK = 1024 * 1024


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
    data = memoryview(flat.view("u1")) if flat.size else memoryview(b"")
    reserve = getattr(file, "reserve", None)  # a result store's sink: allocate it all at once
    if reserve is not None:
        reserve(len(prefix.getvalue()) + data.nbytes)
    file.write(prefix.getvalue())
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

    In place: a result store reads a large payload straight into memory while it verifies
    it, and `load_buffer` makes the array a view of that memory (one pass, no copy).

    Example:
        >>> import numpy as np
        >>> s = NumpySerializer()
        >>> s.loads(s.dumps(np.arange(3))).tolist()
        [0, 1, 2]
    """

    type = "npy"
    loads_in_place = True

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

        start = file.tell()
        try:
            _read_header(file, npy)
            file.seek(start)
            return npy.read_array(file, allow_pickle=False, max_header_size=MAX_HEADER_SIZE)
        except (OSError, SerializationError):
            raise
        except Exception as exc:  # ValueError for bad headers or short data, ...
            raise SerializationError(f"payload is not a readable .npy array: {exc}") from exc

    def load_buffer(self, buffer: memoryview) -> Any:
        """The array as a view of `buffer` (the verified payload, which it keeps): no copy."""
        np = _numpy()
        from numpy.lib import format as npy

        view = memoryview(buffer).cast("B")
        head = io.BytesIO(view[:_HEAD_MAX])  # a copy of the header's bytes only
        try:
            shape, fortran, dtype = _read_header(head, npy)
            count = math.prod(int(n) for n in shape)
            offset = head.tell()
            if not count or not dtype.itemsize:
                return self.load(io.BytesIO(view))
            if view.nbytes - offset < count * dtype.itemsize:
                raise SerializationError(
                    f"the .npy payload is truncated: {view.nbytes - offset} data bytes for an "
                    f"array of {count * dtype.itemsize}"
                )
            flat = np.frombuffer(view, dtype=dtype, count=count, offset=offset)
            # .npy stores a Fortran array as its transpose's C order (as numpy.load reads it).
            array = flat.reshape(shape[::-1]).transpose() if fortran else flat.reshape(shape)
        except (OSError, SerializationError):
            raise
        except Exception as exc:
            raise SerializationError(f"payload is not a readable .npy array: {exc}") from exc
        # Headers are padded so data starts 64-byte aligned; an odd old file is copied.
        return array if array.flags.aligned else array.copy(order="K")

    def versions(self) -> dict[str, str]:
        return {}

    def to_spec(self) -> dict[str, Any]:
        return {"type": self.type}

    @classmethod
    def from_spec(cls, spec: dict[str, Any]) -> Self:
        """Rebuild from `to_spec()` output (the ``type`` key is already checked)."""
        check_spec_keys(spec, {"type"})
        return cls()


# Magic string, version, header length and the longest header a reader parses.
_HEAD_MAX = 6 + 2 + 4 + MAX_HEADER_SIZE


def _read_header(file: BinaryIO, npy: Any) -> tuple[tuple[int, ...], bool, Any]:
    """Shape, Fortran order and dtype from the .npy header at `file`'s position (left just
    past it); refuses object dtypes and, inside a `codec_context` with ``max_bytes``, arrays
    that need more bytes, before anything is allocated."""
    version = npy.read_magic(file)
    if version == (1, 0):
        shape, fortran, dtype = npy.read_array_header_1_0(file, max_header_size=MAX_HEADER_SIZE)
    else:
        shape, fortran, dtype = npy.read_array_header_2_0(file, max_header_size=MAX_HEADER_SIZE)
    if dtype.hasobject:
        raise SerializationError(
            f"the .npy payload holds dtype {dtype}, which only pickle can read: refused"
        )
    size = math.prod(int(n) for n in shape) * dtype.itemsize
    active = context.current()
    limit = active.max_bytes if active is not None else None
    if limit is not None and size > limit:
        raise SerializationError(
            f"the .npy payload announces an array of {size} bytes, over its limit of "
            f"{limit}: not read"
        )
    return shape, fortran, dtype
