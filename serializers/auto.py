"""`AutoSerializer`: each value in the format that suits it — tables as Parquet, arrays as
``.npy``, JSON-able values as JSON, anything else as pickle if allowed."""

from __future__ import annotations

import io
from typing import Any, BinaryIO, Self

from .base import Serializer, check_spec_keys
from .errors import SerializationError
from .json import JSONSerializer
from .numpy import NumpySerializer, is_array
from .parquet import DEFAULT_LEVEL, ParquetSerializer, kind_of
from .pickle import PickleSerializer

# A standalone auto payload starts with one of these lines (see `AutoSerializer.dump`).
_TAGS: dict[str, bytes] = {
    "parquet": b"auto:parquet\n",
    "npy": b"auto:npy\n",
    "json": b"auto:json\n",
    "pickle": b"auto:pickle\n",
}
_LONGEST_TAG = max(map(len, _TAGS.values()))


class AutoSerializer(Serializer):
    """Choose the serializer per value: pandas/polars/arrow tables -> `ParquetSerializer`,
    numpy arrays -> `NumpySerializer`, values that JSON round-trips -> `JSONSerializer`,
    the rest -> `PickleSerializer` when ``fallback="pickle"``, else a `SerializationError`.

    A result store asks `for_value` and writes the chosen serializer's spec in the record's
    header: the record names the format it holds, and reading needs no guess (nor this class).
    Without the pickle fallback, a store using this serializer also refuses to unpickle
    records (as a JSON store does).

    Example:
        >>> s = AutoSerializer()
        >>> s.for_value({"rows": 3})
        JSONSerializer()
        >>> import numpy as np
        >>> s.for_value(np.zeros(3))
        NumpySerializer()
    """

    type = "auto"

    def __init__(self, fallback: str | None = None, level: int = DEFAULT_LEVEL) -> None:
        if fallback not in (None, "pickle"):
            raise SerializationError(
                f"auto serializer fallback must be None or 'pickle', not {fallback!r}"
            )
        self.fallback = fallback
        self.parquet = ParquetSerializer(level=level)
        self.npy = NumpySerializer()
        self.json = JSONSerializer()
        self.pickle = PickleSerializer() if fallback == "pickle" else None

    def for_value(self, obj: Any) -> Serializer:
        """The serializer this value is written with."""
        if kind_of(obj) is not None:
            return self.parquet
        if is_array(obj) and not obj.dtype.hasobject:
            return self.npy
        if self._json_round_trips(obj):
            return self.json
        if self.pickle is not None:
            return self.pickle
        raise SerializationError(
            f"the auto serializer writes tables, arrays and JSON-able values; a "
            f"{type(obj).__module__}.{type(obj).__qualname__} is none of them: allow pickle "
            "with AutoSerializer(fallback='pickle') (only for storage you trust), or "
            "convert the value"
        )

    def _json_round_trips(self, obj: Any) -> bool:
        # JSON only when the value comes back equal (an unregistered dataclass encodes but
        # does not decode; a numpy scalar comes back as a float).
        try:
            back = self.json.loads(self.json.dumps(obj))
            return bool(type(back) is type(obj) and back == obj)
        except Exception:  # SerializationError, or an __eq__ that raises
            return False

    def _by_name(self, name: str) -> Serializer:
        chosen: Serializer | None = {
            "parquet": self.parquet,
            "npy": self.npy,
            "json": self.json,
            "pickle": self.pickle,
        }[name]
        if chosen is None:
            raise SerializationError(
                "auto payload is pickled, and this auto serializer does not unpickle "
                "(fallback=None): refused"
            )
        return chosen

    def dumps(self, obj: Any) -> bytes:
        buffer = io.BytesIO()
        self.dump(obj, buffer)
        return buffer.getvalue()

    def dump(self, obj: Any, file: BinaryIO) -> None:
        """Write one tag line naming the format, then that format's bytes.

        Only for use outside a result store: a store writes `for_value`'s serializer directly.
        """
        chosen = self.for_value(obj)
        file.write(_TAGS[chosen.type])
        chosen.dump(obj, file)

    def loads(self, data: bytes) -> Any:
        return self.load(io.BytesIO(data))

    def load(self, file: BinaryIO) -> Any:
        line = file.readline(_LONGEST_TAG)
        for name, tag in _TAGS.items():
            if line == tag:
                return self._by_name(name).load(file)
        raise SerializationError("payload does not start with an auto serializer tag")

    def to_spec(self) -> dict[str, Any]:
        return {
            "type": self.type,
            "fallback": None if self.pickle is None else self.pickle.to_spec(),
            "level": self.parquet.level,
        }

    @classmethod
    def from_spec(cls, spec: dict[str, Any]) -> Self:
        """Rebuild from `to_spec()` output (the ``type`` key is already checked)."""
        check_spec_keys(spec, {"type", "fallback", "level"})
        fallback = spec.get("fallback")
        if fallback not in (None, "pickle", PickleSerializer().to_spec()):
            raise SerializationError(f"unknown auto serializer fallback {fallback!r}")
        return cls(
            fallback=None if fallback is None else "pickle",
            level=spec.get("level", DEFAULT_LEVEL),
        )
