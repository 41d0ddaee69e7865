"""`PickleSerializer`: any Python object, via cloudpickle (default) or the stdlib pickle."""

from __future__ import annotations

from types import ModuleType
from typing import Any, BinaryIO, Self

from .base import Serializer, check_spec_keys
from .errors import SerializationError

PICKLE_LIBS = ("cloudpickle", "pickle")
PROTOCOL = 5


class PickleSerializer(Serializer):
    """Pickle with protocol 5, streaming straight to and from files.

    `picklelib` is ``"cloudpickle"`` (default: also lambdas, local functions and classes
    defined in ``__main__``) or ``"pickle"``. Only load data you trust: unpickling can run code.
    `dump` hands large ``bytes`` to the file without copying them, so writing a 256 MB payload
    needs no second 256 MB buffer; `load` reads them back the same way.

    Example:
        >>> s = PickleSerializer()
        >>> s.loads(s.dumps(lambda x: x + 1))(1)
        2
    """

    type = "pickle"

    def __init__(self, picklelib: str = "cloudpickle") -> None:
        if picklelib not in PICKLE_LIBS:
            raise SerializationError(
                f"unknown picklelib {picklelib!r}: choose one of {', '.join(PICKLE_LIBS)}"
            )
        self.picklelib = picklelib

    def _lib(self) -> ModuleType:
        # Imported here, not at module level, so `import serializers` stays cheap.
        if self.picklelib == "cloudpickle":
            import cloudpickle

            lib: ModuleType = cloudpickle
            return lib
        import pickle

        return pickle

    def dumps(self, obj: Any) -> bytes:
        try:
            data: bytes = self._lib().dumps(obj, protocol=PROTOCOL)
        except Exception as exc:  # pickling runs arbitrary __reduce__ code: any error may surface
            raise _pickling_error(obj, self.picklelib, exc) from exc
        return data

    def dump(self, obj: Any, file: BinaryIO) -> None:
        """Pickle `obj` straight into `file`; on error, part of it may already be written."""
        try:
            self._lib().dump(obj, file, protocol=PROTOCOL)
        except OSError:
            raise
        except Exception as exc:
            raise _pickling_error(obj, self.picklelib, exc) from exc

    def loads(self, data: bytes) -> Any:
        import pickle

        try:
            return pickle.loads(data)
        except SerializationError:
            raise
        except Exception as exc:
            raise _unpickling_error(exc) from exc

    def load(self, file: BinaryIO) -> Any:
        """Unpickle one value from `file`, reading no further than its end."""
        import pickle

        try:
            return pickle.load(file)
        except (OSError, SerializationError):
            raise
        except Exception as exc:
            raise _unpickling_error(exc) from exc

    def to_spec(self) -> dict[str, Any]:
        return {"type": self.type, "picklelib": self.picklelib}

    @classmethod
    def from_spec(cls, spec: dict[str, Any]) -> Self:
        """Rebuild from `to_spec()` output (the ``type`` key is already checked)."""
        check_spec_keys(spec, {"type", "picklelib"})
        return cls(picklelib=spec.get("picklelib", "cloudpickle"))


def _pickling_error(obj: Any, picklelib: str, exc: Exception) -> SerializationError:
    kind = f"{type(obj).__module__}.{type(obj).__qualname__}"
    hint = (
        " (the stdlib pickle cannot pickle lambdas or local objects: try picklelib='cloudpickle')"
        if picklelib == "pickle"
        else ""
    )
    return SerializationError(f"cannot pickle a value of type {kind}: {exc}{hint}")


def _unpickling_error(exc: Exception) -> SerializationError:
    return SerializationError(
        f"stored data is not a valid pickle or needs code that is missing here: "
        f"{type(exc).__name__}: {exc}"
    )
