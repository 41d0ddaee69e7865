"""The `Serializer` spec every serializer implements."""

from __future__ import annotations

import io
import json
from abc import ABC, abstractmethod
from typing import Any, BinaryIO, Self

from .errors import SerializationError


class Serializer(ABC):
    """Turns Python values into bytes and back.

    A serializer is described by a small JSON-able spec (`to_spec()`), which is all a result
    record stores; `serializers.resolve_serializer(spec)` rebuilds it from our own allow-list
    of types, so stored data can never name a module or a decoder.

    Example:
        >>> from serializers import JSONSerializer
        >>> s = JSONSerializer()
        >>> s.loads(s.dumps({"a": (1, 2)}))
        {'a': (1, 2)}
        >>> s.to_spec()
        {'type': 'json'}
    """

    #: Short type name from our allow-list, e.g. ``"json"``, ``"pickle"``, ``"compressed/json"``.
    #: A class attribute, except for wrappers whose type depends on what they wrap.
    type: str

    #: Whether `load_buffer` builds the value over the payload's own memory (a numpy array
    #: viewing it): a result store then reads a payload into memory while verifying it and
    #: hands that memory over, instead of copying it to a file to be read again.
    loads_in_place: bool = False

    @abstractmethod
    def dumps(self, obj: Any) -> bytes:
        """Serialize `obj` to bytes; raises `SerializationError` if it cannot."""

    @abstractmethod
    def loads(self, data: bytes) -> Any:
        """Deserialize bytes made by `dumps` (or `dump`); raises `SerializationError` if invalid."""

    def dump(self, obj: Any, file: BinaryIO) -> None:
        """Serialize `obj` into a binary file object.

        The default writes `dumps(obj)`; serializers that can stream override it.
        """
        file.write(self.dumps(obj))

    def load(self, file: BinaryIO) -> Any:
        """Deserialize a value from a binary file object positioned at the payload.

        The payload must run to the end of the file: the default reads everything that is left.
        """
        return self.loads(file.read())

    def load_buffer(self, buffer: memoryview) -> Any:
        """Deserialize a whole payload held in `buffer`, private writable memory the value may
        keep (see `loads_in_place`). The default reads it as a file."""
        return self.load(io.BytesIO(buffer))

    def for_value(self, obj: Any) -> Serializer:
        """The serializer that writes `obj`: this one, except for serializers that choose per
        value (``"auto"``). A result store writes the chosen one's spec in the record header."""
        return self

    def versions(self) -> dict[str, str]:
        """Versions of what the bytes depend on (Python, libraries), recorded beside them."""
        return {}

    def incompatible(self, recorded: dict[str, str]) -> str | None:
        """Why bytes written under `recorded` versions cannot be read here; None if they can."""
        return None

    @abstractmethod
    def to_spec(self) -> dict[str, Any]:
        """A JSON-able description: ``{"type": ..., **options}``; see `resolve_serializer`."""

    @classmethod
    def from_spec(cls, spec: dict[str, Any]) -> Self:
        """Rebuild from `to_spec()` output; `resolve_serializer` has checked the ``type``."""
        check_spec_keys(spec, {"type"})
        return cls()

    def _identity(self) -> Any:
        """What equality and hashing compare; by default the spec."""
        return json.dumps(self.to_spec(), sort_keys=True)

    def __eq__(self, other: object) -> bool:
        if type(other) is not type(self):
            return NotImplemented
        assert isinstance(other, Serializer)
        return bool(self._identity() == other._identity())

    def __hash__(self) -> int:
        return hash((type(self), self._identity()))

    def __repr__(self) -> str:
        options = {k: v for k, v in self.to_spec().items() if k != "type"}
        args = ", ".join(f"{k}={v!r}" for k, v in options.items())
        return f"{type(self).__name__}({args})"


def check_spec_keys(spec: dict[str, Any], allowed: set[str]) -> None:
    """Reject options a serializer does not know, so a spec cannot smuggle anything in."""
    unknown = set(spec) - allowed
    if unknown:
        raise SerializationError(
            f"unknown option(s) {', '.join(sorted(map(str, unknown)))} in serializer spec "
            f"{spec.get('type')!r}: allowed are {', '.join(sorted(allowed - {'type'})) or 'none'}"
        )
