"""`PickleSerializer`: any Python object, via cloudpickle (default) or the stdlib pickle."""

from __future__ import annotations

import io
import sys
from types import ModuleType
from typing import Any, BinaryIO, Self

from . import context
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

    Secrets (pydantic ``SecretStr``, ``SecretBytes``, ``Secret``) never reach the pickle in
    plaintext: inside a `codec_context` with a sealer (the result store's) each one is pickled
    on its own, sealed, and stored as a call to `open_sealed`, which opens it on load; without a
    sealer, dumping a secret raises `SerializationError` naming where it is.

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
        buffer = io.BytesIO()
        self.dump(obj, buffer)
        return buffer.getvalue()

    def dump(self, obj: Any, file: BinaryIO) -> None:
        """Pickle `obj` straight into `file`; on error, part of it may already be written."""
        try:
            # No pydantic imported, no secrets: skip the per-object check entirely.
            sealing = bool(context.secret_types())
            _pickler_class(self.picklelib, sealing)(file, protocol=PROTOCOL).dump(obj)
        except (OSError, SerializationError):
            raise
        except _SecretRefused as refused:
            raise context.refuse_secret(obj, refused.kind) from None
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

    def versions(self) -> dict[str, str]:
        found = _VERSIONS.get(self.picklelib)
        if found is None:
            found = {"python": ".".join(map(str, sys.version_info[:3]))}
            if self.picklelib == "cloudpickle":
                found["cloudpickle"] = str(self._lib().__version__)
            _VERSIONS[self.picklelib] = found
        return dict(found)

    def incompatible(self, recorded: dict[str, str]) -> str | None:
        # Pickles name code by module path and bytecode: safe only under the same Python
        # minor version and the same cloudpickle minor version.
        here = self.versions()
        for lib in ("python", "cloudpickle"):
            theirs, ours = recorded.get(lib), here.get(lib)
            if ours is None:
                continue
            if theirs is None:
                return f"it does not say which {lib} version wrote it"
            if theirs.split(".")[:2] != ours.split(".")[:2]:
                return (
                    f"it was pickled under {lib} {theirs} and this process runs {ours} "
                    "(pickles do not cross minor versions)"
                )
        return None

    def to_spec(self) -> dict[str, Any]:
        return {"type": self.type, "picklelib": self.picklelib}

    @classmethod
    def from_spec(cls, spec: dict[str, Any]) -> Self:
        """Rebuild from `to_spec()` output (the ``type`` key is already checked)."""
        check_spec_keys(spec, {"type", "picklelib"})
        return cls(picklelib=spec.get("picklelib", "cloudpickle"))


_VERSIONS: dict[str, dict[str, str]] = {}


class _SecretRefused(Exception):
    def __init__(self, kind: type) -> None:
        self.kind = kind


_PICKLERS: dict[str, type] = {}


def _pickler_class(picklelib: str, sealing: bool) -> Any:
    """A Pickler (cloudpickle's or the stdlib's), sealing secrets if asked.

    The hook is ``reducer_override``, which the C pickler skips for None, bools and exact
    ints, floats, str, bytes, dicts, lists, tuples and sets: plain data pays nothing.
    """
    if picklelib == "cloudpickle":
        import cloudpickle

        base: Any = cloudpickle.CloudPickler
    else:
        import pickle

        base = pickle.Pickler
    if not sealing:
        return base
    made = _PICKLERS.get(picklelib)
    if made is not None:
        return made
    kinds = context.secret_types()

    class SealingPickler(base):  # type: ignore[misc]
        def reducer_override(self, obj: Any) -> Any:
            if isinstance(obj, kinds):
                active = context.current()
                if active is None or active.sealer is None:
                    raise _SecretRefused(type(obj))
                plain = io.BytesIO()
                base(plain, protocol=PROTOCOL).dump(obj)  # the secret alone, to be sealed
                return (open_sealed, (active.sealer.seal(plain.getvalue()),))
            parent = getattr(super(), "reducer_override", None)
            return NotImplemented if parent is None else parent(obj)

    _PICKLERS[picklelib] = SealingPickler
    return SealingPickler


def open_sealed(sealed: bytes) -> Any:
    """Rebuild a secret sealed by `PickleSerializer.dump` (called by the unpickler)."""
    import pickle

    active = context.current()
    if active is None or active.sealer is None:
        raise SerializationError(
            "pickle holds a sealed secret: read it through a ResultStore with the results key "
            "that wrote it"
        )
    return pickle.loads(active.sealer.unseal(sealed))


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
